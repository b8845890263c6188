#include "index/dense_index.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "core/error.h"
#include "cuda/kernel_search.h"
#include "index/topk_cpu.h"

namespace gainrag {
namespace {

// Measured on a 2-core Zen 4 with OpenBLAS (bench/retrieval.ts, N=200k x 768, Q=1000): corpus
// blocks of 4096..16384 rows all run at ~630 q/s; 8192 keeps the 1024 x 8192 score block (32 MiB)
// near the last-level cache for the filter pass, while larger blocks spill it (32768: ~615 q/s).
constexpr int64_t kDefaultCorpusBlock = 8192;
constexpr int64_t kDefaultQueryBlock = 1024;
// Rows converted per step in Add (bounds the temporary float copy).
constexpr int64_t kAddChunk = 65536;

// Out-of-core search (issue #10): pages of the mapped vectors.bin that a search has read stay in
// the process's resident set until the kernel reclaims them, so scanning an index near or above
// RAM size pushes everything else out first. When the mapped part is larger than
// GAINRAG_MAPPED_RESIDENT_MAX bytes (default: half of physical memory), each block is dropped
// from the resident set once scored (MADV_DONTNEED; the mapping is never written, so its pages
// are simply read again from the file or page cache) and the next block is requested ahead
// (MADV_WILLNEED): resident memory stays about two blocks. Below the limit nothing changes.
int64_t MappedResidentLimit() {
  if (const char* v = std::getenv("GAINRAG_MAPPED_RESIDENT_MAX")) return std::atoll(v);
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? int64_t(pages) * page / 2 : int64_t{1} << 62;
}

void AdviseRange(const void* begin, size_t bytes, int advice) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t a = reinterpret_cast<uintptr_t>(begin) & ~(page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(begin) + bytes + page - 1) & ~(page - 1);
  if (e > a) madvise(reinterpret_cast<void*>(a), e - a, advice);  // advice only: errors are harmless
}

// Index of the first row of a [n, d] tensor holding a non-finite value, or -1.
int64_t FirstNonFiniteRow(const at::Tensor& x) {
  at::Tensor bad = at::logical_not(at::isfinite(x).all(1));
  if (!bad.any().item<bool>()) return -1;
  return bad.nonzero().min().item<int64_t>();
}

}  // namespace

void ConvertRows(const at::Tensor& rows, at::Tensor dst, Metric metric, int64_t first_row) {
  at::Tensor x = rows.to(at::kFloat);
  int64_t bad = FirstNonFiniteRow(x);
  GR_CHECK(bad < 0, kData, "vector ", first_row + bad, " contains NaN or Inf");
  if (metric == Metric::kCosine) x = x / x.norm(2, {1}, true).clamp_min(1e-30);
  dst.copy_(x);
  if (dst.scalar_type() != at::kFloat) {
    bad = FirstNonFiniteRow(dst);
    GR_CHECK(bad < 0, kData, "vector ", first_row + bad, " has values outside the range of ", c10::toString(dst.scalar_type()));
  }
}

Metric ParseMetric(const std::string& name) {
  if (name == "ip" || name == "inner_product" || name == "dot") return Metric::kInnerProduct;
  if (name == "cosine" || name == "cos") return Metric::kCosine;
  GR_FAIL(kInvalidArgument, "metric must be 'ip' or 'cosine', got '", name, "'");
}

const char* MetricName(Metric metric) { return metric == Metric::kCosine ? "cosine" : "ip"; }

DenseIndex::DenseIndex(int64_t dim, at::ScalarType dtype, Metric metric) : dim_(dim), dtype_(dtype), metric_(metric) {
  GR_CHECK(dim > 0 && dim <= (1 << 20), kInvalidArgument, "index dimension must be in [1, 1048576], got ", dim);
  GR_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, kInvalidArgument,
           "index dtype must be float32, float16 or bfloat16");
}

at::Tensor DenseIndex::Rows(int64_t begin, int64_t end) const {
  if (end <= mapped_rows_) return mapped_.slice(0, begin, end);
  GR_CHECK(begin >= mapped_rows_, kInternal, "row range crosses storage parts");
  return owned_.slice(0, begin - mapped_rows_, end - mapped_rows_);
}

