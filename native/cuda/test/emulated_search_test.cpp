// Runs the real GPU-search orchestration (native/cuda/kernel_search.cpp) on the CPU: the CUDA
// runtime is fake_cuda/cuda_runtime.h and the launchers of kernels.h are replaced by host code
// that does what each kernel does (SelectTile through the select_host.h replay, with the
// simulated threads in a shuffled order each call). Every search is compared with a brute-force
// exact search. What this cannot check is the CUDA code itself: that is bench/gpu/kernels.sh's
// job on a GPU. Built and run by scripts/cuda-compile-check.sh.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>  // fake_cuda/cuda_runtime.h: the allocation counter

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/kernel_search.h"
#include "cuda/kernels.h"
#include "cuda/select_core.h"
#include "cuda/select_host.h"

using gainrag::cuda_kernels::RowType;
namespace cs = gainrag::cuda_select;

namespace {

float Decode(const void* rows, RowType t, int64_t i) {
  if (t == RowType::kFloat32) return static_cast<const float*>(rows)[i];
  const uint16_t bits = static_cast<const uint16_t*>(rows)[i];
  if (t == RowType::kFloat16) return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
  return static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits()));
}

uint16_t Encode16(float v, RowType t) {
  return t == RowType::kFloat16 ? c10::Half(v).x : c10::BFloat16(v).x;
}

// The exact score every path must reproduce: fp32, dimension order.
float Exact(const float* q, const void* rows, RowType t, int64_t r, int64_t dim) {
  float acc = 0.f;
  for (int64_t d = 0; d < dim; ++d) acc += q[d] * Decode(rows, t, r * dim + d);
  return acc;
}

// Sharded searches launch from one thread per device: the order generator is per thread and the
// launch count atomic.
thread_local std::mt19937 order_rng(3);
std::atomic<int64_t> launches{0};

}  // namespace

// Host versions of the launchers (same contracts as kernels.h).
namespace gainrag {
namespace cuda_kernels {

int FillEmpty(float* s, int32_t* p, int64_t n, void*) {
  for (int64_t i = 0; i < n; ++i) {
    s[i] = cs::EmptyScore();
    p[i] = cs::kEmptyPos;
  }
  return 0;
}

int SelectTile(const float* scores, int64_t ld, int rows, int tile_n, int32_t base, float* ss, int32_t* sp, int k,
               int threads, void*) {
  ++launches;
  const int chunk = threads * cs::kSelectItems;  // as the kernel sizes its chunks
  std::vector<int> order(chunk);
  for (int i = 0; i < chunk; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), order_rng);
  return cs::SelectTileHost(scores, ld, rows, tile_n, base, ss, sp, k, chunk, order) < 0 ? 1 : 0;
}

int Rescore(const float* queries, const void* rows, RowType type, int64_t dim, const int32_t* pos, int nq, int kk,
            float* out, void*) {
  for (int64_t i = 0; i < int64_t(nq) * kk; ++i)
    out[i] = pos[i] == cs::kEmptyPos ? cs::EmptyScore() : Exact(queries + (i / kk) * dim, rows, type, pos[i], dim);
  return 0;
}

int SortRows(float* s, int32_t* p, int nq, int kk, void*) {
  cs::SortRowsHost(s, p, nq, kk);
  return 0;
}

int QueriesTo16(const float* in, void* out, RowType type, int64_t n, void*) {
  for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(out)[i] = Encode16(in[i], type);
  return 0;
}

// fp32 accumulation of 16-bit (or fp32) inputs, like GemmEx with CUBLAS_COMPUTE_32F.
int GemmScores(int, void*, RowType type, const void* rows, int nt, const void* queries, int nq, int dim, float* out,
               int64_t ld) {
  for (int q = 0; q < nq; ++q)
    for (int r = 0; r < nt; ++r) {
      float acc = 0.f;
      for (int d = 0; d < dim; ++d)
        acc += Decode(queries, type, int64_t(q) * dim + d) * Decode(rows, type, int64_t(r) * dim + d);
      out[q * ld + r] = acc;
    }
  return 0;
}

const char* CudaErrorText(int) { return "fake"; }

}  // namespace cuda_kernels
}  // namespace gainrag

