// Llama decoder: loading and the forward pass. Scoring and decoding live in llama_score.cpp.
#include "models/llama.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <cmath>
#include <cstring>

#include "backends/cpu_decode.h"
#include "backends/cpu_rows.h"
#include "core/error.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "io/tensor_bridge.h"
#ifdef GAINRAG_WITH_DNNL
#include "backends/dnnl/attention.h"
#include "backends/dnnl/packed_linear.h"
#include "backends/dnnl/int8_gemv.h"
#endif

namespace gainrag {
namespace {

std::string ShapeString(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// generation_config.json may name more stop tokens than config.json (Llama 3 Instruct lists
// <|eot_id|> there only).
void AddGenerationEos(const std::string& dir, std::vector<int64_t>* eos) {
  const std::string path = dir + "/generation_config.json";
  if (!FileExists(path)) return;
  json::Value root;
  try {
    root = json::Parse(ReadTextFile(path));
  } catch (const std::invalid_argument& e) {
    GR_FAIL(kModelConfig, path, ": ", e.what());
  }
  const json::Value* v = root.is_object() ? root.find("eos_token_id") : nullptr;
  if (!v || v->is_null()) return;
  auto add = [&](const json::Value& x) {
    GR_CHECK(x.is_integer(), kModelConfig, path, ": eos_token_id entries must be integers");
    for (int64_t e : *eos) if (e == x.as_int()) return;
    eos->push_back(x.as_int());
  };
  if (v->is_array()) for (const auto& x : v->as_array()) add(x);
  else add(*v);
}

// Mistral/Qwen2 may restrict attention to a window; this engine attends to everything, which is
// the same as long as sequences stay within the window. Returns 0 when no window applies.
int64_t SlidingWindow(const std::string& dir, const std::string& model_type) {
  if (model_type == "llama") return 0;
  json::Value root = json::Parse(ReadTextFile(dir + "/config.json"));
  const json::Value* w = root.find("sliding_window");
  if (!w || !w->is_integer()) return 0;
  if (const json::Value* use = root.find("use_sliding_window"); use && use->is_bool() && !use->as_bool()) return 0;
  return w->as_int();
}

// Inverse rotary frequencies as transformers computes them (float32), with the configured scaling.
at::Tensor InverseFrequencies(const LlamaConfig& c) {
  const int64_t d = c.head_dim;
  at::Tensor exps = at::arange(0, d, 2, at::kLong).to(at::kFloat) / static_cast<double>(d);
  at::Tensor inv = at::reciprocal(at::pow(c.rope.theta, exps));
  const RopeConfig& r = c.rope;
  if (r.type == "linear") {
    inv = inv / r.factor;
  } else if (r.type == "llama3") {
    const double old_len = static_cast<double>(r.original_max_position_embeddings);
    const double low_wavelen = old_len / r.low_freq_factor;
    const double high_wavelen = old_len / r.high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv / r.factor, inv);
    at::Tensor smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
    at::Tensor medium = wavelen.ge(high_wavelen).logical_and(wavelen.le(low_wavelen));
    inv = at::where(medium, smoothed, scaled);
  }
  return inv.contiguous();
}

}  // namespace

std::shared_ptr<LlamaModel> LlamaModel::Load(const std::string& dir, const LlamaOptions& opts) {
  c10::InferenceMode guard;
  std::shared_ptr<LlamaModel> m(new LlamaModel());
  m->config_ = LoadLlamaConfig(dir);
  const LlamaConfig& c = m->config_;
  m->device_ = opts.device;
  m->dtype_ = opts.dtype;
  if (opts.dtype == at::kChar) {
#ifdef GAINRAG_WITH_DNNL
    GR_CHECK(m->device_.is_cpu() && onednn::Supports(at::kChar), kUnsupported,
             "dtype 'int8' runs on CPU only, where oneDNN must have an int8 kernel for this CPU");
#else
    GR_FAIL(kUnsupported, "dtype 'int8' needs the oneDNN backend, which this build does not have");
#endif
    m->dtype_ = at::kFloat;  // everything but the products; they are packed after the weights load
    m->int8_ = true;
  }
  m->token_budget_ = opts.token_budget;
  m->max_rows_ = opts.max_rows;
  m->eos_ids_ = c.eos_token_ids;
  AddGenerationEos(dir, &m->eos_ids_);
  m->sliding_window_ = SlidingWindow(dir, c.model_type);
  if (m->dtype_ != at::kFloat) {
    // Older CPU builds lack half GEMMs; fail at load with a clear message, not mid-run.
    try {
      at::Tensor probe = at::ones({2, 2}, at::TensorOptions().dtype(m->dtype_).device(m->device_));
      at::linear(probe, probe);
    } catch (const c10::Error&) {
      GR_FAIL(kUnsupported, c10::toString(m->dtype_), " matrix products are not supported on ", m->device_.str(),
              " by this LibTorch; use float32", m->dtype_ == at::kHalf ? " or bfloat16" : "");
    }
  }
  m->weights_ = WeightFiles::Open(dir);
  const WeightFiles& w = *m->weights_;
  const std::string prefix = w.has("model.embed_tokens.weight") ? "model." : "";
  m->ChooseGemm();
  if (m->int8_) m->dnnl_gemm_ = m->float32_stream_ = true;  // int8 is oneDNN only (GAINRAG_GEMM does not apply)
  // Norm weights: float32 in bfloat16 mode when the products run on oneDNN (the residual stream
  // is float32 there), as llama.cpp keeps 1-D tensors: rounding them to bfloat16 was one of the
  // errors against a float64 forward.
  const at::ScalarType norm_dtype = m->float32_stream_ && m->dtype_ == at::kBFloat16 ? at::kFloat : m->dtype_;
  auto get = [&](const std::string& name, std::vector<int64_t> shape, at::ScalarType dtype = at::ScalarType::Undefined) {
    if (dtype == at::ScalarType::Undefined) dtype = m->dtype_;
    GR_CHECK(w.has(name), kShape, dir, ": checkpoint has no tensor '", name, "'");
    at::Tensor t = MappedTensor(w, name);
    GR_CHECK(t.sizes().vec() == shape, kShape, dir, ": tensor '", name, "' has shape ", ShapeString(t.sizes()),
             ", the config implies ", ShapeString(shape));
    GR_CHECK(at::isFloatingType(t.scalar_type()), kShape, dir, ": tensor '", name, "' is not floating point");
    if (t.scalar_type() != dtype || m->device_ != at::Device(at::kCPU)) t = t.to(m->device_, dtype).contiguous();
    return t;
  };
  const int64_t h = c.hidden_size, hd = c.head_dim, qd = c.num_heads * hd, kvd = c.num_kv_heads * hd;
  m->embed_ = get(prefix + "embed_tokens.weight", {c.vocab_size, h});
  m->final_norm_ = get(prefix + "norm.weight", {h}, norm_dtype);
  if (w.has("lm_head.weight") && !c.tie_word_embeddings) {
    m->lm_head_ = get("lm_head.weight", {c.vocab_size, h});
  } else {
    GR_CHECK(c.tie_word_embeddings, kShape, dir, ": checkpoint has no tensor 'lm_head.weight' and the config does not tie embeddings");
    m->lm_head_ = m->embed_;
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = prefix + "layers." + std::to_string(i) + ".";
    Layer L;
    L.input_norm = get(p + "input_layernorm.weight", {h}, norm_dtype);
    L.post_norm = get(p + "post_attention_layernorm.weight", {h}, norm_dtype);
    L.q = get(p + "self_attn.q_proj.weight", {qd, h});
    L.k = get(p + "self_attn.k_proj.weight", {kvd, h});
    L.v = get(p + "self_attn.v_proj.weight", {kvd, h});
    L.o = get(p + "self_attn.o_proj.weight", {h, qd});
    // Qwen2 always has q/k/v biases (its config has no attention_bias field).
    if (c.attention_bias || c.model_type == "qwen2") {
      L.q_bias = get(p + "self_attn.q_proj.bias", {qd});
      L.k_bias = get(p + "self_attn.k_proj.bias", {kvd});
      L.v_bias = get(p + "self_attn.v_proj.bias", {kvd});
      if (c.attention_bias && w.has(p + "self_attn.o_proj.bias")) L.o_bias = get(p + "self_attn.o_proj.bias", {h});
    }
    L.gate = get(p + "mlp.gate_proj.weight", {c.intermediate_size, h});
    L.up = get(p + "mlp.up_proj.weight", {c.intermediate_size, h});
    L.down = get(p + "mlp.down_proj.weight", {h, c.intermediate_size});
    GR_CHECK(!c.mlp_bias, kUnsupported, dir, "/config.json: mlp_bias is not supported");
    m->layers_.push_back(std::move(L));
  }
  m->inv_freq_ = InverseFrequencies(c).to(m->device_);
  if (m->int8_) m->PackInt8();
  m->PrepareFastDecode();
  // Weights are read into owned memory (WeightFiles); tensors that view it keep their file
  // alive, so dropping the set here frees whatever was converted to another dtype/device.
  m->weights_.reset();
  return m;
}

LlamaStats LlamaModel::stats() const {
  LlamaStats s;
  s.prompt_prefills = stats_->prompt_prefills;
  s.prefill_tokens = stats_->prefill_tokens;
  s.answer_tokens = stats_->answer_tokens;
  s.lm_head_rows = stats_->lm_head_rows;
  s.forward_calls = stats_->forward_calls;
  s.generated_tokens = stats_->generated_tokens;
  s.decode_steps = stats_->decode_steps;
  s.stopped_rows = stats_->stopped_rows;
  return s;
}

void LlamaModel::ResetStats() {
  stats_->prompt_prefills = 0;
  stats_->prefill_tokens = 0;
  stats_->answer_tokens = 0;
  stats_->lm_head_rows = 0;
  stats_->forward_calls = 0;
  stats_->generated_tokens = 0;
  stats_->decode_steps = 0;
  stats_->stopped_rows = 0;
}

KVCache LlamaModel::NewCache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  cache.capacity = capacity;
  auto opts = at::TensorOptions().dtype(CacheDtype()).device(device_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    cache.k.push_back(at::empty({batch, config_.num_kv_heads, capacity, config_.head_dim}, opts));
    cache.v.push_back(at::empty({batch, config_.num_kv_heads, capacity, config_.head_dim}, opts));
  }
  return cache;
}