at::Tensor DenseIndex::Row(int64_t r) const {
  GR_CHECK(r >= 0 && r < size(), kInvalidArgument, "row ", r, " out of range [0, ", size(), ")");
  if (r < mapped_rows_) mapped_file_->CheckUnchanged(ErrorCode::kIndex);
  return Rows(r, r + 1).to(at::kFloat).reshape({dim_});
}

void DenseIndex::CopyRowsFloat(int64_t begin, int64_t end, float* out) const {
  GR_CHECK(begin >= 0 && begin <= end && end <= size(), kInvalidArgument, "rows [", begin, ", ", end, ") out of range [0, ",
           size(), ")");
  if (begin < mapped_rows_) mapped_file_->CheckUnchanged(ErrorCode::kIndex);
  for (int64_t r = begin; r < end;) {
    const int64_t e = std::min(end, PartEnd(r));
    at::from_blob(out + (r - begin) * dim_, {e - r, dim_}, at::TensorOptions().dtype(at::kFloat)).copy_(Rows(r, e));
    r = e;
  }
}

void DenseIndex::CheckNewIds(const std::vector<int64_t>& fresh) const {
  for (size_t i = 1; i < fresh.size(); ++i)
    GR_CHECK(fresh[i] != fresh[i - 1], kIndex, "duplicate id ", fresh[i], " in the added rows");
  if (fresh.empty()) return;
  if (ids_consecutive_) {
    auto it = std::lower_bound(fresh.begin(), fresh.end(), int64_t{0});
    GR_CHECK(it == fresh.end() || *it >= size(), kIndex, "id ", *it, " is already in the index");
    return;
  }
  if (!sorted_valid_) {
    sorted_ids_ = ids_;
    std::sort(sorted_ids_.begin(), sorted_ids_.end());
    recent_ids_.clear();
    sorted_valid_ = true;
  }
  for (int64_t id : fresh) {
    bool taken = std::binary_search(sorted_ids_.begin(), sorted_ids_.end(), id) ||
                 std::binary_search(recent_ids_.begin(), recent_ids_.end(), id);
    GR_CHECK(!taken, kIndex, "id ", id, " is already in the index");
  }
}

void DenseIndex::RecordIds(const std::vector<int64_t>& fresh_sorted) {
  const int64_t before = static_cast<int64_t>(ids_.size()) - static_cast<int64_t>(fresh_sorted.size());
  if (ids_consecutive_) {
    bool still = true;
    for (int64_t i = before; i < static_cast<int64_t>(ids_.size()) && still; ++i) still = ids_[i] == i;
    ids_consecutive_ = still;
  }
  for (int64_t id : fresh_sorted) max_id_ = std::max(max_id_, id);
  if (ids_consecutive_ || !sorted_valid_) return;
  std::vector<int64_t> merged;
  merged.reserve(recent_ids_.size() + fresh_sorted.size());
  std::merge(recent_ids_.begin(), recent_ids_.end(), fresh_sorted.begin(), fresh_sorted.end(), std::back_inserter(merged));
  recent_ids_.swap(merged);
  // Merge the recent run into the main copy once it is a fraction of it: O(N) per merge, and
  // merges get rarer as the index grows.
  if (recent_ids_.size() > std::max<size_t>(size_t{1} << 16, sorted_ids_.size() / 8)) {
    merged.clear();
    merged.reserve(sorted_ids_.size() + recent_ids_.size());
    std::merge(sorted_ids_.begin(), sorted_ids_.end(), recent_ids_.begin(), recent_ids_.end(), std::back_inserter(merged));
    sorted_ids_.swap(merged);
    recent_ids_.clear();
  }
}

