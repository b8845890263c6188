// The per-row passes around the oneDNN products (packed_linear.cpp): int8 input quantisation
// and int32 -> float32 rescaling, and the bf16x3 split of float32 rows; each as an AVX-512, an
// AVX2 (int8 passes) and a portable loop, equal bit for bit, the widest the CPU runs chosen once.
#include "backends/dnnl/row_passes.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cpu_decode.h"
#include "backends/dnnl/packed_linear.h"
#include "core/error.h"

namespace gainrag::onednn {
namespace {

// GCC 12 flags the undefined-initialised vectors inside its own intrinsic headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Row kernels: called only where the CPU runs them (Rows()); a portable loop serves other CPUs.
// fp-contract=off: no fused multiply-add where the portable loops have none, so both give the same bits.
#define GR_AVX512 __attribute__((target("avx512f,avx512vl"), optimize("fp-contract=off")))
#define GR_AVX2 __attribute__((target("avx2"), optimize("fp-contract=off")))

enum class RowIsa { kPortable, kAvx2, kAvx512 };
RowIsa DetectRowIsa() {
  if (cpu::Avx512()) return RowIsa::kAvx512;
  return cpu::DetectedDecodeIsa() == cpu::DecodeIsa::kAvx2 ? RowIsa::kAvx2 : RowIsa::kPortable;
}
RowIsa Rows() {
  static const RowIsa isa = DetectRowIsa();
  return isa;
}

// Row r of x [M, K] to u8 codes over the row's own range: lo = min(min x, 0), hi = max(max x, 0),
// s = (hi - lo) / (2 levels), zero = round(-lo / s), q = round(x / s) + zero, which lies in
// [0, 2 levels + 1] (0..255 with 8-bit codes, 0..127 with 7-bit ones: round(lo / s) = -round(-lo / s),
// and two roundings add at most 1). A row of one sign (a GELU's or ReLU's output: min ~ -0.17)
// gets twice the resolution of codes symmetric about zero; a symmetric row gets the same.
// (round half away from zero, as the vector rows below.)
// A row of zeros, or one so small that 1 / s is not a float (denormal rows), codes as zeros.
Int8RowCode CodeFor(float lo, float hi, Int8InputCode c) {
  const float s = (hi - lo) / float(2 * c.levels);
  if (!(hi > lo) || !std::isfinite(1.f / s)) return Int8RowCode{1.f, 0};
  return Int8RowCode{s, static_cast<int32_t>(-lo / s + 0.5f)};
}

// Elements [k0, K) of a row whose scale is 1 / inv (also the vector rows' tails).
void QuantizeValues(const float* xr, uint8_t* q, int64_t k0, int64_t K, float inv, int32_t zero) {
  for (int64_t k = k0; k < K; ++k) {
    const float v = xr[k] * inv;
    q[k] = static_cast<uint8_t>(zero + static_cast<int>(v + (v >= 0.f ? 0.5f : -0.5f)));
  }
}

Int8RowCode QuantizeRowPortable(const float* xr, uint8_t* q, int64_t K, Int8InputCode c) {
  float lo = 0.f, hi = 0.f;
  for (int64_t k = 0; k < K; ++k) lo = std::min(lo, xr[k]), hi = std::max(hi, xr[k]);
  const Int8RowCode code = CodeFor(lo, hi, c);
  QuantizeValues(xr, q, 0, K, 1.f / code.scale, code.zero);
  return code;
}

// The same row, 16 at a time; equal to the portable row bit for bit (same operations, same
// order within each element; min and max are exact in any order).
GR_AVX512 Int8RowCode QuantizeRowAvx512(const float* xr, uint8_t* q, int64_t K, Int8InputCode c) {
  __m512 vmin = _mm512_setzero_ps(), vmax = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m512 v = _mm512_loadu_ps(xr + k);
    vmin = _mm512_min_ps(vmin, v), vmax = _mm512_max_ps(vmax, v);
  }
  float lo = _mm512_reduce_min_ps(vmin), hi = _mm512_reduce_max_ps(vmax);
  for (; k < K; ++k) lo = std::min(lo, xr[k]), hi = std::max(hi, xr[k]);
  const Int8RowCode code = CodeFor(lo, hi, c);
  const float inv = 1.f / code.scale;
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i half = _mm512_castps_si512(_mm512_set1_ps(0.5f)), sign = _mm512_set1_epi32(int32_t(0x80000000u));
  const __m512i zero = _mm512_set1_epi32(code.zero);
  for (k = 0; k + 16 <= K; k += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(xr + k), vinv);
    // v + 0.5 with v's sign bit. The portable row adds -0.5 for v < 0 only; they differ for
    // v = -0.f, where both truncate to 0.
    const __m512 t = _mm512_add_ps(v, _mm512_castsi512_ps(_mm512_or_si512(half, _mm512_and_si512(_mm512_castps_si512(v), sign))));
    const __m512i qi = _mm512_add_epi32(_mm512_cvttps_epi32(t), zero);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(qi));
  }
  QuantizeValues(xr, q, k, K, inv, code.zero);
  return code;
}

