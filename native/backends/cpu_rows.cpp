#include "backends/cpu_rows.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backends/cpu_decode.h"

// GCC 12 warns about the deliberately undefined register inside _mm512_reduce_*_ps.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace gainrag::cpu {
namespace {

// Rows per parallel task: at least ~16K floats, so a small tensor stays on one thread.
int64_t Grain(int64_t n) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)); }

GR_AVX512 inline __mmask16 Tail(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << unsigned(left)) - 1u);
}

// exp(x) = 2^k * e^r with k = round(x / ln 2) and |r| <= ln2 / 2, e^r by its Taylor series to
// r^7 (truncation error < 6e-9 relative), 2^k applied by scalef so no exponent bits are built
// by hand. ln 2 is split in two so that k * ln 2 is subtracted without rounding. Below -87.3 the
// result is 0 (the float32 normal range ends there); NaN stays NaN (max/min return their second
// operand when one is NaN, so the NaN is kept by putting x second).
GR_AVX512 inline __m512 Exp(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3f);
  const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_set1_ps(88.7f), _mm512_max_ps(lo, x));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_mask_mov_ps(_mm512_scalef_ps(p, k), under, _mm512_setzero_ps());
}

GR_AVX512 void SoftmaxRowAvx512(float* x, int64_t n) {
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + j));
  }
  const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), top));
    _mm512_mask_storeu_ps(x + j, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sum));
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    _mm512_mask_storeu_ps(x + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), inv));
  }
}

void SoftmaxRowPortable(float* x, int64_t n) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) top = std::max(top, x[j]);
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) sum += (x[j] = std::exp(x[j] - top));
  const float inv = 1.f / sum;
  for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}

GR_AVX512 void AddLayerNormRowAvx512(const float* a, const float* res, int64_t n, const float* gamma,
                                     const float* beta, float eps, float* y) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    const __m512 t = _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, res + j));
    _mm512_mask_storeu_ps(y + j, m, t);
    sum = _mm512_add_ps(sum, t);  // masked-off lanes loaded as 0
  }
  const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(sum) / float(n));
  __m512 sq = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, y + j), mean);
    sq = _mm512_fmadd_ps(d, d, sq);
  }
  const __m512 rstd = _mm512_set1_ps(1.f / std::sqrt(_mm512_reduce_add_ps(sq) / float(n) + eps));
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, y + j), mean), rstd);
    _mm512_mask_storeu_ps(y + j, m,
                          _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, gamma + j), _mm512_maskz_loadu_ps(m, beta + j)));
  }
}

void AddLayerNormRowPortable(const float* a, const float* res, int64_t n, const float* gamma, const float* beta,
                             float eps, float* y) {
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) sum += (y[j] = a[j] + res[j]);
  const float mean = sum / float(n);
  float sq = 0.f;
  for (int64_t j = 0; j < n; ++j) sq += (y[j] - mean) * (y[j] - mean);
  const float rstd = 1.f / std::sqrt(sq / float(n) + eps);
  for (int64_t j = 0; j < n; ++j) y[j] = (y[j] - mean) * rstd * gamma[j] + beta[j];
}

GR_AVX512 void ExpAvx512(const float* x, int64_t n, float* y) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    _mm512_mask_storeu_ps(y + j, m, Exp(_mm512_maskz_loadu_ps(m, x + j)));
  }
}

}  // namespace

void SoftmaxRows(float* x, int64_t rows, int64_t n) {
  if (rows <= 0 || n <= 0) return;
  const bool wide = Avx512();
  at::parallel_for(0, rows, Grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) wide ? SoftmaxRowAvx512(x + r * n, n) : SoftmaxRowPortable(x + r * n, n);
  });
}

void AddLayerNormRows(const float* a, const float* residual, int64_t rows, int64_t n, const float* gamma,
                      const float* beta, float eps, float* y) {
  if (rows <= 0 || n <= 0) return;
  const bool wide = Avx512();
  at::parallel_for(0, rows, Grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *ar = a + r * n, *rr = residual + r * n;
      float* yr = y + r * n;
      wide ? AddLayerNormRowAvx512(ar, rr, n, gamma, beta, eps, yr)
           : AddLayerNormRowPortable(ar, rr, n, gamma, beta, eps, yr);
    }
  });
}

void ExpVector(const float* x, int64_t n, float* y) {
  if (n <= 0) return;
  if (Avx512()) return ExpAvx512(x, n, y);
  // The same contract as the vector path: 0 below the float32 normal range (std::exp would
  // return a denormal there), NaN kept.
  for (int64_t j = 0; j < n; ++j) y[j] = x[j] < -87.3f ? 0.f : std::exp(x[j]);
}

}  // namespace gainrag::cpu