namespace {

int failures = 0;

struct Case {
  std::string name;
  int64_t n, dim, nq;
  int k;
  RowType type;
  std::vector<int> devices;
  int64_t split;  // rows in the first part (the "mapped" file); the rest in a second part
  int64_t tile, query_block, resident_limit;
  bool duplicates;
};

void Run(const Case& c, gainrag::KernelCorpusCache* cache = nullptr) {
  std::mt19937 rng(11);
  std::normal_distribution<float> g;
  const size_t eb = c.type == RowType::kFloat32 ? 4 : 2;
  std::vector<uint8_t> store(size_t(c.n * c.dim) * eb);
  for (int64_t i = 0; i < c.n * c.dim; ++i) {
    const int64_t src = c.duplicates ? (i / c.dim % (c.n / 2)) * c.dim + i % c.dim : i;  // row r == row r mod n/2
    if (c.duplicates && src != i) {
      std::memcpy(store.data() + i * eb, store.data() + src * eb, eb);
      continue;
    }
    const float v = g(rng);
    if (c.type == RowType::kFloat32)
      std::memcpy(store.data() + i * 4, &v, 4);
    else {
      const uint16_t h = Encode16(v, c.type);
      std::memcpy(store.data() + i * 2, &h, 2);
    }
  }
  std::vector<float> q(size_t(c.nq * c.dim));
  for (float& v : q) v = g(rng);

  gainrag::KernelSearchRequest req;
  const uint8_t* base = store.data();
  if (c.split > 0 && c.split < c.n) {
    req.parts = {{base, c.split}, {base + size_t(c.split * c.dim) * eb, c.n - c.split}};
  } else {
    req.parts = {{base, c.n}};
  }
  req.dim = c.dim;
  req.type = c.type;
  req.queries = q.data();
  req.nq = c.nq;
  req.k = c.k;
  req.devices = c.devices;
  req.tile_rows = c.tile;
  req.query_block = c.query_block;
  req.resident_limit = c.resident_limit;
  std::vector<float> s(size_t(c.nq) * c.k);
  std::vector<int64_t> p(size_t(c.nq) * c.k);
  gainrag::KernelSearch(req, cache, s.data(), p.data());

  int64_t differ = 0, wrong = 0;
  for (int64_t a = 0; a < c.nq; ++a) {
    std::vector<std::pair<float, int64_t>> all(c.n);
    for (int64_t r = 0; r < c.n; ++r) all[r] = {Exact(q.data() + a * c.dim, base, c.type, r, c.dim), r};
    std::sort(all.begin(), all.end(), [](auto& x, auto& y) { return x.first > y.first || (x.first == y.first && x.second < y.second); });
    for (int j = 0; j < c.k; ++j) {
      const int64_t want_p = j < c.n ? all[j].second : -1;
      const float got_s = s[a * c.k + j];
      if (p[a * c.k + j] != want_p) ++differ;
      // The score at each place must be the exact j-th best score; a different id is then a tie.
      if (j < c.n && got_s != all[j].first) ++wrong;
    }
  }
  const bool ok = wrong == 0 && differ == 0;
  if (!ok) ++failures;
  std::printf("%s %s: %lld ids differ, %lld scores differ from the exact search\n", ok ? "ok  " : "FAIL", c.name.c_str(),
              (long long)differ, (long long)wrong);
}

}  // namespace

