// Checks the GPU selection algorithm on the CPU: select_host.h replays the kernels with the same
// select_core.h functions, and every result is compared with a plain full sort of all scores in
// the engine's order (score descending, position ascending). Built and run by
// scripts/cuda-compile-check.sh (and so by test/cuda-compile.test.ts); no GPU, no LibTorch.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/select_core.h"
#include "cuda/select_host.h"

using namespace gainrag::cuda_select;

namespace {

int failures = 0;

void Expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
}

struct Entry {
  float s;
  int32_t p;
};

// The reference: every (score, position) of one row, fully sorted, first k (empty-padded).
std::vector<Entry> Reference(const std::vector<float>& row, int k) {
  std::vector<Entry> all(row.size());
  for (size_t i = 0; i < row.size(); ++i) all[i] = {row[i], int32_t(i)};
  std::sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) { return a.s > b.s || (a.s == b.s && a.p < b.p); });
  all.resize(k, Entry{EmptyScore(), kEmptyPos});
  return all;
}

// Scores with many exact ties when `levels` is small (quantised), or near-continuous.
std::vector<float> Scores(std::mt19937& rng, int64_t n, int levels) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = levels > 0 ? std::round(g(rng) * levels) / levels : g(rng);
  return v;
}

// Runs the replayed kernel over the corpus in tiles of `tile` scores for `rows` rows and
// compares each row with the reference. order: shuffled thread order when true.
void CheckSelection(int k, int chunk, int64_t n, int64_t tile, int rows, int levels, bool shuffled, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<float>> data(rows);
  for (auto& r : data) r = Scores(rng, n, levels);
  // Sorted-input worst case for the filter: ascending scores make every score pass.
  if (levels < 0)
    for (auto& r : data) std::sort(r.begin(), r.end());
  std::vector<float> st(size_t(rows) * k);
  std::vector<int32_t> sp(size_t(rows) * k);
  for (size_t i = 0; i < st.size(); ++i) {
    st[i] = EmptyScore();
    sp[i] = kEmptyPos;
  }
  std::vector<int> order(chunk);
  std::iota(order.begin(), order.end(), 0);
  std::vector<float> tile_buf(size_t(rows) * tile);
  int64_t flushes = 0;
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t nt = std::min(tile, n - r0);
    for (int r = 0; r < rows; ++r) std::copy(data[r].begin() + r0, data[r].begin() + r0 + nt, tile_buf.begin() + r * tile);
    if (shuffled) std::shuffle(order.begin(), order.end(), rng);
    const int64_t f = SelectTileHost(tile_buf.data(), tile, rows, int(nt), int32_t(r0), st.data(), sp.data(), k, chunk, order);
    Expect(f >= 0, "SelectTileHost accepted the plan");
    flushes += f;
  }
  const std::string tag = "k=" + std::to_string(k) + " chunk=" + std::to_string(chunk) + " n=" + std::to_string(n) +
                          " tile=" + std::to_string(tile) + " levels=" + std::to_string(levels);
  for (int r = 0; r < rows; ++r) {
    const std::vector<Entry> ref = Reference(data[r], k);
    int bad = 0;
    for (int i = 0; i < k; ++i)
      if (ref[i].p != sp[size_t(r) * k + i] || !(ref[i].s == st[size_t(r) * k + i] || (ref[i].p == kEmptyPos))) ++bad;
    Expect(bad == 0, tag + ": row " + std::to_string(r) + " differs from the full sort in " + std::to_string(bad) + " places");
  }
  // On unsorted data the threshold must make merges rare: far fewer flushes than chunks.
  // (Only with tiles of many chunks: a tile that holds any candidate ends with a flush.)
  if (levels >= 0 && n >= 50 * int64_t(k) && tile >= 16 * chunk) {
    const int64_t chunks = rows * ((n + chunk - 1) / chunk);
    Expect(flushes * 4 < chunks, tag + ": " + std::to_string(flushes) + " flushes for " + std::to_string(chunks) + " chunks");
  }
}

void CheckPlan() {
  for (int chunk : {32, 128, 256, 1024}) {
    for (int k : {1, 2, 63, 64, 100, 999, 1000, 1024, 2047, 2048}) {
      const SelectPlan p = PlanSelect(k, chunk);
      const std::string tag = "plan k=" + std::to_string(k) + " chunk=" + std::to_string(chunk);
      if (k + std::max(k, chunk) > kMaxSlots) {
        Expect(p.slots == 0, tag + " rejected (too large for shared memory)");
        continue;
      }
      Expect(p.slots > 0 && (p.slots & (p.slots - 1)) == 0, tag + ": slots a power of two");
      Expect(p.capacity == p.slots - k && p.capacity >= chunk && p.capacity >= k, tag + ": candidate area");
      Expect(p.slots <= kMaxSlots, tag + ": fits shared memory");
      Expect(!MustFlush(0, p), tag + ": an empty area takes a whole chunk");
      Expect(MustFlush(p.capacity - chunk + 1, p), tag + ": flush before a possible overflow");
    }
  }
  Expect(PlanSelect(0, 256).slots == 0 && PlanSelect(2049, 256).slots == 0, "plan rejects k outside [1, 2048]");
  Expect(PlanSelect(2048, 256).slots == 4096, "k=2048 uses 4096 slots");
}

