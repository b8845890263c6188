#include "backends/dnnl/packed_linear.h"

#include <ATen/Parallel.h>

#include <dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>
#include <utility>

#include "backends/dnnl/int8_gemv.h"
#include "backends/dnnl/row_passes.h"
#include "core/error.h"

namespace gainrag::onednn {
namespace {

using dnnl::memory;
using tag = memory::format_tag;

// Rows of the product the weights are packed for. The blocked weight layout oneDNN's brgemm
// kernels choose depends on (in, out, precision), not on the row count (checked for 1..13568
// rows on BERT shapes), so one packing serves every batch.
constexpr int64_t kPackRows = 256;
// A product of M rows runs as one of floor(M / kRowStep) * kRowStep rows plus a tail of fewer
// than kRowStep rows, so at most ~M / kRowStep + kRowStep distinct shapes ever get compiled
// (each costs ~0.2-2 ms to create) however ragged the batches are.
constexpr int64_t kRowStep = 64;
// Compiled primitives kept process-wide; beyond this the cache is cleared and refilled.
constexpr size_t kMaxPrimitives = 2048;

const dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::data_type DataType(at::ScalarType t) {
  return t == at::kBFloat16 ? memory::data_type::bf16 : t == at::kChar ? memory::data_type::s8 : memory::data_type::f32;
}

const char* PrecisionName(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kChar ? "int8" : "float32";
}

dnnl::algorithm Algorithm(Epilogue e) {
  switch (e) {
    case Epilogue::kGeluErf: return dnnl::algorithm::eltwise_gelu_erf;
    case Epilogue::kGeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case Epilogue::kRelu: return dnnl::algorithm::eltwise_relu;
    case Epilogue::kNone: break;
  }
  return dnnl::algorithm::undef;
}

dnnl::primitive_attr Attributes(Epilogue e) {
  dnnl::primitive_attr attr;
  // Scratch memory comes with each call, so one primitive can run on several threads at once.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (e != Epilogue::kNone) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f, Algorithm(e), 0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// The product's output: float32, except a bfloat16 product with an activation (the FFN's up
// product), whose output only ever feeds the next bfloat16 product. Writing it as bfloat16
// rounds it exactly as that product's input conversion did (to nearest even), and halves the
// bytes of the largest activation ([rows, intermediate]) written and read.
// A bf16x3 product (split) is a float32 layer: its output is float32 whatever the epilogue.
memory::data_type OutputType(at::ScalarType precision, Epilogue e, bool split) {
  if (precision == at::kChar) return memory::data_type::s32;  // exact; rescaled in place to float32 after
  return precision == at::kBFloat16 && e != Epilogue::kNone && !split ? memory::data_type::bf16
                                                                      : memory::data_type::f32;
}

// int8 inputs go in as u8 (the quantised row + 128): u8 x s8 is the form VNNI and AMX-INT8 take
// natively. With s8 inputs oneDNN must add 128 itself and subtract a compensation it computed
// from the weights on every call, in plain C++: measured on one decode row of a 155.7M Llama,
// 82% of the time went there. The 128 x column-sum correction is applied in RescaleRows instead.
memory::data_type SourceType(at::ScalarType precision) {
  return precision == at::kChar ? memory::data_type::u8 : DataType(precision);
}

// weights: a concrete layout, or format_tag::any to let oneDNN choose (packing).
// int8 has neither bias nor post-ops: oneDNN 2.6 runs a per-row scale post-op (and runtime
// output scales) only in its reference kernels, so the rescaling is our own pass (RescaleRows).
// split: a bf16x3 product, K already the tripled depth (precision kBFloat16).
dnnl::matmul::primitive_desc Describe(int64_t M, int64_t K, int64_t N, at::ScalarType precision, Epilogue e,
                                      const memory::desc& weights, bool split = false) {
  memory::desc src({M, K}, SourceType(precision), tag::ab);
  memory::desc bias({1, N}, memory::data_type::f32, tag::ab);
  memory::desc dst({M, N}, OutputType(precision, e, split), tag::ab);
  if (precision == at::kChar) {
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), Attributes(Epilogue::kNone), Engine());
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, bias, dst), Attributes(e), Engine());
}

