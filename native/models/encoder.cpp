#include "models/encoder.h"

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu_rows.h"
#include "core/error.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "io/tensor_bridge.h"

namespace gainrag {
namespace {

// Checkpoints name the backbone "bert.*" / "roberta.*" when saved from a task model (e.g.
// ...ForSequenceClassification) and bare when saved from BertModel / XLMRobertaModel.
std::string DetectPrefix(const WeightFiles& weights, const std::string& dir) {
  for (const char* prefix : {"", "bert.", "roberta.", "model."}) {
    if (weights.has(std::string(prefix) + "embeddings.word_embeddings.weight")) return prefix;
  }
  GR_FAIL(kShape, dir, ": no tensor 'embeddings.word_embeddings.weight' (with or without a bert./roberta. prefix)");
}

at::Tensor DropoutIf(const at::Tensor& x, double p) { return p > 0 ? at::dropout(x, p, true) : x; }

double DropoutField(const json::Value& root, const char* key, double fallback) {
  const json::Value* v = root.find(key);
  if (!v || v->is_null()) return fallback;
  GR_CHECK(v->is_number() && v->as_number() >= 0 && v->as_number() < 1, kModelConfig,
           "config.json: field '", key, "' must be a probability in [0, 1)");
  return v->as_number();
}

}  // namespace

GemmPath ResolveGemmPath(const EncoderOptions& opts);  // encoder_dnnl.cpp
// encoder_dnnl.cpp: attention over each row's real keys on oneDNN (see backends/dnnl/attention.h).
at::Tensor DnnlRaggedAttention(const at::Tensor& qkv, const std::vector<int64_t>& key_lengths, int64_t heads,
                               bool first_query_only = false);

Pooling ParsePooling(const std::string& name) {
  if (name == "mean") return Pooling::kMean;
  if (name == "cls") return Pooling::kCls;
  GR_FAIL(kInvalidArgument, "pooling must be 'mean' or 'cls', got '", name, "'");
}

std::shared_ptr<EncoderModel> EncoderModel::Load(const std::string& dir, const EncoderOptions& opts) {
  std::shared_ptr<EncoderModel> m(new EncoderModel());
  m->dir_ = dir;
  m->config_ = LoadEncoderConfig(dir);
  const EncoderConfig& c = m->config_;
  GR_CHECK(c.hidden_size % c.num_heads == 0, kModelConfig, dir, "/config.json: hidden_size ", c.hidden_size,
           " is not a multiple of num_attention_heads ", c.num_heads);
  GR_CHECK(c.max_tokens() > 0, kModelConfig, dir, "/config.json: max_position_embeddings ", c.max_position_embeddings,
           " leaves no positions after the padding offset");
  GR_CHECK(opts.dtype == at::kFloat || opts.dtype == at::kHalf || opts.dtype == at::kBFloat16 || opts.dtype == at::kChar,
           kInvalidArgument, "encoder dtype must be float32, float16, bfloat16 or int8");
  {
    const json::Value root = json::Parse(ReadTextFile(dir + "/config.json"));  // valid: LoadEncoderConfig parsed it
    m->hidden_dropout_ = DropoutField(root, "hidden_dropout_prob", 0.1);
    m->attention_dropout_ = DropoutField(root, "attention_probs_dropout_prob", 0.1);
    m->classifier_dropout_ = DropoutField(root, "classifier_dropout", m->hidden_dropout_);
  }
  GR_CHECK(!opts.bf16x3 || opts.dtype == at::kFloat, kInvalidArgument,
           "matmul precision 'high' (bf16x3) is a float32 mode; use dtype 'float32'");
  const GemmPath gemm = ResolveGemmPath(opts);
  // The oneDNN path keeps everything outside the matrix products in float32.
  m->dtype_ = gemm == GemmPath::kDnnl ? at::kFloat : opts.dtype;
  m->precision_ = opts.dtype;
  m->device_ = opts.device;

  auto weights = WeightFiles::Open(dir);
  const std::string prefix = DetectPrefix(*weights, dir);
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  auto load = [&](at::Tensor* slot, const std::string& name, std::vector<int64_t> shape) {
    GR_CHECK(weights->has(name), kShape, dir, ": missing tensor '", name, "'");
    at::Tensor t = MappedTensor(*weights, name);
    GR_CHECK(t.sizes() == at::IntArrayRef(shape), kShape, dir, ": tensor '", name, "' has shape ", t.sizes(),
             ", expected ", at::IntArrayRef(shape));
    GR_CHECK(at::isFloatingType(t.scalar_type()), kShape, dir, ": tensor '", name, "' is not floating point");
    // Same dtype on CPU stays a view of the mapping; anything else is one converted copy.
    *slot = t.to(m->device_, m->dtype_);
    m->named_.emplace_back(name, slot);
  };
  auto linear = [&](Linear* l, const std::string& name, int64_t out, int64_t in) {
    load(&l->weight, name + ".weight", {out, in});
    load(&l->bias, name + ".bias", {out});
  };
  auto norm = [&](Norm* n, const std::string& name) {
    load(&n->weight, name + ".weight", {H});
    load(&n->bias, name + ".bias", {H});
  };

  const std::string emb = prefix + "embeddings.";
  load(&m->word_emb_, emb + "word_embeddings.weight", {c.vocab_size, H});
  load(&m->pos_emb_, emb + "position_embeddings.weight", {c.max_position_embeddings, H});
  if (c.type_vocab_size > 0) load(&m->type_emb_, emb + "token_type_embeddings.weight", {c.type_vocab_size, H});
  norm(&m->emb_norm_, emb + "LayerNorm");
  // Pointers into layers_ are kept in named_, so it is sized once and never grows.
  m->layers_.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    Layer& L = m->layers_[i];
    const std::string p = prefix + "encoder.layer." + std::to_string(i) + ".";
    linear(&L.query, p + "attention.self.query", H, H);
    linear(&L.key, p + "attention.self.key", H, H);
    linear(&L.value, p + "attention.self.value", H, H);
    linear(&L.attn_out, p + "attention.output.dense", H, H);
    norm(&L.attn_norm, p + "attention.output.LayerNorm");
    linear(&L.intermediate, p + "intermediate.dense", I, H);
    linear(&L.output, p + "output.dense", H, I);
    norm(&L.out_norm, p + "output.LayerNorm");
  }

