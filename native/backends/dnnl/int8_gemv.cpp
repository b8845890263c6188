#include "backends/dnnl/int8_gemv.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "backends/cpu_decode.h"
#include "backends/dnnl/row_passes.h"
#include "backends/spin_pool.h"
#include "core/error.h"

// GCC 12 warns about the deliberately undefined register inside _mm512_reduce_add_epi32.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GR_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define GR_AVX2 __attribute__((target("avx2")))

namespace gainrag::onednn {
namespace {

// Outputs per parallel task.
constexpr int64_t kTile = 32;
// Rows of x per register block: 4 rows x 4 outputs = 16 int32 accumulators.
constexpr int kRowBlock = 4;
constexpr int kOutBlock = 4;

// Sums of R quantised rows (stride ldq, u8) times O weight rows from w (stride in, s8) into
// acc[r * ldacc + o], prefetching (into L2) the rows `ahead` outputs further on: the weights
// are streamed from memory once per step, and the hardware prefetcher alone keeps too few lines
// in flight (as for cpu::Gemv).
template <int R, int O>
GR_VNNI void Block(const uint8_t* q, int64_t ldq, int64_t in, const int8_t* w, int64_t ahead, int32_t* acc,
                   int64_t ldacc) {
  __m512i a[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) a[r][o] = _mm512_setzero_si512();
  const char* pf = reinterpret_cast<const char*>(w + ahead * in);
  int64_t k = 0;
  for (; k + 64 <= in; k += 64) {
    if (ahead > 0) {
#pragma GCC unroll 4
      for (int o = 0; o < O; ++o) _mm_prefetch(pf + o * in + k, _MM_HINT_T1);
    }
    __m512i wv[O];
#pragma GCC unroll 4
    for (int o = 0; o < O; ++o) wv[o] = _mm512_loadu_si512(w + o * in + k);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512i xv = _mm512_loadu_si512(q + r * ldq + k);
#pragma GCC unroll 4
      for (int o = 0; o < O; ++o) a[r][o] = _mm512_dpbusd_epi32(a[r][o], xv, wv[o]);
    }
  }
  if (k < in) {
    // Weights past the row's end load as 0, so whatever the quantised rows hold there adds 0.
    const __mmask64 m = (~0ull) >> (64 - (in - k));
    __m512i wv[O];
    for (int o = 0; o < O; ++o) wv[o] = _mm512_maskz_loadu_epi8(m, w + o * in + k);
    for (int r = 0; r < R; ++r) {
      const __m512i xv = _mm512_maskz_loadu_epi8(m, q + r * ldq + k);
      for (int o = 0; o < O; ++o) a[r][o] = _mm512_dpbusd_epi32(a[r][o], xv, wv[o]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) acc[r * ldacc + o] = _mm512_reduce_add_epi32(a[r][o]);
}

// Outputs [o0, o1) for R rows: blocks of kOutBlock, then single outputs; prefetch two blocks
// ahead, never past the matrix's last row.
template <int R>
GR_VNNI void Rows(const uint8_t* q, int64_t ldq, int64_t in, const int8_t* w, int64_t o0, int64_t o1, int64_t out,
                  int32_t* acc, int64_t ldacc) {
  constexpr int64_t kAhead = 2 * kOutBlock;
  int64_t o = o0;
  for (; o + kOutBlock <= o1; o += kOutBlock)
    Block<R, kOutBlock>(q, ldq, in, w + o * in, o + kAhead + kOutBlock <= out ? kAhead : 0, acc + o, ldacc);
  for (; o < o1; ++o) Block<R, 1>(q, ldq, in, w + o * in, 0, acc + o, ldacc);
}

GR_VNNI void Sums(const uint8_t* q, int64_t ldq, int64_t rows, int64_t in, const int8_t* w, int64_t o0, int64_t o1,
                  int64_t out, int32_t* acc) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const uint8_t* qr = q + r0 * ldq;
    int32_t* ar = acc + r0 * out;
    switch (std::min<int64_t>(kRowBlock, rows - r0)) {
      case 1: Rows<1>(qr, ldq, in, w, o0, o1, out, ar, out); break;
      case 2: Rows<2>(qr, ldq, in, w, o0, o1, out, ar, out); break;
      case 3: Rows<3>(qr, ldq, in, w, o0, o1, out, ar, out); break;
      default: Rows<4>(qr, ldq, in, w, o0, o1, out, ar, out); break;
    }
  }
}

// The same sums on AVX2, 32 bytes a step: vpmaddubsw (u8 x s8, adjacent pairs summed to int16)
// then vpmaddwd by ones (int16 pairs to int32). Exact only while a pair fits int16, which the
// 7-bit input codes of CPUs without VNNI guarantee (2 x 127 x 127 = 32258; Int8Inputs), so this
// runs only with those. 16 ymm registers: R x O accumulators, O weights, one row, the ones.
GR_AVX2 inline __m256i DotStep(__m256i acc, __m256i x, __m256i w, __m256i ones) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones));
}

