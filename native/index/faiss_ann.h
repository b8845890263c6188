// Approximate search through FAISS (issue #17 item 3): an index directory may carry `ann.faiss`,
// a FAISS index built by `index_factory` ("PQ64", "IVF4096,PQ64", "HNSW32,Flat", ...) from the
// directory's own rows, FAISS row i = index row i. gainrag's exact search stays the default and
// the ground truth; this is only FAISS doing the approximate part. Without FAISS compiled in,
// both entry points fail with Error(kUnsupported).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/run_context.h"
#include "index/dense_index.h"

namespace faiss {
struct Index;
}

namespace gainrag {

struct AnnBuildOptions {
  std::string factory;     // faiss::index_factory description
  int64_t train_size = 0;  // rows sampled (evenly spaced) to train on; 0: min(rows, 262144)
};

struct AnnSearchOptions {
  int64_t nprobe = 0;     // IVF lists visited (0: the index's own setting)
  int64_t ef_search = 0;  // HNSW candidate list (0: the index's own setting)
};

// Trains and fills a FAISS index over the rows of the gainrag index in `index_dir` (metric
// inner product; a cosine index's rows are stored unit-length already) and writes it to
// `out_file` (temporary name, then rename). Returns the rows added. Error(kInvalidArgument) for a
// factory string FAISS rejects.
int64_t BuildFaissAnn(const std::string& index_dir, const std::string& out_file, const AnnBuildOptions& options,
                      const RunContext& ctx = RunContext());

class FaissAnn {
 public:
  // Reads `file` for `exact` (its ids and metric; Error(kIndex) when the sizes differ).
  static std::shared_ptr<FaissAnn> Open(const std::string& file, std::shared_ptr<const DenseIndex> exact);
  ~FaissAnn();
  // Top-k by FAISS. Slots FAISS leaves empty (an IVF probe that saw fewer than k rows) are id -1,
  // score -inf, as in exact search. Searches run one at a time (the parameters live in the index).
  SearchResult Search(const at::Tensor& queries, int64_t k, const AnnSearchOptions& options,
                      const RunContext& ctx = RunContext()) const;
  std::string type() const { return type_; }
  int64_t size() const;

 private:
  FaissAnn() = default;
  std::shared_ptr<faiss::Index> index_;  // shared_ptr: destructible where faiss::Index is incomplete (no-FAISS builds)
  std::shared_ptr<const DenseIndex> exact_;
  std::string type_;
  mutable std::mutex mutex_;
};

}  // namespace gainrag
