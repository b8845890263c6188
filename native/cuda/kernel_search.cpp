// Orchestration of the GPU search (see kernel_search.h). Compiled into every build, but its body
// only exists with GAINRAG_WITH_CUDA_KERNELS (CMake option GAINRAG_CUDA_KERNELS): the CPU build
// keeps only the environment helpers. scripts/cuda-compile-check.sh compiles the CUDA body with
// the host compiler against CPU LibTorch headers and the CUDA runtime headers.
#include "cuda/kernel_search.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"

#ifdef GAINRAG_WITH_CUDA_KERNELS
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <thread>

#include "cuda/select_core.h"
#endif

namespace gainrag {

bool CudaKernelsRequestedByEnv() {
  const char* v = std::getenv("GAINRAG_CUDA_KERNELS");
  if (!v) return false;
  const std::string s(v);
  return s == "1" || s == "on" || s == "ON" || s == "true";
}

std::vector<int> KernelDevicesFromEnv(int fallback) {
  const char* v = std::getenv("GAINRAG_CUDA_SHARDS");
  if (!v || !*v) return {fallback};
  std::vector<int> out;
  if (std::string(v) == "all") {
    out.push_back(-1);  // resolved by KernelSearch (it knows the device count)
    return out;
  }
  const char* p = v;
  while (*p) {
    char* end = nullptr;
    const long d = std::strtol(p, &end, 10);
    GR_CHECK(end != p && d >= 0 && d < 64, kInvalidArgument, "GAINRAG_CUDA_SHARDS must be 'all' or a list like 0,1; got '", v, "'");
    out.push_back(static_cast<int>(d));
    p = *end == ',' ? end + 1 : end;
    GR_CHECK(*end == ',' || *end == 0, kInvalidArgument, "GAINRAG_CUDA_SHARDS must be 'all' or a list like 0,1; got '", v, "'");
  }
  return out;
}

#ifdef GAINRAG_WITH_CUDA_KERNELS

namespace {

using cuda_kernels::RowType;

void CudaCheck(int err, const char* what) {
  if (err == 0) return;
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    GR_FAIL(kOutOfMemory, "CUDA out of memory in ", what);
  }
  GR_FAIL(kInternal, "CUDA error in ", what, ": ", cuda_kernels::CudaErrorText(err));
}

void BlasCheck(int status, const char* what) {
  GR_CHECK(status == 0, kInternal, "cuBLAS status ", status, " in ", what);
}

size_t ElemBytes(RowType t) { return t == RowType::kFloat32 ? 4 : 2; }

// Owns one device allocation (freed on the device it came from).
struct DeviceBuffer {
  void* ptr = nullptr;
  int device = 0;
  DeviceBuffer() = default;
  DeviceBuffer(int dev, size_t bytes) : device(dev) {
    CudaCheck(cudaMalloc(&ptr, bytes > 0 ? bytes : 1), "cudaMalloc");
  }
  ~DeviceBuffer() {
    if (ptr) {
      cudaSetDevice(device);
      cudaFree(ptr);
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr); }
};

// Pinned host memory is slow to allocate (the pages are locked one by one): buffers are kept in a
// small process-wide pool and reused by later searches (ReleaseKernelBuffers frees them).
std::mutex pinned_mutex;
std::vector<std::pair<size_t, void*>> pinned_pool;
constexpr size_t kPinnedPoolMax = 8;

struct PinnedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit PinnedBuffer(size_t want) {
    want = std::max<size_t>(want, 1);
    {
      std::lock_guard<std::mutex> lock(pinned_mutex);
      size_t best = pinned_pool.size();
      for (size_t i = 0; i < pinned_pool.size(); ++i)
        if (pinned_pool[i].first >= want && (best == pinned_pool.size() || pinned_pool[i].first < pinned_pool[best].first))
          best = i;
      if (best < pinned_pool.size()) {
        bytes = pinned_pool[best].first;
        ptr = pinned_pool[best].second;
        pinned_pool.erase(pinned_pool.begin() + long(best));
        return;
      }
    }
    bytes = (want + (size_t{1} << 20) - 1) & ~((size_t{1} << 20) - 1);  // whole MiB: easier reuse
    CudaCheck(cudaHostAlloc(&ptr, bytes, cudaHostAllocDefault), "cudaHostAlloc");
  }
  ~PinnedBuffer() {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(pinned_mutex);
    pinned_pool.emplace_back(bytes, ptr);
    if (pinned_pool.size() > kPinnedPoolMax) {
      auto smallest = std::min_element(pinned_pool.begin(), pinned_pool.end());
      cudaFreeHost(smallest->second);
      pinned_pool.erase(smallest);
    }
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
};

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { CudaCheck(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() {
    if (s) cudaStreamDestroy(s);
  }
};

struct Event {
  cudaEvent_t e = nullptr;
  Event() { CudaCheck(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate"); }
  ~Event() {
    if (e) cudaEventDestroy(e);
  }
};

struct Shard {
  int device;
  int64_t begin, end;  // global rows
};

// Copies global rows [begin, end) of the corpus parts into dst (contiguous), in parallel.
void GatherRows(const KernelSearchRequest& req, int64_t begin, int64_t end, uint8_t* dst) {
  const size_t row_bytes = size_t(req.dim) * ElemBytes(req.type);
  int64_t part_first = 0;
  for (const KernelCorpusPart& part : req.parts) {
    const int64_t a = std::max(begin, part_first), b = std::min(end, part_first + part.rows);
    if (a < b) {
      const uint8_t* src = static_cast<const uint8_t*>(part.data) + size_t(a - part_first) * row_bytes;
      uint8_t* out = dst + size_t(a - begin) * row_bytes;
      at::parallel_for(0, b - a, 4096, [&](int64_t r0, int64_t r1) {
        std::memcpy(out + size_t(r0) * row_bytes, src + size_t(r0) * row_bytes, size_t(r1 - r0) * row_bytes);
      });
    }
    part_first += part.rows;
  }
}

float RowValue(const uint8_t* row, RowType t, int64_t d) {
  if (t == RowType::kFloat32) {
    float f;
    std::memcpy(&f, row + 4 * d, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, row + 2 * d, 2);
  if (t == RowType::kBFloat16) {
    const uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  return static_cast<float>(c10::Half(h, c10::Half::from_bits()));
}

// Pointer to global row r of the host corpus.
const uint8_t* HostRow(const KernelSearchRequest& req, int64_t r) {
  const size_t row_bytes = size_t(req.dim) * ElemBytes(req.type);
  for (const KernelCorpusPart& part : req.parts) {
    if (r < part.rows) return static_cast<const uint8_t*>(part.data) + size_t(r) * row_bytes;
    r -= part.rows;
  }
  GR_FAIL(kInternal, "row outside the corpus");
}

}  // namespace

class KernelCorpusCache {
 public:
  struct Resident {
    Shard shard;
    std::unique_ptr<DeviceBuffer> rows;  // null: the shard streams
  };
  std::mutex mutex;  // one search at a time uses (or rebuilds) the cache
  int64_t n = -1, dim = 0;
  RowType type = RowType::kFloat16;
  std::vector<Resident> shards;
};

namespace {

// Search of one shard for a group of queries; writes [nq, k] best-first scores and global
// positions (-1 pad) to the caller's buffers.
void SearchShard(const KernelSearchRequest& req, const Shard& sh, const void* resident, int64_t q_first,
                 int64_t nq, float* out_s, int64_t* out_p) {
  CudaCheck(cudaSetDevice(sh.device), "cudaSetDevice");
  const int64_t n = sh.end - sh.begin;
  const int k = req.k;
  const int kk = cuda_select::OversampledK(k, n, req.oversample);
  const int threads = 256;
  GR_CHECK(cuda_select::PlanSelect(kk, threads * cuda_select::kSelectItems).slots > 0, kInvalidArgument, "CUDA kernels select k <= ",
           cuda_select::kMaxK, ", got ", kk);
  const int64_t dim = req.dim;
  const size_t eb = ElemBytes(req.type);
  const int64_t qb = std::min<int64_t>(nq, req.query_block > 0 ? req.query_block : 4096);
  // The score tile stays under 1 GiB of fp32.
  int64_t tile = req.tile_rows > 0 ? req.tile_rows : std::min<int64_t>(65536, std::max<int64_t>(256, (int64_t{1} << 28) / qb));
  tile = std::min(tile, n);

  Stream compute, copy;
  DeviceBuffer q32(sh.device, size_t(nq * dim) * 4);
  CudaCheck(cudaMemcpyAsync(q32.ptr, req.queries + q_first * dim, size_t(nq * dim) * 4, cudaMemcpyHostToDevice, compute.s),
            "query upload");
  std::unique_ptr<DeviceBuffer> q16;
  const void* qg = q32.ptr;
  if (req.type != RowType::kFloat32) {
    q16 = std::make_unique<DeviceBuffer>(sh.device, size_t(nq * dim) * 2);
    CudaCheck(cuda_kernels::QueriesTo16(q32.as<float>(), q16->ptr, req.type, nq * dim, compute.s), "QueriesTo16");
    qg = q16->ptr;
  }
  DeviceBuffer state_s(sh.device, size_t(nq) * kk * 4), state_p(sh.device, size_t(nq) * kk * 4);
  CudaCheck(cuda_kernels::FillEmpty(state_s.as<float>(), state_p.as<int32_t>(), nq * kk, compute.s), "FillEmpty");
  DeviceBuffer scores(sh.device, size_t(qb) * size_t(tile) * 4);

  // Streaming: two pinned host buffers and two device tiles; tile t+1 is gathered and uploaded
  // while tile t is scored.
  std::unique_ptr<PinnedBuffer> pinned[2];
  std::unique_ptr<DeviceBuffer> dtile[2];
  Event uploaded[2], consumed[2];
  if (!resident) {
    for (int b = 0; b < 2; ++b) {
      pinned[b] = std::make_unique<PinnedBuffer>(size_t(tile * dim) * eb);
      dtile[b] = std::make_unique<DeviceBuffer>(sh.device, size_t(tile * dim) * eb);
    }
  }
  int64_t t_index = 0;
  try {
    for (int64_t r0 = 0; r0 < n; r0 += tile, ++t_index) {
      if (req.check_cancelled) req.check_cancelled();
      const int64_t nt = std::min(tile, n - r0);
      const void* rows;
      const int b = int(t_index % 2);
      if (resident) {
        rows = static_cast<const uint8_t*>(resident) + size_t(r0 * dim) * eb;
      } else {
        if (t_index >= 2) CudaCheck(cudaEventSynchronize(consumed[b].e), "staging wait");
        GatherRows(req, sh.begin + r0, sh.begin + r0 + nt, static_cast<uint8_t*>(pinned[b]->ptr));
        CudaCheck(cudaMemcpyAsync(dtile[b]->ptr, pinned[b]->ptr, size_t(nt * dim) * eb, cudaMemcpyHostToDevice, copy.s),
                  "tile upload");
        CudaCheck(cudaEventRecord(uploaded[b].e, copy.s), "event");
        CudaCheck(cudaStreamWaitEvent(compute.s, uploaded[b].e, 0), "event wait");
        rows = dtile[b]->ptr;
      }
      for (int64_t q0 = 0; q0 < nq; q0 += qb) {
        const int rq = int(std::min(qb, nq - q0));
        const void* qptr = static_cast<const uint8_t*>(qg) + size_t(q0 * dim) * (req.type == RowType::kFloat32 ? 4 : 2);
        BlasCheck(cuda_kernels::GemmScores(sh.device, compute.s, req.type, rows, int(nt), qptr, rq, int(dim),
                                           scores.as<float>(), tile),
                  "GemmEx");
        CudaCheck(cuda_kernels::SelectTile(scores.as<float>(), tile, rq, int(nt), int32_t(r0), state_s.as<float>() + q0 * kk,
                                           state_p.as<int32_t>() + q0 * kk, kk, threads, compute.s),
                  "SelectTile");
      }
      if (!resident) CudaCheck(cudaEventRecord(consumed[b].e, compute.s), "event");
    }
  } catch (...) {
    // Cancelled or failed mid-stream: let queued work finish before its buffers are freed.
    cudaStreamSynchronize(copy.s);
    cudaStreamSynchronize(compute.s);
    throw;
  }

  PinnedBuffer host_s(size_t(nq) * kk * 4), host_p(size_t(nq) * kk * 4);
  float* hs = static_cast<float*>(host_s.ptr);
  int32_t* hp = static_cast<int32_t*>(host_p.ptr);
  if (resident) {
    // Exact fp32 scores of the k' candidates from the resident rows, then best first.
    CudaCheck(cuda_kernels::Rescore(q32.as<float>(), resident, req.type, dim, state_p.as<int32_t>(), int(nq), kk,
                                    state_s.as<float>(), compute.s),
              "Rescore");
    CudaCheck(cuda_kernels::SortRows(state_s.as<float>(), state_p.as<int32_t>(), int(nq), kk, compute.s), "SortRows");
  }
  // Resident: rows are sorted on the device, so only their first min(k, k') entries come back.
  const int keep = std::min(k, kk);
  const int stride = resident ? keep : kk;
  CudaCheck(cudaMemcpy2DAsync(hs, size_t(stride) * 4, state_s.ptr, size_t(kk) * 4, size_t(stride) * 4, size_t(nq),
                              cudaMemcpyDeviceToHost, compute.s),
            "download");
  CudaCheck(cudaMemcpy2DAsync(hp, size_t(stride) * 4, state_p.ptr, size_t(kk) * 4, size_t(stride) * 4, size_t(nq),
                              cudaMemcpyDeviceToHost, compute.s),
            "download");
  CudaCheck(cudaStreamSynchronize(compute.s), "search");
  if (!resident) {
    // Streamed shard: the rows are on the host, so the exact rescoring is done here.
    at::parallel_for(0, nq, 16, [&](int64_t a, int64_t e) {
      std::vector<int> order(kk);
      std::vector<float> exact(kk);
      for (int64_t q = a; q < e; ++q) {
        const float* qv = req.queries + (q_first + q) * dim;
        for (int j = 0; j < kk; ++j) {
          const int32_t r = hp[q * kk + j];
          if (r == cuda_select::kEmptyPos) {
            exact[j] = cuda_select::EmptyScore();
            continue;
          }
          const uint8_t* row = HostRow(req, sh.begin + r);
          float acc = 0.f;
          for (int64_t d = 0; d < dim; ++d) acc += qv[d] * RowValue(row, req.type, d);
          exact[j] = acc;
        }
        for (int j = 0; j < kk; ++j) order[j] = j;
        std::sort(order.begin(), order.end(), [&](int x, int y) {
          return cuda_select::Better(exact[x], hp[q * kk + x], exact[y], hp[q * kk + y]);
        });
        std::vector<int32_t> pos(kk);
        for (int j = 0; j < kk; ++j) pos[j] = hp[q * kk + order[j]];
        for (int j = 0; j < kk; ++j) {
          hs[q * kk + j] = exact[order[j]];
          hp[q * kk + j] = pos[j];
        }
      }
    });
  }
  for (int64_t q = 0; q < nq; ++q) {
    for (int j = 0; j < k; ++j) {
      const bool have = j < keep && hp[q * stride + j] != cuda_select::kEmptyPos;
      out_s[q * k + j] = have ? hs[q * stride + j] : cuda_select::EmptyScore();
      out_p[q * k + j] = have ? sh.begin + hp[q * stride + j] : -1;
    }
  }
}

std::vector<int> ResolveDevices(const std::vector<int>& wanted) {
  int count = 0;
  const int err = cudaGetDeviceCount(&count);
  if (err != 0) {
    cudaGetLastError();
    GR_FAIL(kUnsupported, "no usable CUDA device: ", cuda_kernels::CudaErrorText(err));
  }
  GR_CHECK(count > 0, kUnsupported, "no CUDA device is visible");
  std::vector<int> out;
  for (int d : wanted) {
    if (d < 0) {
      for (int i = 0; i < count; ++i) out.push_back(i);
      continue;
    }
    GR_CHECK(d < count, kInvalidArgument, "CUDA device ", d, " does not exist (", count, " visible)");
    out.push_back(d);
  }
  GR_CHECK(!out.empty(), kInvalidArgument, "no CUDA device given");
  return out;
}

}  // namespace

void ReleaseKernelBuffers() {
  std::lock_guard<std::mutex> lock(pinned_mutex);
  for (auto& b : pinned_pool) cudaFreeHost(b.second);
  pinned_pool.clear();
}

std::shared_ptr<KernelCorpusCache> NewKernelCorpusCache() { return std::make_shared<KernelCorpusCache>(); }

void KernelSearch(const KernelSearchRequest& req, KernelCorpusCache* cache, float* out_scores, int64_t* out_pos) {
  int64_t n = 0;
  for (const KernelCorpusPart& p : req.parts) n += p.rows;
  GR_CHECK(n > 0 && req.nq >= 0 && req.dim > 0, kInvalidArgument, "empty corpus");
  GR_CHECK(req.k >= 1 && req.k <= cuda_select::kMaxK, kInvalidArgument, "the CUDA kernels select k in [1, ",
           cuda_select::kMaxK, "], got ", req.k);
  const std::vector<int> devices = ResolveDevices(req.devices.empty() ? std::vector<int>{0} : req.devices);
  const int nd = int(devices.size());
  std::vector<Shard> shards;
  for (int i = 0; i < nd; ++i) {
    const Shard s{devices[i], n * i / nd, n * (i + 1) / nd};
    GR_CHECK(s.end - s.begin < (int64_t{1} << 31) - 1, kUnsupported, "a CUDA shard holds at most 2^31-2 rows");
    if (s.end > s.begin) shards.push_back(s);
  }

  GR_CHECK(!req.device_corpus || shards.size() == 1, kInvalidArgument, "a device corpus is searched on one device");
  KernelCorpusCache local;
  KernelCorpusCache* c = cache && !req.device_corpus ? cache : &local;
  std::lock_guard<std::mutex> lock(c->mutex);
  bool same = c->n == n && c->dim == req.dim && c->type == req.type && c->shards.size() == shards.size();
  for (size_t i = 0; same && i < shards.size(); ++i)
    same = c->shards[i].shard.device == shards[i].device && c->shards[i].shard.begin == shards[i].begin;
  if (!same) {
    c->shards.clear();
    c->n = n;
    c->dim = req.dim;
    c->type = req.type;
    for (const Shard& s : shards) {
      KernelCorpusCache::Resident r{s, nullptr};
      const size_t bytes = size_t(s.end - s.begin) * size_t(req.dim) * ElemBytes(req.type);
      CudaCheck(cudaSetDevice(s.device), "cudaSetDevice");
      size_t free_b = 0, total_b = 0;
      CudaCheck(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
      // Leave room for the score tile (<= 1 GiB), queries, candidate state and cuBLAS.
      const int64_t reserve = int64_t{3} << 30;
      const bool fits = req.device_corpus ? false
                        : req.resident_limit < 0 ? false
                        : req.resident_limit > 0 ? int64_t(bytes) <= req.resident_limit
                                                  : int64_t(bytes) + reserve <= int64_t(free_b);
      if (fits) {
        r.rows = std::make_unique<DeviceBuffer>(s.device, bytes);
        const size_t row_bytes = size_t(req.dim) * ElemBytes(req.type);
        int64_t first = 0;
        for (const KernelCorpusPart& p : req.parts) {
          const int64_t a = std::max(s.begin, first), b = std::min(s.end, first + p.rows);
          if (a < b)
            CudaCheck(cudaMemcpy(r.rows->as<uint8_t>() + size_t(a - s.begin) * row_bytes,
                                 static_cast<const uint8_t*>(p.data) + size_t(a - first) * row_bytes,
                                 size_t(b - a) * row_bytes, cudaMemcpyHostToDevice),
                      "corpus upload");
          first += p.rows;
        }
      }
      c->shards.push_back(std::move(r));
    }
  }

  // Queries in groups, so that the candidate state stays bounded (16384 x 2048 x 8 B = 256 MiB).
  const int64_t group = 16384;
  const int k = req.k;
  for (int64_t g0 = 0; g0 < req.nq; g0 += group) {
    const int64_t gn = std::min(group, req.nq - g0);
    std::vector<std::vector<float>> ss(c->shards.size());
    std::vector<std::vector<int64_t>> sp(c->shards.size());
    std::vector<std::exception_ptr> errors(c->shards.size());
    auto run = [&](size_t i) {
      try {
        ss[i].resize(size_t(gn) * k);
        sp[i].resize(size_t(gn) * k);
        const void* rows = req.device_corpus ? req.device_corpus : c->shards[i].rows ? c->shards[i].rows->ptr : nullptr;
        SearchShard(req, c->shards[i].shard, rows, g0, gn, ss[i].data(), sp[i].data());
      } catch (...) {
        errors[i] = std::current_exception();
      }
    };
    if (c->shards.size() == 1) {
      run(0);
    } else {
      std::vector<std::thread> workers;
      for (size_t i = 0; i < c->shards.size(); ++i) workers.emplace_back(run, i);
      for (std::thread& t : workers) t.join();
    }
    for (const std::exception_ptr& e : errors)
      if (e) std::rethrow_exception(e);
    // Merge the shards' best-first lists pairwise into the output.
    float* os = out_scores + g0 * k;
    int64_t* op = out_pos + g0 * k;
    std::copy(ss[0].begin(), ss[0].end(), os);
    std::copy(sp[0].begin(), sp[0].end(), op);
    std::vector<float> ms(k);
    std::vector<int64_t> mp(k);
    for (size_t i = 1; i < ss.size(); ++i) {
      for (int64_t q = 0; q < gn; ++q) {
        // -1 (padding) must sort after every real row: only -inf scores carry it.
        cuda_select::MergeBest(os + q * k, op + q * k, ss[i].data() + q * k, sp[i].data() + q * k, k, ms.data(), mp.data());
        std::copy(ms.begin(), ms.end(), os + q * k);
        std::copy(mp.begin(), mp.end(), op + q * k);
      }
    }
  }
}

#endif  // GAINRAG_WITH_CUDA_KERNELS

}  // namespace gainrag
