#include "index/topk_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace gainrag {
namespace {

inline bool Better(const RunningTopK::Entry& a, const RunningTopK::Entry& b) {
  return a.score > b.score || (a.score == b.score && a.pos < b.pos);
}

// Scores are checked in groups of 16: one branch per group keeps the common "nothing passes"
// case a few SIMD compares (GCC does not vectorise the equivalent scalar loop by itself).
constexpr int kGroup = 16;

inline bool AnyAbove(const float* s, float t) {
#if defined(__SSE2__)
  const __m128 tv = _mm_set1_ps(t);
  // cmpgt is false for NaN, like the scalar comparison.
  __m128 m = _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(s), tv), _mm_cmpgt_ps(_mm_loadu_ps(s + 4), tv));
  m = _mm_or_ps(m, _mm_cmpgt_ps(_mm_loadu_ps(s + 8), tv));
  m = _mm_or_ps(m, _mm_cmpgt_ps(_mm_loadu_ps(s + 12), tv));
  return _mm_movemask_ps(m) != 0;
#else
  bool any = false;
  for (int u = 0; u < kGroup; ++u) any |= s[u] > t;
  return any;
#endif
}

}  // namespace

RunningTopK::RunningTopK(int64_t rows, int64_t k)
    : rows_(rows),
      k_(k),
      // Twice k amortises each nth_element over at least k accepted scores.
      capacity_(std::max<int64_t>(2 * k, k + 64)),
      entries_(static_cast<size_t>(rows * capacity_)),
      count_(static_cast<size_t>(rows), 0),
      threshold_(static_cast<size_t>(rows), -std::numeric_limits<float>::infinity()) {}

void RunningTopK::Compact(int64_t row) {
  Entry* buf = entries_.data() + row * capacity_;
  std::nth_element(buf, buf + (k_ - 1), buf + count_[row], Better);
  count_[row] = k_;
  threshold_[row] = buf[k_ - 1].score;
}

void RunningTopK::Push(int64_t row, const float* scores, int64_t n, int64_t base) {
  Entry* buf = entries_.data() + row * capacity_;
  int64_t count = count_[row];
  float t = threshold_[row];
  auto offer = [&](int64_t j) {
    const float v = scores[j];
    // NaN and -inf never pass (the comparison is false), which keeps the ordering strict-weak.
    if (v > t) {
      buf[count++] = Entry{v, base + j};
      if (count == capacity_) {
        count_[row] = count;
        Compact(row);
        count = k_;
        t = threshold_[row];
      }
    }
  };
  int64_t j = 0;
  for (; j + kGroup <= n; j += kGroup) {
    if (!AnyAbove(scores + j, t)) continue;
    for (int u = 0; u < kGroup; ++u) offer(j + u);
  }
  for (; j < n; ++j) offer(j);
  count_[row] = count;
  threshold_[row] = t;
}

void RunningTopK::Finish(float* scores_out, int64_t* pos_out) {
  at::parallel_for(0, rows_, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      Entry* buf = entries_.data() + row * capacity_;
      const int64_t count = count_[row];
      const int64_t keep = std::min(count, k_);
      std::partial_sort(buf, buf + keep, buf + count, Better);
      for (int64_t i = 0; i < k_; ++i) {
        scores_out[row * k_ + i] = i < keep ? buf[i].score : -std::numeric_limits<float>::infinity();
        pos_out[row * k_ + i] = i < keep ? buf[i].pos : -1;
      }
    }
  });
}

}  // namespace gainrag
