#include "backends/dnnl/packed_linear.h"

#include <ATen/Parallel.h>

#include <dnnl.hpp>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>
#include <utility>

#include "backends/cpu_decode.h"
#include "core/error.h"

namespace gainrag::onednn {
namespace {

using dnnl::memory;
using tag = memory::format_tag;

// GCC 12 flags the undefined-initialised vectors inside its own intrinsic headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Row kernels: called only where the CPU runs them (Rows()); a portable loop serves other CPUs.
// fp-contract=off: no fused multiply-add where the portable loops have none, so both give the same bits.
#define GR_AVX512 __attribute__((target("avx512f,avx512vl"), optimize("fp-contract=off")))
#define GR_AVX2 __attribute__((target("avx2"), optimize("fp-contract=off")))

// Rows of the product the weights are packed for. The blocked weight layout oneDNN's brgemm
// kernels choose depends on (in, out, precision), not on the row count (checked for 1..13568
// rows on BERT shapes), so one packing serves every batch.
constexpr int64_t kPackRows = 256;
// A product of M rows runs as one of floor(M / kRowStep) * kRowStep rows plus a tail of fewer
// than kRowStep rows, so at most ~M / kRowStep + kRowStep distinct shapes ever get compiled
// (each costs ~0.2-2 ms to create) however ragged the batches are.
constexpr int64_t kRowStep = 64;
// Compiled primitives kept process-wide; beyond this the cache is cleared and refilled.
constexpr size_t kMaxPrimitives = 2048;

const dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::data_type DataType(at::ScalarType t) {
  return t == at::kBFloat16 ? memory::data_type::bf16 : t == at::kChar ? memory::data_type::s8 : memory::data_type::f32;
}

const char* PrecisionName(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kChar ? "int8" : "float32";
}

dnnl::algorithm Algorithm(Epilogue e) {
  switch (e) {
    case Epilogue::kGeluErf: return dnnl::algorithm::eltwise_gelu_erf;
    case Epilogue::kGeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case Epilogue::kRelu: return dnnl::algorithm::eltwise_relu;
    case Epilogue::kNone: break;
  }
  return dnnl::algorithm::undef;
}

dnnl::primitive_attr Attributes(Epilogue e) {
  dnnl::primitive_attr attr;
  // Scratch memory comes with each call, so one primitive can run on several threads at once.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (e != Epilogue::kNone) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f, Algorithm(e), 0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// The product's output: float32, except a bfloat16 product with an activation (the FFN's up
// product), whose output only ever feeds the next bfloat16 product. Writing it as bfloat16
// rounds it exactly as that product's input conversion did (to nearest even), and halves the
// bytes of the largest activation ([rows, intermediate]) written and read.
// A bf16x3 product (split) is a float32 layer: its output is float32 whatever the epilogue.
memory::data_type OutputType(at::ScalarType precision, Epilogue e, bool split) {
  if (precision == at::kChar) return memory::data_type::s32;  // exact; rescaled in place to float32 after
  return precision == at::kBFloat16 && e != Epilogue::kNone && !split ? memory::data_type::bf16
                                                                      : memory::data_type::f32;
}

// int8 inputs go in as u8 (the quantised row + 128): u8 x s8 is the form VNNI and AMX-INT8 take
// natively. With s8 inputs oneDNN must add 128 itself and subtract a compensation it computed
// from the weights on every call, in plain C++: measured on one decode row of a 155.7M Llama,
// 82% of the time went there. The 128 x column-sum correction is applied in RescaleRows instead.
memory::data_type SourceType(at::ScalarType precision) {
  return precision == at::kChar ? memory::data_type::u8 : DataType(precision);
}

// weights: a concrete layout, or format_tag::any to let oneDNN choose (packing).
// int8 has neither bias nor post-ops: oneDNN 2.6 runs a per-row scale post-op (and runtime
// output scales) only in its reference kernels, so the rescaling is our own pass (RescaleRows).
// split: a bf16x3 product, K already the tripled depth (precision kBFloat16).
dnnl::matmul::primitive_desc Describe(int64_t M, int64_t K, int64_t N, at::ScalarType precision, Epilogue e,
                                      const memory::desc& weights, bool split = false) {
  memory::desc src({M, K}, SourceType(precision), tag::ab);
  memory::desc bias({1, N}, memory::data_type::f32, tag::ab);
  memory::desc dst({M, N}, OutputType(precision, e, split), tag::ab);
  if (precision == at::kChar) {
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), Attributes(Epilogue::kNone), Engine());
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, bias, dst), Attributes(e), Engine());
}

