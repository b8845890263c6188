#include "core/engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/Context.h>
#include <torch/version.h>

#include <cstdlib>
#include <string>

#include <thread>

#ifndef GAINRAG_VERSION
#define GAINRAG_VERSION "0.0.0"
#endif

namespace gainrag {

#ifdef GAINRAG_WITH_CUDA
int CudaDeviceCount();  // native/cuda/device.cu
#endif

EngineInfo GetEngineInfo() {
  EngineInfo info;
  info.version = GAINRAG_VERSION;
  info.torch = TORCH_VERSION;
  info.backends.push_back("cpu");
#ifdef GAINRAG_WITH_CUDA
  info.backends.push_back("cuda");
  info.cuda_devices = CudaDeviceCount();
#endif
#ifdef GAINRAG_WITH_FAISS
  info.backends.push_back("faiss");  // FAISS index files (native/index/faiss_io.h)
#endif
  info.threads = at::get_num_threads();
  info.blas = at::hasMKL() ? "mkl" : "system";
  return info;
}

int ConfigureThreads(int n) {
  if (n <= 0) {
    if (const char* env = std::getenv("GAINRAG_THREADS")) n = std::atoi(env);
  }
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  at::set_num_threads(n);
  return at::get_num_threads();
}

}  // namespace gainrag