void DenseIndex::Add(const at::Tensor& vectors, const at::Tensor& ids, const RunContext& ctx) {
  c10::InferenceMode guard;
  GR_CHECK(vectors.dim() == 2, kShape, "vectors must be a [n, dim] matrix");
  GR_CHECK(vectors.size(1) == dim_, kShape, "vectors have dimension ", vectors.size(1), " but the index has ", dim_);
  GR_CHECK(vectors.scalar_type() == at::kFloat || vectors.scalar_type() == at::kHalf ||
               vectors.scalar_type() == at::kBFloat16,
           kInvalidArgument, "vectors must be float32, float16 or bfloat16");
  const int64_t n = vectors.size(0);
  if (n == 0) return;

  std::vector<int64_t> fresh(static_cast<size_t>(n));
  if (ids.defined()) {
    GR_CHECK(ids.scalar_type() == at::kLong && ids.numel() == n, kShape, "ids must be ", n, " int64 values, got ",
             ids.numel());
    at::Tensor c = ids.contiguous();
    std::copy(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + n, fresh.begin());
  } else {
    const int64_t next = ids_consecutive_ ? size() : max_id_ + 1;
    for (int64_t i = 0; i < n; ++i) fresh[i] = next + i;
  }
  std::vector<int64_t> sorted = fresh;
  std::sort(sorted.begin(), sorted.end());
  GR_CHECK(sorted.front() >= 0, kIndex, "id ", sorted.front(), " is negative (ids must be >= 0; -1 means no result)");
  CheckNewIds(sorted);

  if (!owned_.defined() || owned_rows_ + n > owned_.size(0)) {
    // Geometric growth keeps repeated adds linear overall.
    const int64_t capacity = std::max({owned_rows_ + n, owned_.defined() ? 2 * owned_.size(0) : int64_t{0}, int64_t{1024}});
    at::Tensor grown = at::empty({capacity, dim_}, at::TensorOptions().dtype(dtype_));
    if (owned_rows_ > 0) grown.slice(0, 0, owned_rows_).copy_(owned_.slice(0, 0, owned_rows_));
    owned_ = grown;
  }
  for (int64_t b = 0; b < n; b += kAddChunk) {
    ctx.ThrowIfCancelled();
    const int64_t e = std::min(n, b + kAddChunk);
    ConvertRows(vectors.slice(0, b, e), owned_.slice(0, owned_rows_ + b, owned_rows_ + e), metric_, b);
    ctx.Progress(e, n, "add");
  }
  owned_rows_ += n;
  ids_.insert(ids_.end(), fresh.begin(), fresh.end());
  RecordIds(sorted);
}

void DenseIndex::SetDevice(at::Device device) {
#ifdef GAINRAG_WITH_CUDA
  GR_CHECK(device.is_cpu() || device.is_cuda(), kUnsupported, "unsupported index device ", device.str());
#else
  GR_CHECK(device.is_cpu(), kUnsupported, "this build has no CUDA backend (device ", device.str(), ")");
#endif
  device_ = device;
  device_rows_ = at::Tensor();
  device_rows_count_ = -1;
#ifdef GAINRAG_WITH_CUDA_KERNELS
  kernel_cache_.reset();
#endif
}

SearchResult DenseIndex::Search(const at::Tensor& queries, int64_t k, const RunContext& ctx,
                                const SearchOptions& options) const {
  c10::InferenceMode guard;
  GR_CHECK(size() > 0, kIndex, "cannot search an empty index");
  if (mapped_file_) mapped_file_->CheckUnchanged(ErrorCode::kIndex);
  GR_CHECK(queries.dim() == 2, kShape, "queries must be a [Q, dim] matrix");
  GR_CHECK(queries.size(1) == dim_, kShape, "queries have dimension ", queries.size(1), " but the index has ", dim_);
  GR_CHECK(queries.scalar_type() == at::kFloat, kInvalidArgument, "queries must be float32");
  GR_CHECK(k >= 1 && k <= size(), kInvalidArgument, "k must be in [1, ", size(), "], got ", k);
  const int64_t bad = FirstNonFiniteRow(queries.cpu());
  GR_CHECK(bad < 0, kData, "query ", bad, " contains NaN or Inf");
  at::Tensor q = queries.contiguous();
  if (metric_ == Metric::kCosine) q = q / q.norm(2, {1}, true).clamp_min(1e-30);
  if (q.size(0) == 0) {
    return {at::empty({0, k}, at::TensorOptions().dtype(at::kLong)), at::empty({0, k}, at::TensorOptions().dtype(at::kFloat))};
  }
#ifdef GAINRAG_WITH_CUDA
  if (device_.is_cuda()) {
#ifdef GAINRAG_WITH_CUDA_KERNELS
    // Opt-in until the kernels have been checked on a GPU (bench/gpu/kernels.sh); k > 1984
    // stays on the LibTorch path (see KernelSearchExactFor).
    if ((options.cuda_kernels || CudaKernelsRequestedByEnv()) && KernelSearchExactFor(k))
      return SearchCudaKernels(q, k, ctx, options);
#endif
    return SearchCuda(q, k, ctx, options);
  }
#endif
  return SearchCpu(q, k, ctx, options);
}

