// Streams rows into an index directory without holding the corpus in memory (building a
// 21M x 768 index needs tens of GB as a matrix, but only a chunk at a time here). Rows get
// consecutive ids 0..count-1 (the row number, which is how the passage store is addressed)
// unless the caller gives ids (an import whose vectors come in another order than its passages:
// the caller keeps them unique; DenseIndex::Open checks that again).
// Files are written under temporary names; Finish() renames them and writes the manifest last,
// so a reader never sees a partial index.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdio>
#include <string>

#include "core/run_context.h"
#include "index/checksum.h"
#include "index/dense_index.h"

namespace gainrag {

class DenseIndexWriter {
 public:
  // Creates `dir` if needed. Error(kIo) when the files cannot be created.
  DenseIndexWriter(const std::string& dir, int64_t dim, at::ScalarType dtype, Metric metric);
  ~DenseIndexWriter();  // an unfinished writer removes its temporary files
  DenseIndexWriter(const DenseIndexWriter&) = delete;
  DenseIndexWriter& operator=(const DenseIndexWriter&) = delete;

  // Appends rows [n, dim] of any float type (validated and converted like DenseIndex::Add).
  // All-or-nothing per call: a bad row leaves the files as they were before the call.
  // ids: int64 [n] (each >= 0), or undefined for count..count+n-1.
  void Append(const at::Tensor& vectors, const RunContext& ctx = RunContext(), const at::Tensor& ids = at::Tensor());
  // Appends `rows` rows of little-endian `dtype` (float32/float16) stored at byte `offset` of the
  // file `path` (a matrix inside another container, e.g. a pickle), a chunk at a time through
  // an aligned copy. Error(kData) when the file is shorter than offset + rows x dim elements.
  void AppendFileRows(const std::string& path, uint64_t offset, int64_t rows, at::ScalarType dtype,
                      const at::Tensor& ids, const RunContext& ctx = RunContext());
  // Flushes, fsyncs, renames vectors.bin / ids.bin into place and writes manifest.json.
  void Finish();
  void Abort();
  // Thread-safe, returns at once: a running Append stops at its next chunk (Error(kCancelled),
  // rolled back) and later calls fail, so the caller can Abort() when the writer is free
  // instead of waiting for a long append on the JS thread.
  void RequestAbort() noexcept { abort_requested_.store(true); }
  bool abort_requested() const noexcept { return abort_requested_.load(); }

  int64_t count() const { return count_; }
  int64_t dim() const { return dim_; }

 private:
  std::string dir_;
  int64_t dim_;
  at::ScalarType dtype_;
  Metric metric_;
  int64_t count_ = 0;
  FILE* vectors_ = nullptr;
  FILE* ids_ = nullptr;
  std::string vectors_tmp_, ids_tmp_;
  at::Tensor staging_;  // converted chunk in the storage type
  Checksum sum_vectors_, sum_ids_;  // over the bytes written so far (for the manifest)
  std::atomic<bool> abort_requested_{false};

  void ThrowIfAborted() const;
};

}  // namespace gainrag
