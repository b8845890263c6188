// Linear layers (y = x W^T + b, optionally followed by an activation) on oneDNN matmul
// primitives, with W reordered once at load into the blocked layout oneDNN's kernels read
// directly. This header names no oneDNN type, so callers compile without libdnnl; the
// implementation (packed_linear.cpp) is built only when CMake found oneDNN (GAINRAG_WITH_DNNL).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

namespace gainrag::onednn {

// Applied to the product inside the primitive (a oneDNN post-op), so the [rows, out] result
// is written once instead of being read back by a separate activation.
enum class Epilogue { kNone, kGeluErf, kGeluTanh, kRelu };

// Whether a matmul of this precision (kFloat, kBFloat16 or kChar = dynamic int8) can be created
// on this CPU. oneDNN picks the instruction set at run time (AVX-512, AVX512-BF16, VNNI, AVX2,
// ...); bf16 needs at least AVX-512; int8 runs on AVX2 too (with 7-bit input codes, Int8Inputs).
bool Supports(at::ScalarType precision);
// Whether float32 products can run as bf16x3 (see PackedLinear::Pack) on this CPU.
bool SupportsBf16x3();

// The kernel oneDNN dispatches to for a representative product, e.g. "brg:avx512_core_bf16";
// plain_weights: on W in its [out, in] rows instead of a layout of oneDNN's choice.
std::string KernelName(at::ScalarType precision, bool plain_weights = false);

// y = x W^T (+ bias) reading W where it is ([out, in] row-major, float32 or bfloat16): no packed
// copy of the weights is kept (oneDNN's kernels copy blocks of W as they go, which a product of
// hundreds of rows amortises), so a model that also needs W in plain layout holds it once.
// x [..., in] of W's dtype, bias [out] (any floating dtype) or undefined; returns [..., out]
// float32 (fp32 accumulation). Where oneDNN has no bf16 kernel (AVX2-only CPUs), a bfloat16 W
// is widened to float32 for the call and x is taken in float32: exact products of the same
// weights (more accurate than rounding x to bf16), at fp32 speed, where LibTorch's own bf16
// GEMM would be ~10x slower. Throws Error(kUnsupported) when oneDNN cannot build the product.
at::Tensor LinearUnpacked(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
// Whether LinearUnpacked takes bfloat16 weights here: oneDNN has a bf16 or an f32 kernel.
bool SupportsBf16Weights();

// For the native tests: elements where the vector row kernels this CPU runs (AVX-512 and AVX2, or
// AVX2: int8 quantisation and rescaling with both input codes; AVX-512: the bf16x3 split) and the
// portable ones disagree over `rows` random rows of width k, scale values included; 0 means
// bit-identical (also 0 on a CPU with neither, where only the portable rows exist).
int64_t RowKernelMismatches(int64_t rows, int64_t k, uint32_t seed);

// A weight matrix as the dynamic-int8 products quantise it: w [out, in] int8 row-major with one
// scale per output channel (W[o, :] ~ scale[o] * w[o, :], scale = max |W[o, :]| / 127), colsum
// [out] int32 (sum over k of w[o, k], the correction for each input row's zero code) and bias [out]
// float32 (zeros where the layer has none).
struct Int8Matrix {
  at::Tensor w, scale, colsum, bias;
};
Int8Matrix QuantizeInt8(const at::Tensor& weight, const at::Tensor& bias);
// The same matrices stacked along the outputs (q/k/v, gate/up): per-channel scales make the
// stacked product equal, output for output, to the separate ones.
Int8Matrix StackInt8(const std::vector<Int8Matrix>& parts);
// Whether int8 products on plain weights (PackInt8 plain) run as fast as on packed ones here:
// true on CPUs without VNNI, where oneDNN's int8 matmul is its gemm kernel, which packs blocks
// of W as it goes (AVX2 EPYC, BERT-base FFN products at 512 and 4096 rows: within run-to-run
// noise of the packed layout). False where it runs brgemm on a layout of its own (VNNI, AMX).
bool Int8PlainWeights();

// How int8 products code their input rows as u8: each row over its own range [lo, hi]
// (lo = min(min x, 0), hi = max(max x, 0)) in 2 x levels steps of s = (hi - lo) / (2 levels), with
// zero = round(-lo / s) and q = round(x / s) + zero in [0, 2 levels + 1]. levels is 127 (8-bit codes)
// where the CPU has VNNI, 63 (7-bit codes, 0..127) elsewhere, where oneDNN's u8 x s8 kernels
// multiply through vpmaddubsw, whose int16 sum of two adjacent products would saturate on 8-bit
// codes and +-127 weights (2 x 127 x 127 fits, 2 x 255 x 127 does not). A row of one sign (the
// GELU output the FFN's second product reads) gets twice the resolution of codes centred on zero.
struct Int8InputCode {
  int32_t levels;
};
Int8InputCode Int8Inputs();
// One row's code: x ~ scale * (q - zero).
struct Int8RowCode {
  float scale;
  int32_t zero;
};

// The per-row passes of every int8 product (AVX-512 or AVX2 where the CPU has it, else portable;
// equal bit for bit), with this CPU's Int8Inputs(). QuantizeRowU8: row x [k] to codes q [k] as
// above; returns the row's scale and zero (1 and 0 for a row of zeros). RescaleRow: y holds the
// int32 sums of q x w over n outputs, rewritten in place as float32
// (sum - zero colsum[o]) * (scale * w_scale[o]) + bias[o].
Int8RowCode QuantizeRowU8(const float* x, uint8_t* q, int64_t k);
void RescaleRow(void* y, Int8RowCode code, const float* w_scale, const int32_t* colsum, const float* bias, int64_t n);

class PackedLinear {
 public:
  // weight [out, in] and bias [out] (any floating dtype, CPU). precision kFloat: fp32
  // throughout; kBFloat16: inputs and weights rounded to bf16, fp32 accumulation and output
  // (where oneDNN has no bf16 kernel, SupportsBf16Weights: weights rounded to bf16 and packed
  // widened, inputs and products fp32, a float32 layer);
  // kChar (dynamic int8): weights quantised once to int8 with one scale per output channel
  // (max |w| / 127), each call's input rows quantised with one scale per row (8 bits where the
  // CPU has VNNI, 7 without: Int8Inputs), int32 accumulation, then rescaled, biased and
  // activated in fp32.
  // bf16x3 (precision kFloat only; PyTorch's float32 matmul precision "high"): float32 in and
  // out, the product computed on the bf16 units as hi(x) hi(W) + hi(x) lo(W) + lo(x) hi(W),
  // where hi(v) = bf16(v) and lo(v) = bf16(v - hi(v)): one bf16 product of depth 3 x in, fp32
  // accumulation. Each term keeps 16 of fp32's 24 mantissa bits; the dropped lo x lo term and
  // the residues are ~2^-16 of |x| |W| per multiply, against bf16's ~2^-8.
  // Throws Error(kUnsupported) when oneDNN cannot build the product on this CPU.
  static std::shared_ptr<const PackedLinear> Pack(const at::Tensor& weight, const at::Tensor& bias,
                                                  at::ScalarType precision, Epilogue epilogue,
                                                  bool bf16x3 = false);
  // An int8 product of weights already quantised (QuantizeInt8): Pack(weight, bias, kChar, e)
  // is PackInt8(QuantizeInt8(weight, bias), e). plain: no reordered copy; the product reads
  // m.w's rows where they are and shares their storage (a view of a stacked matrix included),
  // for a model that also keeps those rows for GemvInt8. Same sums, so the same outputs.
  static std::shared_ptr<const PackedLinear> PackInt8(const Int8Matrix& m, Epilogue epilogue, bool plain = false);
  ~PackedLinear();

  // x [..., in] (float32, or bfloat16 at bf16 precision) -> [..., out] float32; bfloat16 for a
  // bfloat16 product with an activation epilogue (it feeds the next bfloat16 product only).
  // Inference only: no autograd graph is recorded.
  at::Tensor Forward(const at::Tensor& x) const;

  int64_t in_features() const;
  int64_t out_features() const;

 private:
  struct Impl;
  // Reorders w ([out, depth] row-major, the product's input type) into the layout oneDNN's
  // kernels read, chosen for a product of kPackRows rows.
  static void PackWeights(Impl* impl, const at::Tensor& w, bool bf16x3);
  explicit PackedLinear(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gainrag::onednn