GR_AVX2 inline int32_t Sum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Signed: the same exact sums on 8-bit input codes (0..255), llama.cpp's way round the
// saturation: xs = q - 128 (q ^ 0x80 read as int8), then |xs| (u8, at most 128) times w with
// xs's sign moved onto it (vpsignb), so a pair is at most 2 x 128 x 127 = 32512 and fits
// int16. That gives sum xs . w; adding 128 x colsum[o] makes it sum q . w, the int32 the other
// kernels produce. One instruction more per 32 products than the 7-bit form.
template <int R, int O, bool Signed>
GR_AVX2 void BlockAvx2(const uint8_t* q, int64_t ldq, int64_t in, const int8_t* w, const int32_t* colsum, int64_t ahead,
                       int32_t* acc, int64_t ldacc) {
  __m256i a[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) a[r][o] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(char(0x80));
  const char* pf = reinterpret_cast<const char*>(w + ahead * in);
  int64_t k = 0;
  for (; k + 32 <= in; k += 32) {
    // One prefetch per 64-byte line of each weight row ahead.
    if (ahead > 0 && (k & 63) == 0) {
#pragma GCC unroll 4
      for (int o = 0; o < O; ++o) _mm_prefetch(pf + o * in + k, _MM_HINT_T1);
    }
    __m256i wv[O];
#pragma GCC unroll 4
    for (int o = 0; o < O; ++o) wv[o] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + o * in + k));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + r * ldq + k));
      if constexpr (Signed) {
        const __m256i xs = _mm256_xor_si256(xv, flip);
        const __m256i xa = _mm256_abs_epi8(xs);
#pragma GCC unroll 4
        for (int o = 0; o < O; ++o) a[r][o] = DotStep(a[r][o], xa, _mm256_sign_epi8(wv[o], xs), ones);
      } else {
#pragma GCC unroll 4
        for (int o = 0; o < O; ++o) a[r][o] = DotStep(a[r][o], xv, wv[o], ones);
      }
    }
  }
  const int32_t shift = Signed ? 128 : 0;
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) {
      int32_t t = Sum8(a[r][o]);
      for (int64_t j = k; j < in; ++j) t += (int32_t(q[r * ldq + j]) - shift) * int32_t(w[o * in + j]);
      if constexpr (Signed) t += 128 * colsum[o];
      acc[r * ldacc + o] = t;
    }
}

template <int R, bool Signed>
GR_AVX2 void RowsAvx2(const uint8_t* q, int64_t ldq, int64_t in, const int8_t* w, const int32_t* colsum, int64_t o0,
                      int64_t o1, int64_t out, int32_t* acc, int64_t ldacc) {
  constexpr int64_t kAhead = 2 * kOutBlock;
  int64_t o = o0;
  for (; o + kOutBlock <= o1; o += kOutBlock)
    BlockAvx2<R, kOutBlock, Signed>(q, ldq, in, w + o * in, colsum + o, o + kAhead + kOutBlock <= out ? kAhead : 0,
                                    acc + o, ldacc);
  for (; o < o1; ++o) BlockAvx2<R, 1, Signed>(q, ldq, in, w + o * in, colsum + o, 0, acc + o, ldacc);
}

// Two rows per block: 2 x 4 accumulators + 4 weights + row (+ its sign and magnitude) + ones.
template <bool Signed>
GR_AVX2 void SumsAvx2(const uint8_t* q, int64_t ldq, int64_t rows, int64_t in, const int8_t* w, const int32_t* colsum,
                      int64_t o0, int64_t o1, int64_t out, int32_t* acc) {
  for (int64_t r0 = 0; r0 < rows; r0 += 2) {
    const uint8_t* qr = q + r0 * ldq;
    int32_t* ar = acc + r0 * out;
    if (rows - r0 == 1) {
      RowsAvx2<1, Signed>(qr, ldq, in, w, colsum, o0, o1, out, ar, out);
    } else {
      RowsAvx2<2, Signed>(qr, ldq, in, w, colsum, o0, o1, out, ar, out);
    }
  }
}

bool Vnni512() {
  static const bool ok = cpu::Avx512() && __builtin_cpu_supports("avx512vnni");
  return ok;
}

bool Avx2() {
  static const bool ok = cpu::DetectedDecodeIsa() != cpu::DecodeIsa::kNone;
  return ok;
}

// 7-bit input codes (Int8Inputs): the int16 pair sums of vpmaddubsw (2 x 127 x 127 at most) are
// exact, so the plain pair kernel and oneDNN's AVX2 kernels serve; 8-bit codes need the sign trick.
bool SevenBitCodes() { return 2 * Int8Inputs().levels + 1 <= 127; }

// GAINRAG_INT8_PRODUCTS=avx2 runs every int8 product on the AVX2 kernels a CPU without VNNI
// runs (the signed one on 8-bit codes), here too: how their results and speed are measured on a
// VNNI machine. Read once; a bad value fails every int8 product with the message.
struct ProductsSetting {
  bool avx2 = false;
  std::string error;
};

