// Row-wise float32 kernels for the encoders' inference path on CPU: softmax in place and a
// residual add fused with LayerNorm; and for the decoder's: SwiGLU and RoPE. LibTorch 1.13 runs
// each as separate ops over fresh tensors (softmax's exp through Sleef's AVX2 code, the add,
// then layer_norm with its mean and rstd outputs); for a small model they were a third of a
// reranker call's profile. Here a row is read from memory once and finished while it sits in L1.
// AVX-512 or AVX2 + FMA code is chosen at run time (cpu_decode.h's ActiveDecodeIsa(), which the
// native checks narrow to test each); other CPUs get a portable loop with the same arithmetic
// order per row, so results agree within float rounding.
#pragma once

#include <cstdint>

namespace gainrag::cpu {

// x[r, :] = softmax(x[r, :]) for r < rows, rows of n contiguous floats (n >= 1). Parallel over
// rows (ATen's threads; serial inside a parallel region).
void SoftmaxRows(float* x, int64_t rows, int64_t n);

// y[r, :] = LayerNorm(a[r, :] + residual[r, :]) * gamma + beta, biased variance as
// torch.nn.LayerNorm, rows of n contiguous floats. y may be a (in place); residual must not
// overlap y unless it is y itself. Parallel over rows.
void AddLayerNormRows(const float* a, const float* residual, int64_t rows, int64_t n, const float* gamma,
                      const float* beta, float eps, float* y);

// out[r, i] = silu(g[r, i]) * u[r, i] where row r of gate_up is [g | u] (2n floats) and row r of
// out is n floats: a decoder's SwiGLU over its stacked gate/up product. silu(g) = g / (1 +
// exp(-g)) with the exp below. Parallel over rows.
void SiluMulRows(const float* gate_up, int64_t rows, int64_t n, float* out);

// Rotates each of the `heads` heads of x [heads, hd] (hd even) by the angles whose cos and sin
// are cos[0, hd / 2), sin[0, hd / 2), in place, as transformers' rotate_half RoPE: element i of
// a head pairs with element i + hd / 2.
void RotateHalfHeads(float* x, int64_t heads, int64_t hd, const float* cos, const float* sin);

// exp(x) element-wise over n floats, the same approximation SoftmaxRows uses (relative error
// below 2e-7 for x in [-87, 88]; exactly 0 below). Exposed for the native checks.
void ExpVector(const float* x, int64_t n, float* y);

}  // namespace gainrag::cpu
