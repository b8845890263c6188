// Host-callable launchers for gainrag's own retrieval kernels (select_kernels.cu) and the
// tensor-core scoring GEMM (gemm_cublas.cu). Plain pointers and an opaque stream (a
// cudaStream_t passed as void*), so this header needs neither CUDA nor LibTorch headers and
// kernel_search.cpp can be compiled (and checked) without a CUDA LibTorch. Every launcher
// returns a cudaError_t / cublasStatus_t value as int (0 = success); the caller turns it into a
// gainrag::Error.
#pragma once

#include <cstdint>

namespace gainrag {
namespace cuda_kernels {

enum class RowType { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Fills n running entries with the empty entry (-inf, kEmptyPos).
int FillEmpty(float* scores, int32_t* pos, int64_t n, void* stream);

// Folds one score tile into the running top-k of `rows` queries. scores: [rows, ld] fp32 on the
// device, tile_n <= ld columns used; column c is corpus position base + c. state_*: [rows, k],
// best first. threads: a multiple of 32, at most 1024; each chunk is threads * kSelectItems
// scores (select_core.h).
int SelectTile(const float* scores, int64_t ld, int rows, int tile_n, int32_t base, float* state_scores,
               int32_t* state_pos, int k, int threads, void* stream);

// Exact fp32 rescoring: out[q * kk + j] = dot(queries[q], rows[pos[q * kk + j]]) accumulated in
// fp32 from the stored row type (-inf for an empty slot). queries: fp32 [nq, dim].
int Rescore(const float* queries, const void* rows, RowType type, int64_t dim, const int32_t* pos, int nq, int kk,
            float* out, void* stream);

// Sorts each of nq rows of kk entries best first, in place (kk <= 2 * kMaxK).
int SortRows(float* scores, int32_t* pos, int nq, int kk, void* stream);

// fp32 -> fp16 / bf16 (round to nearest), n elements.
int QueriesTo16(const float* in, void* out, RowType type, int64_t n, void* stream);

// Score tile on tensor cores: out[q * ld + r] = dot(queries16[q], rows[r]) for q < nq, r < nt,
// 16-bit inputs with fp32 accumulation and fp32 output (for kFloat32 rows: fp32 inputs, no
// TF32). Uses a cuBLAS handle per (thread, device). Returns a cublasStatus_t (0 = success).
int GemmScores(int device, void* stream, RowType type, const void* rows, int nt, const void* queries, int nq,
               int dim, float* out, int64_t ld);

// Text for a cudaError_t / cublasStatus_t returned above.
const char* CudaErrorText(int err);

}  // namespace cuda_kernels
}  // namespace gainrag
