// Exact top-k search on one or more GPUs with gainrag's own kernels (opt-in: CMake option
// GAINRAG_CUDA_KERNELS and, at run time, GAINRAG_CUDA_KERNELS=1 or SearchOptions::cuda_kernels).
//
// Per device (a shard of consecutive corpus rows): 16-bit queries and corpus tiles are scored on
// tensor cores with fp32 accumulation into an fp32 score tile; SelectTile folds each tile into a
// running top-k' per query (k' = oversampled k); at the end the k' candidates are rescored in
// fp32 from the stored rows and sorted, so ids equal the CPU fp32 path except at exact ties (or
// when a true top-k row ranked below k' in the 16-bit pass). Shards are merged on the host.
// A shard that fits the device's memory is uploaded once and kept (KernelCorpusCache); one that
// does not is streamed from host memory (the mapped index) through two pinned staging buffers,
// the upload of tile t+1 overlapping the scoring of tile t, and rescored on the host.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/kernels.h"

namespace gainrag {

struct KernelCorpusPart {
  const void* data;  // host rows of the index's storage type, row-major
  int64_t rows;
};

struct KernelSearchRequest {
  std::vector<KernelCorpusPart> parts;  // the corpus, in row order
  int64_t dim = 0;
  cuda_kernels::RowType type = cuda_kernels::RowType::kFloat16;
  const float* queries = nullptr;  // host fp32 [nq, dim], already normalised for cosine
  int64_t nq = 0;
  int k = 0;
  std::vector<int> devices;  // CUDA device ordinals; the corpus is split evenly across them
  int oversample = 0;        // k' candidates per shard before rescoring (0: 2k, at least k+64, <= 2048)
  int64_t tile_rows = 0;     // corpus rows per score tile (0: 65536, fewer for large query blocks)
  int64_t query_block = 0;   // queries per GEMM (0: 4096)
  // Corpus bytes a device may keep resident: < 0 always streams, 0 decides from free memory.
  int64_t resident_limit = 0;
  std::function<void()> check_cancelled;  // called between tiles; may throw
  // Benchmarks and callers that already hold the corpus on a GPU: rows [0, n) of `type` on
  // device devices[0] (then `parts` only give the row counts; exactly one device; no cache).
  const void* device_corpus = nullptr;
};

// Device copies of the shards, kept between searches of an unchanged index (rebuilt when the
// row count, type or device list changes: an index only ever grows).
class KernelCorpusCache;
std::shared_ptr<KernelCorpusCache> NewKernelCorpusCache();

// Writes the best k per query, best first: scores [nq, k] and global row positions [nq, k]
// (-1 / -inf pad when the corpus has fewer than k rows). Error(kInvalidArgument) when k > 2048,
// Error(kOutOfMemory) / Error(kInternal) for CUDA failures. `cache` may be null (nothing kept).
void KernelSearch(const KernelSearchRequest& req, KernelCorpusCache* cache, float* out_scores, int64_t* out_pos);

// Frees the pinned host buffers that searches keep for reuse (at most 8).
void ReleaseKernelBuffers();

// True when KernelSearch keeps its exactness promise for this k: the 16-bit pass must be able to
// keep at least 64 candidates more than k (k' <= 2048), so k <= 1984. DenseIndex sends larger k
// to the LibTorch path; KernelSearch itself accepts k <= 2048 (the tail may then differ).
inline bool KernelSearchExactFor(int64_t k) { return k >= 1 && k <= 2048 - 64; }

// GAINRAG_CUDA_KERNELS is "1" / "on" / "true" (read each call).
bool CudaKernelsRequestedByEnv();
// GAINRAG_CUDA_SHARDS: unset -> {fallback}; "all" -> every visible device; "0,2" -> that list.
std::vector<int> KernelDevicesFromEnv(int fallback);

}  // namespace gainrag