at::Tensor LlamaModel::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  if (float32_stream_ && cpu::DecodeKernels() && x.is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() &&
      weight.scalar_type() == at::kFloat && weight.is_contiguous() && x.numel() > 0) {
    // The float32 residual stream of the oneDNN path: one pass per row (the decode step's
    // kernel) instead of five ATen ops over fresh tensors, parallel over rows.
    at::Tensor y = at::empty_like(x);
    const int64_t n = x.size(-1), rows = x.numel() / n;
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    const float eps = float(config_.rms_norm_eps);
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / n), [&](int64_t r0, int64_t r1) {
      cpu::RmsNormRows(xp + r0 * n, r1 - r0, n, weight.data_ptr(), cpu::Elem::kF32, eps, yp + r0 * n);
    });
    return y;
  }
  // As transformers: normalise in float32, cast back, then scale.
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor var = x32.pow(2).mean(-1, true);
  x32 = x32 * at::rsqrt(var + config_.rms_norm_eps);
  // A float32 weight (bfloat16 mode, see Load) on bfloat16 rows scales in float32, rounds once.
  at::Tensor y = weight * x32.to(x.scalar_type());
  return y.scalar_type() == x.scalar_type() ? y : y.to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> LlamaModel::RopeTables(const at::Tensor& positions, at::ScalarType dtype) const {
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;  // [B,T,D/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype).unsqueeze(1), emb.sin().to(dtype).unsqueeze(1)};  // [B,1,T,D]
}

