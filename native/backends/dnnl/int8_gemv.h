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

// Whether this CPU runs GemvInt8: AVX-512 F/BW/VL and VNNI, or AVX2 + FMA + F16C where int8
// inputs are coded in 7 bits (Int8Inputs; CPUs without VNNI).
bool SupportsInt8Gemv();

// y[r * ldy + o] = (accumulate ? y[r * ldy + o] : 0) + rescaled (x[r] . w[o]) + bias[o] for
// r < rows, o < m.w.size(0); x is [rows, in] float32, in == m.w.size(1). Parallel over outputs.
void GemvInt8(const float* x, int64_t rows, const Int8Matrix& m, float* y, int64_t ldy, bool accumulate);

}  // namespace gainrag::onednn
