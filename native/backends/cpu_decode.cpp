#include "backends/cpu_decode.h"
#include "backends/spin_pool.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

// GCC 12 warns about the deliberately undefined register inside _mm512_reduce_add_ps.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace gainrag::cpu {
namespace {

// Outputs per parallel task (the unit the threads split).
constexpr int64_t kTile = 16;
// x rows are copied to this stride (in + kRowPad floats) when there are several: with `in` a
// multiple of 1024 the rows would otherwise sit 4 KiB apart and fight over the same L1 sets.
constexpr int64_t kRowPad = 16;

// IEEE half, as stored by c10::Half (a distinct type so the loads below overload on it).
struct Half {
  uint16_t bits;
};

inline float ToFloat(float v) { return v; }
inline float ToFloat(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// ---- AVX-512 (F, BW, VL): 16 lanes, 32 registers, masked tails ----
namespace avx512 {
#define GR_TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))
#define GR_KEEP_IN_REGISTER(v) asm volatile("" : "+v"(v))
using Vec = __m512;
constexpr int64_t kLanes = 16;
constexpr int kVecRegs = 32;
constexpr int64_t kRowBlock = 8;
// For 5-8 rows, 3 outputs a block with x read one row at a time beat 2 outputs with all of x in
// registers: 8 x-row loads serve 24 multiply-adds instead of 16 (a standalone probe on the
// 155.7M Llama's shapes, 8 rows, 2 threads, all products of one step: 24.3-25.1 -> 17.1-18.4 ms).
constexpr int BlockOutputs(int rows) { return rows <= 4 ? 4 : 3; }

GR_TARGET inline __mmask16 Mask(int64_t n) { return __mmask16((1u << unsigned(n)) - 1u); }
GR_TARGET inline Vec Zero() { return _mm512_setzero_ps(); }
GR_TARGET inline Vec Set1(float f) { return _mm512_set1_ps(f); }
GR_TARGET inline Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
GR_TARGET inline float Sum(Vec v) { return _mm512_reduce_add_ps(v); }
GR_TARGET inline Vec Load(const float* p) { return _mm512_loadu_ps(p); }
GR_TARGET inline Vec LoadTail(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(Mask(n), p); }
// bfloat16 is the high half of a float32: widen and shift.
GR_TARGET inline Vec Widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
GR_TARGET inline Vec Load(const uint16_t* p) { return Widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
GR_TARGET inline Vec LoadTail(const uint16_t* p, int64_t n) { return Widen(_mm256_maskz_loadu_epi16(Mask(n), p)); }
GR_TARGET inline Vec Load(const Half* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
GR_TARGET inline Vec LoadTail(const Half* p, int64_t n) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(Mask(n), p)); }
GR_TARGET inline void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
GR_TARGET inline void StoreTail(float* p, Vec v, int64_t n) { _mm512_mask_storeu_ps(p, Mask(n), v); }

#include "backends/cpu_decode_kernels.inc"
#undef GR_TARGET
#undef GR_KEEP_IN_REGISTER
}  // namespace avx512

// ---- AVX2 + FMA + F16C: 8 lanes, 16 registers; tails go through a small zeroed buffer ----
namespace avx2 {
#define GR_TARGET __attribute__((target("avx2,fma,f16c")))
#define GR_KEEP_IN_REGISTER(v) asm volatile("" : "+x"(v))
using Vec = __m256;
constexpr int64_t kLanes = 8;
constexpr int kVecRegs = 16;
constexpr int64_t kRowBlock = 4;
// Accumulators R * O plus O weight vectors plus one x vector within 16 registers.
constexpr int BlockOutputs(int rows) { return rows <= 2 ? 4 : rows == 3 ? 3 : 2; }

GR_TARGET inline Vec Zero() { return _mm256_setzero_ps(); }
GR_TARGET inline Vec Set1(float f) { return _mm256_set1_ps(f); }
GR_TARGET inline Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
GR_TARGET inline float Sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
GR_TARGET inline Vec Load(const float* p) { return _mm256_loadu_ps(p); }
GR_TARGET inline Vec Widen(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
GR_TARGET inline Vec Load(const uint16_t* p) { return Widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
GR_TARGET inline Vec Load(const Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
template <typename T>
GR_TARGET inline Vec LoadTail(const T* p, int64_t n) {
  T buf[kLanes] = {};
  for (int64_t i = 0; i < n; ++i) buf[i] = p[i];
  return Load(buf);
}
GR_TARGET inline void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
GR_TARGET inline void StoreTail(float* p, Vec v, int64_t n) {
  float buf[kLanes];
  _mm256_storeu_ps(buf, v);
  for (int64_t i = 0; i < n; ++i) p[i] = buf[i];
}

#include "backends/cpu_decode_kernels.inc"
#undef GR_TARGET
#undef GR_KEEP_IN_REGISTER
}  // namespace avx2

DecodeIsa Detect() {
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return DecodeIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return DecodeIsa::kAvx2;
  return DecodeIsa::kNone;
}

std::atomic<DecodeIsa>& ActiveIsa() {
  static std::atomic<DecodeIsa> isa{Detect()};
  return isa;
}

}  // namespace

bool Avx512() {
  static const bool ok = Detect() == DecodeIsa::kAvx512;
  return ok;
}

DecodeIsa DetectedDecodeIsa() { return Detect(); }
DecodeIsa ActiveDecodeIsa() { return ActiveIsa().load(std::memory_order_relaxed); }
bool DecodeKernels() { return ActiveDecodeIsa() != DecodeIsa::kNone; }

void SetDecodeIsa(DecodeIsa isa) {
  ActiveIsa().store(std::min(isa, Detect()), std::memory_order_relaxed);
}

const char* DecodeIsaName(DecodeIsa isa) {
  switch (isa) {
    case DecodeIsa::kAvx512: return "avx512";
    case DecodeIsa::kAvx2: return "avx2";
    default: return "none";
  }
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
  const bool wide = ActiveDecodeIsa() == DecodeIsa::kAvx512;
  SpinParallelFor(tiles, [&](int64_t t0, int64_t t1) {
    const int64_t o0 = t0 * kTile, o1 = std::min(out, t1 * kTile);
    if (wide) avx512::GemvTiles(x, ldx, rows, in, w, we, o0, o1, out, y, ldy, accumulate);
    else avx2::GemvTiles(x, ldx, rows, in, w, we, o0, o1, out, y, ldy, accumulate);
  });
}

void RmsNormRows(const float* x, int64_t rows, int64_t n, const void* weight, Elem we, float eps, float* y) {
  const bool wide = ActiveDecodeIsa() == DecodeIsa::kAvx512;
  for (int64_t r = 0; r < rows; ++r) {
    if (wide) avx512::RmsNormRowAny(x + r * n, n, weight, we, eps, y + r * n);
    else avx2::RmsNormRowAny(x + r * n, n, weight, we, eps, y + r * n);
  }
}

void DecodeAttention(const float* q, const void* k_cache, const void* v_cache, Elem ce, int64_t rows,
                     int64_t kv_heads, int64_t rep, int64_t capacity, int64_t hd, const int64_t* pos, float scale,
                     float* out) {
  const size_t esize = ce == Elem::kF32 ? 4 : 2;
  const bool wide = ActiveDecodeIsa() == DecodeIsa::kAvx512;
  SpinParallelFor(rows * kv_heads, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t r = i / kv_heads, g = i % kv_heads;
      const int64_t cache_off = (r * kv_heads + g) * capacity * hd, q_off = (r * kv_heads + g) * rep * hd;
      const void* kc = static_cast<const char*>(k_cache) + size_t(cache_off) * esize;
      const void* vc = static_cast<const char*>(v_cache) + size_t(cache_off) * esize;
      if (wide) avx512::AttendGroupAny(q + q_off, kc, vc, ce, rep, pos[r] + 1, hd, scale, out + q_off, &scores);
      else avx2::AttendGroupAny(q + q_off, kc, vc, ce, rep, pos[r] + 1, hd, scale, out + q_off, &scores);
    }
  });
}

}  // namespace gainrag::cpu
