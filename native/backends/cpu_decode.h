// CPU kernels for a decoder's decode step over few rows (one token per sequence): matrix-vector
// products that stream each weight matrix once per step whatever the number of rows, RMSNorm,
// and single-query attention over a KV cache. They are compiled for AVX-512 (F/BW/VL) and for
// AVX2 + FMA + F16C through function target attributes (one source, cpu_decode_kernels.inc), so
// the rest of the build stays portable; the widest the CPU runs is chosen at run time. Call them
// only when DecodeKernels() is true.
// Activations are float32 throughout; weights and caches may be float32 or bfloat16 (upcast in
// registers, fp32 accumulation).
#pragma once

#include <cstdint>

namespace gainrag::cpu {

// kF16 (IEEE half) is for KV caches only (DecodeAttention), not weights.
enum class Elem { kF32, kBF16, kF16 };

// Whether this CPU has AVX-512 F, BW and VL (also used by the row kernels elsewhere).
bool Avx512();

// The instruction sets the kernels below are compiled for, narrowest first.
enum class DecodeIsa { kNone, kAvx2, kAvx512 };
// The widest this CPU runs.
DecodeIsa DetectedDecodeIsa();
// The one the kernels use: the detected one unless SetDecodeIsa narrowed it.
DecodeIsa ActiveDecodeIsa();
// Whether the kernels below run on this CPU at all.
bool DecodeKernels();
// Narrows the kernels to `isa` (clamped to what the CPU has), process-wide: for the native
// checks, which run every compiled path the CPU supports against the same references.
void SetDecodeIsa(DecodeIsa isa);
const char* DecodeIsaName(DecodeIsa isa);

// y[r * ldy + o] = (accumulate ? y[r * ldy + o] : 0) + sum_k x[r * in + k] * w[o * in + k] for
// r < rows, o < out; w is [out, in] row-major. Parallel over output columns (cpu::SpinParallelFor);
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