namespace {
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

#if TORCH_VERSION_MAJOR < 2
namespace {
// Bytes of float32 attention scores per block. The manual path materialises softmax(QK^T) for
// one block of (rows, queries) at a time: on CPU a block that stays in L2 keeps small models from
// streaming [rows, heads, T, S] score tensors through memory (with the whole batch at once the
// tiny fixture ran slower batched than one prompt at a time); on a GPU bigger blocks mean fewer
// launches.
int64_t ScoreBlockBytes(const at::Device& d) { return d.is_cpu() ? (int64_t(256) << 10) : (int64_t(256) << 20); }
}  // namespace
#endif

at::Tensor LlamaModel::Attention(const Layer& L, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                 const at::Tensor& mask, KVCache* cache, int64_t index) const {
  // mask: bool [B,1,rep*T,S] for scaled_dot_product_attention, else bool [B,1,1,T,S] true where
  // a query must NOT attend (see Forward).
  const int64_t b = x.size(0), t = x.size(1), hd = config_.head_dim;
  const int64_t kvh = config_.num_kv_heads, rep = config_.num_heads / kvh;
  const at::ScalarType act = AttentionDtype();
  at::Tensor q, k, v;
  bool rotated = false;
  if (L.qkv.defined() && !L.q_bias.defined()) {
    // One product over the stacked weights (the fused decode step's layout).
    at::Tensor qkv = Linear(x, L.qkv, at::Tensor()).to(act);
    const int64_t qd = config_.num_heads * hd, kvd = kvh * hd;
    if (act == at::kFloat && qkv.is_cpu() && qkv.is_contiguous() && cos.numel() == b * t * hd) {
      // RoPE in place on each position's q and k (one pass, no rotate_half copies).
      const int64_t half = hd / 2, width = qd + 2 * kvd, rows = b * t;
      const at::Tensor ch = cos.reshape({rows, hd}).narrow(1, 0, half).contiguous();
      const at::Tensor sh = sin.reshape({rows, hd}).narrow(1, 0, half).contiguous();
      float* base = qkv.data_ptr<float>();
      const float *cp = ch.data_ptr<float>(), *sp = sh.data_ptr<float>();
      const int64_t heads = config_.num_heads;
      at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / width), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          cpu::RotateHalfHeads(base + r * width, heads, hd, cp + r * half, sp + r * half);
          cpu::RotateHalfHeads(base + r * width + qd, kvh, hd, cp + r * half, sp + r * half);
        }
      });
      rotated = true;
    }
    q = qkv.narrow(-1, 0, qd), k = qkv.narrow(-1, qd, kvd), v = qkv.narrow(-1, qd + kvd, kvd);
  } else {
    q = Linear(x, L.q, L.q_bias).to(act), k = Linear(x, L.k, L.k_bias).to(act), v = Linear(x, L.v, L.v_bias).to(act);
  }
  q = q.reshape({b, t, config_.num_heads, hd}).transpose(1, 2);
  k = k.reshape({b, t, kvh, hd}).transpose(1, 2);
  v = v.reshape({b, t, kvh, hd}).transpose(1, 2);
  if (!rotated) {
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
  }
  const int64_t start = cache->length, total = start + t;
  cache->k[index].narrow(2, start, t).copy_(k);
  cache->v[index].narrow(2, start, t).copy_(v);
  // In bfloat16 mode with oneDNN: the cache's rounded keys/values, widened for float32 scores.
  at::Tensor keys = cache->k[index].narrow(2, 0, total).to(act);
  at::Tensor values = cache->v[index].narrow(2, 0, total).to(act);
  at::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
  // Query heads sharing a kv head are stacked along the query axis: GQA without repeating K/V.
  out = at::scaled_dot_product_attention(q.reshape({b, kvh, rep * t, hd}), keys, values, mask);
  out = out.reshape({b, config_.num_heads, t, hd});
