#include "backends/cpu_decode.h"
#include "backends/spin_pool.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

// GCC 12 warns about the deliberately undefined register inside _mm512_reduce_add_ps.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace gainrag::cpu {
namespace {

// Outputs per parallel task (the unit ATen's threads split).
constexpr int64_t kTile = 16;
// Rows of x per register block.
constexpr int64_t kRowBlock = 8;
// x rows are copied to this stride (in + kRowPad floats) when there are several: with `in` a
// multiple of 1024 the rows would otherwise sit 4 KiB apart and fight over the same L1 sets.
constexpr int64_t kRowPad = 16;

GR_AVX512 inline __m512 Load(const float* p) { return _mm512_loadu_ps(p); }
GR_AVX512 inline __m512 Load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
// bfloat16 is the high half of a float32: widen and shift.
GR_AVX512 inline __m512 Load(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
GR_AVX512 inline __m512 Load(const uint16_t* p, __mmask16 m) {
  __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// IEEE half, as stored by c10::Half (a distinct type so the loads below overload on it).
struct Half {
  uint16_t bits;
};
GR_AVX512 inline __m512 Load(const Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
GR_AVX512 inline __m512 Load(const Half* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }

inline float ToFloat(float v) { return v; }
inline float ToFloat(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// Keeps v in a register: without it GCC folds the x loads into the FMAs as memory operands and
// reloads each x vector once per output, which makes the loop load-bound.
#define GR_KEEP_IN_REGISTER(v) asm volatile("" : "+v"(v))

// R rows of x (stride ldx) times O consecutive rows of w starting at output o0, prefetching
// (into L2) the same columns of the rows `ahead` outputs further on. Measured on this machine's
// 2-core VM, its hardware prefetcher alone keeps too few lines in flight once a loop spends
// more than a few instructions per cache line: at 8 rows the product ran at 10-12 GB/s, with
// the software prefetch at 20 (rows 2-4: 20-23 -> 25-31 GB/s).
template <int R, int O, typename W>
GR_AVX512 void Block(const float* x, int64_t ldx, int64_t in, const W* w, int64_t o0, int64_t ahead, float* y,
                     int64_t ldy, bool acc) {
  __m512 a[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) a[r][o] = _mm512_setzero_ps();
  const W* wr = w + o0 * in;
  const char* pf = reinterpret_cast<const char*>(wr + ahead * in);
  constexpr int64_t kLine = 64 / int64_t(sizeof(W));  // elements per cache line
  int64_t k = 0;
  for (; k + 16 <= in; k += 16) {
    if (ahead > 0 && k % kLine == 0) {
#pragma GCC unroll 8
      for (int o = 0; o < O; ++o) _mm_prefetch(pf + (o * in + k) * int64_t(sizeof(W)), _MM_HINT_T1);
    }
    __m512 wv[O];
#pragma GCC unroll 8
    for (int o = 0; o < O; ++o) wv[o] = Load(wr + o * in + k);
    if constexpr (R * O + R + O <= 30) {
      __m512 xv[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        xv[r] = Load(x + r * ldx + k);
        GR_KEEP_IN_REGISTER(xv[r]);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
        for (int o = 0; o < O; ++o) a[r][o] = _mm512_fmadd_ps(xv[r], wv[o], a[r][o]);
      }
    } else {
      // Too few registers for all of x at once (8 rows x 3 outputs): one x row at a time,
      // each used for all O outputs.
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        __m512 xv = Load(x + r * ldx + k);
        GR_KEEP_IN_REGISTER(xv);
#pragma GCC unroll 8
        for (int o = 0; o < O; ++o) a[r][o] = _mm512_fmadd_ps(xv, wv[o], a[r][o]);
      }
    }
  }
  if (k < in) {
    const __mmask16 m = __mmask16((1u << (in - k)) - 1);
    __m512 wv[O];
    for (int o = 0; o < O; ++o) wv[o] = Load(wr + o * in + k, m);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = Load(x + r * ldx + k, m);
      for (int o = 0; o < O; ++o) a[r][o] = _mm512_fmadd_ps(xv, wv[o], a[r][o]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) {
      const float s = _mm512_reduce_add_ps(a[r][o]);
      float& dst = y[r * ldy + o0 + o];
      dst = acc ? dst + s : s;
    }
}

// Outputs [o0, o1) of a matrix with `out` outputs, for R rows: groups of O, then single
// outputs. Prefetch runs two blocks ahead (8 outputs for up to 4 rows, 6 for more), never past
// the matrix's last row. For 5-8 rows, 3 outputs a block with x read one row at a time beat 2
// outputs with all of x in registers: 8 x-row loads serve 24 multiply-adds instead of 16
// (a standalone probe on the 155.7M Llama's shapes, 8 rows, 2 threads, all products of one step:
// 24.3-25.1 -> 17.1-18.4 ms; greedy decoding of 8 sequences, fp32: 181-212 -> 198-236 tokens/s).
template <int R, typename W>
GR_AVX512 void Rows(const float* x, int64_t ldx, int64_t in, const W* w, int64_t o0, int64_t o1, int64_t out,
                    float* y, int64_t ldy, bool acc) {
  constexpr int O = R <= 4 ? 4 : 3;
  constexpr int64_t kAhead = 2 * O;
  int64_t o = o0;
  for (; o + O <= o1; o += O)
    Block<R, O>(x, ldx, in, w, o, o + kAhead + O <= out ? kAhead : 0, y, ldy, acc);
  for (; o < o1; ++o) Block<R, 1>(x, ldx, in, w, o, 0, y, ldy, acc);
}

template <typename W>
GR_AVX512 void Tile(const float* x, int64_t ldx, int64_t rows, int64_t in, const W* w, int64_t o0, int64_t o1,
                    int64_t out, float* y, int64_t ldy, bool acc) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const float* xr = x + r0 * ldx;
    float* yr = y + r0 * ldy;
    switch (std::min(kRowBlock, rows - r0)) {
      case 1: Rows<1>(xr, ldx, in, w, o0, o1, out, yr, ldy, acc); break;
      case 2: Rows<2>(xr, ldx, in, w, o0, o1, out, yr, ldy, acc); break;
      case 3: Rows<3>(xr, ldx, in, w, o0, o1, out, yr, ldy, acc); break;
      case 4: Rows<4>(xr, ldx, in, w, o0, o1, out, yr, ldy, acc); break;
      case 5: Rows<5>(xr, ldx, in, w, o0, o1, out, yr, ldy, acc); break;
      case 6: Rows<6>(xr, ldx, in, w, o0, o1, out, yr, ldy, acc); break;
      case 7: Rows<7>(xr, ldx, in, w, o0, o1, out, yr, ldy, acc); break;
      default: Rows<8>(xr, ldx, in, w, o0, o1, out, yr, ldy, acc); break;
    }
  }
}

template <typename C>
GR_AVX512 float Dot(const float* a, const C* b, int64_t n) {
  __m512 s = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) s = _mm512_fmadd_ps(Load(a + k), Load(b + k), s);
  if (k < n) {
    const __mmask16 m = __mmask16((1u << (n - k)) - 1);
    s = _mm512_fmadd_ps(Load(a + k, m), Load(b + k, m), s);
  }
  return _mm512_reduce_add_ps(s);
}

// acc[0, n) += p * v[0, n)
template <typename C>
GR_AVX512 void Axpy(float p, const C* v, float* acc, int64_t n) {
  const __m512 pv = _mm512_set1_ps(p);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) _mm512_storeu_ps(acc + k, _mm512_fmadd_ps(pv, Load(v + k), Load(acc + k)));
  if (k < n) {
    const __mmask16 m = __mmask16((1u << (n - k)) - 1);
    _mm512_mask_storeu_ps(acc + k, m, _mm512_fmadd_ps(pv, Load(v + k, m), Load(acc + k, m)));
  }
}

// One (row, kv head): its rep query heads over columns [0, len).
template <typename C>
GR_AVX512 void AttendGroup(const float* q, const C* k, const C* v, int64_t rep, int64_t len, int64_t hd, float scale,
                           float* out, std::vector<float>* scores) {
  scores->resize(size_t(len));
  float* s = scores->data();
  for (int64_t h = 0; h < rep; ++h) {
    const float* qh = q + h * hd;
    float mx = -INFINITY;
    for (int64_t j = 0; j < len; ++j) {
      s[j] = Dot(qh, k + j * hd, hd) * scale;
      mx = std::max(mx, s[j]);
    }
    float sum = 0.f;
    for (int64_t j = 0; j < len; ++j) sum += (s[j] = std::exp(s[j] - mx));
    const float inv = 1.f / sum;
    float* oh = out + h * hd;
    std::fill(oh, oh + hd, 0.f);
    for (int64_t j = 0; j < len; ++j) Axpy(s[j] * inv, v + j * hd, oh, hd);
  }
}

template <typename W>
GR_AVX512 void RmsNormRow(const float* x, int64_t n, const W* weight, float eps, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float r = 1.f / std::sqrt(float(ss / double(n)) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * r * ToFloat(weight[i]);
}

}  // namespace

bool Avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl");
  return ok;
}