SearchResult DenseIndex::SearchCpu(const at::Tensor& q, int64_t k, const RunContext& ctx,
                                   const SearchOptions& options) const {
  const int64_t nq = q.size(0);
  const int64_t n = size();
  const int64_t cb = options.corpus_block > 0 ? options.corpus_block : kDefaultCorpusBlock;
  const int64_t qb = std::min(nq, options.query_block > 0 ? options.query_block : kDefaultQueryBlock);
  // Queries are taken in groups whose top-k buffers stay under ~256 MiB; within a group the
  // corpus is the outer loop, so each corpus block is read (and upcast) once per group, not once
  // per query block.
  const int64_t entry_bytes = int64_t(sizeof(RunningTopK::Entry)) * std::max<int64_t>(2 * k, k + 64);
  const int64_t group = options.query_group > 0 ? (options.query_group + qb - 1) / qb * qb
                                                : std::max(qb, ((int64_t{256} << 20) / entry_bytes) / qb * qb);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor score_buf = at::empty({qb * std::min(cb, n)}, f32);
  at::Tensor upcast_buf = dtype_ == at::kFloat ? at::Tensor() : at::empty({std::min(cb, n), dim_}, f32);
  at::Tensor out_scores = at::empty({nq, k}, f32);
  at::Tensor out_pos = at::empty({nq, k}, at::TensorOptions().dtype(at::kLong));

  const int64_t corpus_steps = (n + cb - 1) / cb + (mapped_rows_ > 0 && owned_rows_ > 0 ? 1 : 0);
  const int64_t total = ((nq + group - 1) / group) * corpus_steps;
  int64_t done = 0;
  const int64_t row_bytes = dim_ * int64_t(mapped_rows_ > 0 ? mapped_.element_size() : 0);
  const bool stream_mapped = mapped_rows_ > 0 && mapped_rows_ * row_bytes > MappedResidentLimit();
  for (int64_t g0 = 0; g0 < nq; g0 += group) {
    const int64_t g1 = std::min(nq, g0 + group);
    std::vector<RunningTopK> topk;
    for (int64_t q0 = g0; q0 < g1; q0 += qb) topk.emplace_back(std::min(qb, g1 - q0), k);
    for (int64_t r0 = 0; r0 < n;) {
      ctx.ThrowIfCancelled();
      const int64_t r1 = std::min(r0 + cb, PartEnd(r0));
      const int64_t nb = r1 - r0;
      at::Tensor block = Rows(r0, r1);
      const bool release = stream_mapped && r1 <= mapped_rows_;
      if (release && r1 < mapped_rows_)
        AdviseRange(static_cast<const char*>(mapped_.data_ptr()) + r1 * row_bytes,
                    size_t(std::min(cb, mapped_rows_ - r1) * row_bytes), MADV_WILLNEED);
      if (dtype_ != at::kFloat) block = upcast_buf.slice(0, 0, nb).copy_(block);
      for (size_t b = 0; b < topk.size(); ++b) {
        const int64_t q0 = g0 + int64_t(b) * qb;
        const int64_t rows = std::min(qb, g1 - q0);
        at::Tensor scores = score_buf.slice(0, 0, rows * nb).view({rows, nb});
        at::mm_out(scores, q.slice(0, q0, q0 + rows), block.t());
        const float* s = scores.data_ptr<float>();
        RunningTopK& state = topk[b];
        at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
          for (int64_t row = begin; row < end; ++row) state.Push(row, s + row * nb, nb, r0);
        });
      }
      if (release)
        AdviseRange(static_cast<const char*>(mapped_.data_ptr()) + r0 * row_bytes, size_t(nb * row_bytes), MADV_DONTNEED);
      r0 = r1;
      ctx.Progress(++done, total, "search");
    }
    for (size_t b = 0; b < topk.size(); ++b) {
      const int64_t q0 = g0 + int64_t(b) * qb;
      topk[b].Finish(out_scores.data_ptr<float>() + q0 * k, out_pos.data_ptr<int64_t>() + q0 * k);
    }
  }
  // Row positions -> ids (-1 stays -1: a padded slot).
  at::Tensor out_ids = at::empty({nq, k}, at::TensorOptions().dtype(at::kLong));
  const int64_t* pos = out_pos.data_ptr<int64_t>();
  int64_t* ids = out_ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < nq * k; ++i) ids[i] = pos[i] < 0 ? -1 : ids_[pos[i]];
  return {out_ids, out_scores};
}

