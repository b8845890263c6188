// The encoder's choice of GEMM path and its oneDNN packing. Compiled in every build; without
// oneDNN (GAINRAG_WITH_DNNL unset) asking for "dnnl" is Error(kUnsupported) and GAINRAG_GEMM=dnnl
// falls back to LibTorch, so one environment can serve builds with and without libdnnl.
// With oneDNN compiled in, float32 and bfloat16 on CPU take the oneDNN path by default (it was
// faster at every shape of bench/onnx-peer.ts, bench/results/cpu-dnnl.md); GAINRAG_GEMM=torch
// or gemm: 'torch' keep LibTorch's.
#include <ATen/ATen.h>

#include <cstdlib>

#include "core/error.h"
#include "models/encoder.h"

#ifdef GAINRAG_WITH_DNNL
#include "backends/dnnl/attention.h"
#include "backends/dnnl/packed_linear.h"
#endif

namespace gainrag {

GemmPath ParseGemmPath(const std::string& name) {
  if (name.empty()) return GemmPath::kDefault;
  if (name == "torch") return GemmPath::kTorch;
  if (name == "dnnl") return GemmPath::kDnnl;
  GR_FAIL(kInvalidArgument, "gemm must be 'torch' or 'dnnl', got '", name, "'");
}

bool DnnlCompiledIn() {
#ifdef GAINRAG_WITH_DNNL
  return true;
#else
  return false;
#endif
}

// Why the oneDNN path cannot serve this load, or "" when it can.
std::string DnnlObstacle(const EncoderOptions& opts) {
  if (!DnnlCompiledIn()) return "this build has no oneDNN backend (libdnnl-dev was not found at build time)";
  if (!opts.device.is_cpu()) return "the oneDNN path runs on CPU only";
  if (opts.dtype != at::kFloat && opts.dtype != at::kBFloat16 && opts.dtype != at::kChar) {
    return "the oneDNN path runs float32, bfloat16 or int8";
  }
#ifdef GAINRAG_WITH_DNNL
  // bfloat16 also without a bf16 kernel: PackedLinear then packs bf16-rounded weights widened.
  const bool runs = opts.dtype == at::kBFloat16 ? onednn::SupportsBf16Weights() : onednn::Supports(opts.dtype);
  if (!runs) return "oneDNN has no kernel for this precision on this CPU";
  if (opts.bf16x3 && !onednn::SupportsBf16x3()) return "oneDNN has no bf16 kernel on this CPU";
#endif
  return "";
}

GemmPath GemmPathFromEnvironment() {
  const char* env = std::getenv("GAINRAG_GEMM");
  try {
    return ParseGemmPath(env ? env : "");
  } catch (const Error&) {
    GR_FAIL(kInvalidArgument, "GAINRAG_GEMM must be 'torch' or 'dnnl', got '", env, "'");
  }
}

// kTorch or kDnnl. An explicit request that cannot be met fails; the environment's and the
// build's default are preferences (they must not break CUDA or float16 models). int8 and bf16x3
// exist only on the oneDNN path, so there nothing falls back.
GemmPath ResolveGemmPath(const EncoderOptions& opts) {
  GemmPath want = opts.gemm;
  bool preference = false;
  if (want == GemmPath::kDefault) {
    want = GemmPathFromEnvironment();
    if (want == GemmPath::kDefault) want = DnnlCompiledIn() ? GemmPath::kDnnl : GemmPath::kTorch;
    preference = true;
  }
  if (opts.dtype == at::kChar || opts.bf16x3) {
    const char* mode = opts.bf16x3 ? "matmul precision 'high'" : "dtype 'int8'";
    GR_CHECK(want == GemmPath::kDnnl || preference, kUnsupported, mode,
             " runs on the oneDNN path only (gemm 'dnnl'), not on gemm 'torch'");
    const std::string why = DnnlObstacle(opts);
    GR_CHECK(why.empty(), kUnsupported, mode, ": ", why);
    return GemmPath::kDnnl;
  }
  if (want != GemmPath::kDnnl) return GemmPath::kTorch;
  const std::string why = DnnlObstacle(opts);
  if (why.empty()) return GemmPath::kDnnl;
  GR_CHECK(preference, kUnsupported, "gemm 'dnnl': ", why);
  return GemmPath::kTorch;
}

at::Tensor EncoderModel::Apply(const Linear& l, const at::Tensor& x) const {
#ifdef GAINRAG_WITH_DNNL
  if (l.packed) return l.packed->Forward(x);
#endif
  return at::linear(x, l.weight, l.bias);
}

at::Tensor EncoderModel::ApplyActivated(const Linear& l, const at::Tensor& x) const {
#ifdef GAINRAG_WITH_DNNL
  if (l.packed) return l.packed->Forward(x);  // packed with the activation as its epilogue
#endif
  return Activation(at::linear(x, l.weight, l.bias));
}

at::Tensor DnnlRaggedAttention(const at::Tensor& qkv, const std::vector<int64_t>& key_lengths, int64_t heads,
                               bool first_query_only) {
#ifdef GAINRAG_WITH_DNNL
  return onednn::RaggedSelfAttention(qkv, key_lengths, heads, first_query_only);
#else
  GR_FAIL(kUnsupported, "this build has no oneDNN backend");
#endif
}

void EncoderModel::PackForDnnl(at::ScalarType precision, bool bf16x3) {
#ifdef GAINRAG_WITH_DNNL
  using onednn::Epilogue;
  using onednn::PackedLinear;
  // The same mapping as Activation().
  const std::string& act = config_.hidden_act;
  const Epilogue ffn = act == "gelu" ? Epilogue::kGeluErf : act == "relu" ? Epilogue::kRelu : Epilogue::kGeluTanh;
  for (Layer& L : layers_) {
    // One [3H, H] product; the stacked copy lives only in the packing.
    L.qkv.packed = PackedLinear::Pack(at::cat({L.query.weight, L.key.weight, L.value.weight}),
                                      at::cat({L.query.bias, L.key.bias, L.value.bias}), precision, Epilogue::kNone,
                                      bf16x3);
    L.attn_out.packed = PackedLinear::Pack(L.attn_out.weight, L.attn_out.bias, precision, Epilogue::kNone, bf16x3);
    L.intermediate.packed = PackedLinear::Pack(L.intermediate.weight, L.intermediate.bias, precision, ffn, bf16x3);
    L.output.packed = PackedLinear::Pack(L.output.weight, L.output.bias, precision, Epilogue::kNone, bf16x3);
  }
  packed_ = true;
  bf16x3_ = bf16x3;
#else
  GR_FAIL(kUnsupported, "gemm 'dnnl': this build has no oneDNN backend");
#endif
}

}  // namespace gainrag
