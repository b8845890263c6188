#include "index/faiss_ann.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <typeinfo>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/omp_threads.h"

#ifdef GAINRAG_WITH_FAISS
#include <cxxabi.h>
#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IVFlib.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <dlfcn.h>

#include <mutex>
#endif

namespace gainrag {

#ifndef GAINRAG_WITH_FAISS

namespace {
[[noreturn]] void NoFaiss() {
  GR_FAIL(kUnsupported, "approximate (FAISS) indexes need a build of gainrag with FAISS (Debian: apt-get install "
          "libfaiss-dev, then npm run build:native)");
}
}  // namespace

int64_t BuildFaissAnn(const std::string&, const std::string&, const AnnBuildOptions&, const RunContext&) { NoFaiss(); }
std::shared_ptr<FaissAnn> FaissAnn::Open(const std::string&, std::shared_ptr<const DenseIndex>) { NoFaiss(); }
FaissAnn::~FaissAnn() = default;
SearchResult FaissAnn::Search(const at::Tensor&, int64_t, const AnnSearchOptions&, const RunContext&) const { NoFaiss(); }
int64_t FaissAnn::size() const { return 0; }

#else

namespace {
constexpr int64_t kChunk = 16384;

// index_factory's "PQ<M>" and "IVF<n>,PQ<M>" turn on polysemous training: after k-means FAISS
// searches for a permutation of each sub-quantizer's codes so that Hamming distance between codes
// mimics their real distance. Only polysemous search (search_type ST_polysemous, polysemous_ht > 0)
// uses it; gainrag searches with the default asymmetric distance, where a permutation of the codes
// changes no distance and no result. It was the larger part of the PQ training time here (minutes:
// Debian's libfaiss is built for baseline x86-64, so its popcounts are libgcc's software
// __popcountdi2, measured 18% of all samples, the rest its annealing loop), and the reference
// builds IndexPQ with the constructor, which leaves it off too. ("PQ64np" already means this.)
void SkipPolysemousTraining(faiss::Index* index) {
  while (auto* pre = dynamic_cast<faiss::IndexPreTransform*>(index)) index = pre->index;
  if (auto* pq = dynamic_cast<faiss::IndexPQ*>(index)) pq->do_polysemous_training = false;
  if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(index)) ivfpq->do_polysemous_training = false;
}

// One OpenBLAS thread while FAISS searches. The IVF coarse quantizer's sgemm (from the calling
// thread, between FAISS's OpenMP regions) wakes OpenBLAS's own server thread, which then spins
// on sched_yield for a while after every product: `perf record` of an IVF64,PQ64 search at
// nprobe 8 showed that thread at 4.4% of the process's samples (Python FAISS: 1.4%), time taken
// from the two threads doing the work on a 2-core machine; with one BLAS thread it is gone. The
// product is ~1 ms per 1024 queries, so one thread costs nothing there. OpenBLAS's count is
// process-wide: the first search in saves and lowers it, the last one out restores it. Through
// dlsym because the engine links whatever libblas the system provides.
class OneBlasThreadScope {
 public:
  OneBlasThreadScope() {
    std::lock_guard<std::mutex> lock(Mutex());
    if (Active()++ == 0 && Set() && Get()) {
      Saved() = Get()();
      if (Saved() > 1) Set()(1);
    }
  }
  ~OneBlasThreadScope() {
    std::lock_guard<std::mutex> lock(Mutex());
    if (--Active() == 0 && Set() && Saved() > 1) Set()(Saved());
  }
  OneBlasThreadScope(const OneBlasThreadScope&) = delete;
  OneBlasThreadScope& operator=(const OneBlasThreadScope&) = delete;