void Gemv(const float* x, int64_t rows, int64_t in, const void* w, Elem we, int64_t out, float* y, int64_t ldy,
          bool accumulate) {
  if (rows <= 0 || out <= 0) return;
  // Several rows: a padded copy of x (at most a few hundred KiB per decode step).
  std::vector<float> padded;
  int64_t ldx = in;
  if (rows > 1) {
    ldx = in + kRowPad;
    padded.assign(size_t(rows * ldx), 0.f);
    for (int64_t r = 0; r < rows; ++r) std::copy(x + r * in, x + (r + 1) * in, padded.data() + r * ldx);
    x = padded.data();
  }
  const int64_t tiles = (out + kTile - 1) / kTile;
  SpinParallelFor(tiles, [&](int64_t t0, int64_t t1) {
    const int64_t o0 = t0 * kTile, o1 = std::min(out, t1 * kTile);
    if (we == Elem::kBF16) Tile(x, ldx, rows, in, static_cast<const uint16_t*>(w), o0, o1, out, y, ldy, accumulate);
    else Tile(x, ldx, rows, in, static_cast<const float*>(w), o0, o1, out, y, ldy, accumulate);
  });
}

void RmsNormRows(const float* x, int64_t rows, int64_t n, const void* weight, Elem we, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    if (we == Elem::kBF16) RmsNormRow(x + r * n, n, static_cast<const uint16_t*>(weight), eps, y + r * n);
    else RmsNormRow(x + r * n, n, static_cast<const float*>(weight), eps, y + r * n);
  }
}

