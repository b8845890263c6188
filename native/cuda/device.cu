// CUDA runtime queries compiled only when the LibTorch has CUDA (GAINRAG_WITH_CUDA).
#include <cuda_runtime.h>

namespace gainrag {

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so LibTorch can report its own
    return 0;
  }
  return n;
}

}  // namespace gainrag