  // One [3H, H] product instead of three, and q/k/v come out of it contiguous per head.
  if (gemm == GemmPath::kDnnl) m->PackForDnnl(opts.dtype, opts.bf16x3);
  for (Layer& L : m->layers_) {
    if (m->packed_) break;
    L.qkv.weight = at::cat({L.query.weight, L.key.weight, L.value.weight});
    L.qkv.bias = at::cat({L.query.bias, L.key.bias, L.value.bias});
    L.query.weight = L.qkv.weight.narrow(0, 0, H);
    L.key.weight = L.qkv.weight.narrow(0, H, H);
    L.value.weight = L.qkv.weight.narrow(0, 2 * H, H);
    L.query.bias = L.qkv.bias.narrow(0, 0, H);
    L.key.bias = L.qkv.bias.narrow(0, H, H);
    L.value.bias = L.qkv.bias.narrow(0, 2 * H, H);
  }

  bool wants_head = false;
  for (const auto& a : c.architectures) wants_head |= a.find("ForSequenceClassification") != std::string::npos;
  const int64_t labels = c.num_labels;
  if (weights->has("classifier.out_proj.weight") || (wants_head && c.family == EncoderFamily::kXlmRoberta)) {
    m->head_ = Head::kRobertaClassification;
    linear(&m->head_dense_, "classifier.dense", H, H);
    linear(&m->head_out_, "classifier.out_proj", labels, H);
  } else if (weights->has("classifier.weight") || wants_head) {
    m->head_ = Head::kBertPooler;
    linear(&m->head_dense_, prefix + "pooler.dense", H, H);
    linear(&m->head_out_, "classifier", labels, H);
  }

