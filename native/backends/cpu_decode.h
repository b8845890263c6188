// CPU kernels for a decoder's decode step over few rows (one token per sequence): matrix-vector
// products that stream each weight matrix once per step whatever the number of rows, RMSNorm,
// and single-query attention over a KV cache. They use AVX-512 (F/BW/VL) through function target
// attributes, so the rest of the build stays portable: call them only when Avx512() is true.
// Activations are float32 throughout; weights and caches may be float32 or bfloat16 (upcast in
// registers, fp32 accumulation).
#pragma once

#include <cstdint>

namespace gainrag::cpu {

// kF16 (IEEE half) is for KV caches only (DecodeAttention), not weights.
enum class Elem { kF32, kBF16, kF16 };

// Whether this CPU runs the kernels below (AVX-512 F, BW and VL).
bool Avx512();

// y[r * ldy + o] = (accumulate ? y[r * ldy + o] : 0) + sum_k x[r * in + k] * w[o * in + k] for
// r < rows, o < out; w is [out, in] row-major. Parallel over output columns (ATen's threads);
// each thread reads its slice of w once for all rows.
void Gemv(const float* x, int64_t rows, int64_t in, const void* w, Elem we, int64_t out, float* y, int64_t ldy,
          bool accumulate);

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, rows of n.
void RmsNormRows(const float* x, int64_t rows, int64_t n, const void* weight, Elem we, float eps, float* y);

// out[r, h, :] = softmax_j(q[r, h, :] . k[r, h / rep, j, :] * scale) v[r, h / rep, j, :] over
// j in [0, pos[r]]. q and out are [rows, kv_heads * rep, hd] float32; the caches are
// [>= rows, kv_heads, capacity, hd] of type ce. Parallel over (row, kv head).
void DecodeAttention(const float* q, const void* k_cache, const void* v_cache, Elem ce, int64_t rows,
                     int64_t kv_heads, int64_t rep, int64_t capacity, int64_t hd, const int64_t* pos, float scale,
                     float* out);

}  // namespace gainrag::cpu
