// DenseIndex's entry into gainrag's own CUDA kernels. Defined here in index/, not in cuda/, so
// that the arrow runs one way: index/ calls the plain functions of cuda/kernel_search.h (no
// CUDA or LibTorch types in it) and cuda/ knows nothing of DenseIndex. Compiled only with
// GAINRAG_WITH_CUDA_KERNELS (CMake -DGAINRAG_CUDA_KERNELS=ON); the dispatch in
// index/dense_index.cpp sends a CUDA search here when SearchOptions::cuda_kernels or
// GAINRAG_CUDA_KERNELS=1 asks for it. Devices: the index's cuda:N, or GAINRAG_CUDA_SHARDS
// ("all" or "0,1") to shard the corpus over several GPUs.
#ifdef GAINRAG_WITH_CUDA_KERNELS
#include "index/dense_index.h"

#include <cstdlib>

#include "core/error.h"
#include "cuda/kernel_search.h"

namespace gainrag {

SearchResult DenseIndex::SearchCudaKernels(const at::Tensor& q, int64_t k, const RunContext& ctx,
                                           const SearchOptions& options) const {
  KernelSearchRequest req;
  // The index's own storage, never copied on the host: the mapped file, then the owned rows.
  if (mapped_rows_ > 0) req.parts.push_back({mapped_.data_ptr(), mapped_rows_});
  if (owned_rows_ > 0) req.parts.push_back({owned_.data_ptr(), owned_rows_});
  req.dim = dim_;
  req.type = dtype_ == at::kHalf       ? cuda_kernels::RowType::kFloat16
             : dtype_ == at::kBFloat16 ? cuda_kernels::RowType::kBFloat16
                                       : cuda_kernels::RowType::kFloat32;
  const at::Tensor qc = q.contiguous();
  req.queries = qc.data_ptr<float>();
  req.nq = qc.size(0);
  req.k = static_cast<int>(k);
  req.devices = KernelDevicesFromEnv(device_.has_index() ? device_.index() : 0);
  req.tile_rows = options.corpus_block;
  req.query_block = options.query_block;
  if (const char* v = std::getenv("GAINRAG_CUDA_RESIDENT_LIMIT")) req.resident_limit = std::atoll(v);
  req.check_cancelled = [&ctx] { ctx.ThrowIfCancelled(); };

  at::Tensor scores = at::empty({req.nq, k}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor pos = at::empty({req.nq, k}, at::TensorOptions().dtype(at::kLong));
  std::shared_ptr<KernelCorpusCache> cache;
  {
    std::lock_guard<std::mutex> lock(device_mutex_);
    if (!kernel_cache_) kernel_cache_ = NewKernelCorpusCache();
    cache = kernel_cache_;
  }
  KernelSearch(req, cache.get(), scores.data_ptr<float>(), pos.data_ptr<int64_t>());
  at::Tensor ids = at::empty_like(pos);
  const int64_t* p = pos.data_ptr<int64_t>();
  int64_t* out = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < pos.numel(); ++i) out[i] = p[i] < 0 ? -1 : ids_[p[i]];
  return {ids, scores};
}

}  // namespace gainrag
#endif  // GAINRAG_WITH_CUDA_KERNELS
