// The parts of the GPU k-selection that do not depend on the GPU: entry order, sizing, the
// bitonic network, the flush rule and the shard merge. The kernels in select_kernels.cu call these
// same functions (__host__ __device__), and select_host.h replays the kernels' algorithm on the
// CPU with them, so that test/cuda-compile.test.ts checks the selection logic on a machine
// without a GPU.
//
// Selection, per query row, across score tiles: a running top-k (k slots, best first) and a
// candidate area after it. A tile is scanned in chunks of `chunk` scores (one per thread); a
// score that beats the current k-th entry is appended to the candidate area. Before a chunk
// could overflow the area (and after the last chunk), the slots are sorted as one bitonic
// network and the candidate area is emptied: the best k are again in front and the threshold
// rises. Order is score descending, then corpus position ascending, the CPU path's order
// (index/topk_cpu.h), so ties resolve the same way on both.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GR_HD __host__ __device__ __forceinline__
#else
#define GR_HD inline
#endif

namespace gainrag {
namespace cuda_select {

// Largest k the kernels select (the slots of one query live in shared memory).
constexpr int kMaxK = 2048;
// Largest slot count (running k + candidate area), a power of two: 4096 x 8 bytes = 32 KiB.
constexpr int kMaxSlots = 4096;
// Scores each thread reads per chunk: a chunk is threads * kSelectItems scores. Several loads in
// flight per thread are what lets the scan run near memory bandwidth.
constexpr int kSelectItems = 4;
// Empty slot: loses against every finite score (scores are finite: inputs are validated).
constexpr int32_t kEmptyPos = 0x7fffffff;

GR_HD float EmptyScore() { return -__builtin_huge_valf(); }

// True when (sa, pa) ranks before (sb, pb).
GR_HD bool Better(float sa, int32_t pa, float sb, int32_t pb) {
  return sa > sb || (sa == sb && pa < pb);
}

GR_HD int NextPow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

struct SelectPlan {
  int k;         // entries kept per query
  int slots;     // power of two >= k + chunk: running entries followed by the candidate area
  int capacity;  // candidate area size (slots - k)
  int chunk;     // scores scanned between two flush decisions (threads * kSelectItems)
};

// Sizes the slots so that at least one full chunk always fits after a flush, and the candidate
// area is at least k (so that the first tile, where everything passes, flushes at most every
// k scores rather than every few). Returns slots = 0 when k is out of range.
GR_HD SelectPlan PlanSelect(int k, int chunk) {
  SelectPlan p{k, 0, 0, chunk};
  if (k < 1 || k > kMaxK || chunk < 1) return p;
  const int want = k + (chunk > k ? chunk : k);
  const int slots = NextPow2(want);
  if (slots > kMaxSlots) return p;
  p.slots = slots;
  p.capacity = slots - k;
  return p;
}

// Flush now if the next chunk could append more candidates than the area has room for.
GR_HD bool MustFlush(int count, const SelectPlan& p) { return count + p.chunk > p.capacity; }

// One compare-exchange of a bitonic sorting network over `n` (power of two) slots. For step
// (size, stride) with size = 2, 4, ..., n and stride = size/2, ..., 1, pair t in [0, n/2)
// compares slots lo and hi = lo + stride; the pair belongs to an ascending or a descending run
// depending on which half of its `size` block it sits in. Here "ascending" means best first.
GR_HD void BitonicPair(int t, int size, int stride, int* lo, int* hi, bool* best_first) {
  const int block = t / stride;                  // which stride group
  const int i = block * 2 * stride + t % stride;  // first slot of the pair
  *lo = i;
  *hi = i + stride;
  *best_first = (i & size) == 0;
}

// Puts the better entry at lo when best_first (else at hi).
GR_HD void CompareExchange(float* s, int32_t* p, int lo, int hi, bool best_first) {
  const bool hi_better = Better(s[hi], p[hi], s[lo], p[lo]);
  if (hi_better == best_first) {
    const float ts = s[lo];
    s[lo] = s[hi];
    s[hi] = ts;
    const int32_t tp = p[lo];
    p[lo] = p[hi];
    p[hi] = tp;
  }
}

// Merges two best-first lists (each of length k, empty slots at the end) into the best k,
// best first. Used for per-shard results on the host and for query blocks.
GR_HD void MergeBest(const float* as, const int64_t* ap, const float* bs, const int64_t* bp, int k,
                     float* out_s, int64_t* out_p) {
  int i = 0, j = 0;
  for (int o = 0; o < k; ++o) {
    // Positions here are 64-bit (global rows after sharding); the same order as Better.
    const bool take_b = j < k && (i >= k || bs[j] > as[i] || (bs[j] == as[i] && bp[j] < ap[i]));
    if (take_b) {
      out_s[o] = bs[j];
      out_p[o] = bp[j++];
    } else {
      out_s[o] = as[i];
      out_p[o] = ap[i++];
    }
  }
}

// How many candidates to select in the approximate (16-bit input) pass before the exact fp32
// rescoring: twice k with at least 64 extra, capped at kMaxK and at the corpus size.
GR_HD int OversampledK(int k, int64_t n, int requested) {
  int kk = requested > 0 ? requested : (2 * k > k + 64 ? 2 * k : k + 64);
  if (kk < k) kk = k;
  if (kk > kMaxK) kk = kMaxK < k ? k : kMaxK;
  if (kk > n) kk = static_cast<int>(n);
  return kk;
}

}  // namespace cuda_select
}  // namespace gainrag