int main() {
  const RowType f16 = RowType::kFloat16, bf16 = RowType::kBFloat16, f32 = RowType::kFloat32;
  const std::vector<Case> cases = {
      {"f16 resident, one tile", 3000, 24, 7, 10, f16, {0}, 0, 0, 0, 0, false},
      {"f16 resident, tiles of 257, query blocks of 3", 5000, 24, 7, 50, f16, {0}, 0, 257, 3, 0, false},
      {"f16 streamed, two parts, tile across the part boundary", 5000, 24, 7, 50, f16, {0}, 1234, 500, 0, -1, false},
      {"bf16 streamed, k=1000", 6000, 16, 3, 1000, bf16, {0}, 2500, 1024, 2, -1, false},
      {"f32 resident, k=1", 4000, 16, 5, 1, f32, {1}, 0, 333, 0, 0, false},
      {"f16 three shards (devices 0,1,2), resident", 6001, 16, 6, 100, f16, {0, 1, 2}, 0, 512, 0, 0, false},
      {"f16 all devices, streamed, two parts", 6001, 16, 6, 100, f16, {-1}, 3001, 700, 4, -1, false},
      {"f16 shards smaller than k (padding)", 150, 16, 4, 100, f16, {0, 1, 2}, 0, 0, 0, 0, false},
      {"f16 corpus smaller than k'", 130, 16, 4, 100, f16, {0}, 60, 0, 0, -1, false},
      {"f16 duplicated rows: exact ties broken by position", 4000, 16, 5, 100, f16, {0, 1}, 0, 300, 0, 0, true},
      {"f16 duplicated rows, streamed", 4000, 16, 5, 100, f16, {0}, 1500, 300, 0, -1, true},
      {"f16 k=2048", 9000, 8, 2, 2048, f16, {0}, 0, 4096, 0, 0, false},
  };
  for (const Case& c : cases) {
    try {
      Run(c);
    } catch (const std::exception& e) {
      ++failures;
      std::printf("FAIL %s: threw %s\n", c.name.c_str(), e.what());
    }
  }
  // The cache: a second search of the same corpus reuses it; a different device list rebuilds it.
  {
    auto cache = gainrag::NewKernelCorpusCache();
    Case c = cases[1];
    Run(c, cache.get());
    const long live = fake_cuda::live_allocations();
    Run(c, cache.get());
    if (fake_cuda::live_allocations() != live) {
      ++failures;
      std::printf("FAIL the cache leaks or drops device memory between searches\n");
    }
    c.devices = {0, 1};
    c.name += ", cache rebuilt for two devices";
    Run(c, cache.get());
  }
  // Errors: k out of range, a device that does not exist, cancellation between tiles.
  auto expect_throw = [](const char* what, const std::function<void()>& fn, gainrag::ErrorCode code) {
    try {
      fn();
      ++failures;
      std::printf("FAIL %s: no error\n", what);
    } catch (const gainrag::Error& e) {
      const bool ok = e.code() == code;
      if (!ok) ++failures;
      std::printf("%s %s: %s\n", ok ? "ok  " : "FAIL", what, e.what());
    }
  };
  std::vector<uint16_t> rows(1000 * 8, 0x3c00);
  std::vector<float> qv(8, 1.f), s(3000);
  std::vector<int64_t> p(3000);
  gainrag::KernelSearchRequest r;
  r.parts = {{rows.data(), 1000}};
  r.dim = 8;
  r.queries = qv.data();
  r.nq = 1;
  r.k = 2049;
  expect_throw("k > 2048 is refused", [&] { gainrag::KernelSearch(r, nullptr, s.data(), p.data()); },
               gainrag::ErrorCode::kInvalidArgument);
  r.k = 5;
  r.devices = {7};
  expect_throw("a missing device is refused", [&] { gainrag::KernelSearch(r, nullptr, s.data(), p.data()); },
               gainrag::ErrorCode::kInvalidArgument);
  r.devices = {0, 1};
  r.tile_rows = 100;
  std::atomic<int> calls{0};  // called from both shard threads
  r.check_cancelled = [&] {
    if (++calls > 3) GR_FAIL(kCancelled, "cancelled");
  };
  expect_throw("cancellation between tiles (two shard threads)", [&] { gainrag::KernelSearch(r, nullptr, s.data(), p.data()); },
               gainrag::ErrorCode::kCancelled);
  // The pinned pool keeps buffers for reuse by design; releasing it must leave nothing behind.
  gainrag::ReleaseKernelBuffers();
  if (fake_cuda::live_allocations() != 0) {
    ++failures;
    std::printf("FAIL %ld device/pinned buffers still allocated after the searches\n", fake_cuda::live_allocations().load());
  }
  std::printf("%lld SelectTile launches\n", (long long)launches.load());
  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("emulated_search_test: all checks passed\n");
  return 0;
}
