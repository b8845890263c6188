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

GR_AVX512 void SiluMulRowAvx512(const float* g, const float* u, int64_t n, float* y) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + j);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_mask_storeu_ps(y + j, m, _mm512_div_ps(_mm512_mul_ps(gv, _mm512_maskz_loadu_ps(m, u + j)), _mm512_add_ps(one, e)));
  }
}

GR_AVX512 void ExpAvx512(const float* x, int64_t n, float* y) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = Tail(n - j);
    _mm512_mask_storeu_ps(y + j, m, Exp(_mm512_maskz_loadu_ps(m, x + j)));
  }
}

// AVX2 + FMA: the same arithmetic on 8 lanes. Without AVX-512's masks, a row's tail is loaded
// with vmaskmov (lanes past the row read as 0 and are never written); without scalef, 2^k
// is applied as two factors built in the exponent bits, 2^(k/2) and then 2^(k - k/2): each is a
// normal float for every k the clamp allows (-126..128), where 2^k itself is not (2^128), so
// both multiplications are exact, as scalef is.
#define GR_AVX2 __attribute__((target("avx2,fma")))

// vmaskmov only for a row's last partial register: a masked store is far slower than a plain
// one on some cores (on AMD's, a third of the softmax's time went to it).
GR_AVX2 inline __m256i Tail8(int64_t left) {
  alignas(32) static const int32_t kLanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLanes + 8 - std::min<int64_t>(left, 8)));
}
// Lanes past the row read as 0.
GR_AVX2 inline __m256 Load8(const float* p, int64_t left) {
  return left >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, Tail8(left));
}
GR_AVX2 inline void Store8(float* p, int64_t left, __m256 v) {
  if (left >= 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, Tail8(left), v);
}
// All ones in the lanes inside the row.
GR_AVX2 inline __m256 Inside8(int64_t left) {
  return left >= 8 ? _mm256_castsi256_ps(_mm256_set1_epi32(-1)) : _mm256_castsi256_ps(Tail8(left));
}

GR_AVX2 inline __m256 Exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);  // false for NaN, so NaN is kept
  x = _mm256_min_ps(_mm256_set1_ps(88.7f), _mm256_max_ps(lo, x));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 5040.f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  // A NaN lane converts to INT_MIN; its p is NaN already, so the garbage factors do not matter.
  const __m256i ki = _mm256_cvtps_epi32(k);
  const __m256i half = _mm256_srai_epi32(ki, 1), rest = _mm256_sub_epi32(ki, half);
  const __m256i bias = _mm256_set1_epi32(127);
  p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23)));
  p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23)));
  return _mm256_andnot_ps(under, p);
}

GR_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

GR_AVX2 inline float Max8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

GR_AVX2 void SoftmaxRowAvx2(float* x, int64_t n) {
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 mx = neg_inf;
  for (int64_t j = 0; j < n; j += 8)
    mx = _mm256_max_ps(mx, _mm256_blendv_ps(neg_inf, Load8(x + j, n - j), Inside8(n - j)));
  const __m256 top = _mm256_set1_ps(Max8(mx));
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 e = _mm256_and_ps(Exp8(_mm256_sub_ps(Load8(x + j, n - j), top)), Inside8(n - j));
    Store8(x + j, n - j, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(1.f / Sum8(sum));
  for (int64_t j = 0; j < n; j += 8) Store8(x + j, n - j, _mm256_mul_ps(Load8(x + j, n - j), inv));
}

GR_AVX2 void AddLayerNormRowAvx2(const float* a, const float* res, int64_t n, const float* gamma, const float* beta,
                                 float eps, float* y) {
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 t = _mm256_add_ps(Load8(a + j, n - j), Load8(res + j, n - j));
    Store8(y + j, n - j, t);
    sum = _mm256_add_ps(sum, t);  // lanes past the row loaded as 0
  }
  const __m256 mean = _mm256_set1_ps(Sum8(sum) / float(n));
  __m256 sq = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 d = _mm256_and_ps(_mm256_sub_ps(Load8(y + j, n - j), mean), Inside8(n - j));
    sq = _mm256_fmadd_ps(d, d, sq);
  }
  const __m256 rstd = _mm256_set1_ps(1.f / std::sqrt(Sum8(sq) / float(n) + eps));
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 d = _mm256_mul_ps(_mm256_sub_ps(Load8(y + j, n - j), mean), rstd);
    Store8(y + j, n - j, _mm256_fmadd_ps(d, Load8(gamma + j, n - j), Load8(beta + j, n - j)));
  }
}

