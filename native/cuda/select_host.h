// CPU replay of the GPU selection kernels (select_kernels.cu), step for step, with the same
// select_core.h functions: one "block" per query row, threads simulated in a caller-chosen order
// (the GPU appends candidates in whatever order its atomics give; the result must not depend on
// it). Used only by the tests (native/cuda/test/select_host_test.cpp); not part of the engine.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/select_core.h"

namespace gainrag {
namespace cuda_select {

// The whole-block bitonic sort of BlockBitonicSort, one pair at a time.
inline void BitonicSortHost(float* s, int32_t* p, int n) {
  for (int size = 2; size <= n; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1)
      for (int t = 0; t < n / 2; ++t) {
        int lo, hi;
        bool best_first;
        BitonicPair(t, size, stride, &lo, &hi, &best_first);
        CompareExchange(s, p, lo, hi, best_first);
      }
}

// SelectTileKernel for `rows` rows. thread_order: a permutation of [0, chunk) giving the order in
// which the simulated threads append their candidate (empty: 0, 1, ...). Returns the number of
// flushes (the kernel's sort passes), for the tests' sanity checks.
inline int64_t SelectTileHost(const float* scores, int64_t ld, int rows, int tile_n, int32_t base, float* state_s,
                              int32_t* state_p, int k, int chunk, const std::vector<int>& thread_order) {
  const SelectPlan plan = PlanSelect(k, chunk);
  if (plan.slots == 0) return -1;
  int64_t flushes = 0;
  std::vector<float> s(plan.slots);
  std::vector<int32_t> p(plan.slots);
  for (int row = 0; row < rows; ++row) {
    const float* in = scores + int64_t(row) * ld;
    for (int i = 0; i < plan.slots; ++i) {
      s[i] = i < k ? state_s[int64_t(row) * k + i] : EmptyScore();
      p[i] = i < k ? state_p[int64_t(row) * k + i] : kEmptyPos;
    }
    int count = 0;
    float thr_s = s[k - 1];
    int32_t thr_p = p[k - 1];
    for (int c = 0; c < tile_n; c += plan.chunk) {
      for (int u = 0; u < plan.chunk; ++u) {
        const int t = thread_order.empty() ? u : thread_order[u];
        const int i = c + t;
        if (i >= tile_n) continue;
        const float v = in[i];
        if (Better(v, base + i, thr_s, thr_p)) {
          s[k + count] = v;
          p[k + count] = base + i;
          ++count;
        }
      }
      const bool last = c + plan.chunk >= tile_n;
      if ((last && count > 0) || MustFlush(count, plan)) {
        for (int j = k + count; j < plan.slots; ++j) {
          s[j] = EmptyScore();
          p[j] = kEmptyPos;
        }
        BitonicSortHost(s.data(), p.data(), plan.slots);
        ++flushes;
        count = 0;
        thr_s = s[k - 1];
        thr_p = p[k - 1];
      }
    }
    for (int i = 0; i < k; ++i) {
      state_s[int64_t(row) * k + i] = s[i];
      state_p[int64_t(row) * k + i] = p[i];
    }
  }
  return flushes;
}

// SortRowsKernel: pads each row of kk entries to a power of two and sorts it best first.
inline void SortRowsHost(float* scores, int32_t* pos, int rows, int kk) {
  const int padded = NextPow2(kk);
  std::vector<float> s(padded);
  std::vector<int32_t> p(padded);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < padded; ++i) {
      s[i] = i < kk ? scores[int64_t(r) * kk + i] : EmptyScore();
      p[i] = i < kk ? pos[int64_t(r) * kk + i] : kEmptyPos;
    }
    BitonicSortHost(s.data(), p.data(), padded);
    for (int i = 0; i < kk; ++i) {
      scores[int64_t(r) * kk + i] = s[i];
      pos[int64_t(r) * kk + i] = p[i];
    }
  }
}

}  // namespace cuda_select
}  // namespace gainrag
