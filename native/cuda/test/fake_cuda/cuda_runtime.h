// A host-memory stand-in for the CUDA runtime API calls that native/cuda/kernel_search.cpp makes,
// so that the orchestration (tiles, query blocks, double-buffered streaming, host and device
// rescoring, sharding, the shard merge, the corpus cache) runs on a machine without a GPU in
// native/cuda/test/emulated_search_test.cpp. "Device" memory is host memory, copies are memcpy,
// streams and events are synchronous no-ops. Four fake devices are visible. Test use only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>

typedef int cudaError_t;
enum : int { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
typedef struct FakeStream* cudaStream_t;
typedef struct FakeEvent* cudaEvent_t;
constexpr unsigned cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2, cudaHostAllocDefault = 0;

namespace fake_cuda {
inline int& current_device() {
  static thread_local int d = 0;
  return d;
}
// Atomic: sharded searches allocate from one thread per device at the same time (a plain long
// lost updates there and reported phantom leaks now and then).
inline std::atomic<long>& live_allocations() {
  static std::atomic<long> n{0};
  return n;
}
}  // namespace fake_cuda

inline cudaError_t cudaGetDeviceCount(int* n) { *n = 4; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int d) { fake_cuda::current_device() = d; return d >= 0 && d < 4 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "fake CUDA error"; }
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *free_b = size_t(64) << 30;
  *total_b = size_t(80) << 30;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n);
  if (*p) ++fake_cuda::live_allocations();
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* p) {
  if (p) --fake_cuda::live_allocations();
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaHostAlloc(void** p, size_t n, unsigned) { return cudaMalloc(p, n); }
inline cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t) { return cudaMemcpy(d, s, n, k); }
inline cudaError_t cudaMemcpy2DAsync(void* d, size_t dpitch, const void* s, size_t spitch, size_t width, size_t height,
                                     cudaMemcpyKind, cudaStream_t) {
  if (width > dpitch || width > spitch) return cudaErrorInvalidValue;
  for (size_t r = 0; r < height; ++r)
    std::memcpy(static_cast<char*>(d) + r * dpitch, static_cast<const char*>(s) + r * spitch, width);
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = reinterpret_cast<cudaStream_t>(new char); return cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) { delete reinterpret_cast<char*>(s); return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { *e = reinterpret_cast<cudaEvent_t>(new char); return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete reinterpret_cast<char*>(e); return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