#ifdef GAINRAG_WITH_CUDA
SearchResult DenseIndex::SearchCuda(const at::Tensor& q, int64_t k, const RunContext& ctx,
                                    const SearchOptions& options) const {
  const int64_t n = size();
  std::unique_lock<std::mutex> lock(device_mutex_);
  if (device_rows_count_ != n) {
    // fp16/bf16 corpora stay 16-bit on the GPU; an fp32 corpus stays fp32 (exactness first).
    at::Tensor all = at::empty({n, dim_}, at::TensorOptions().dtype(dtype_).device(device_));
    if (mapped_rows_ > 0) all.slice(0, 0, mapped_rows_).copy_(mapped_);
    if (owned_rows_ > 0) all.slice(0, mapped_rows_, n).copy_(owned_.slice(0, 0, owned_rows_));
    device_rows_ = all;
    device_rows_count_ = n;
  }
  const at::Tensor rows = device_rows_;
  lock.unlock();
  const int64_t cb = options.corpus_block > 0 ? options.corpus_block : 65536;
  const int64_t qb = options.query_block > 0 ? options.query_block : 4096;
  at::Tensor qd = q.to(device_);
  std::vector<at::Tensor> score_parts, pos_parts;
  for (int64_t q0 = 0; q0 < q.size(0); q0 += qb) {
    at::Tensor qt = qd.slice(0, q0, std::min(q.size(0), q0 + qb));
    at::Tensor best_s, best_p;
    for (int64_t r0 = 0; r0 < n; r0 += cb) {
      ctx.ThrowIfCancelled();
      const int64_t r1 = std::min(n, r0 + cb);
      // Scores in fp32 so that the ranking matches the CPU path up to summation order.
      at::Tensor s = at::mm(qt, rows.slice(0, r0, r1).to(at::kFloat).t());
      auto top = at::topk(s, std::min(k, r1 - r0), 1, true, true);
      at::Tensor ts = std::get<0>(top), tp = std::get<1>(top) + r0;
      if (best_s.defined()) {
        ts = at::cat({best_s, ts}, 1);
        tp = at::cat({best_p, tp}, 1);
        auto merged = at::topk(ts, std::min<int64_t>(k, ts.size(1)), 1, true, true);
        ts = std::get<0>(merged);
        tp = tp.gather(1, std::get<1>(merged));
      }
      best_s = ts;
      best_p = tp;
    }
    score_parts.push_back(best_s.cpu());
    pos_parts.push_back(best_p.cpu());
  }
  at::Tensor scores = at::cat(score_parts, 0).contiguous();
  at::Tensor pos = at::cat(pos_parts, 0).contiguous();
  at::Tensor out_ids = at::empty_like(pos);
  const int64_t* p = pos.data_ptr<int64_t>();
  int64_t* ids = out_ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < pos.numel(); ++i) ids[i] = ids_[p[i]];
  return {out_ids, scores};
}
#endif

}  // namespace gainrag
