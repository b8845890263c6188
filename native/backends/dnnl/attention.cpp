#include "backends/dnnl/attention.h"

#include <ATen/Parallel.h>

#include <dnnl.hpp>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>
#include <cstring>

#include "backends/cpu_rows.h"
#include "core/error.h"

namespace gainrag::onednn {
namespace {

using dnnl::memory;
using dt = memory::data_type;

const dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Compiled {
  dnnl::matmul primitive;
  size_t scratch_bytes = 0;
};

// Both products of one row, per head h (hd = H / heads; q, k, v read in place from the qkv
// row with a stride of 3H between positions):
//   scores [heads, T, len] = scale * q[h] [T, hd] x k[h]^T [hd, len]
//   ctx    [heads, T, hd]  = probs [heads, T, len] x v[h] [len, hd], written with a stride of H
//                            between positions, i.e. straight into the [T, H] layout.
enum class Product { kScores, kContext };
using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t>;  // product, T, len, heads, hd

std::shared_ptr<Compiled> Get(Product which, int64_t T, int64_t len, int64_t heads, int64_t hd) {
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<Compiled>> cache;
  const Key key{int(which), T, len, heads, hd};
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  const int64_t H = heads * hd, row = 3 * H;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // concurrent calls bring their own
  auto c = std::make_shared<Compiled>();
  try {
    dnnl::matmul::desc desc = [&] {
      if (which == Product::kScores) {
        attr.set_output_scales(0, {float(1.0 / std::sqrt(double(hd)))});
        memory::desc q({heads, T, hd}, dt::f32, {hd, row, 1});
        memory::desc kt({heads, hd, len}, dt::f32, {hd, 1, row});
        memory::desc s({heads, T, len}, dt::f32, memory::format_tag::abc);
        return dnnl::matmul::desc(q, kt, s);
      }
      memory::desc p({heads, T, len}, dt::f32, memory::format_tag::abc);
      memory::desc v({heads, len, hd}, dt::f32, {hd, row, 1});
      memory::desc ctx({heads, T, hd}, dt::f32, {hd, H, 1});
      return dnnl::matmul::desc(p, v, ctx);
    }();
    dnnl::matmul::primitive_desc pd(desc, attr, Engine());
    c->scratch_bytes = pd.scratchpad_desc().get_size();
    c->primitive = dnnl::matmul(pd);
  } catch (const dnnl::error& e) {
    GR_FAIL(kUnsupported, "oneDNN attention product (T ", T, ", keys ", len, ", heads ", heads, "): ", e.what());
  }
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= 4096) cache.clear();
  cache.emplace(key, c);
  return c;
}

void Run(const Compiled& c, dnnl::stream& stream, const memory::desc& a_desc, const void* a, const memory::desc& b_desc,
         const void* b, const memory::desc& dst_desc, void* dst) {
  const dnnl::engine& eng = Engine();
  at::Tensor scratch = at::empty({int64_t(c.scratch_bytes)}, at::kByte);
  c.primitive.execute(stream, {{DNNL_ARG_SRC, memory(a_desc, eng, const_cast<void*>(a))},
                               {DNNL_ARG_WEIGHTS, memory(b_desc, eng, const_cast<void*>(b))},
                               {DNNL_ARG_DST, memory(dst_desc, eng, dst)},
                               {DNNL_ARG_SCRATCHPAD, memory({{int64_t(c.scratch_bytes)}, dt::u8, memory::format_tag::a}, eng,
                                                            scratch.data_ptr())}});
  stream.wait();
}

}  // namespace

