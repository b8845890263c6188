// gainrag's k-selection, rescoring and sort kernels. The selection logic (order, slot sizing,
// bitonic network, flush rule) is in select_core.h, shared with the CPU replay that the tests
// run (select_host.h). Nothing here has run on a GPU yet: the kernels stay behind
// GAINRAG_CUDA_KERNELS until bench/gpu/kernels.sh has checked them on one.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/kernels.h"
#include "cuda/select_core.h"

namespace gainrag {
namespace cuda_kernels {
namespace {

using cuda_select::Better;
using cuda_select::BitonicPair;
using cuda_select::CompareExchange;
using cuda_select::SelectPlan;

// Sorts slots [0, n) of shared memory best first with the whole block (n a power of two).
__device__ void BlockBitonicSort(float* s, int32_t* p, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
        int lo, hi;
        bool best_first;
        BitonicPair(t, size, stride, &lo, &hi, &best_first);
        CompareExchange(s, p, lo, hi, best_first);
      }
      __syncthreads();
    }
  }
}

// One block per query row, plan.chunk / kSelectItems threads. Shared memory: plan.slots scores,
// then plan.slots positions.
__global__ void SelectTileKernel(const float* __restrict__ scores, int64_t ld, int tile_n, int32_t base,
                                 float* state_s, int32_t* state_p, SelectPlan plan) {
  extern __shared__ float smem[];
  float* s = smem;
  int32_t* p = reinterpret_cast<int32_t*>(smem + plan.slots);
  __shared__ int count;
  const int k = plan.k;
  const int64_t row = blockIdx.x;
  const float* in = scores + row * ld;
  for (int i = threadIdx.x; i < plan.slots; i += blockDim.x) {
    s[i] = i < k ? state_s[row * k + i] : cuda_select::EmptyScore();
    p[i] = i < k ? state_p[row * k + i] : cuda_select::kEmptyPos;
  }
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  float thr_s = s[k - 1];
  int32_t thr_p = p[k - 1];
  for (int c = 0; c < tile_n; c += plan.chunk) {
    // kSelectItems coalesced loads per thread first (all in flight together), then the filter.
    float v[cuda_select::kSelectItems];
#pragma unroll
    for (int j = 0; j < cuda_select::kSelectItems; ++j) {
      const int i = c + j * int(blockDim.x) + int(threadIdx.x);
      v[j] = i < tile_n ? in[i] : cuda_select::EmptyScore();
    }
#pragma unroll
    for (int j = 0; j < cuda_select::kSelectItems; ++j) {
      const int i = c + j * int(blockDim.x) + int(threadIdx.x);
      if (i < tile_n && Better(v[j], base + i, thr_s, thr_p)) {
        const int slot = atomicAdd(&count, 1);
        s[k + slot] = v[j];
        p[k + slot] = base + i;
      }
    }
    __syncthreads();
    const int used = count;
    const bool last = c + plan.chunk >= tile_n;
    __syncthreads();  // every thread has read `count` before anyone changes it
    if ((last && used > 0) || cuda_select::MustFlush(used, plan)) {
      for (int j = k + used + threadIdx.x; j < plan.slots; j += blockDim.x) {
        s[j] = cuda_select::EmptyScore();
        p[j] = cuda_select::kEmptyPos;
      }
      __syncthreads();
      BlockBitonicSort(s, p, plan.slots);
      if (threadIdx.x == 0) count = 0;
      thr_s = s[k - 1];
      thr_p = p[k - 1];
      __syncthreads();
    }
  }
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    state_s[row * k + i] = s[i];
    state_p[row * k + i] = p[i];
  }
}

__device__ __forceinline__ float Load(const float* r, int64_t i) { return r[i]; }
__device__ __forceinline__ float Load(const __half* r, int64_t i) { return __half2float(r[i]); }
__device__ __forceinline__ float Load(const __nv_bfloat16* r, int64_t i) { return __bfloat162float(r[i]); }

// One warp per (query, candidate): lanes stride over the dimension, then a shuffle reduction.
template <typename T>
__global__ void RescoreKernel(const float* __restrict__ queries, const T* __restrict__ rows, int64_t dim,
                              const int32_t* __restrict__ pos, int64_t pairs, int kk, float* out) {
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= pairs) return;
  const int32_t r = pos[warp];
  if (r == cuda_select::kEmptyPos) {
    if (lane == 0) out[warp] = cuda_select::EmptyScore();
    return;
  }
  const float* q = queries + (warp / kk) * dim;
  const T* x = rows + int64_t(r) * dim;
  float acc = 0.f;
  for (int64_t d = lane; d < dim; d += 32) acc = fmaf(q[d], Load(x, d), acc);
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
  if (lane == 0) out[warp] = acc;
}

