// Exact dense retrieval: inner-product (or cosine) top-k over a matrix of passage embeddings.
//
// Storage: rows in float32, float16 or bfloat16, in up to two parts: a read-only part memory-
// mapped from an index directory (so an index larger than RAM still searches through the page
// cache) and a growable in-memory part for rows added afterwards. Cosine indexes store unit rows
// (normalised at add) and normalise queries, so both metrics search by inner product.
//
// On disk (a directory): manifest.json {format: "gainrag-dense-index", version: 1, dim, dtype,
// count, metric, checksums: {vectors, ids, manifest}}, vectors.bin (count x dim, row-major,
// little-endian, dtype elements) and ids.bin (count int64 LE). The checksums (checksum.h, hex)
// cover each file and, for `manifest`, the other fields plus both file checksums, so an edited
// metric or reordered ids are caught at open. Manifests written before checksums existed are
// still read (their ids are validated, nothing else can be).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/run_context.h"
#include "io/mapped_file.h"

namespace gainrag {

enum class Metric { kInnerProduct, kCosine };
Metric ParseMetric(const std::string& name);  // "ip" | "cosine"; Error(kInvalidArgument)
const char* MetricName(Metric metric);

struct SearchOptions {
  // Rows of the corpus scored per GEMM, and queries per GEMM. The score block (query_block x
  // corpus_block floats) is the only per-search buffer that grows with the corpus.
  int64_t corpus_block = 0;  // 0: default
  int64_t query_block = 0;   // 0: default
  // Queries whose top-k buffers are kept while the corpus is scanned once (0: as many as fit
  // ~256 MiB of buffers; rounded up to whole query blocks).
  int64_t query_group = 0;
  // CUDA only, opt-in: gainrag's own scoring/selection kernels (native/cuda/kernel_search.h)
  // instead of the LibTorch path, for k <= 1984, in a build with -DGAINRAG_CUDA_KERNELS=ON.
  // GAINRAG_CUDA_KERNELS=1 in the environment turns them on too. Ignored elsewhere.
  bool cuda_kernels = false;
};

class KernelCorpusCache;  // native/cuda/kernel_search.h

struct SearchResult {
  at::Tensor ids;     // int64 [Q, k]
  at::Tensor scores;  // float32 [Q, k], best first
};

class DenseIndex {
 public:
  DenseIndex(int64_t dim, at::ScalarType dtype, Metric metric);

  // Opens an index directory; vectors are mapped. Error(kIndex) for a malformed index: sizes,
  // the manifest checksum, ids.bin (checksum; ids non-negative and unique) are always checked;
  // kFull also reads vectors.bin once (checksum, no NaN/Inf rows), which costs one pass over the
  // file (~seconds per 10 GB) — kHeader skips that for huge indexes whose files are trusted.
  enum class Verify { kFull, kHeader };
  static std::shared_ptr<DenseIndex> Open(const std::string& dir, Verify verify = Verify::kFull);

  // Appends rows. vectors: float32 (or 16-bit float) [n, dim], any CPU tensor; ids: int64 [n], or undefined for
  // consecutive ids after the largest so far. Error(kData) on NaN/Inf (or values the storage type
  // cannot hold), Error(kIndex) on a duplicate or negative id (-1 means "no result" in search
  // output), Error(kShape) on a dimension mismatch.
  // All-or-nothing: on error the index is unchanged.
  void Add(const at::Tensor& vectors, const at::Tensor& ids, const RunContext& ctx = RunContext());

  // Exact top-k. queries: float32 [Q, dim]. Error(kIndex) if the index is empty or its mapped
  // vectors.bin was modified in place since open (checked first: reading a truncated mapping
  // would kill the process with SIGBUS), kInvalidArgument
  // if k is not in [1, size], kData on non-finite queries. Equal scores are ordered by row (the
  // row added first wins) on CPU; on CUDA their order is whatever at::topk gives.
  // CPU: blocked GEMM (OpenBLAS through ATen) + a threshold filter per query (topk_cpu.h); the
  // Q x N score matrix is never materialised. Scores are fp32; 16-bit rows are upcast per block.
  SearchResult Search(const at::Tensor& queries, int64_t k, const RunContext& ctx = RunContext(),
                      const SearchOptions& options = SearchOptions()) const;