GR_AVX2 void SiluMulRowAvx2(const float* g, const float* u, int64_t n, float* y) {
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 gv = Load8(g + j, n - j);
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
    Store8(y + j, n - j, _mm256_div_ps(_mm256_mul_ps(gv, Load8(u + j, n - j)), _mm256_add_ps(one, e)));
  }
}

GR_AVX2 void ExpAvx2(const float* x, int64_t n, float* y) {
  for (int64_t j = 0; j < n; j += 8) Store8(y + j, n - j, Exp8(Load8(x + j, n - j)));
}

}  // namespace

void SoftmaxRows(float* x, int64_t rows, int64_t n) {
  if (rows <= 0 || n <= 0) return;
  const DecodeIsa isa = ActiveDecodeIsa();
  at::parallel_for(0, rows, Grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * n;
      isa == DecodeIsa::kAvx512 ? SoftmaxRowAvx512(xr, n) : isa == DecodeIsa::kAvx2 ? SoftmaxRowAvx2(xr, n) : SoftmaxRowPortable(xr, n);
    }
  });
}

void AddLayerNormRows(const float* a, const float* residual, int64_t rows, int64_t n, const float* gamma,
                      const float* beta, float eps, float* y) {
  if (rows <= 0 || n <= 0) return;
  const DecodeIsa isa = ActiveDecodeIsa();
  at::parallel_for(0, rows, Grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *ar = a + r * n, *rr = residual + r * n;
      float* yr = y + r * n;
      if (isa == DecodeIsa::kAvx512) AddLayerNormRowAvx512(ar, rr, n, gamma, beta, eps, yr);
      else if (isa == DecodeIsa::kAvx2) AddLayerNormRowAvx2(ar, rr, n, gamma, beta, eps, yr);
      else AddLayerNormRowPortable(ar, rr, n, gamma, beta, eps, yr);
    }
  });
}

void SiluMulRows(const float* gate_up, int64_t rows, int64_t n, float* out) {
  if (rows <= 0 || n <= 0) return;
  const DecodeIsa isa = ActiveDecodeIsa();
  // A decode step's few rows stay on the calling thread: waking ATen's team for ~20K floats
  // would cost more than the loop (and the step's own pool is spinning meanwhile).
  const int64_t grain = rows * n < (int64_t(1) << 16) ? rows : Grain(n);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *g = gate_up + r * 2 * n, *u = g + n;
      float* y = out + r * n;
      if (isa == DecodeIsa::kAvx512) SiluMulRowAvx512(g, u, n, y);
      else if (isa == DecodeIsa::kAvx2) SiluMulRowAvx2(g, u, n, y);
      else
        for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
    }
  });
}

void RotateHalfHeads(float* x, int64_t heads, int64_t hd, const float* cos, const float* sin) {
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * hd;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void ExpVector(const float* x, int64_t n, float* y) {
  if (n <= 0) return;
  const DecodeIsa isa = ActiveDecodeIsa();
  if (isa == DecodeIsa::kAvx512) return ExpAvx512(x, n, y);
  if (isa == DecodeIsa::kAvx2) return ExpAvx2(x, n, y);
  // The same contract as the vector path: 0 below the float32 normal range (std::exp would
  // return a denormal there), NaN kept.
  for (int64_t j = 0; j < n; ++j) y[j] = x[j] < -87.3f ? 0.f : std::exp(x[j]);
}

}  // namespace gainrag::cpu