// Without VNNI (AVX512-VNNI, AVX-VNNI; every AMX CPU has AVX512-VNNI) oneDNN's u8 x s8 kernels
// multiply through vpmaddubsw, whose int16 sums of adjacent products saturate: with 8-bit inputs
// (1..255) and weights +-127 a pair reaches 2 x 255 x 127 = 64770 (measured on an AVX2-only AMD
// EPYC: int8 Llama logits off by 42% of the logit scale). There the inputs are coded in 7 bits
// instead (1..127 around 64), so a pair is at most 2 x 127 x 127 = 32258 < 32767: the int16 sums
// are exact and the products equal what VNNI computes on the same codes. The bit comes off the
// inputs rather than the weights because that measured closer to float32 on llama-tiny (logits
// 4.0% of their scale off transformers' against 4.5% with 6-bit weights; 8 bits: 2.8%), and it
// keeps the quantised weights (Int8Matrix) the same on every CPU.
bool HasVnni() {
  static const bool ok = __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
  return ok;
}

enum class RowIsa { kPortable, kAvx2, kAvx512 };
RowIsa DetectRowIsa() {
  if (cpu::Avx512()) return RowIsa::kAvx512;
  return cpu::DetectedDecodeIsa() == cpu::DecodeIsa::kAvx2 ? RowIsa::kAvx2 : RowIsa::kPortable;
}
RowIsa Rows() {
  static const RowIsa isa = DetectRowIsa();
  return isa;
}

// Row r of x [M, K] to u8: round(x / scale[r]) + c.offset, scale[r] = max |x[r, :]| / c.levels,
// so 1..2 levels + 1 (1..255 with 8-bit codes, 1..127 with 7-bit ones).
// (round half away from zero, as the vector rows below.)
// Elements [k0, K) of a row whose scale is 1 / inv (also the AVX-512 row's tail).
void QuantizeValues(const float* xr, uint8_t* q, int64_t k0, int64_t K, float inv, int32_t offset) {
  for (int64_t k = k0; k < K; ++k) {
    const float v = xr[k] * inv;
    q[k] = static_cast<uint8_t>(offset + static_cast<int>(v + (v >= 0.f ? 0.5f : -0.5f)));  // |v| <= levels
  }
}

float QuantizeRowPortable(const float* xr, uint8_t* q, int64_t K, Int8InputCode c) {
  float amax = 0.f;
  for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
  const float s = amax > 0.f ? amax / float(c.levels) : 1.f;
  QuantizeValues(xr, q, 0, K, 1.f / s, c.offset);
  return s;
}

// The same row, 16 at a time; equal to the portable row bit for bit (same operations, same
// order within each element; the max is exact in any order).
GR_AVX512 float QuantizeRowAvx512(const float* xr, uint8_t* q, int64_t K, Int8InputCode c) {
  __m512 vmax = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(xr + k)));
  float amax = _mm512_reduce_max_ps(vmax);
  for (; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
  const float s = amax > 0.f ? amax / float(c.levels) : 1.f, inv = 1.f / s;
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i half = _mm512_castps_si512(_mm512_set1_ps(0.5f)), sign = _mm512_set1_epi32(int32_t(0x80000000u));
  const __m512i offset = _mm512_set1_epi32(c.offset);
  for (k = 0; k + 16 <= K; k += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(xr + k), vinv);
    // v + 0.5 with v's sign bit. The portable row adds -0.5 for v < 0 only; they differ for
    // v = -0.f, where both truncate to 0.
    const __m512 t = _mm512_add_ps(v, _mm512_castsi512_ps(_mm512_or_si512(half, _mm512_and_si512(_mm512_castps_si512(v), sign))));
    const __m512i qi = _mm512_add_epi32(_mm512_cvttps_epi32(t), offset);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(qi));
  }
  QuantizeValues(xr, q, k, K, inv, c.offset);
  return s;
}

// The same row, 8 at a time (AVX2; equal to the portable row bit for bit, as above).
GR_AVX2 float QuantizeRowAvx2(const float* xr, uint8_t* q, int64_t K, Int8InputCode c) {
  const __m256 sign_ps = _mm256_set1_ps(-0.f);
  __m256 vmax = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign_ps, _mm256_loadu_ps(xr + k)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  float amax = _mm_cvtss_f32(m4);
  for (; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
  const float s = amax > 0.f ? amax / float(c.levels) : 1.f, inv = 1.f / s;
  const __m256 vinv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f);
  const __m256i offset = _mm256_set1_epi32(c.offset);
  for (k = 0; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + k), vinv);
    const __m256 t = _mm256_add_ps(v, _mm256_or_ps(half, _mm256_and_ps(v, sign_ps)));  // v + 0.5 with v's sign
    const __m256i qi = _mm256_add_epi32(_mm256_cvttps_epi32(t), offset);  // 1..255: the packs below keep it
    const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packus_epi16(w16, w16));
  }
  QuantizeValues(xr, q, k, K, inv, c.offset);
  return s;
}