// The same row, 8 at a time (AVX2; equal to the portable row bit for bit, as above).
GR_AVX2 Int8RowCode QuantizeRowAvx2(const float* xr, uint8_t* q, int64_t K, Int8InputCode c) {
  const __m256 sign_ps = _mm256_set1_ps(-0.f);
  __m256 vmin = _mm256_setzero_ps(), vmax = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_loadu_ps(xr + k);
    vmin = _mm256_min_ps(vmin, v), vmax = _mm256_max_ps(vmax, v);
  }
  float lo_lanes[8], hi_lanes[8];
  _mm256_storeu_ps(lo_lanes, vmin);
  _mm256_storeu_ps(hi_lanes, vmax);
  float lo = 0.f, hi = 0.f;
  for (int i = 0; i < 8; ++i) lo = std::min(lo, lo_lanes[i]), hi = std::max(hi, hi_lanes[i]);
  for (; k < K; ++k) lo = std::min(lo, xr[k]), hi = std::max(hi, xr[k]);
  const Int8RowCode code = CodeFor(lo, hi, c);
  const float inv = 1.f / code.scale;
  const __m256 vinv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f);
  const __m256i zero = _mm256_set1_epi32(code.zero);
  for (k = 0; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + k), vinv);
    const __m256 t = _mm256_add_ps(v, _mm256_or_ps(half, _mm256_and_ps(v, sign_ps)));  // v + 0.5 with v's sign
    const __m256i qi = _mm256_add_epi32(_mm256_cvttps_epi32(t), zero);  // 0..255: the packs below keep it
    const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packus_epi16(w16, w16));
  }
  QuantizeValues(xr, q, k, K, inv, code.zero);
  return code;
}

Int8RowCode QuantizeRowWith(RowIsa isa, const float* x, uint8_t* q, int64_t K, Int8InputCode c) {
  switch (isa) {
    case RowIsa::kAvx512: return QuantizeRowAvx512(x, q, K, c);
    case RowIsa::kAvx2: return QuantizeRowAvx2(x, q, K, c);
    default: return QuantizeRowPortable(x, q, K, c);
  }
}

// y holds the int32 sums of the codes q x Wq of one row (q = round(x / s) + zero); rewritten in
// place as float32: (sum - zero * colsum[n]) * s * col_scale[n] + bias[n].
void RescaleRowPortable(void* y, float s, const float* col_scale, const int32_t* colsum, const float* bias, int64_t N,
                        int32_t zero) {
  const int32_t* acc = static_cast<const int32_t*>(y);
  float* out = static_cast<float*>(y);
  for (int64_t n = 0; n < N; ++n) out[n] = float(acc[n] - zero * colsum[n]) * (s * col_scale[n]) + bias[n];
}