#else
  // Blocks of whole rows when a row's scores fit the block, else blocks of queries within a row.
  // Queries never look past cache.length + their index (Forward's contract), so a query block
  // only multiplies the keys up to its last query: prefill does half the work of a full square.
  const int64_t row_bytes = config_.num_heads * t * total * 4, block = ScoreBlockBytes(device_);
  const int64_t rows_per = std::max<int64_t>(1, block / std::max<int64_t>(row_bytes, 1));
  const int64_t q_per = row_bytes <= block ? t : std::max<int64_t>(1, block / (config_.num_heads * total * 4));
  // Scaling the queries once is cheaper than scaling every block of scores.
  at::Tensor q5 = (q * (1.0 / std::sqrt(double(hd)))).view({b, kvh, rep, t, hd});
  out = at::empty({b, kvh, rep, t, hd}, q.options());
#ifdef GAINRAG_WITH_DNNL
  // LibTorch 1.13's CPU bmm runs on OpenBLAS, whose own threads spin against the OpenMP team.
  const bool use_dnnl = dnnl_gemm_ && act == at::kFloat && q5.device().is_cpu();
#endif
  for (int64_t r0 = 0; r0 < b; r0 += rows_per) {
    const int64_t nr = std::min(rows_per, b - r0);
    for (int64_t q0 = 0; q0 < t; q0 += q_per) {
      const int64_t n = std::min(q_per, t - q0), kend = start + q0 + n;
      const at::Tensor block_mask = mask.narrow(0, r0, nr).narrow(3, q0, n).narrow(4, 0, kend);
#ifdef GAINRAG_WITH_DNNL
      if (use_dnnl) {
        // Query heads of one kv head against its keys, broadcast over the group: the views are
        // read and the context written in place, no stacked copies.
        at::Tensor qb = q5.narrow(0, r0, nr).narrow(3, q0, n);                                  // [nr,kvh,rep,n,hd]
        at::Tensor kt = keys.narrow(0, r0, nr).narrow(2, 0, kend).unsqueeze(2).transpose(-1, -2);  // [nr,kvh,1,hd,kend]
        at::Tensor scores = at::empty({nr, kvh, rep, n, kend}, q.options());
        onednn::BatchedMatmul(qb, kt, scores);
        scores.masked_fill_(block_mask, -std::numeric_limits<float>::infinity());
        cpu::SoftmaxRows(scores.data_ptr<float>(), scores.numel() / kend, kend);  // in place: now probabilities
        onednn::BatchedMatmul(scores, values.narrow(0, r0, nr).narrow(2, 0, kend).unsqueeze(2),
                              out.narrow(0, r0, nr).narrow(3, q0, n));
        continue;
      }
#endif
      at::Tensor qb = q5.narrow(0, r0, nr).narrow(3, q0, n).reshape({nr, kvh, rep * n, hd});
      at::Tensor kb = keys.narrow(0, r0, nr).narrow(2, 0, kend);
      at::Tensor scores = at::matmul(qb, kb.transpose(-1, -2)).to(at::kFloat).view({nr, kvh, rep, n, kend});
      scores.masked_fill_(block_mask, -std::numeric_limits<float>::infinity());
      at::Tensor probs = at::softmax(scores, -1).to(act).view({nr, kvh, rep * n, kend});
      at::Tensor o = at::matmul(probs, values.narrow(0, r0, nr).narrow(2, 0, kend));
      out.narrow(0, r0, nr).narrow(3, q0, n).copy_(o.view({nr, kvh, rep, n, hd}));
    }
  }
  out = out.view({b, config_.num_heads, t, hd});
