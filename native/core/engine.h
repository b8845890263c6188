// Process-wide engine facts and settings: version, LibTorch build, compiled backends,
// CUDA devices, and the intra-op thread pool (LibTorch's pool is process-wide, so it is set
// once here rather than by each worker).
#pragma once

#include <string>
#include <vector>

namespace gainrag {

struct EngineInfo {
  std::string version;
  std::string torch;
  std::vector<std::string> backends;  // compiled in: "cpu", "cuda", "dnnl", "faiss" (FAISS index files)
  int cuda_devices = 0;               // visible at run time
  int threads = 0;                    // LibTorch intra-op threads
  std::string blas;                   // BLAS LibTorch uses for CPU matrix products
  std::string dnnl_kernels;           // oneDNN's pick on this CPU, "f32 KERNEL, bf16 KERNEL, int8 KERNEL"; "" without dnnl
};

EngineInfo GetEngineInfo();

// Sets LibTorch's intra-op threads. n <= 0: GAINRAG_THREADS, else all hardware threads.
// Returns the number in force.
int ConfigureThreads(int n);

}  // namespace gainrag