  if (m->device_.is_cpu() && m->dtype_ != at::kFloat) {
    // Whether a reduced precision runs on CPU depends on the LibTorch build (1.13 has no
    // float16 matrix product on CPU): find out now rather than in the first batch.
    try {
      c10::InferenceMode guard;
      at::Tensor ids = at::zeros({1, 2}, at::kLong);
      at::Tensor h = m->Hidden(ids, at::ones({1, 2}, at::kLong), at::Tensor());
      if (m->has_classifier()) m->Classify(h);
    } catch (const c10::Error& e) {
      GR_FAIL(kUnsupported, m->dtype_ == at::kHalf ? "float16" : "bfloat16", " inference on CPU is not supported by this LibTorch build (",
              e.what_without_backtrace(), "); use float32 or bfloat16");
    }
  }
  return m;
}

at::Tensor EncoderModel::Dropout(const at::Tensor& x, double p) const { return DropoutIf(x, training_ ? p : 0.0); }

at::Tensor EncoderModel::Activation(const at::Tensor& x) const {
  const std::string& act = config_.hidden_act;
  if (act == "gelu") return at::gelu(x);  // exact erf form, as HF "gelu"
  if (act == "relu") return at::relu(x);
  return at::gelu(x, "tanh");  // gelu_new / gelu_pytorch_tanh
}

