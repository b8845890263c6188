// Dynamic-int8 products over few rows (the decode step of an int8 LLM: one token per sequence),
// reading the weights in their plain quantised rows (onednn::Int8Matrix) once per call for all
// rows. The arithmetic is that of PackedLinear::Forward at int8 (same row quantisation, exact
// int32 sums with AVX512-VNNI, or with AVX2's vpmaddubsw on the 7-bit input codes of CPUs without
// VNNI, same rescaling pass), so the outputs equal it bit for bit; what
// changes is the cost of a call: no primitive, no scratch tensors, no thread team per pass.
#pragma once

#include <cstdint>

#include "backends/dnnl/packed_linear.h"

namespace gainrag::onednn {

// The kernels GemvInt8 chooses among. kVnni512: vpdpbusd. kAvx2Pairs: vpmaddubsw + vpmaddwd,
// exact only on 7-bit input codes. kAvx2Signed: the same on 8-bit codes with the sign of
// (q - 128) moved onto the weights first (exact: a pair is at most 2 x 128 x 127). kAuto: VNNI
// where the CPU has AVX512-VNNI (unless GAINRAG_INT8_PRODUCTS=avx2), else the AVX2 kernel for
// this CPU's codes. All give the same int32 sums, so the same outputs bit for bit.
enum class Int8Kernel { kAuto, kVnni512, kAvx2Pairs, kAvx2Signed };

// Whether this CPU runs GemvInt8 (kAuto finds a kernel): AVX-512 F/BW/VL and VNNI, or AVX2 + FMA + F16C.
bool SupportsInt8Gemv();
// The kernel kAuto stands for here (kAuto itself where there is none).
Int8Kernel AutoInt8Kernel();
// Whether it runs this kernel (the native checks run each one the CPU can).
bool RunsInt8Kernel(Int8Kernel kernel);
// Whether the int8 products of PackedLinear run here (GemvInt8 over all rows) instead of in
// oneDNN: on a CPU without VNNI with 8-bit input codes (GAINRAG_INT8_INPUT_BITS=8), where
// oneDNN's kernels would saturate, or everywhere with GAINRAG_INT8_PRODUCTS=avx2.
bool Int8OwnProducts();

// y[r * ldy + o] = (accumulate ? y[r * ldy + o] : 0) + rescaled (x[r] . w[o]) + bias[o] for
// r < rows, o < m.w.size(0); x is [rows, in] float32, in == m.w.size(1). Parallel over outputs.
void GemvInt8(const float* x, int64_t rows, const Int8Matrix& m, float* y, int64_t ldy, bool accumulate,
              Int8Kernel kernel = Int8Kernel::kAuto);

}  // namespace gainrag::onednn