// One block per row: pads kk entries to a power of two in shared memory, sorts, writes back.
__global__ void SortRowsKernel(float* scores, int32_t* pos, int kk, int padded) {
  extern __shared__ float smem[];
  float* s = smem;
  int32_t* p = reinterpret_cast<int32_t*>(smem + padded);
  const int64_t row = blockIdx.x;
  for (int i = threadIdx.x; i < padded; i += blockDim.x) {
    s[i] = i < kk ? scores[row * kk + i] : cuda_select::EmptyScore();
    p[i] = i < kk ? pos[row * kk + i] : cuda_select::kEmptyPos;
  }
  __syncthreads();
  BlockBitonicSort(s, p, padded);
  for (int i = threadIdx.x; i < kk; i += blockDim.x) {
    scores[row * kk + i] = s[i];
    pos[row * kk + i] = p[i];
  }
}

__global__ void FillEmptyKernel(float* s, int32_t* p, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    s[i] = cuda_select::EmptyScore();
    p[i] = cuda_select::kEmptyPos;
  }
}

__global__ void ToHalfKernel(const float* in, __half* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2half_rn(in[i]);
}

__global__ void ToBf16Kernel(const float* in, __nv_bfloat16* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

int Blocks(int64_t n, int threads) { return static_cast<int>((n + threads - 1) / threads); }

cudaStream_t S(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

int FillEmpty(float* scores, int32_t* pos, int64_t n, void* stream) {
  if (n <= 0) return cudaSuccess;
  FillEmptyKernel<<<Blocks(n, 256), 256, 0, S(stream)>>>(scores, pos, n);
  return cudaGetLastError();
}

int SelectTile(const float* scores, int64_t ld, int rows, int tile_n, int32_t base, float* state_scores,
               int32_t* state_pos, int k, int threads, void* stream) {
  const SelectPlan plan = cuda_select::PlanSelect(k, threads * cuda_select::kSelectItems);
  if (plan.slots == 0 || threads % 32 != 0 || threads > 1024) return cudaErrorInvalidValue;
  if (rows <= 0 || tile_n <= 0) return cudaSuccess;
  const size_t shmem = size_t(plan.slots) * (sizeof(float) + sizeof(int32_t));
  SelectTileKernel<<<rows, threads, shmem, S(stream)>>>(scores, ld, tile_n, base, state_scores, state_pos, plan);
  return cudaGetLastError();
}

int Rescore(const float* queries, const void* rows, RowType type, int64_t dim, const int32_t* pos, int nq, int kk,
            float* out, void* stream) {
  const int64_t pairs = int64_t(nq) * kk;
  if (pairs == 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = Blocks(pairs * 32, threads);
  switch (type) {
    case RowType::kFloat32:
      RescoreKernel<<<blocks, threads, 0, S(stream)>>>(queries, static_cast<const float*>(rows), dim, pos, pairs, kk, out);
      break;
    case RowType::kFloat16:
      RescoreKernel<<<blocks, threads, 0, S(stream)>>>(queries, static_cast<const __half*>(rows), dim, pos, pairs, kk, out);
      break;
    case RowType::kBFloat16:
      RescoreKernel<<<blocks, threads, 0, S(stream)>>>(queries, static_cast<const __nv_bfloat16*>(rows), dim, pos, pairs,
                                                       kk, out);
      break;
  }
  return cudaGetLastError();
}

int SortRows(float* scores, int32_t* pos, int nq, int kk, void* stream) {
  if (kk < 1 || kk > 2 * cuda_select::kMaxK) return cudaErrorInvalidValue;
  if (nq <= 0) return cudaSuccess;
  const int padded = cuda_select::NextPow2(kk);
  const size_t shmem = size_t(padded) * (sizeof(float) + sizeof(int32_t));
  SortRowsKernel<<<nq, 256, shmem, S(stream)>>>(scores, pos, kk, padded);
  return cudaGetLastError();
}

int QueriesTo16(const float* in, void* out, RowType type, int64_t n, void* stream) {
  if (n <= 0) return cudaSuccess;
  if (type == RowType::kFloat16)
    ToHalfKernel<<<Blocks(n, 256), 256, 0, S(stream)>>>(in, static_cast<__half*>(out), n);
  else if (type == RowType::kBFloat16)
    ToBf16Kernel<<<Blocks(n, 256), 256, 0, S(stream)>>>(in, static_cast<__nv_bfloat16*>(out), n);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

const char* CudaErrorText(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // namespace cuda_kernels
}  // namespace gainrag