at::Tensor EncoderModel::SelfAttention(const Layer& L, const at::Tensor& x, const at::Tensor& bias, bool training,
                                       const std::vector<int64_t>* key_lengths) const {
  const int64_t B = x.size(0), T = x.size(1), H = config_.hidden_size, nh = config_.num_heads, hd = H / nh;
  // Per row over its real keys, q/k/v read in place from the stacked product: no padded
  // [B, heads, T, T] scores, no mask, no head transposes.
  if (key_lengths && L.qkv.packed) return DnnlRaggedAttention(Apply(L.qkv, x), *key_lengths, nh);
  at::Tensor q, k, v;
  if (L.qkv.packed || L.qkv.weight.defined()) {
    at::Tensor qkv = Apply(L.qkv, x).view({B, T, 3, nh, hd}).permute({2, 0, 3, 1, 4}).contiguous();
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else {
    auto heads = [&](const at::Tensor& t) { return t.view({B, T, nh, hd}).transpose(1, 2); };
    q = heads(at::linear(x, L.query.weight, L.query.bias));
    k = heads(at::linear(x, L.key.weight, L.key.bias));
    v = heads(at::linear(x, L.value.weight, L.value.bias));
  }
  // `training`, not training_: a checkpointed layer is recomputed in the backward pass, when
  // the caller may have left training mode, and must drop out exactly as its forward did.
  const double p_attn = training ? attention_dropout_ : 0.0;
  at::Tensor ctx;
#if TORCH_VERSION_MAJOR >= 2
  ctx = at::scaled_dot_product_attention(q, k, v, bias, p_attn, false);
#else
  // Scaling q (T x hd) is cheaper than scaling the scores (T x T) once T > hd.
  at::Tensor scores = at::matmul(q.mul(1.0 / std::sqrt(double(hd))), k.transpose(-1, -2)).add_(bias);
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(x.scalar_type());
  ctx = at::matmul(DropoutIf(probs, p_attn), v);
#endif
  return ctx.transpose(1, 2).reshape({B, T, H});
}

at::Tensor EncoderModel::LayerForward(const Layer& L, const at::Tensor& x, const at::Tensor& bias, bool training,
                                      const std::vector<int64_t>* key_lengths) const {
  at::Tensor ctx = SelfAttention(L, x, bias, training, key_lengths);
  const double p_hidden = training ? hidden_dropout_ : 0.0, eps = config_.layer_norm_eps;
  at::Tensor a = DropoutIf(Apply(L.attn_out, ctx), p_hidden);
  at::Tensor h = AddLayerNorm(a, x, L.attn_norm, eps, training);
  at::Tensor f = ApplyActivated(L.intermediate, h);
  at::Tensor o = DropoutIf(Apply(L.output, f), p_hidden);
  return AddLayerNorm(o, h, L.out_norm, eps, training);
}

at::Tensor EncoderModel::FirstTokenLayerForward(const Layer& L, const at::Tensor& x,
                                               const std::vector<int64_t>& key_lengths) const {
  // Keys and values need every token; the query, the attention output, both norms and the FFN
  // only the first, so they run on [B, H]: for a 12-layer model ~6% fewer multiply-adds.
  const int64_t nh = config_.num_heads;
  at::Tensor ctx = DnnlRaggedAttention(Apply(L.qkv, x), key_lengths, nh, /*first_query_only=*/true);
  at::Tensor first;
  if (x.dim() == 3) {
    first = x.select(1, 0).contiguous();
  } else {  // packed [N, H]: row b starts after rows 0..b-1's tokens
    std::vector<int64_t> starts(key_lengths.size());
    for (size_t b = 0, s = 0; b < key_lengths.size(); s += size_t(key_lengths[b]), ++b) starts[b] = int64_t(s);
    first = x.index_select(0, at::tensor(starts, at::kLong));
  }
  const double eps = config_.layer_norm_eps;
  at::Tensor a = Apply(L.attn_out, ctx);
  at::Tensor h = AddLayerNorm(a, first, L.attn_norm, eps, false);
  at::Tensor o = Apply(L.output, ApplyActivated(L.intermediate, h));
  return AddLayerNorm(o, h, L.out_norm, eps, false);
}

at::Tensor EncoderModel::AddLayerNorm(at::Tensor& sum, const at::Tensor& residual, const Norm& norm, double eps,
                                      bool training) const {
  // The packed float32 inference path reads each row once (cpu_rows.h); anything that needs
  // autograd, another dtype or device, or odd strides takes LibTorch's ops.
  const int64_t H = config_.hidden_size;
  const auto plain = [](const at::Tensor& t) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
  };
  if (packed_ && !training && !at::GradMode::is_enabled() && plain(sum) && plain(residual) &&
      sum.sizes() == residual.sizes() && sum.size(-1) == H && plain(norm.weight) && plain(norm.bias)) {
    cpu::AddLayerNormRows(sum.data_ptr<float>(), residual.data_ptr<float>(), sum.numel() / H, H,
                          norm.weight.data_ptr<float>(), norm.bias.data_ptr<float>(), static_cast<float>(eps),
                          sum.data_ptr<float>());
    return sum;
  }
  return at::layer_norm(sum.add_(residual), {H}, norm.weight, norm.bias, eps);
}

namespace {

// Row lengths of a right-padded 0/1 mask [B, T] (each row: ones, then zeros, at least one one);
// false for any other mask.
bool PrefixLengths(const at::Tensor& mask, std::vector<int64_t>* lengths) {
  if (!mask.device().is_cpu() || mask.size(0) == 0 || mask.size(1) == 0) return false;
  const at::Tensor m = mask.to(at::kLong).contiguous();
  const int64_t B = m.size(0), T = m.size(1);
  const int64_t* p = m.data_ptr<int64_t>();
  lengths->assign(B, 0);
  for (int64_t b = 0; b < B; ++b) {
    int64_t len = 0;
    while (len < T && p[b * T + len] == 1) ++len;
    for (int64_t t = len; t < T; ++t) {
      if (p[b * T + t] != 0) return false;
    }
    if (len == 0) return false;
    (*lengths)[b] = len;
  }
  return true;
}

}  // namespace