float QuantizeRowWith(RowIsa isa, const float* x, uint8_t* q, int64_t K, Int8InputCode c) {
  switch (isa) {
    case RowIsa::kAvx512: return QuantizeRowAvx512(x, q, K, c);
    case RowIsa::kAvx2: return QuantizeRowAvx2(x, q, K, c);
    default: return QuantizeRowPortable(x, q, K, c);
  }
}

void QuantizeRows(const float* x, uint8_t* dst, float* scale, int64_t M, int64_t K) {
  const RowIsa isa = Rows();
  const Int8InputCode c = Int8Inputs();
  at::parallel_for(0, M, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) scale[r] = QuantizeRowWith(isa, x + r * K, dst + r * K, K, c);
  });
}

// y holds the int32 sums of the codes (q + offset) x Wq; rewritten in place as float32:
// (sum - offset * colsum[n]) * row_scale[r] * col_scale[n] + bias[n].
void RescaleRowPortable(void* y, float s, const float* col_scale, const int32_t* colsum, const float* bias, int64_t N,
                        int32_t offset) {
  const int32_t* acc = static_cast<const int32_t*>(y);
  float* out = static_cast<float*>(y);
  for (int64_t n = 0; n < N; ++n) out[n] = float(acc[n] - offset * colsum[n]) * (s * col_scale[n]) + bias[n];
}

// One row in place, 16 at a time (multiply then add, as the portable loop: no FMA contraction).
GR_AVX512 void RescaleRowAvx512(void* y, float s, const float* col_scale, const int32_t* colsum, const float* bias,
                                int64_t N, int32_t offset) {
  const int32_t* acc = static_cast<const int32_t*>(y);
  float* yr = static_cast<float*>(y);
  const __m512 vs = _mm512_set1_ps(s);
  const __m512i off = _mm512_set1_epi32(offset);
  int64_t n = 0;
  for (; n + 16 <= N; n += 16) {
    const __m512i a = _mm512_sub_epi32(_mm512_loadu_si512(acc + n), _mm512_mullo_epi32(_mm512_loadu_si512(colsum + n), off));
    const __m512 scale = _mm512_mul_ps(vs, _mm512_loadu_ps(col_scale + n));
    _mm512_storeu_ps(yr + n, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), scale), _mm512_loadu_ps(bias + n)));
  }
  RescaleRowPortable(yr + n, s, col_scale + n, colsum + n, bias + n, N - n, offset);
}

// The same row, 8 at a time (AVX2, multiply then add).
GR_AVX2 void RescaleRowAvx2(void* y, float s, const float* col_scale, const int32_t* colsum, const float* bias,
                            int64_t N, int32_t offset) {
  const int32_t* acc = static_cast<const int32_t*>(y);
  float* yr = static_cast<float*>(y);
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i off = _mm256_set1_epi32(offset);
  int64_t n = 0;
  for (; n + 8 <= N; n += 8) {
    const __m256i a = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + n)),
                                       _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum + n)), off));
    const __m256 scale = _mm256_mul_ps(vs, _mm256_loadu_ps(col_scale + n));
    _mm256_storeu_ps(yr + n, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), scale), _mm256_loadu_ps(bias + n)));
  }
  RescaleRowPortable(yr + n, s, col_scale + n, colsum + n, bias + n, N - n, offset);
}

void RescaleRowWith(RowIsa isa, void* y, float s, const float* scale, const int32_t* colsum, const float* bias,
                    int64_t n, int32_t offset) {
  switch (isa) {
    case RowIsa::kAvx512: RescaleRowAvx512(y, s, scale, colsum, bias, n, offset); break;
    case RowIsa::kAvx2: RescaleRowAvx2(y, s, scale, colsum, bias, n, offset); break;
    default: RescaleRowPortable(y, s, scale, colsum, bias, n, offset);
  }
}

