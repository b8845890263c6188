// FAISS index files in and out, through FAISS's own reader and writer. Compiled with FAISS only
// when the build found it (GAINRAG_WITH_FAISS); otherwise every function fails with
// Error(kUnsupported) naming the package to install, and the rest of the engine is unchanged.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/run_context.h"
#include "index/dense_index.h"

namespace gainrag {

bool FaissAvailable();

struct FaissImportResult {
  int64_t count = 0;
  int64_t dim = 0;
  std::string type;  // the FAISS class read, e.g. "IndexPQ"
};

// Reads `faiss_file` (any index type FAISS reads whose vectors it can reconstruct: flat, PQ, SQ,
// IVF*, HNSW ...) and writes its vectors, as FAISS reconstructs them, into a gainrag index in
// `dir`: row i gets ids[i] (int64 [ntotal]). Inner-product search over PQ/SQ reconstructions
// ranks as FAISS's own asymmetric search does. Error(kData) when ids.numel() != ntotal or the
// file is not a FAISS index; kUnsupported for an L2 index (gainrag searches by inner product)
// or a type that cannot reconstruct.
FaissImportResult ImportFaissIndex(const std::string& faiss_file, const std::string& dir, at::ScalarType dtype,
                                   Metric metric, const at::Tensor& ids, const RunContext& ctx = RunContext());

// Writes the gainrag index in `index_dir` as an IndexFlatIP file `faiss_file` (temporary name,
// then rename) and returns the index's ids in row order (FAISS row i = gainrag row i). The flat
// index is built in memory (rows x dim x 4 bytes), as FAISS's writer needs it.
std::vector<int64_t> ExportFaissIndex(const std::string& index_dir, const std::string& faiss_file,
                                      const RunContext& ctx = RunContext());

}  // namespace gainrag