at::Tensor EncoderModel::Hidden(const at::Tensor& input_ids_in, const at::Tensor& attention_mask_in,
                                const at::Tensor& type_ids_in, bool first_token_only) const {
  GR_CHECK(input_ids_in.dim() == 2, kShape, "input_ids must be [B, T], got ", input_ids_in.sizes());
  GR_CHECK(attention_mask_in.sizes() == input_ids_in.sizes(), kShape, "attention_mask ", attention_mask_in.sizes(),
           " does not match input_ids ", input_ids_in.sizes());
  const int64_t T = input_ids_in.size(1), H = config_.hidden_size;
  GR_CHECK(T <= max_tokens(), kShape, "sequence length ", T, " exceeds the model's ", max_tokens(), " positions");
  at::Tensor ids = input_ids_in.to(device_, at::kLong);
  at::Tensor mask = attention_mask_in.to(device_, at::kLong);

  at::Tensor positions;
  if (config_.family == EncoderFamily::kXlmRoberta) {
    // HF create_position_ids_from_input_ids: count non-pad tokens, offset by padding_idx.
    at::Tensor real = ids.ne(config_.pad_token_id).to(at::kLong);
    positions = real.cumsum(1).mul_(real).add_(config_.pad_token_id);
  } else {
    positions = at::arange(T, ids.options()).unsqueeze(0);
  }
  at::Tensor x = at::embedding(word_emb_, ids) + at::embedding(pos_emb_, positions);
  if (type_emb_.defined()) {
    if (type_ids_in.defined()) {
      GR_CHECK(type_ids_in.sizes() == input_ids_in.sizes(), kShape, "type_ids ", type_ids_in.sizes(),
               " does not match input_ids ", input_ids_in.sizes());
      x = x + at::embedding(type_emb_, type_ids_in.to(device_, at::kLong));
    } else {
      x = x + type_emb_[0];
    }
  }
  x = Dropout(at::layer_norm(x, {H}, emb_norm_.weight, emb_norm_.bias, config_.layer_norm_eps), hidden_dropout_);

  // Additive key mask [B,1,1,T]: the dtype's lowest value on padding (as HF), so a fully
  // padded row stays finite.
  const double lowest = x.scalar_type() == at::kFloat    ? std::numeric_limits<float>::lowest()
                        : x.scalar_type() == at::kHalf   ? -65504.0
                        : x.scalar_type() == at::kDouble ? std::numeric_limits<double>::lowest()
                                                         : -3.3895313892515355e38;  // bfloat16
  at::Tensor bias = (1 - mask).to(x.scalar_type()).mul_(lowest).view({mask.size(0), 1, 1, T});
  const bool checkpoint = checkpointing_ && at::GradMode::is_enabled();
  // The oneDNN path attends over each row's real keys when the mask is right padding (every
  // row: ones then zeros, at least one one); anything else keeps the additive mask.
  std::vector<int64_t> key_lengths;
  const bool ragged = packed_ && !training_ && !at::GradMode::is_enabled() && x.scalar_type() == at::kFloat &&
                      PrefixLengths(mask, &key_lengths);
  // There the layers also run on the real tokens only, packed back to back as [N, H]: every
  // product, norm and activation is per token, and only attention needs the rows, which it
  // gets from key_lengths. Length-bucketed batches of questions still carry ~9% padding
  // (256 SQuAD questions: 7190 padded positions for 6592 tokens).
  // The gather and scatter are three more ops per batch; a batch with under ~3% padding
  // (passages cut at the model's length, pairs) has too little to save and stays padded.
  at::Tensor real_positions;
  bool pack = false;
  if (ragged) {
    const int64_t B = x.size(0);
    int64_t real = 0;
    for (int64_t len : key_lengths) real += len;
    pack = (B * T - real) * 32 >= B * T;
    if (pack) {
      std::vector<int64_t> flat;
      flat.reserve(size_t(real));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < key_lengths[b]; ++t) flat.push_back(b * T + t);
      real_positions = at::tensor(flat, at::kLong);
      x = x.reshape({B * T, H}).index_select(0, real_positions);
    }
  }
  for (const Layer& L : layers_) {
    if (first_token_only && ragged && L.qkv.packed && &L == &layers_.back()) {
      // Only the first token is read: the last layer computes it alone ([B, H]).
      return FirstTokenLayerForward(L, x, key_lengths).unsqueeze(1);
    }
    if (!checkpoint) {
      x = LayerForward(L, x, bias, training_, ragged ? &key_lengths : nullptr);
      continue;
    }
    std::vector<at::Tensor> params;
    for (const at::Tensor* t : {&L.query.weight, &L.query.bias, &L.key.weight, &L.key.bias, &L.value.weight,
                                &L.value.bias, &L.attn_out.weight, &L.attn_out.bias, &L.attn_norm.weight,
                                &L.attn_norm.bias, &L.intermediate.weight, &L.intermediate.bias, &L.output.weight,
                                &L.output.bias, &L.out_norm.weight, &L.out_norm.bias, &L.qkv.weight, &L.qkv.bias}) {
      if (t->defined()) params.push_back(*t);
    }
    auto layer = [this, &L, bias, training = training_](const at::Tensor& in) {
      return LayerForward(L, in, bias, training);
    };
    x = CheckpointedCall(layer, x, params);
  }
  if (pack) {
    // Back to [B, T, H]; padded positions are zeros (no output reads them: pooling masks them
    // and the classifier reads the first token).
    at::Tensor full = at::zeros({mask.size(0) * T, H}, x.options());
    full.index_copy_(0, real_positions, x);
    x = full.view({mask.size(0), T, H});
  }
  return first_token_only ? x.narrow(1, 0, 1) : x;
}

