// Score tiles on tensor cores through cuBLAS GemmEx: 16-bit corpus rows and queries, fp32
// accumulation, fp32 output, so the corpus is never upcast in memory and the selection reads
// fp32 scores. Needs the cuBLAS headers of the CUDA toolkit (the GPU machine has them); the
// compile check on a machine without them (scripts/cuda-compile-check.sh) builds this file
// against bench/gpu/stub/cublas_v2.h, which declares only what is used here.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <mutex>
#include <vector>

#include "cuda/kernels.h"

namespace gainrag {
namespace cuda_kernels {
namespace {

// cuBLAS handles must not be used by two threads at once, and a sharded search runs one fresh
// thread per device per call: handles are kept in a per-device pool, taken for one GEMM and
// put back, so they are created once per concurrently busy thread rather than once per call.
constexpr int kMaxDevices = 64;
std::mutex pool_mutex;
std::vector<cublasHandle_t> pool[kMaxDevices];

cublasStatus_t TakeHandle(int device, cublasHandle_t* out) {
  if (device < 0 || device >= kMaxDevices) return CUBLAS_STATUS_INVALID_VALUE;
  {
    std::lock_guard<std::mutex> lock(pool_mutex);
    if (!pool[device].empty()) {
      *out = pool[device].back();
      pool[device].pop_back();
      return CUBLAS_STATUS_SUCCESS;
    }
  }
  return cublasCreate(out);  // on the calling thread's current device (the shard's)
}

void PutHandle(int device, cublasHandle_t h) {
  std::lock_guard<std::mutex> lock(pool_mutex);
  pool[device].push_back(h);
}

}  // namespace

int GemmScores(int device, void* stream, RowType type, const void* rows, int nt, const void* queries, int nq, int dim,
               float* out, int64_t ld) {
  if (nt <= 0 || nq <= 0) return CUBLAS_STATUS_SUCCESS;
  cublasHandle_t h = nullptr;
  cublasStatus_t st = TakeHandle(device, &h);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  st = cublasSetStream(h, static_cast<cudaStream_t>(stream));
  if (st != CUBLAS_STATUS_SUCCESS) {
    PutHandle(device, h);
    return st;
  }
  // Row-major scores [nq, ld] are column-major [ld, nq]: C = op(A) * B with A the row-major
  // corpus tile [nt, dim] (column-major dim x nt, transposed) and B the row-major queries
  // [nq, dim] (column-major dim x nq).
  const float alpha = 1.f, beta = 0.f;
  cudaDataType_t in_type = CUDA_R_16F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;  // fp32 accumulation; no TF32 for fp32 rows
  if (type == RowType::kBFloat16) in_type = CUDA_R_16BF;
  if (type == RowType::kFloat32) in_type = CUDA_R_32F;
  st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, nt, nq, dim, &alpha, rows, in_type, dim, queries, in_type, dim, &beta,
                    out, CUDA_R_32F, static_cast<int>(ld), compute, CUBLAS_GEMM_DEFAULT);
  PutHandle(device, h);
  return st;
}

}  // namespace cuda_kernels
}  // namespace gainrag