#endif
  out = out.transpose(1, 2).reshape({b, t, config_.num_heads * hd});
  return Linear(out, L.o, L.o_bias);
}

at::Tensor LlamaModel::Forward(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& mask,
                               KVCache* cache) const {
  const int64_t b = ids.size(0), t = ids.size(1);
  GR_CHECK(cache->length + t <= cache->capacity, kInternal, "KV cache overflow");
  GR_CHECK(sliding_window_ <= 0 || cache->length + t <= sliding_window_, kUnsupported, "sequence of ",
           cache->length + t, " tokens exceeds the model's sliding attention window (", sliding_window_,
           "), which this engine does not implement");
  GR_CHECK(mask.dim() == 3 && mask.size(0) == b && mask.size(1) == t && mask.size(2) == cache->length + t, kInternal,
           "attention mask has shape ", ShapeString(mask.sizes()));
#if TORCH_VERSION_MAJOR < 2
  // The blocked attention skips keys past the causal bound: a mask reaching there would be ignored.
  // (A byte scan: triu().any() took longer than a small forward.)
  if (mask.is_cpu() && mask.is_contiguous()) {
    const bool* m = mask.data_ptr<bool>();
    const int64_t s = mask.size(2);
    for (int64_t r = 0; r < b * t; ++r) {
      const int64_t bound = cache->length + r % t + 1;
      GR_CHECK(!std::memchr(m + r * s + bound, 1, size_t(s - bound)), kInternal, "attention mask is not causal");
    }
  }
#endif
  at::Tensor ids_d = ids.to(device_), mask_d = mask.to(device_);
  // The mask in the form the attention kernel takes, built once for all layers.
  const int64_t total = cache->length + t;
#if TORCH_VERSION_MAJOR >= 2
  const int64_t rep = config_.num_heads / config_.num_kv_heads;
  mask_d = mask_d.unsqueeze(1).unsqueeze(1).expand({b, 1, rep, t, total}).reshape({b, 1, rep * t, total});
#else
  mask_d = mask_d.logical_not().view({b, 1, 1, t, total});
#endif
  auto [cos, sin] = RopeTables(positions.to(device_), AttentionDtype());
  at::Tensor h = at::embedding(embed_, ids_d);
  // On the float32 stream the products return float32 and the residual stream stays float32.
  if (float32_stream_) h = h.to(at::kFloat);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& L = layers_[i];
    h = h + Attention(L, RmsNorm(h, L.input_norm), cos, sin, mask_d, cache, int64_t(i));
    at::Tensor x = RmsNorm(h, L.post_norm);
    at::Tensor act;
    if (L.gate_up.defined()) {
      at::Tensor gu = Linear(x, L.gate_up, at::Tensor());
      const int64_t inter = L.gate.size(0);
      if (gu.is_cpu() && gu.scalar_type() == at::kFloat && gu.is_contiguous()) {
        std::vector<int64_t> sizes = gu.sizes().vec();
        sizes.back() = inter;
        act = at::empty(sizes, gu.options());
        cpu::SiluMulRows(gu.data_ptr<float>(), gu.numel() / (2 * inter), inter, act.data_ptr<float>());
      } else {
        act = at::silu(gu.narrow(-1, 0, inter)) * gu.narrow(-1, inter, inter);
      }
    } else {
      act = at::silu(Linear(x, L.gate, at::Tensor())) * Linear(x, L.up, at::Tensor());
    }
    h = h + Linear(act, L.down, at::Tensor());
  }
  cache->length += t;
  stats_->forward_calls++;
  return RmsNorm(h, final_norm_).to(dtype_);
}