at::Tensor EncoderModel::Pool(const at::Tensor& hidden, const at::Tensor& attention_mask, Pooling pooling) const {
  GR_CHECK(hidden.dim() == 3, kShape, "hidden states must be [B, T, H], got ", hidden.sizes());
  if (pooling == Pooling::kCls) return hidden.select(1, 0).to(at::kFloat);
  // Mean over real tokens, accumulated in float32 whatever the model dtype.
  at::Tensor m = attention_mask.to(hidden.device(), at::kFloat).unsqueeze(-1);
  return (hidden.to(at::kFloat) * m).sum(1) / m.sum(1).clamp_min(1.0);
}

at::Tensor EncoderModel::Classify(const at::Tensor& hidden) const {
  GR_CHECK(head_ != Head::kNone, kUnsupported, dir_, " has no sequence-classification head (classifier.* tensors)");
  GR_CHECK(hidden.dim() == 3, kShape, "hidden states must be [B, T, H], got ", hidden.sizes());
  at::Tensor first = hidden.select(1, 0);
  if (head_ == Head::kRobertaClassification) {
    at::Tensor x = at::tanh(at::linear(Dropout(first, classifier_dropout_), head_dense_.weight, head_dense_.bias));
    return at::linear(Dropout(x, classifier_dropout_), head_out_.weight, head_out_.bias);
  }
  at::Tensor pooled = at::tanh(at::linear(first, head_dense_.weight, head_dense_.bias));
  return at::linear(Dropout(pooled, classifier_dropout_), head_out_.weight, head_out_.bias);
}

std::vector<std::pair<std::string, at::Tensor*>> EncoderModel::NamedParameters() { return named_; }

void EncoderModel::MakeTrainable(at::Device device) {
  for (Layer& L : layers_) {
    L.qkv = Linear();  // q/k/v become independent parameters below
    for (Linear* l : {&L.attn_out, &L.intermediate, &L.output}) l->packed.reset();  // autograd needs at::linear
  }
  packed_ = false;
  bf16x3_ = false;
  precision_ = at::kFloat;
  for (auto& [name, slot] : named_) {
    // clone(): never train in place on a view of the mapped checkpoint.
    *slot = slot->to(device, at::kFloat).clone().detach().requires_grad_(true);
  }
  device_ = device;
  dtype_ = at::kFloat;
}

}  // namespace gainrag