// One row in place, 16 at a time (multiply then add, as the portable loop: no FMA contraction).
GR_AVX512 void RescaleRowAvx512(void* y, float s, const float* col_scale, const int32_t* colsum, const float* bias,
                                int64_t N, int32_t zero) {
  const int32_t* acc = static_cast<const int32_t*>(y);
  float* yr = static_cast<float*>(y);
  const __m512 vs = _mm512_set1_ps(s);
  const __m512i off = _mm512_set1_epi32(zero);
  int64_t n = 0;
  for (; n + 16 <= N; n += 16) {
    const __m512i a = _mm512_sub_epi32(_mm512_loadu_si512(acc + n), _mm512_mullo_epi32(_mm512_loadu_si512(colsum + n), off));
    const __m512 scale = _mm512_mul_ps(vs, _mm512_loadu_ps(col_scale + n));
    _mm512_storeu_ps(yr + n, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), scale), _mm512_loadu_ps(bias + n)));
  }
  RescaleRowPortable(yr + n, s, col_scale + n, colsum + n, bias + n, N - n, zero);
}

// The same row, 8 at a time (AVX2, multiply then add).
GR_AVX2 void RescaleRowAvx2(void* y, float s, const float* col_scale, const int32_t* colsum, const float* bias,
                            int64_t N, int32_t zero) {
  const int32_t* acc = static_cast<const int32_t*>(y);
  float* yr = static_cast<float*>(y);
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i off = _mm256_set1_epi32(zero);
  int64_t n = 0;
  for (; n + 8 <= N; n += 8) {
    const __m256i a = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + n)),
                                       _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum + n)), off));
    const __m256 scale = _mm256_mul_ps(vs, _mm256_loadu_ps(col_scale + n));
    _mm256_storeu_ps(yr + n, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), scale), _mm256_loadu_ps(bias + n)));
  }
  RescaleRowPortable(yr + n, s, col_scale + n, colsum + n, bias + n, N - n, zero);
}

void RescaleRowWith(RowIsa isa, void* y, float s, const float* scale, const int32_t* colsum, const float* bias,
                    int64_t n, int32_t zero) {
  switch (isa) {
    case RowIsa::kAvx512: RescaleRowAvx512(y, s, scale, colsum, bias, n, zero); break;
    case RowIsa::kAvx2: RescaleRowAvx2(y, s, scale, colsum, bias, n, zero); break;
    default: RescaleRowPortable(y, s, scale, colsum, bias, n, zero);
  }
}

// bf16 of v rounded to nearest even, as bits (v finite; NaN and inf never reach a product
// whose output is usable anyway).
inline uint16_t Bf16Bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float Bf16Value(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// Elements [k0, K) of SplitRowAvx512's output (the portable row, and the AVX-512 row's tail).
void SplitValues(const float* x, uint16_t* d, int64_t k0, int64_t K) {
  for (int64_t k = k0; k < K; ++k) {
    const uint16_t h = Bf16Bits(x[k]);
    d[k] = h;
    d[K + k] = h;
    d[2 * K + k] = Bf16Bits(x[k] - Bf16Value(h));
  }
}

// The same rounding on 16 floats at once.
GR_AVX512 inline __m512i Bf16Bits16(__m512i u) {
  const __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
  return _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
}

// x [K] -> d [3K] as bf16 bits: [hi(x) | hi(x) | lo(x)], which against the weights packed as
// [hi(W) | lo(W) | hi(W)] sums to hi hi + hi lo + lo hi.
GR_AVX512 void SplitRowAvx512(const float* x, uint16_t* d, int64_t K) {
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m512 v = _mm512_loadu_ps(x + k);
    const __m512i h = Bf16Bits16(_mm512_castps_si512(v));
    const __m512 rest = _mm512_sub_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
    const __m256i h16 = _mm512_cvtepi32_epi16(h);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k), h16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + K + k), h16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 2 * K + k), _mm512_cvtepi32_epi16(Bf16Bits16(_mm512_castps_si512(rest))));
  }
  SplitValues(x, d, k, K);
}

void SplitRowPortable(const float* x, uint16_t* d, int64_t K) { SplitValues(x, d, 0, K); }

}  // namespace