struct Compiled {
  dnnl::matmul primitive;
  size_t scratch_bytes = 0;
};

using Key = std::tuple<int64_t, int64_t, int64_t, int, int>;
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 0;
    auto mix = [&](int64_t v) { h = h * 1000003u ^ std::hash<int64_t>()(v); };
    mix(std::get<0>(k)), mix(std::get<1>(k)), mix(std::get<2>(k)), mix(std::get<3>(k)), mix(std::get<4>(k));
    return h;
  }
};

// Compiled primitives by key, built once per key (two callers racing on a new key both build;
// the first stored wins) and dropped all at once past kMaxPrimitives.
class PrimitiveCache {
 public:
  template <class Build>
  std::shared_ptr<Compiled> GetOrBuild(const Key& key, Build build) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    std::shared_ptr<Compiled> c = build();
    std::lock_guard<std::mutex> lock(mu_);
    if (cache_.size() >= kMaxPrimitives) cache_.clear();
    return cache_.emplace(key, c).first->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<Key, std::shared_ptr<Compiled>, KeyHash> cache_;
};

}  // namespace

struct PackedLinear::Impl {
  int64_t in = 0, out = 0;
  // Of the oneDNN product: kBFloat16 for a bf16x3 layer (split), whose depth is 3 x in.
  at::ScalarType precision = at::kFloat;
  bool split = false;
  bool plain = false;  // int8 weights read in their [out, in] rows (PackInt8 plain), not reordered
  bool own = false;    // int8 products on GemvInt8's kernels over the plain rows, not oneDNN (Int8OwnProducts)
  int64_t depth() const { return split ? 3 * in : in; }
  Epilogue epilogue = Epilogue::kNone;
  memory::desc weights_desc;
  at::Tensor weights;  // bytes in weights_desc's layout (ATen's CPU allocator aligns to 64)
  at::Tensor bias;     // float32 [out]
  at::Tensor weight_scale;  // int8: float32 [out], W[o, :] ~ weight_scale[o] * Wq[o, :]
  at::Tensor weight_colsum;  // int8: int32 [out], sum over k of Wq[o, k] (the correction for each row's zero code)

  // One primitive per (rows, in, out, precision, epilogue), shared by every layer of that shape.
  std::shared_ptr<Compiled> Get(int64_t M) const {
    static PrimitiveCache cache;
    return cache.GetOrBuild(Key{M, depth(), out, int(precision) | int(split) << 8 | int(plain) << 9, int(epilogue)}, [&] {
      auto c = std::make_shared<Compiled>();
      try {
        auto pd = Describe(M, depth(), out, precision, epilogue, weights_desc, split);
        GR_CHECK(pd.weights_desc() == weights_desc, kInternal, "oneDNN wants another weight layout for ", M, " rows");
        c->scratch_bytes = pd.scratchpad_desc().get_size();
        c->primitive = dnnl::matmul(pd);
      } catch (const dnnl::error& e) {
        GR_FAIL(kUnsupported, "oneDNN matmul [", M, ", ", in, "] x [", in, ", ", out, "]: ", e.what());
      }
      return c;
    });
  }

  // rows [M, in] at src -> [M, out] at dst.
  void Run(const void* src, void* dst, int64_t M, dnnl::stream& stream) const {
    std::shared_ptr<Compiled> c = Get(M);
    const dnnl::engine& eng = Engine();
    memory src_m({{M, depth()}, SourceType(precision), tag::ab}, eng, const_cast<void*>(src));
    memory dst_m({{M, out}, OutputType(precision, epilogue, split), tag::ab}, eng, dst);
    memory w_m(weights_desc, eng, weights.data_ptr());
    at::Tensor scratch = at::empty({int64_t(c->scratch_bytes)}, at::kByte);
    memory s_m({{int64_t(c->scratch_bytes)}, memory::data_type::u8, tag::a}, eng, scratch.data_ptr());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, s_m}};
    if (precision != at::kChar) {
      args.emplace(DNNL_ARG_BIAS, memory({{1, out}, memory::data_type::f32, tag::ab}, eng, bias.data_ptr()));
    }
    c->primitive.execute(stream, args);
    stream.wait();
  }
};