 private:
  using GetFn = int (*)();
  using SetFn = void (*)(int);
  static GetFn Get() {
    static GetFn f = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    return f;
  }
  static SetFn Set() {
    static SetFn f = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    return f;
  }
  static std::mutex& Mutex() {
    static std::mutex m;
    return m;
  }
  static int& Active() {
    static int n = 0;
    return n;
  }
  static int& Saved() {
    static int n = 0;
    return n;
  }
};

// FAISS's k-means (PQ sub-quantizers, IVF coarse quantizer) opens thousands of short OpenMP
// regions (a BLAS product, then a parallel arg-min, per block, per iteration, per sub-quantizer).
// Between them libgomp's default (active) wait policy keeps the idle team thread spinning, and on
// a shared 2-core machine the spinner takes the core from the threads doing the work (and from
// OpenBLAS's own threads, which the products start). Measured with Python FAISS 1.7.3 on the same
// libfaiss, PQ64 training on 10,000 x 768 at load ~5: 125 s by default, 18 s with OMP_NUM_THREADS=1,
// 24 s with OMP_WAIT_POLICY=PASSIVE; OPENBLAS_NUM_THREADS=1 alone helped less (69 s), so the BLAS
// thread count is not the main cause. The wait policy is read once, when libgomp loads, and is shared
// by LibTorch's encoders, so training runs with one OpenMP thread on this (worker) thread only:
// OneOmpThreadScope (core/omp_threads.h) sets the calling thread's own team size; search keeps the
// engine's threads.
}  // namespace