void CheckBitonic() {
  std::mt19937 rng(5);
  for (int n : {2, 4, 8, 64, 1024, 4096}) {
    std::vector<float> s = Scores(rng, n, 3);
    std::vector<int32_t> p(n);
    std::iota(p.begin(), p.end(), 0);
    std::shuffle(p.begin(), p.end(), rng);
    std::vector<float> s0 = s;
    std::vector<int32_t> p0 = p;
    BitonicSortHost(s.data(), p.data(), n);
    bool sorted = true;
    for (int i = 1; i < n; ++i) sorted &= Better(s[i - 1], p[i - 1], s[i], p[i]);
    Expect(sorted, "bitonic network sorts n=" + std::to_string(n) + " strictly best first");
    std::vector<std::pair<float, int32_t>> a, b;
    for (int i = 0; i < n; ++i) {
      a.push_back({s0[i], p0[i]});
      b.push_back({s[i], p[i]});
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    Expect(a == b, "bitonic network permutes (n=" + std::to_string(n) + ")");
  }
  // SortRows pads a non-power-of-two row and keeps only real entries in front.
  std::vector<float> s = {1.f, 3.f, 2.f, 3.f, -1.f};
  std::vector<int32_t> p = {10, 20, 30, 5, 40};
  SortRowsHost(s.data(), p.data(), 1, 5);
  Expect(p == std::vector<int32_t>({5, 20, 30, 10, 40}), "SortRows orders ties by position");
}

void CheckMerge() {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 200; ++trial) {
    const int k = 1 + int(rng() % 50);
    std::vector<float> all = Scores(rng, 3 * k, 2);
    // Split the positions between two "shards" at random and build each shard's best k.
    std::vector<std::pair<float, int64_t>> a, b;
    for (int i = 0; i < 3 * k; ++i) (rng() % 2 ? a : b).push_back({all[i], i});
    auto best = [&](std::vector<std::pair<float, int64_t>> v, std::vector<float>& s, std::vector<int64_t>& p) {
      std::sort(v.begin(), v.end(), [](auto& x, auto& y) { return x.first > y.first || (x.first == y.first && x.second < y.second); });
      s.assign(k, EmptyScore());
      p.assign(k, -1);
      for (int i = 0; i < k && i < int(v.size()); ++i) {
        s[i] = v[i].first;
        p[i] = v[i].second;
      }
    };
    std::vector<float> as, bs, ms(k);
    std::vector<int64_t> ap, bp, mp(k);
    best(a, as, ap);
    best(b, bs, bp);
    MergeBest(as.data(), ap.data(), bs.data(), bp.data(), k, ms.data(), mp.data());
    const std::vector<Entry> ref = Reference(all, k);
    bool same = true;
    for (int i = 0; i < k; ++i) same &= mp[i] == ref[i].p && ms[i] == ref[i].s;
    Expect(same, "MergeBest of two shards equals the global top-" + std::to_string(k));
  }
}

void CheckOversample() {
  Expect(OversampledK(100, 1000000, 0) == 200, "k'=2k for k=100");
  Expect(OversampledK(10, 1000000, 0) == 74, "k'=k+64 for small k");
  Expect(OversampledK(1000, 1000000, 0) == 2000, "k'=2000 for k=1000");
  Expect(OversampledK(1500, 1000000, 0) == 2048, "k' capped at 2048");
  Expect(OversampledK(2048, 1000000, 0) == 2048, "k=2048 keeps k");
  Expect(OversampledK(100, 150, 0) == 150, "k' capped at the corpus size");
  Expect(OversampledK(100, 1000000, 50) == 100, "a requested k' below k is raised to k");
  Expect(OversampledK(100, 1000000, 300) == 300, "a requested k' is used");
}

}  // namespace

int main() {
  CheckPlan();
  CheckBitonic();
  CheckMerge();
  CheckOversample();
  uint32_t seed = 1;
  // Continuous, tied (quantised), and sorted-ascending (every score passes) inputs, tiles smaller
  // and larger than k, k at the extremes, both thread orders.
  for (int levels : {0, 4, -1}) {
    CheckSelection(1, 32, 5000, 777, 3, levels, true, seed++);
    CheckSelection(5, 64, 20000, 4096, 3, levels, true, seed++);
    CheckSelection(100, 256, 60000, 8192, 4, levels, true, seed++);
    CheckSelection(100, 256, 60000, 50, 2, levels, false, seed++);
    CheckSelection(1000, 256, 70000, 16384, 2, levels, true, seed++);
    CheckSelection(2048, 256, 120000, 65536, 2, levels, true, seed++);
    // The production plans: 256 threads x kSelectItems = 1024-score chunks, k' = 200 and 2000.
    CheckSelection(200, 256 * kSelectItems, 150000, 65536, 2, levels, true, seed++);
    CheckSelection(2000, 256 * kSelectItems, 150000, 65536, 1, levels, true, seed++);
  }
  CheckSelection(300, 256, 200, 64, 2, 0, true, seed++);   // fewer scores than k: empty-padded
  CheckSelection(2048, 1024, 3000, 3000, 1, 2, true, seed++);  // the largest plan: 4096 slots, 1024 threads
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("select_host_test: all checks passed\n");
  return 0;
}