// Without VNNI (AVX512-VNNI, AVX-VNNI; every AMX CPU has AVX512-VNNI) oneDNN's u8 x s8 kernels
// multiply through vpmaddubsw, whose int16 sums of adjacent products saturate: with 8-bit inputs
// (1..255) and weights +-127 a pair reaches 2 x 255 x 127 = 64770 (measured on an AVX2-only AMD
// EPYC: int8 Llama logits off by 42% of the logit scale). There the inputs are coded in 7 bits
// instead (0..127), so a pair is at most 2 x 127 x 127 = 32258 < 32767: the int16 sums
// are exact and the products equal what VNNI computes on the same codes. The bit comes off the
// inputs rather than the weights because that measured closer to float32 on llama-tiny (logits
// 4.0% of their scale off transformers' against 4.5% with 6-bit weights; 8 bits: 2.8%), and it
// keeps the quantised weights (Int8Matrix) the same on every CPU.
bool CpuHasVnni() {
  static const bool ok = __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
  return ok;
}

namespace {

// GAINRAG_INT8_INPUT_BITS=7 codes the inputs in 7 bits on a VNNI CPU as well. The products are
// exact on either kind of CPU, so this computes here, bit for bit in the integer sums, what a CPU
// without VNNI computes: how bench/dtype-accuracy.ts measures the 7-bit accuracy on a VNNI
// machine. GAINRAG_INT8_INPUT_BITS=8 on a CPU without VNNI opts into 8-bit codes there, whose
// products then run on the engine's own AVX2 kernel (Int8OwnProducts): more accurate, slower
// than oneDNN's. Nothing else is accepted.
struct InputBitsSetting {
  int32_t levels = 0;
  std::string error;  // non-empty: the environment asks for something this CPU cannot do
};

const InputBitsSetting& InputBits() {
  static const InputBitsSetting setting = [] {
    InputBitsSetting s;
    s.levels = CpuHasVnni() ? 127 : 63;
    const char* env = std::getenv("GAINRAG_INT8_INPUT_BITS");
    if (env == nullptr || *env == '\0') return s;
    const std::string v = env;
    if (v == "7") {
      s.levels = 63;
    } else if (v == "8" && (CpuHasVnni() || cpu::DetectedDecodeIsa() != cpu::DecodeIsa::kNone)) {
      // Without VNNI the products then run on the engine's signed AVX2 kernel, not oneDNN's
      // (Int8OwnProducts): exact on 8-bit codes, one instruction more per 32 products.
      s.levels = 127;
    } else if (v == "8") {
      s.error = "GAINRAG_INT8_INPUT_BITS=8 needs VNNI or AVX2, which this CPU lacks";
    } else {
      s.error = "GAINRAG_INT8_INPUT_BITS must be 7 or 8, got '" + v + "'";
    }
    return s;
  }();
  return setting;
}

}  // namespace

Int8InputCode Int8Inputs() {
  const InputBitsSetting& s = InputBits();
  GR_CHECK(s.error.empty(), kInvalidArgument, s.error);
  return Int8InputCode{s.levels};
}

Int8RowCode QuantizeRowU8(const float* x, uint8_t* q, int64_t k) { return QuantizeRowWith(Rows(), x, q, k, Int8Inputs()); }

void RescaleRow(void* y, Int8RowCode code, const float* scale, const int32_t* colsum, const float* bias, int64_t n) {
  RescaleRowWith(Rows(), y, code.scale, scale, colsum, bias, n, code.zero);
}

void QuantizeRows(const float* x, uint8_t* dst, Int8RowCode* codes, int64_t M, int64_t K) {
  const RowIsa isa = Rows();
  const Int8InputCode c = Int8Inputs();
  at::parallel_for(0, M, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) codes[r] = QuantizeRowWith(isa, x + r * K, dst + r * K, K, c);
  });
}