void RescaleRows(void* y, const float* row_scale, const float* col_scale, const int32_t* colsum, const float* bias,
                 int64_t M, int64_t N) {
  const RowIsa isa = Rows();
  const int32_t offset = Int8Inputs().offset;
  at::parallel_for(0, M, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      RescaleRowWith(isa, static_cast<int32_t*>(y) + r * N, row_scale[r], col_scale, colsum, bias, N, offset);
    }
  });
}

}  // namespace

Int8InputCode Int8Inputs() {
  return HasVnni() ? Int8InputCode{127, 128} : Int8InputCode{63, 64};
}

float QuantizeRowU8(const float* x, uint8_t* q, int64_t k) { return QuantizeRowWith(Rows(), x, q, k, Int8Inputs()); }

void RescaleRow(void* y, float s, const float* scale, const int32_t* colsum, const float* bias, int64_t n) {
  RescaleRowWith(Rows(), y, s, scale, colsum, bias, n, Int8Inputs().offset);
}

namespace {

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

void SplitRows(const float* x, uint16_t* dst, int64_t M, int64_t K) {
  const bool wide = cpu::Avx512();
  at::parallel_for(0, M, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) wide ? SplitRowAvx512(x + r * K, dst + r * 3 * K, K) : SplitRowPortable(x + r * K, dst + r * 3 * K, K);
  });
}

struct Compiled {
  dnnl::matmul primitive;
  size_t scratch_bytes = 0;
};

using Key = std::tuple<int64_t, int64_t, int64_t, int, int>;
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 0;
    auto mix = [&](int64_t v) { h = h * 1000003u ^ std::hash<int64_t>()(v); };
    mix(std::get<0>(k)), mix(std::get<1>(k)), mix(std::get<2>(k)), mix(std::get<3>(k)), mix(std::get<4>(k));
    return h;
  }
};

// Compiled primitives by key, built once per key (two callers racing on a new key both build;
// the first stored wins) and dropped all at once past kMaxPrimitives.
class PrimitiveCache {
 public:
  template <class Build>
  std::shared_ptr<Compiled> GetOrBuild(const Key& key, Build build) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    std::shared_ptr<Compiled> c = build();
    std::lock_guard<std::mutex> lock(mu_);
    if (cache_.size() >= kMaxPrimitives) cache_.clear();
    return cache_.emplace(key, c).first->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<Key, std::shared_ptr<Compiled>, KeyHash> cache_;
};

}  // namespace

struct PackedLinear::Impl {
  int64_t in = 0, out = 0;
  // Of the oneDNN product: kBFloat16 for a bf16x3 layer (split), whose depth is 3 x in.
  at::ScalarType precision = at::kFloat;
  bool split = false;
  bool plain = false;  // int8 weights read in their [out, in] rows (PackInt8 plain), not reordered
  int64_t depth() const { return split ? 3 * in : in; }
  Epilogue epilogue = Epilogue::kNone;
  memory::desc weights_desc;
  at::Tensor weights;  // bytes in weights_desc's layout (ATen's CPU allocator aligns to 64)
  at::Tensor bias;     // float32 [out]
  at::Tensor weight_scale;  // int8: float32 [out], W[o, :] ~ weight_scale[o] * Wq[o, :]
  at::Tensor weight_colsum;  // int8: int32 [out], sum over k of Wq[o, k] (the u8 offset's correction)

  // One primitive per (rows, in, out, precision, epilogue), shared by every layer of that shape.
  std::shared_ptr<Compiled> Get(int64_t M) const {
    static PrimitiveCache cache;
    return cache.GetOrBuild(Key{M, depth(), out, int(precision) | int(split) << 8 | int(plain) << 9, int(epilogue)}, [&] {
      auto c = std::make_shared<Compiled>();
      try {
        auto pd = Describe(M, depth(), out, precision, epilogue, weights_desc, split);
        GR_CHECK(pd.weights_desc() == weights_desc, kInternal, "oneDNN wants another weight layout for ", M, " rows");
        c->scratch_bytes = pd.scratchpad_desc().get_size();
        c->primitive = dnnl::matmul(pd);
      } catch (const dnnl::error& e) {
        GR_FAIL(kUnsupported, "oneDNN matmul [", M, ", ", in, "] x [", in, ", ", out, "]: ", e.what());
      }
      return c;
    });
  }