PackedLinear::PackedLinear(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PackedLinear::~PackedLinear() = default;
int64_t PackedLinear::in_features() const { return impl_->in; }
int64_t PackedLinear::out_features() const { return impl_->out; }

bool Supports(at::ScalarType precision) {
  if (precision != at::kFloat && precision != at::kBFloat16 && precision != at::kChar) return false;
  try {
    Describe(kPackRows, 64, 64, precision, Epilogue::kNone, memory::desc({64, 64}, DataType(precision), tag::any));
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

bool SupportsBf16x3() { return Supports(at::kBFloat16); }

std::string KernelName(at::ScalarType precision, bool plain_weights) {
  if (precision == at::kChar && Int8OwnProducts()) {
    switch (AutoInt8Kernel()) {
      case Int8Kernel::kVnni512: return "gainrag:vnni512";
      case Int8Kernel::kAvx2Pairs: return "gainrag:avx2-pairs";
      default: return "gainrag:avx2-signed";
    }
  }
  try {
    auto pd = Describe(kPackRows, 768, 768, precision, Epilogue::kNone,
                       memory::desc({768, 768}, DataType(precision), plain_weights ? tag::ba : tag::any));
    return pd.impl_info_str();
  } catch (const dnnl::error&) {
    return "";
  }
}

Int8Matrix QuantizeInt8(const at::Tensor& weight, const at::Tensor& bias) {
  GR_CHECK(weight.dim() == 2 && bias.dim() == 1 && bias.size(0) == weight.size(0), kShape, "int8 linear: weight ",
           weight.sizes(), " and bias ", bias.sizes(), " do not form a layer");
  Int8Matrix m;
  at::Tensor w32 = weight.to(at::kCPU, at::kFloat);
  at::Tensor amax = w32.abs().amax({1});
  m.scale = at::where(amax > 0, amax / 127.0, at::ones_like(amax)).contiguous();
  m.w = at::round(w32 / m.scale.unsqueeze(1)).clamp_(-127, 127).to(at::kChar).contiguous();
  m.colsum = m.w.to(at::kInt).sum({1}, false, at::kInt).contiguous();
  m.bias = bias.to(at::kCPU, at::kFloat).clone();  // owned: not a view that keeps a checkpoint mapped
  return m;
}

Int8Matrix StackInt8(const std::vector<Int8Matrix>& parts) {
  std::vector<at::Tensor> w, scale, colsum, bias;
  for (const Int8Matrix& p : parts) w.push_back(p.w), scale.push_back(p.scale), colsum.push_back(p.colsum), bias.push_back(p.bias);
  return Int8Matrix{at::cat(w, 0).contiguous(), at::cat(scale).contiguous(), at::cat(colsum).contiguous(),
                    at::cat(bias).contiguous()};
}

bool Int8PlainWeights() { return !CpuHasVnni(); }

std::shared_ptr<const PackedLinear> PackedLinear::PackInt8(const Int8Matrix& m, Epilogue epilogue, bool plain) {
  auto impl = std::make_unique<Impl>();
  impl->out = m.w.size(0);
  impl->in = m.w.size(1);
  impl->precision = at::kChar;
  impl->epilogue = epilogue;
  impl->bias = m.bias;
  impl->weight_scale = m.scale;
  impl->weight_colsum = m.colsum;
  if (Int8OwnProducts()) {
    // GemvInt8 reads the plain [out, in] rows (8-bit codes without VNNI, where oneDNN's kernels
    // would saturate, or GAINRAG_INT8_PRODUCTS=avx2); nothing to reorder.
    GR_CHECK(m.w.is_contiguous() && m.w.scalar_type() == at::kChar, kInvalidArgument, "int8 linear: weights must be a contiguous int8 matrix");
    impl->plain = true;
    impl->own = true;
    impl->weights = m.w;
  } else if (plain) {
    // W^T [in, out] is m.w [out, in] read column-major; oneDNN reads it in place (m.w's storage
    // is shared, not copied).
    GR_CHECK(m.w.is_contiguous() && m.w.scalar_type() == at::kChar, kInvalidArgument, "int8 linear: plain weights must be a contiguous int8 matrix");
    impl->plain = true;
    impl->weights_desc = memory::desc({impl->in, impl->out}, memory::data_type::s8, tag::ba);
    impl->weights = m.w;
    try {
      (void)Describe(kPackRows, impl->in, impl->out, at::kChar, epilogue, impl->weights_desc);
    } catch (const dnnl::error& e) {
      GR_FAIL(kUnsupported, "oneDNN cannot build an int8 matmul on plain weights on this CPU (", e.what(), ")");
    }
  } else {
    PackWeights(impl.get(), m.w, false);
  }
  return std::shared_ptr<const PackedLinear>(new PackedLinear(std::move(impl)));
}

std::shared_ptr<const PackedLinear> PackedLinear::Pack(const at::Tensor& weight, const at::Tensor& bias,
                                                      at::ScalarType precision, Epilogue epilogue, bool bf16x3) {
  GR_CHECK(weight.dim() == 2 && bias.dim() == 1 && bias.size(0) == weight.size(0), kShape,
           "packed linear: weight ", weight.sizes(), " and bias ", bias.sizes(), " do not form a layer");
  GR_CHECK(precision == at::kFloat || precision == at::kBFloat16 || precision == at::kChar, kInvalidArgument,
           "oneDNN linear layers run in float32, bfloat16 or int8");
  GR_CHECK(!bf16x3 || precision == at::kFloat, kInvalidArgument, "bf16x3 products are float32 layers");
  if (precision == at::kChar) return PackInt8(QuantizeInt8(weight, bias), epilogue);
  auto impl = std::make_unique<Impl>();
  impl->out = weight.size(0);
  impl->in = weight.size(1);
  impl->split = bf16x3;
  // bfloat16 where oneDNN has only float32 kernels (AVX2): W rounded to bf16 once and packed
  // widened, x and the product float32, as LinearUnpacked widens per call. LibTorch 1.13's own
  // bf16 GEMM is scalar there (bert-tiny: 6.6 s for 256 passages against float32's 0.21 s).
  static const bool bf16_kernel = Supports(at::kBFloat16);
  const bool widen = precision == at::kBFloat16 && !bf16_kernel;
  impl->precision = bf16x3 ? at::kBFloat16 : widen ? at::kFloat : precision;
  impl->epilogue = epilogue;
  impl->bias = bias.to(at::kCPU, at::kFloat).contiguous();
  at::Tensor w;
  if (bf16x3) {
    // [hi(W) | lo(W) | hi(W)] along the input dimension, rounded as SplitRows rounds x.
    at::Tensor w32 = weight.to(at::kCPU, at::kFloat).contiguous();
    at::Tensor hi = w32.to(at::kBFloat16);
    at::Tensor lo = (w32 - hi.to(at::kFloat)).to(at::kBFloat16);
    w = at::cat({hi, lo, hi}, 1).contiguous();
  } else if (widen) {
    w = weight.to(at::kCPU, at::kBFloat16).to(at::kFloat).contiguous();
  } else {
    w = weight.to(at::kCPU, precision).contiguous();
  }
  PackWeights(impl.get(), w, bf16x3);
  return std::shared_ptr<const PackedLinear>(new PackedLinear(std::move(impl)));
}

void PackedLinear::PackWeights(Impl* impl, const at::Tensor& w, bool bf16x3) {
  const at::ScalarType precision = impl->precision;
  try {
    const int64_t depth = impl->depth();
    auto pd = Describe(kPackRows, depth, impl->out, precision, impl->epilogue,
                       memory::desc({depth, impl->out}, DataType(precision), tag::any), bf16x3);
    impl->weights_desc = pd.weights_desc();
    // W^T [in, out] is W [out, in] read column-major: format "ba" over (in, out).
    const dnnl::engine& eng = Engine();
    memory plain({{depth, impl->out}, DataType(precision), tag::ba}, eng, const_cast<void*>(w.data_ptr()));
    impl->weights = at::empty({int64_t(impl->weights_desc.get_size())}, at::kByte);
    memory packed(impl->weights_desc, eng, impl->weights.data_ptr());
    dnnl::stream stream(eng);
    dnnl::reorder(plain, packed).execute(stream, plain, packed);
    stream.wait();
  } catch (const dnnl::error& e) {
    GR_FAIL(kUnsupported, "oneDNN cannot build a ", PrecisionName(precision), " matmul on this CPU (", e.what(), ")");
  }
}

namespace {

// int8 products leave the activation to a pass of its own (oneDNN's int32 output has none).
void ApplyEpilogue(at::Tensor& y, Epilogue e) {
  switch (e) {
    case Epilogue::kGeluErf: at::gelu_(y); break;
    case Epilogue::kGeluTanh: at::gelu_(y, "tanh"); break;
    case Epilogue::kRelu: at::relu_(y); break;
    case Epilogue::kNone: break;
  }
}

}  // namespace

at::Tensor PackedLinear::Forward(const at::Tensor& x_in) const {
  const Impl& p = *impl_;
  GR_CHECK(x_in.dim() >= 1 && x_in.size(-1) == p.in, kShape, "packed linear expects [..., ", p.in, "], got ",
           x_in.sizes());
  // oneDNN runs on OpenMP, whose team size is per calling thread; this sets it from LibTorch's
  // setting on threads (libuv workers) that have not run a parallel ATen op yet.
  (void)at::get_num_threads();
  const bool int8 = p.precision == at::kChar;
  at::Tensor x = x_in.to(at::kCPU, int8 || p.split ? at::kFloat : p.precision).reshape({-1, p.in}).contiguous();
  const int64_t M = x.size(0);
  std::vector<int64_t> sizes = x_in.sizes().vec();
  sizes.back() = p.out;
  const bool bf16_out = OutputType(p.precision, p.epilogue, p.split) == memory::data_type::bf16;
  // (int8: oneDNN writes int32 here, RescaleRows turns it into float32 in place.)
  at::Tensor y = at::empty({M, p.out}, bf16_out ? at::kBFloat16 : at::kFloat);
  if (M == 0) return y.view(sizes);
  if (p.own) {
    // The same codes, sums and rescaling as below, on the engine's kernel.
    GemvInt8(x.data_ptr<float>(), M, Int8Matrix{p.weights, p.weight_scale, p.weight_colsum, p.bias}, y.data_ptr<float>(),
             p.out, false);
    ApplyEpilogue(y, p.epilogue);
    return y.view(sizes);
  }
  std::vector<Int8RowCode> row_codes;
  if (int8) {
    at::Tensor q = at::empty({M, p.in}, at::kByte);
    row_codes.resize(size_t(M));
    QuantizeRows(x.data_ptr<float>(), q.data_ptr<uint8_t>(), row_codes.data(), M, p.in);
    x = q;
  } else if (p.split) {
    at::Tensor parts = at::empty({M, 3 * p.in}, at::kBFloat16);
    SplitRows(x.data_ptr<float>(), reinterpret_cast<uint16_t*>(parts.data_ptr()), M, p.in);
    x = parts;
  }
  thread_local dnnl::stream stream(Engine());
  const int64_t tail = M > kRowStep ? M % kRowStep : 0;
  const int64_t head = M - tail;
  const size_t elem = x.element_size();
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(y.data_ptr());
  p.Run(src, dst, head, stream);
  if (tail > 0) {
    const size_t head_in = size_t(head) * size_t(p.depth()) * elem, head_out = size_t(head) * size_t(p.out) * y.element_size();
    p.Run(src + head_in, dst + head_out, tail, stream);
  }
  if (int8) {
    RescaleRows(y.data_ptr(), row_codes.data(), p.weight_scale.data_ptr<float>(),
                p.weight_colsum.data_ptr<int32_t>(), p.bias.data_ptr<float>(), M, p.out);
    ApplyEpilogue(y, p.epilogue);
  }
  return y.view(sizes);
}

namespace {

// Compiled products over unpacked weights, keyed by (rows, in, out, precision, has bias).
std::shared_ptr<Compiled> UnpackedPrimitive(int64_t M, int64_t K, int64_t N, at::ScalarType precision, bool bias) {
  static PrimitiveCache cache;
  return cache.GetOrBuild(Key{M, K, N, int(precision), int(bias)}, [&] {
    auto c = std::make_shared<Compiled>();
    try {
      const memory::data_type dt = DataType(precision);
      memory::desc src({M, K}, dt, tag::ab), weights({K, N}, dt, tag::ba), dst({M, N}, memory::data_type::f32, tag::ab);
      auto desc = bias ? dnnl::matmul::desc(src, weights, memory::desc({1, N}, memory::data_type::f32, tag::ab), dst)
                       : dnnl::matmul::desc(src, weights, dst);
      dnnl::matmul::primitive_desc pd(desc, Attributes(Epilogue::kNone), Engine());
      c->scratch_bytes = pd.scratchpad_desc().get_size();
      c->primitive = dnnl::matmul(pd);
    } catch (const dnnl::error& e) {
      GR_FAIL(kUnsupported, "oneDNN matmul [", M, ", ", K, "] x [", K, ", ", N, "]: ", e.what());
    }
    return c;
  });
}

}  // namespace

bool SupportsBf16Weights() {
  static const bool ok = Supports(at::kBFloat16) || Supports(at::kFloat);
  return ok;
}

at::Tensor LinearUnpacked(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in) {
  GR_CHECK(weight_in.dim() == 2 && weight_in.is_contiguous() && weight_in.is_cpu() &&
               (weight_in.scalar_type() == at::kFloat || weight_in.scalar_type() == at::kBFloat16),
           kInvalidArgument, "oneDNN unpacked linear: weight must be a contiguous CPU float32/bfloat16 matrix");
  static const bool bf16_kernel = Supports(at::kBFloat16);
  // No bf16 kernel: widen W for this call (2 bytes read, 4 written per weight, against the
  // product's 2 x rows flops per weight).
  const at::Tensor weight = weight_in.scalar_type() == at::kBFloat16 && !bf16_kernel ? weight_in.to(at::kFloat) : weight_in;
  const at::ScalarType precision = weight.scalar_type();
  const int64_t N = weight.size(0), K = weight.size(1);
  GR_CHECK(x_in.dim() >= 1 && x_in.size(-1) == K, kShape, "linear expects [..., ", K, "], got ", x_in.sizes());
  (void)at::get_num_threads();  // OpenMP team size for this thread (see PackedLinear::Forward)
  at::Tensor x = x_in.to(at::kCPU, precision).reshape({-1, K}).contiguous();
  at::Tensor bias = bias_in.defined() ? bias_in.to(at::kCPU, at::kFloat).contiguous() : at::Tensor();
  const int64_t M = x.size(0);
  std::vector<int64_t> sizes = x_in.sizes().vec();
  sizes.back() = N;
  at::Tensor y = at::empty({M, N}, at::kFloat);
  if (M == 0) return y.view(sizes);
  thread_local dnnl::stream stream(Engine());
  const dnnl::engine& eng = Engine();
  const int64_t tail = M > kRowStep ? M % kRowStep : 0;
  const size_t elem = x.element_size();
  int64_t row = 0;
  for (int64_t part : {M - tail, tail}) {
    if (part == 0) continue;
    std::shared_ptr<Compiled> c = UnpackedPrimitive(part, K, N, precision, bias.defined());
    memory src_m({{part, K}, DataType(precision), tag::ab}, eng, static_cast<char*>(x.data_ptr()) + size_t(row * K) * elem);
    memory w_m({{K, N}, DataType(precision), tag::ba}, eng, weight.data_ptr());
    memory dst_m({{part, N}, memory::data_type::f32, tag::ab}, eng, y.data_ptr<float>() + row * N);
    at::Tensor scratch = at::empty({int64_t(c->scratch_bytes)}, at::kByte);
    memory s_m({{int64_t(c->scratch_bytes)}, memory::data_type::u8, tag::a}, eng, scratch.data_ptr());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, s_m}};
    if (bias.defined()) args.emplace(DNNL_ARG_BIAS, memory({{1, N}, memory::data_type::f32, tag::ab}, eng, bias.data_ptr()));
    c->primitive.execute(stream, args);
    stream.wait();
    row += part;
  }
  return y.view(sizes);
}

}  // namespace gainrag::onednn
