// The per-row passes of the oneDNN products (row_passes.cpp), for packed_linear.cpp; the public
// int8 row functions (Int8Inputs, QuantizeRowU8, RescaleRow) are declared in packed_linear.h.
#pragma once

#include <cstdint>

#include "backends/dnnl/packed_linear.h"

namespace gainrag::onednn {

// AVX512-VNNI or AVX-VNNI: int8 products take 8-bit input codes (Int8Inputs).
bool CpuHasVnni();

// Rows [M, K] of x to u8 codes (QuantizeRowU8) in dst [M, K], each row's scale and zero into codes[M].
void QuantizeRows(const float* x, uint8_t* dst, Int8RowCode* codes, int64_t M, int64_t K);
// y [M, N]: the int32 sums of those codes times the int8 weights, rewritten in place as float32
// (sum - codes[r].zero colsum[n]) * codes[r].scale * col_scale[n] + bias[n].
void RescaleRows(void* y, const Int8RowCode* codes, const float* col_scale, const int32_t* colsum, const float* bias,
                 int64_t M, int64_t N);
// Rows [M, K] of x to [M, 3K] bf16 bits: [hi | lo | hi], hi = bf16(x), lo = bf16(x - hi).
void SplitRows(const float* x, uint16_t* dst, int64_t M, int64_t K);

}  // namespace gainrag::onednn