const ProductsSetting& Products() {
  static const ProductsSetting setting = [] {
    ProductsSetting s;
    const char* env = std::getenv("GAINRAG_INT8_PRODUCTS");
    const std::string v = env ? env : "";
    if (v == "avx2" && Avx2()) {
      s.avx2 = true;
    } else if (v == "avx2") {
      s.error = "GAINRAG_INT8_PRODUCTS=avx2: this CPU has no AVX2";
    } else if (!v.empty() && v != "auto") {
      s.error = "GAINRAG_INT8_PRODUCTS must be 'auto' or 'avx2', got '" + v + "'";
    }
    return s;
  }();
  GR_CHECK(setting.error.empty(), kInvalidArgument, setting.error);
  return setting;
}

bool Runs(Int8Kernel k) {
  switch (k) {
    case Int8Kernel::kVnni512: return Vnni512();
    case Int8Kernel::kAvx2Pairs: return Avx2() && SevenBitCodes();
    case Int8Kernel::kAvx2Signed: return Avx2();
    case Int8Kernel::kAuto: break;
  }
  return false;
}

}  // namespace

Int8Kernel AutoInt8Kernel() {
  if (Vnni512() && !Products().avx2) return Int8Kernel::kVnni512;
  if (!Avx2()) return Int8Kernel::kAuto;  // none
  return SevenBitCodes() ? Int8Kernel::kAvx2Pairs : Int8Kernel::kAvx2Signed;
}

bool Int8OwnProducts() {
  // Without VNNI, oneDNN's kernels are exact only on 7-bit codes; on 8-bit codes (opted into
  // with GAINRAG_INT8_INPUT_BITS=8) every product runs on the signed AVX2 kernel instead.
  static const bool own = Products().avx2 || (!CpuHasVnni() && Avx2() && !SevenBitCodes());
  return own;
}

bool SupportsInt8Gemv() { return AutoInt8Kernel() != Int8Kernel::kAuto; }

bool RunsInt8Kernel(Int8Kernel k) { return k == Int8Kernel::kAuto ? SupportsInt8Gemv() : Runs(k); }

void GemvInt8(const float* x, int64_t rows, const Int8Matrix& m, float* y, int64_t ldy, bool accumulate, Int8Kernel kernel) {
  if (kernel == Int8Kernel::kAuto) kernel = AutoInt8Kernel();
  GR_CHECK(kernel != Int8Kernel::kAuto && Runs(kernel), kUnsupported,
           "int8 products of our own need AVX512-VNNI or AVX2 (the 7-bit pair kernel also 7-bit input codes)");
  const int64_t out = m.w.size(0), in = m.w.size(1);
  if (rows <= 0 || out <= 0) return;
  // Quantised rows at a stride of whole cache lines plus one, so rows do not share L1 sets.
  const int64_t ldq = (in + 63) / 64 * 64 + 64;
  std::vector<uint8_t> q(static_cast<size_t>(rows * ldq));
  std::vector<Int8RowCode> row_code(static_cast<size_t>(rows));
  // Many rows (prefill, encoders on CPUs without VNNI) are quantised in parallel; each row the same way.
  auto quantise = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) row_code[size_t(r)] = QuantizeRowU8(x + r * in, q.data() + r * ldq, in);
  };
  if (rows >= 32) {
    at::parallel_for(0, rows, 16, quantise);
  } else {
    quantise(0, rows);
  }
  // int32 sums, rewritten in place as float32 by the product's own rescaling pass.
  std::vector<int32_t> acc(static_cast<size_t>(rows * out));
  const int8_t* w = m.w.data_ptr<int8_t>();
  const float* scale = m.scale.data_ptr<float>();
  const int32_t* colsum = m.colsum.data_ptr<int32_t>();
  const float* bias = m.bias.data_ptr<float>();
  const int64_t tiles = (out + kTile - 1) / kTile;
  cpu::SpinParallelFor(tiles, [&](int64_t t0, int64_t t1) {
    const int64_t o0 = t0 * kTile, o1 = std::min(out, t1 * kTile);
    switch (kernel) {
      case Int8Kernel::kVnni512: Sums(q.data(), ldq, rows, in, w, o0, o1, out, acc.data()); break;
      case Int8Kernel::kAvx2Pairs: SumsAvx2<false>(q.data(), ldq, rows, in, w, colsum, o0, o1, out, acc.data()); break;
      default: SumsAvx2<true>(q.data(), ldq, rows, in, w, colsum, o0, o1, out, acc.data()); break;
    }
    for (int64_t r = 0; r < rows; ++r) {
      int32_t* ar = acc.data() + r * out + o0;
      RescaleRow(ar, row_code[size_t(r)], scale + o0, colsum + o0, bias + o0, o1 - o0);
      const float* t = reinterpret_cast<const float*>(ar);
      float* yr = y + r * ldy + o0;
      if (accumulate) {
        for (int64_t o = 0; o < o1 - o0; ++o) yr[o] += t[o];
      } else {
        std::copy(t, t + (o1 - o0), yr);
      }
    }
  });
}

}  // namespace gainrag::onednn