void RescaleRows(void* y, const Int8RowCode* codes, const float* col_scale, const int32_t* colsum, const float* bias,
                 int64_t M, int64_t N) {
  const RowIsa isa = Rows();
  at::parallel_for(0, M, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      RescaleRowWith(isa, static_cast<int32_t*>(y) + r * N, codes[r].scale, col_scale, colsum, bias, N, codes[r].zero);
    }
  });
}

void SplitRows(const float* x, uint16_t* dst, int64_t M, int64_t K) {
  const bool wide = cpu::Avx512();
  at::parallel_for(0, M, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) wide ? SplitRowAvx512(x + r * K, dst + r * 3 * K, K) : SplitRowPortable(x + r * K, dst + r * 3 * K, K);
  });
}

int64_t RowKernelMismatches(int64_t rows, int64_t k, uint32_t seed) {
  const RowIsa isa = Rows();
  if (isa == RowIsa::kPortable) return 0;
  at::manual_seed(seed);
  // Values at many scales, exact halves after scaling, zeros and negative zeros.
  at::Tensor x = at::randn({rows, k}) * at::exp(at::randn({rows, 1}) * 3.0);
  x.index_put_({0}, at::zeros({k}));
  if (rows > 1) x.index_put_({1}, -at::zeros({k}));
  // Rows of one sign, whose codes are not centred on zero.
  if (rows > 2) x.index_put_({2}, x[2].abs());
  if (rows > 3) x.index_put_({3}, at::gelu(x[3]));
  const float* xp = x.data_ptr<float>();
  std::vector<uint8_t> qa(static_cast<size_t>(k)), qb(static_cast<size_t>(k));
  std::vector<uint16_t> sa(static_cast<size_t>(3 * k)), sb(static_cast<size_t>(3 * k));
  at::Tensor acc = at::randint(-(1 << 20), 1 << 20, {k}, at::kInt), colsum = at::randint(-5000, 5000, {k}, at::kInt);
  at::Tensor col_scale = at::rand({k}) * 1e-3, bias = at::randn({k});
  std::vector<int32_t> ya(static_cast<size_t>(k)), yb(static_cast<size_t>(k));
  int64_t bad = 0;
  // Both input codes, whichever this CPU uses; on an AVX-512 CPU the AVX2 rows as well.
  std::vector<RowIsa> isas{isa};
  if (isa == RowIsa::kAvx512) isas.push_back(RowIsa::kAvx2);
  for (RowIsa vec : isas) {
    for (Int8InputCode c : {Int8InputCode{127}, Int8InputCode{63}}) {
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = xp + r * k;
        const Int8RowCode s1 = QuantizeRowWith(vec, xr, qa.data(), k, c), s2 = QuantizeRowPortable(xr, qb.data(), k, c);
        bad += s1.scale != s2.scale || s1.zero != s2.zero;
        for (int64_t i = 0; i < k; ++i) bad += qa[size_t(i)] != qb[size_t(i)] || qa[size_t(i)] > 2 * c.levels + 1;
        std::memcpy(ya.data(), acc.data_ptr<int32_t>(), size_t(k) * 4);
        std::memcpy(yb.data(), acc.data_ptr<int32_t>(), size_t(k) * 4);
        RescaleRowWith(vec, ya.data(), s1.scale, col_scale.data_ptr<float>(), colsum.data_ptr<int32_t>(), bias.data_ptr<float>(), k, s1.zero);
        RescaleRowPortable(yb.data(), s1.scale, col_scale.data_ptr<float>(), colsum.data_ptr<int32_t>(), bias.data_ptr<float>(), k, s1.zero);
        bad += std::memcmp(ya.data(), yb.data(), size_t(k) * 4) != 0;
      }
    }
  }
  if (isa == RowIsa::kAvx512) {
    for (int64_t r = 0; r < rows; ++r) {
      SplitRowAvx512(xp + r * k, sa.data(), k);
      SplitRowPortable(xp + r * k, sb.data(), k);
      for (int64_t i = 0; i < 3 * k; ++i) bad += sa[size_t(i)] != sb[size_t(i)];
    }
  }
  return bad;
}

}  // namespace gainrag::onednn