  // Writes manifest.json, vectors.bin and ids.bin into `dir` (created if needed), each file
  // through a temporary name and a rename, the manifest last: a reader sees either the old
  // index or the complete new one.
  void SaveFiles(const std::string& dir, const RunContext& ctx = RunContext()) const;
  // Writes a complete index to a fresh directory next to `dir` and renames it onto `dir`
  // (replacing an existing index directory).
  void Save(const std::string& dir, const RunContext& ctx = RunContext()) const;

  int64_t size() const { return mapped_rows_ + owned_rows_; }
  int64_t dim() const { return dim_; }
  at::ScalarType dtype() const { return dtype_; }
  Metric metric() const { return metric_; }
  // Row r's id (for tests and tools).
  const std::vector<int64_t>& ids() const { return ids_; }
  // Row r as float32 (a copy; for tests and tools).
  at::Tensor Row(int64_t r) const;
  // Rows [begin, end) as float32 into `out` (end - begin rows of dim floats): exporters.
  void CopyRowsFloat(int64_t begin, int64_t end, float* out) const;

 private:
  // Rows [begin, end) of the storage as a tensor view (never spans the two parts).
  at::Tensor Rows(int64_t begin, int64_t end) const;
  int64_t PartEnd(int64_t row) const { return row < mapped_rows_ ? mapped_rows_ : size(); }
  void CheckNewIds(const std::vector<int64_t>& fresh) const;
  void RecordIds(const std::vector<int64_t>& fresh);
  SearchResult SearchCpu(const at::Tensor& queries, int64_t k, const RunContext& ctx,
                         const SearchOptions& options) const;
#ifdef GAINRAG_WITH_CUDA
  SearchResult SearchCuda(const at::Tensor& queries, int64_t k, const RunContext& ctx,
                          const SearchOptions& options) const;
#endif
#ifdef GAINRAG_WITH_CUDA_KERNELS
  // Defined in native/index/dense_index_cuda.cpp; device copies kept in kernel_cache_.
  SearchResult SearchCudaKernels(const at::Tensor& queries, int64_t k, const RunContext& ctx,
                                 const SearchOptions& options) const;
  mutable std::shared_ptr<KernelCorpusCache> kernel_cache_;
#endif

  int64_t dim_;
  at::ScalarType dtype_;
  Metric metric_;

  std::shared_ptr<MappedFile> mapped_file_;
  at::Tensor mapped_;  // [mapped_rows_, dim] view over vectors.bin (undefined when none)
  int64_t mapped_rows_ = 0;
  at::Tensor owned_;   // [capacity, dim]; rows [0, owned_rows_) are in use
  int64_t owned_rows_ = 0;

  std::vector<int64_t> ids_;
  // Duplicate detection without a hash set of every id (21M ids would cost ~1 GB): while ids
  // are exactly 0..size-1 nothing is stored; otherwise a sorted copy plus a sorted recent run,
  // merged when the run grows. Built lazily on the first explicit-id add.
  bool ids_consecutive_ = true;
  mutable std::vector<int64_t> sorted_ids_;
  mutable std::vector<int64_t> recent_ids_;
  mutable bool sorted_valid_ = false;

  // Search device. On CUDA the corpus is copied to the GPU on the first search after a change.
  at::Device device_ = at::Device(at::kCPU);
  mutable std::mutex device_mutex_;  // concurrent searches share the GPU copy; one builds it
  mutable at::Tensor device_rows_;
  mutable int64_t device_rows_count_ = -1;
  int64_t max_id_ = -1;

 public:
  // cpu, or cuda:N in a CUDA build (Error(kUnsupported) otherwise).
  void SetDevice(at::Device device);
  at::Device device() const { return device_; }
};

// Validates rows [n, dim] (any float type) and stores them into `dst` (same shape, the storage
// type), L2-normalised for cosine. Error(kData) names the offending row as first_row + i.
void ConvertRows(const at::Tensor& rows, at::Tensor dst, Metric metric, int64_t first_row);

// Writes `dir`/manifest.json (atomically) describing an index of `count` rows whose files have
// the given checksums (Checksum::Hex of vectors.bin and ids.bin).
void WriteIndexManifest(const std::string& dir, int64_t dim, at::ScalarType dtype, int64_t count, Metric metric,
                        const std::string& vectors_checksum, const std::string& ids_checksum);

// Reads a .npy header (v1/v2/v3; '<f4' or '<f2', C order, 2-D) and returns the mapped matrix
// (float32 or float16) without copying. Error(kIndex) for anything else.
at::Tensor MapNpyMatrix(const std::string& path, std::shared_ptr<MappedFile>* keep = nullptr);

}  // namespace gainrag