at::Tensor LlamaModel::Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const {
#ifdef GAINRAG_WITH_DNNL
  if (int8_) {
    auto it = int8_products_.find(w.data_ptr());
    GR_CHECK(it != int8_products_.end(), kInternal, "int8 mode: a product with no packed weights");
    return it->second->Forward(x.to(at::kFloat));  // (its bias is packed with it)
  }
  // (LinearUnpacked rounds x to W's dtype itself, and leaves it float32 where it widens W.)
  if (dnnl_gemm_ && w.is_contiguous()) return onednn::LinearUnpacked(x, w, b);
#endif
  if (float32_stream_ && !dnnl_gemm_ && w.scalar_type() != at::kFloat) {
    // Widened per call, as LinearUnpacked does where oneDNN has no bf16 kernel: 2 bytes read
    // and 4 written per weight, against a GEMM that reuses each weight for every row.
    return at::linear(x.to(at::kFloat), w.to(at::kFloat), b.defined() ? b.to(at::kFloat) : b);
  }
  return at::linear(x, w, b);
}

void LlamaModel::PackInt8() {
#ifdef GAINRAG_WITH_DNNL
  // Each weight is packed, then replaced by a one-element handle tensor that keys its product:
  // the float32 matrix is dropped (a converted copy freed, a view of the checkpoint unmapped
  // with it), so the model holds int8 weights, not both. The handle is allocated while the
  // weight is alive, so no key is ever an address a later allocation could reuse.
  // With the fused int8 decode step (DecodeLogitsCpu), the quantised rows are kept as well, in
  // their plain layout: q/k/v and gate/up stacked as the float32 step stacks them, each
  // projection's rows a view of its stack. Where oneDNN's int8 products read plain weights as
  // fast as packed ones (Int8PlainWeights), they read those same rows, so the model holds one
  // int8 copy; elsewhere each product also has oneDNN's packed copy.
  const bool keep_rows = DecodeModeFromEnvironment() != "aten" && onednn::SupportsInt8Gemv();
  const bool plain = keep_rows && onednn::Int8PlainWeights();
  auto quantize = [](const at::Tensor& w, const at::Tensor& b) {
    return onednn::QuantizeInt8(w, b.defined() ? b : at::zeros({w.size(0)}, at::kFloat));
  };
  auto attach = [&](at::Tensor& w, const onednn::Int8Matrix& m) {
    auto product = onednn::PackedLinear::PackInt8(m, onednn::Epilogue::kNone, plain);
    at::Tensor handle = at::empty({1}, at::kFloat);
    int8_products_.emplace(handle.data_ptr(), std::move(product));
    w = handle;
  };
  // Outputs [start, start + n) of a stacked matrix, as views.
  auto rows = [](const onednn::Int8Matrix& m, int64_t start, int64_t n) {
    return onednn::Int8Matrix{m.w.narrow(0, start, n), m.scale.narrow(0, start, n), m.colsum.narrow(0, start, n),
                              m.bias.narrow(0, start, n)};
  };
  for (Layer& L : layers_) {
    onednn::Int8Matrix q = quantize(L.q, L.q_bias), k = quantize(L.k, L.k_bias), v = quantize(L.v, L.v_bias);
    onednn::Int8Matrix o = quantize(L.o, L.o_bias);
    onednn::Int8Matrix gate = quantize(L.gate, at::Tensor()), up = quantize(L.up, at::Tensor()),
                       down = quantize(L.down, at::Tensor());
    if (keep_rows) {
      const int64_t nq = q.w.size(0), nk = k.w.size(0), nv = v.w.size(0), ng = gate.w.size(0), nu = up.w.size(0);
      L.qkv8 = onednn::StackInt8({q, k, v});
      q = rows(L.qkv8, 0, nq), k = rows(L.qkv8, nq, nk), v = rows(L.qkv8, nq + nk, nv);
      L.o8 = o;
      L.gate_up8 = onednn::StackInt8({gate, up});
      gate = rows(L.gate_up8, 0, ng), up = rows(L.gate_up8, ng, nu);
      L.down8 = down;
    }
    attach(L.q, q), attach(L.k, k), attach(L.v, v), attach(L.o, o);
    attach(L.gate, gate), attach(L.up, up), attach(L.down, down);
  }
  onednn::Int8Matrix head8;
  if (lm_head_.is_same(embed_)) {
    // Tied: the embedding stays float32 for the lookups; the lm_head is its int8 copy.
    at::Tensor head = embed_;
    head8 = quantize(head, at::Tensor());
    attach(head, head8);
    lm_head_ = head;
  } else {
    head8 = quantize(lm_head_, at::Tensor());
    attach(lm_head_, head8);
  }
  if (keep_rows) lm_head8_ = head8;
  // What stays float32 (embedding, norms, biases) gets its own memory: a view would keep the
  // whole checkpoint buffer (WeightFiles) alive.
  auto own = [](at::Tensor& t) {
    if (t.defined()) t = t.clone();
  };
  own(embed_), own(final_norm_);
  for (Layer& L : layers_) own(L.input_norm), own(L.post_norm), own(L.q_bias), own(L.k_bias), own(L.v_bias), own(L.o_bias);
#endif
}

at::Tensor LlamaModel::Logits(const at::Tensor& hidden) const {
  stats_->lm_head_rows += hidden.size(0);
  // Through Linear: with oneDNN the logits come out float32 instead of being rounded to
  // bfloat16 (at magnitude 4-8 that rounding alone moves a log-prob by up to 0.03).
  return Linear(hidden, lm_head_, at::Tensor()).to(at::kFloat);
}

}  // namespace gainrag