  // rows [M, in] at src -> [M, out] at dst.
  void Run(const void* src, void* dst, int64_t M, dnnl::stream& stream) const {
    std::shared_ptr<Compiled> c = Get(M);
    const dnnl::engine& eng = Engine();
    memory src_m({{M, depth()}, SourceType(precision), tag::ab}, eng, const_cast<void*>(src));
    memory dst_m({{M, out}, OutputType(precision, epilogue, split), tag::ab}, eng, dst);
    memory w_m(weights_desc, eng, weights.data_ptr());
    at::Tensor scratch = at::empty({int64_t(c->scratch_bytes)}, at::kByte);
    memory s_m({{int64_t(c->scratch_bytes)}, memory::data_type::u8, tag::a}, eng, scratch.data_ptr());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, s_m}};
    if (precision != at::kChar) {
      args.emplace(DNNL_ARG_BIAS, memory({{1, out}, memory::data_type::f32, tag::ab}, eng, bias.data_ptr()));
    }
    c->primitive.execute(stream, args);
    stream.wait();
  }
};

PackedLinear::PackedLinear(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PackedLinear::~PackedLinear() = default;
int64_t PackedLinear::in_features() const { return impl_->in; }
int64_t PackedLinear::out_features() const { return impl_->out; }

bool Supports(at::ScalarType precision) {
  if (precision != at::kFloat && precision != at::kBFloat16 && precision != at::kChar) return false;
  try {
    Describe(kPackRows, 64, 64, precision, Epilogue::kNone, memory::desc({64, 64}, DataType(precision), tag::any));
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

bool SupportsBf16x3() { return Supports(at::kBFloat16); }

int64_t RowKernelMismatches(int64_t rows, int64_t k, uint32_t seed) {
  const RowIsa isa = Rows();
  if (isa == RowIsa::kPortable) return 0;
  at::manual_seed(seed);
  // Values at many scales, exact halves after scaling, zeros and negative zeros.
  at::Tensor x = at::randn({rows, k}) * at::exp(at::randn({rows, 1}) * 3.0);
  x.index_put_({0}, at::zeros({k}));
  if (rows > 1) x.index_put_({1}, -at::zeros({k}));
  const float* xp = x.data_ptr<float>();
  std::vector<uint8_t> qa(static_cast<size_t>(k)), qb(static_cast<size_t>(k));
  std::vector<uint16_t> sa(static_cast<size_t>(3 * k)), sb(static_cast<size_t>(3 * k));
  at::Tensor acc = at::randint(-(1 << 20), 1 << 20, {k}, at::kInt), colsum = at::randint(-5000, 5000, {k}, at::kInt);
  at::Tensor col_scale = at::rand({k}) * 1e-3, bias = at::randn({k});
  std::vector<int32_t> ya(static_cast<size_t>(k)), yb(static_cast<size_t>(k));
  int64_t bad = 0;
  // Both input codes, whichever this CPU uses.
  for (Int8InputCode c : {Int8InputCode{127, 128}, Int8InputCode{63, 64}}) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xp + r * k;
      const float s1 = QuantizeRowWith(isa, xr, qa.data(), k, c), s2 = QuantizeRowPortable(xr, qb.data(), k, c);
      bad += s1 != s2;
      for (int64_t i = 0; i < k; ++i) bad += qa[size_t(i)] != qb[size_t(i)];
      std::memcpy(ya.data(), acc.data_ptr<int32_t>(), size_t(k) * 4);
      std::memcpy(yb.data(), acc.data_ptr<int32_t>(), size_t(k) * 4);
      RescaleRowWith(isa, ya.data(), s1, col_scale.data_ptr<float>(), colsum.data_ptr<int32_t>(), bias.data_ptr<float>(), k, c.offset);
      RescaleRowPortable(yb.data(), s1, col_scale.data_ptr<float>(), colsum.data_ptr<int32_t>(), bias.data_ptr<float>(), k, c.offset);
      bad += std::memcmp(ya.data(), yb.data(), size_t(k) * 4) != 0;
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

std::string KernelName(at::ScalarType precision) {
  try {
    auto pd = Describe(kPackRows, 768, 768, precision, Epilogue::kNone,
                       memory::desc({768, 768}, DataType(precision), tag::any));
    return pd.impl_info_str();
  } catch (const dnnl::error&) {
    return "";
  }
}

Int8Matrix QuantizeInt8(const at::Tensor& weight, const at::Tensor& bias) {
  GR_CHECK(weight.dim() == 2 && bias.dim() == 1 && bias.size(0) == weight.size(0), kShape, "int8 linear: weight ",
           weight.sizes(), " and bias ", bias.sizes(), " do not form a layer");
  Int8Matrix m;
  at::Tensor w32 = weight.to(at::kCPU, at::kFloat);
  at::Tensor amax = w32.abs().amax({1});
  m.scale = at::where(amax > 0, amax / 127.0, at::ones_like(amax)).contiguous();
  m.w = at::round(w32 / m.scale.unsqueeze(1)).clamp_(-127, 127).to(at::kChar).contiguous();
  m.colsum = m.w.to(at::kInt).sum({1}, false, at::kInt).contiguous();
  m.bias = bias.to(at::kCPU, at::kFloat).clone();  // owned: not a view that keeps a checkpoint mapped
  return m;
}

Int8Matrix StackInt8(const std::vector<Int8Matrix>& parts) {
  std::vector<at::Tensor> w, scale, colsum, bias;
  for (const Int8Matrix& p : parts) w.push_back(p.w), scale.push_back(p.scale), colsum.push_back(p.colsum), bias.push_back(p.bias);
  return Int8Matrix{at::cat(w, 0).contiguous(), at::cat(scale).contiguous(), at::cat(colsum).contiguous(),
                    at::cat(bias).contiguous()};
}

bool Int8PlainWeights() { return !HasVnni(); }

std::shared_ptr<const PackedLinear> PackedLinear::PackInt8(const Int8Matrix& m, Epilogue epilogue, bool plain) {
  auto impl = std::make_unique<Impl>();
  impl->out = m.w.size(0);
  impl->in = m.w.size(1);
  impl->precision = at::kChar;
  impl->epilogue = epilogue;
  impl->bias = m.bias;
  impl->weight_scale = m.scale;
  impl->weight_colsum = m.colsum;
  if (plain) {
    // W^T [in, out] is m.w [out, in] read column-major; oneDNN reads it in place (m.w's storage
    // is shared, not copied).
    GR_CHECK(m.w.is_contiguous() && m.w.scalar_type() == at::kChar, kInvalidArgument, "int8 linear: plain weights must be a contiguous int8 matrix");
    impl->plain = true;
    impl->weights_desc = memory::desc({impl->in, impl->out}, memory::data_type::s8, tag::ba);
    impl->weights = m.w;
    try {
      (void)Describe(kPackRows, impl->in, impl->out, at::kChar, epilogue, impl->weights_desc);
    } catch (const dnnl::error& e) {
      GR_FAIL(kUnsupported, "oneDNN cannot build an int8 matmul on plain weights on this CPU (", e.what(), ")");
    }
  } else {
    PackWeights(impl.get(), m.w, false);
  }
  return std::shared_ptr<const PackedLinear>(new PackedLinear(std::move(impl)));
}

std::shared_ptr<const PackedLinear> PackedLinear::Pack(const at::Tensor& weight, const at::Tensor& bias,
                                                      at::ScalarType precision, Epilogue epilogue, bool bf16x3) {
  GR_CHECK(weight.dim() == 2 && bias.dim() == 1 && bias.size(0) == weight.size(0), kShape,
           "packed linear: weight ", weight.sizes(), " and bias ", bias.sizes(), " do not form a layer");
  GR_CHECK(precision == at::kFloat || precision == at::kBFloat16 || precision == at::kChar, kInvalidArgument,
           "oneDNN linear layers run in float32, bfloat16 or int8");
  GR_CHECK(!bf16x3 || precision == at::kFloat, kInvalidArgument, "bf16x3 products are float32 layers");
  if (precision == at::kChar) return PackInt8(QuantizeInt8(weight, bias), epilogue);
  auto impl = std::make_unique<Impl>();
  impl->out = weight.size(0);
  impl->in = weight.size(1);
  impl->split = bf16x3;
  // bfloat16 where oneDNN has only float32 kernels (AVX2): W rounded to bf16 once and packed
  // widened, x and the product float32, as LinearUnpacked widens per call. LibTorch 1.13's own
  // bf16 GEMM is scalar there (bert-tiny: 6.6 s for 256 passages against float32's 0.21 s).
  static const bool bf16_kernel = Supports(at::kBFloat16);
  const bool widen = precision == at::kBFloat16 && !bf16_kernel;
  impl->precision = bf16x3 ? at::kBFloat16 : widen ? at::kFloat : precision;
  impl->epilogue = epilogue;
  impl->bias = bias.to(at::kCPU, at::kFloat).contiguous();
  at::Tensor w;
  if (bf16x3) {
    // [hi(W) | lo(W) | hi(W)] along the input dimension, rounded as SplitRows rounds x.
    at::Tensor w32 = weight.to(at::kCPU, at::kFloat).contiguous();
    at::Tensor hi = w32.to(at::kBFloat16);
    at::Tensor lo = (w32 - hi.to(at::kFloat)).to(at::kBFloat16);
    w = at::cat({hi, lo, hi}, 1).contiguous();
  } else if (widen) {
    w = weight.to(at::kCPU, at::kBFloat16).to(at::kFloat).contiguous();
  } else {
    w = weight.to(at::kCPU, precision).contiguous();
  }
  PackWeights(impl.get(), w, bf16x3);
  return std::shared_ptr<const PackedLinear>(new PackedLinear(std::move(impl)));
}

void PackedLinear::PackWeights(Impl* impl, const at::Tensor& w, bool bf16x3) {
  const at::ScalarType precision = impl->precision;
  try {
    const int64_t depth = impl->depth();
    auto pd = Describe(kPackRows, depth, impl->out, precision, impl->epilogue,
                       memory::desc({depth, impl->out}, DataType(precision), tag::any), bf16x3);
    impl->weights_desc = pd.weights_desc();
    // W^T [in, out] is W [out, in] read column-major: format "ba" over (in, out).
    const dnnl::engine& eng = Engine();
    memory plain({{depth, impl->out}, DataType(precision), tag::ba}, eng, const_cast<void*>(w.data_ptr()));
    impl->weights = at::empty({int64_t(impl->weights_desc.get_size())}, at::kByte);
    memory packed(impl->weights_desc, eng, impl->weights.data_ptr());
    dnnl::stream stream(eng);
    dnnl::reorder(plain, packed).execute(stream, plain, packed);
    stream.wait();
  } catch (const dnnl::error& e) {
    GR_FAIL(kUnsupported, "oneDNN cannot build a ", PrecisionName(precision), " matmul on this CPU (", e.what(), ")");
  }
}

at::Tensor PackedLinear::Forward(const at::Tensor& x_in) const {
  const Impl& p = *impl_;
  GR_CHECK(x_in.dim() >= 1 && x_in.size(-1) == p.in, kShape, "packed linear expects [..., ", p.in, "], got ",
           x_in.sizes());
  // oneDNN runs on OpenMP, whose team size is per calling thread; this sets it from LibTorch's
  // setting on threads (libuv workers) that have not run a parallel ATen op yet.
  (void)at::get_num_threads();
  const bool int8 = p.precision == at::kChar;
  at::Tensor x = x_in.to(at::kCPU, int8 || p.split ? at::kFloat : p.precision).reshape({-1, p.in}).contiguous();
  const int64_t M = x.size(0);
  std::vector<int64_t> sizes = x_in.sizes().vec();
  sizes.back() = p.out;
  const bool bf16_out = OutputType(p.precision, p.epilogue, p.split) == memory::data_type::bf16;
  // (int8: oneDNN writes int32 here, RescaleRows turns it into float32 in place.)
  at::Tensor y = at::empty({M, p.out}, bf16_out ? at::kBFloat16 : at::kFloat);
  if (M == 0) return y.view(sizes);
  at::Tensor row_scale;
  if (int8) {
    at::Tensor q = at::empty({M, p.in}, at::kByte);
    row_scale = at::empty({M}, at::kFloat);
    QuantizeRows(x.data_ptr<float>(), q.data_ptr<uint8_t>(), row_scale.data_ptr<float>(), M, p.in);
    x = q;
  } else if (p.split) {
    at::Tensor parts = at::empty({M, 3 * p.in}, at::kBFloat16);
    SplitRows(x.data_ptr<float>(), reinterpret_cast<uint16_t*>(parts.data_ptr()), M, p.in);
    x = parts;
  }
  thread_local dnnl::stream stream(Engine());
  const int64_t tail = M > kRowStep ? M % kRowStep : 0;
  const int64_t head = M - tail;
  const size_t elem = x.element_size();
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(y.data_ptr());
  p.Run(src, dst, head, stream);
  if (tail > 0) {
    const size_t head_in = size_t(head) * size_t(p.depth()) * elem, head_out = size_t(head) * size_t(p.out) * y.element_size();
    p.Run(src + head_in, dst + head_out, tail, stream);
  }
  if (int8) {
    RescaleRows(y.data_ptr(), row_scale.data_ptr<float>(), p.weight_scale.data_ptr<float>(),
                p.weight_colsum.data_ptr<int32_t>(), p.bias.data_ptr<float>(), M, p.out);
    switch (p.epilogue) {
      case Epilogue::kGeluErf: at::gelu_(y); break;
      case Epilogue::kGeluTanh: at::gelu_(y, "tanh"); break;
      case Epilogue::kRelu: at::relu_(y); break;
      case Epilogue::kNone: break;
    }
  }
  return y.view(sizes);
}

namespace {

// Compiled products over unpacked weights, keyed by (rows, in, out, precision, has bias).
std::shared_ptr<Compiled> UnpackedPrimitive(int64_t M, int64_t K, int64_t N, at::ScalarType precision, bool bias) {
  static PrimitiveCache cache;
  return cache.GetOrBuild(Key{M, K, N, int(precision), int(bias)}, [&] {
    auto c = std::make_shared<Compiled>();
    try {
      const memory::data_type dt = DataType(precision);
      memory::desc src({M, K}, dt, tag::ab), weights({K, N}, dt, tag::ba), dst({M, N}, memory::data_type::f32, tag::ab);
      auto desc = bias ? dnnl::matmul::desc(src, weights, memory::desc({1, N}, memory::data_type::f32, tag::ab), dst)
                       : dnnl::matmul::desc(src, weights, dst);
      dnnl::matmul::primitive_desc pd(desc, Attributes(Epilogue::kNone), Engine());
      c->scratch_bytes = pd.scratchpad_desc().get_size();
      c->primitive = dnnl::matmul(pd);
    } catch (const dnnl::error& e) {
      GR_FAIL(kUnsupported, "oneDNN matmul [", M, ", ", K, "] x [", K, ", ", N, "]: ", e.what());
    }
    return c;
  });
}

}  // namespace

bool SupportsBf16Weights() {
  static const bool ok = Supports(at::kBFloat16) || Supports(at::kFloat);
  return ok;
}

at::Tensor LinearUnpacked(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in) {
  GR_CHECK(weight_in.dim() == 2 && weight_in.is_contiguous() && weight_in.is_cpu() &&
               (weight_in.scalar_type() == at::kFloat || weight_in.scalar_type() == at::kBFloat16),
           kInvalidArgument, "oneDNN unpacked linear: weight must be a contiguous CPU float32/bfloat16 matrix");
  static const bool bf16_kernel = Supports(at::kBFloat16);
  // No bf16 kernel: widen W for this call (2 bytes read, 4 written per weight, against the
  // product's 2 x rows flops per weight).
  const at::Tensor weight = weight_in.scalar_type() == at::kBFloat16 && !bf16_kernel ? weight_in.to(at::kFloat) : weight_in;
  const at::ScalarType precision = weight.scalar_type();
  const int64_t N = weight.size(0), K = weight.size(1);
  GR_CHECK(x_in.dim() >= 1 && x_in.size(-1) == K, kShape, "linear expects [..., ", K, "], got ", x_in.sizes());
  (void)at::get_num_threads();  // OpenMP team size for this thread (see PackedLinear::Forward)
  at::Tensor x = x_in.to(at::kCPU, precision).reshape({-1, K}).contiguous();
  at::Tensor bias = bias_in.defined() ? bias_in.to(at::kCPU, at::kFloat).contiguous() : at::Tensor();
  const int64_t M = x.size(0);
  std::vector<int64_t> sizes = x_in.sizes().vec();
  sizes.back() = N;
  at::Tensor y = at::empty({M, N}, at::kFloat);
  if (M == 0) return y.view(sizes);
  thread_local dnnl::stream stream(Engine());
  const dnnl::engine& eng = Engine();
  const int64_t tail = M > kRowStep ? M % kRowStep : 0;
  const size_t elem = x.element_size();
  int64_t row = 0;
  for (int64_t part : {M - tail, tail}) {
    if (part == 0) continue;
    std::shared_ptr<Compiled> c = UnpackedPrimitive(part, K, N, precision, bias.defined());
    memory src_m({{part, K}, DataType(precision), tag::ab}, eng, static_cast<char*>(x.data_ptr()) + size_t(row * K) * elem);
    memory w_m({{K, N}, DataType(precision), tag::ba}, eng, weight.data_ptr());
    memory dst_m({{part, N}, memory::data_type::f32, tag::ab}, eng, y.data_ptr<float>() + row * N);
    at::Tensor scratch = at::empty({int64_t(c->scratch_bytes)}, at::kByte);
    memory s_m({{int64_t(c->scratch_bytes)}, memory::data_type::u8, tag::a}, eng, scratch.data_ptr());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, s_m}};
    if (bias.defined()) args.emplace(DNNL_ARG_BIAS, memory({{1, N}, memory::data_type::f32, tag::ab}, eng, bias.data_ptr()));
    c->primitive.execute(stream, args);
    stream.wait();
    row += part;
  }
  return y.view(sizes);
}

}  // namespace gainrag::onednn