void DecodeAttention(const float* q, const void* k_cache, const void* v_cache, Elem ce, int64_t rows,
                     int64_t kv_heads, int64_t rep, int64_t capacity, int64_t hd, const int64_t* pos, float scale,
                     float* out) {
  SpinParallelFor(rows * kv_heads, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t r = i / kv_heads, g = i % kv_heads;
      const int64_t cache_off = (r * kv_heads + g) * capacity * hd, q_off = (r * kv_heads + g) * rep * hd;
      if (ce == Elem::kBF16) {
        const uint16_t* kc = static_cast<const uint16_t*>(k_cache) + cache_off;
        const uint16_t* vc = static_cast<const uint16_t*>(v_cache) + cache_off;
        AttendGroup(q + q_off, kc, vc, rep, pos[r] + 1, hd, scale, out + q_off, &scores);
      } else if (ce == Elem::kF16) {
        const Half* kc = static_cast<const Half*>(k_cache) + cache_off;
        const Half* vc = static_cast<const Half*>(v_cache) + cache_off;
        AttendGroup(q + q_off, kc, vc, rep, pos[r] + 1, hd, scale, out + q_off, &scores);
      } else {
        const float* kc = static_cast<const float*>(k_cache) + cache_off;
        const float* vc = static_cast<const float*>(v_cache) + cache_off;
        AttendGroup(q + q_off, kc, vc, rep, pos[r] + 1, hd, scale, out + q_off, &scores);
      }
    }
  });
}

}  // namespace gainrag::cpu