at::Tensor RaggedSelfAttention(const at::Tensor& qkv, const std::vector<int64_t>& key_lengths, int64_t heads,
                               bool first_query_only) {
  const bool packed = qkv.dim() == 2;
  GR_CHECK((qkv.dim() == 3 || packed) && qkv.scalar_type() == at::kFloat && qkv.is_contiguous() &&
               qkv.device().is_cpu() && heads > 0 && qkv.size(-1) % (3 * heads) == 0,
           kShape, "attention expects contiguous float32 [B, T, 3H] or [N, 3H] on CPU, got ", qkv.sizes());
  const int64_t H = qkv.size(-1) / 3, hd = H / heads, row = 3 * H;
  const int64_t B = packed ? int64_t(key_lengths.size()) : qkv.size(0), T = packed ? 0 : qkv.size(1);
  GR_CHECK(int64_t(key_lengths.size()) == B, kShape, "attention: ", key_lengths.size(), " key lengths for ", B, " rows");
  int64_t total = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = key_lengths[b];
    GR_CHECK(len >= 1 && (packed || len <= T), kShape, "attention: row ", b, " has ", len, " keys of ", T);
    total += len;
  }
  GR_CHECK(!packed || total == qkv.size(0), kShape, "attention: row lengths sum to ", total, ", not the ", qkv.size(0),
           " packed tokens");
  (void)at::get_num_threads();  // OpenMP team size for this thread, as in PackedLinear::Forward
  at::Tensor ctx = first_query_only ? at::empty({B, H}, at::kFloat)
                   : packed         ? at::empty({total, H}, at::kFloat)
                                    : at::empty({B, T, H}, at::kFloat);
  const float* base = qkv.data_ptr<float>();
  std::vector<int64_t> starts(static_cast<size_t>(B));  // first token of each row
  for (int64_t b = 0, start = 0; b < B; ++b) {
    starts[size_t(b)] = start;
    start += packed ? key_lengths[b] : T;
  }
  // Rows in parallel, each row's products and softmax on its own thread (regions nested inside
  // run serially): one row's products are a few MFLOP, too small to split across the team, and
  // back to back they left the second core idle between primitives.
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    thread_local dnnl::stream stream(Engine());
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = key_lengths[b], queries = first_query_only ? 1 : packed ? len : T, start = starts[size_t(b)];
      const float* q = base + start * row;
      const std::shared_ptr<Compiled> scores_p = Get(Product::kScores, queries, len, heads, hd);
      at::Tensor scores = at::empty({heads, queries, len}, at::kFloat);
      Run(*scores_p, stream, {{heads, queries, hd}, dt::f32, {hd, row, 1}}, q, {{heads, hd, len}, dt::f32, {hd, 1, row}},
          q + H, {{heads, queries, len}, dt::f32, memory::format_tag::abc}, scores.data_ptr());
      cpu::SoftmaxRows(scores.data_ptr<float>(), heads * queries, len);  // in place: scores become probabilities
      const at::Tensor& probs = scores;
      const std::shared_ptr<Compiled> ctx_p = Get(Product::kContext, queries, len, heads, hd);
      Run(*ctx_p, stream, {{heads, queries, len}, dt::f32, memory::format_tag::abc}, probs.data_ptr(),
          {{heads, len, hd}, dt::f32, {hd, row, 1}}, q + 2 * H, {{heads, queries, hd}, dt::f32, {hd, H, 1}},
          ctx.data_ptr<float>() + (first_query_only ? b : start) * H);
    }
  });
  return ctx;
}

namespace {

// A float32 tensor as oneDNN sees it, strides included, so views are read where they lie.
memory::desc StridedDesc(const at::Tensor& t) { return memory::desc(t.sizes().vec(), dt::f32, t.strides().vec()); }

std::shared_ptr<Compiled> GetBatched(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, float scale) {
  static std::mutex mu;
  static std::map<std::vector<int64_t>, std::shared_ptr<Compiled>> cache;
  std::vector<int64_t> key;
  int32_t scale_bits;
  std::memcpy(&scale_bits, &scale, sizeof scale_bits);
  key.push_back(scale_bits);
  for (const at::Tensor* t : {&a, &b, &c}) {
    key.insert(key.end(), t->sizes().begin(), t->sizes().end());
    key.insert(key.end(), t->strides().begin(), t->strides().end());
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (scale != 1.0f) attr.set_output_scales(0, {scale});
  auto compiled = std::make_shared<Compiled>();
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(StridedDesc(a), StridedDesc(b), StridedDesc(c)), attr, Engine());
    compiled->scratch_bytes = pd.scratchpad_desc().get_size();
    compiled->primitive = dnnl::matmul(pd);
  } catch (const dnnl::error& e) {
    GR_FAIL(kUnsupported, "oneDNN batched product ", a.sizes(), " x ", b.sizes(), ": ", e.what());
  }
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= 4096) cache.clear();
  cache.emplace(std::move(key), compiled);
  return compiled;
}

}  // namespace

void BatchedMatmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, float scale) {
  const int64_t n = a.dim();
  GR_CHECK(n >= 2 && n <= 6 && b.dim() == n && c.dim() == n, kShape, "batched product: ranks ", a.dim(), ", ",
           b.dim(), ", ", c.dim(), " (2 to 6, all equal)");
  for (const at::Tensor* t : {&a, &b, &c})
    GR_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu(), kShape, "batched product: float32 CPU tensors only");
  GR_CHECK(a.size(n - 1) == b.size(n - 2) && c.size(n - 2) == a.size(n - 2) && c.size(n - 1) == b.size(n - 1), kShape,
           "batched product: ", a.sizes(), " x ", b.sizes(), " -> ", c.sizes());
  for (int64_t d = 0; d < n - 2; ++d)
    GR_CHECK(c.size(d) == a.size(d) && (b.size(d) == a.size(d) || b.size(d) == 1), kShape, "batched product: batch dims ",
             a.sizes(), " x ", b.sizes(), " -> ", c.sizes());
  if (c.numel() == 0) return;
  const std::shared_ptr<Compiled> p = GetBatched(a, b, c, scale);
  (void)at::get_num_threads();
  thread_local dnnl::stream stream(Engine());
  Run(*p, stream, StridedDesc(a), a.data_ptr(), StridedDesc(b), b.data_ptr(), StridedDesc(c), c.data_ptr());
}

}  // namespace gainrag::onednn