int64_t BuildFaissAnn(const std::string& index_dir, const std::string& out_file, const AnnBuildOptions& options,
                      const RunContext& ctx) {
  std::shared_ptr<DenseIndex> source = DenseIndex::Open(index_dir, DenseIndex::Verify::kHeader);
  const int64_t n = source->size(), d = source->dim();
  GR_CHECK(n > 0, kIndex, index_dir, " has no rows to build a FAISS index from");
  std::unique_ptr<faiss::Index> index;
  try {
    index.reset(faiss::index_factory(int(d), options.factory.c_str(), faiss::METRIC_INNER_PRODUCT));
  } catch (const faiss::FaissException& e) {
    GR_FAIL(kInvalidArgument, "FAISS rejects the factory string '", options.factory, "': ", e.msg);
  }
  SkipPolysemousTraining(index.get());
  std::vector<float> buf;
  if (!index->is_trained) {
    const int64_t want = options.train_size > 0 ? std::min(n, options.train_size) : std::min<int64_t>(n, 262144);
    // Evenly spaced rows: deterministic, and spread over the whole corpus (shards are often
    // ordered by topic or source).
    buf.resize(static_cast<size_t>(want * d));
    for (int64_t i = 0; i < want; ++i) {
      if (i % 4096 == 0) ctx.ThrowIfCancelled();
      const int64_t r = static_cast<int64_t>((static_cast<__int128>(i) * n) / want);
      source->CopyRowsFloat(r, r + 1, buf.data() + i * d);
    }
    ctx.Progress(0, n, "train");
    try {
      OneOmpThreadScope one_thread;
      index->train(want, buf.data());
    } catch (const faiss::FaissException& e) {
      GR_FAIL(kInvalidArgument, "FAISS cannot train '", options.factory, "' on ", want, " rows: ", e.msg);
    }
  }
  buf.assign(static_cast<size_t>(std::min(n, kChunk) * d), 0.0f);
  for (int64_t b = 0; b < n; b += kChunk) {
    ctx.ThrowIfCancelled();
    const int64_t e = std::min(n, b + kChunk);
    source->CopyRowsFloat(b, e, buf.data());
    index->add(e - b, buf.data());
    ctx.Progress(e, n, "add");
  }
  const std::string tmp = out_file + ".tmp-" + std::to_string(::getpid());
  try {
    faiss::write_index(index.get(), tmp.c_str());
  } catch (const faiss::FaissException& e) {
    std::remove(tmp.c_str());
    GR_FAIL(kIo, "cannot write ", out_file, ": ", e.msg);
  }
  if (std::rename(tmp.c_str(), out_file.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    GR_FAIL(kIo, "cannot write ", out_file, ": ", std::strerror(err));
  }
  return n;
}

std::shared_ptr<FaissAnn> FaissAnn::Open(const std::string& file, std::shared_ptr<const DenseIndex> exact) {
  std::shared_ptr<FaissAnn> ann(new FaissAnn());
  try {
    ann->index_.reset(faiss::read_index(file.c_str()));
  } catch (const faiss::FaissException& e) {
    GR_FAIL(kIndex, file, ": FAISS cannot read it: ", e.msg);
  }
  GR_CHECK(ann->index_->ntotal == exact->size() && ann->index_->d == exact->dim(), kIndex, file, " holds ",
           ann->index_->ntotal, " x ", ann->index_->d, " vectors but the index ", exact->size(), " x ", exact->dim(),
           " (rebuilt without it?)");
  GR_CHECK(ann->index_->metric_type == faiss::METRIC_INNER_PRODUCT, kIndex, file, " is not an inner-product index");
  ann->exact_ = std::move(exact);
  int status = 0;
  const faiss::Index& ref = *ann->index_;
  char* name = abi::__cxa_demangle(typeid(ref).name(), nullptr, nullptr, &status);
  ann->type_ = status == 0 && name ? name : typeid(ref).name();
  std::free(name);
  if (ann->type_.rfind("faiss::", 0) == 0) ann->type_ = ann->type_.substr(7);
  return ann;
}

FaissAnn::~FaissAnn() = default;

int64_t FaissAnn::size() const { return index_->ntotal; }

SearchResult FaissAnn::Search(const at::Tensor& queries, int64_t k, const AnnSearchOptions& options,
                              const RunContext& ctx) const {
  GR_CHECK(queries.dim() == 2 && queries.size(1) == index_->d, kShape, "queries must be [Q, ", index_->d, "]");
  GR_CHECK(k >= 1 && k <= size(), kInvalidArgument, "k must be in [1, ", size(), "], got ", k);
  at::Tensor q = queries.to(at::kFloat).contiguous();
  GR_CHECK(at::isfinite(q).all().item<bool>(), kData, "queries contain NaN or Inf");
  if (exact_->metric() == Metric::kCosine) q = q / q.norm(2, {1}, true).clamp_min(1e-30);
  const int64_t nq = q.size(0);
  at::Tensor scores = at::empty({nq, k}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor labels = at::empty({nq, k}, at::TensorOptions().dtype(at::kLong));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    faiss::ParameterSpace params;
    try {
      if (options.nprobe > 0) params.set_index_parameter(index_.get(), "nprobe", double(options.nprobe));
      if (options.ef_search > 0) params.set_index_parameter(index_.get(), "efSearch", double(options.ef_search));
    } catch (const faiss::FaissException& e) {
      GR_FAIL(kInvalidArgument, "this ", type_, " has no such search parameter: ", e.msg);
    }
    OneBlasThreadScope one_blas_thread;
    // Query blocks so that a cancel is seen between them.
    constexpr int64_t kQueries = 1024;
    for (int64_t b = 0; b < nq; b += kQueries) {
      ctx.ThrowIfCancelled();
      const int64_t e = std::min(nq, b + kQueries);
      static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "FAISS labels are 64-bit");
      index_->search(e - b, q.data_ptr<float>() + b * index_->d, k, scores.data_ptr<float>() + b * k,
                     reinterpret_cast<faiss::Index::idx_t*>(labels.data_ptr<int64_t>()) + b * k);
      ctx.Progress(e, nq, "search");
    }
  }
  // FAISS rows -> index ids; an empty slot is -1 / -inf.
  const std::vector<int64_t>& ids = exact_->ids();
  int64_t* l = labels.data_ptr<int64_t>();
  float* s = scores.data_ptr<float>();
  for (int64_t i = 0; i < nq * k; ++i) {
    if (l[i] < 0 || l[i] >= static_cast<int64_t>(ids.size())) {
      l[i] = -1;
      s[i] = -std::numeric_limits<float>::infinity();
    } else {
      l[i] = ids[static_cast<size_t>(l[i])];
    }
  }
  return {labels, scores};
}

#endif

}  // namespace gainrag
