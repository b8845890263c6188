// Llama-family decoder (RMSNorm, RoPE default/linear/llama3, grouped-query attention, SwiGLU,
// tied or untied lm_head) over memory-mapped Hugging Face weights, with a preallocated KV cache.
//
// The forward pass takes an explicit boolean attention mask per query, so one code path serves
// right-padded prefill, batched decoding with per-row positions, and the "answer tree" used by
// contrastive scoring: the first gold answer rides in the prompt's prefill, the others in one
// query chunk over that prompt's cache, each seeing only the prompt and its own earlier tokens
// (no cache copies). Without scaled_dot_product_attention (LibTorch 1.x) attention runs in blocks
// of rows/queries sized for the CPU cache, skipping keys past the causal bound.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/batching.h"
#include "core/run_context.h"
#include "backends/dnnl/packed_linear.h"  // (declarations only: no oneDNN type)
#include "models/config.h"

namespace gainrag {

class WeightFiles;
namespace onednn {
class PackedLinear;
}

// GAINRAG_LLM_DECODE: "" or "fast" (the fused CPU decode step where it applies) or "aten" (the
// ATen step); anything else is Error(kInvalidArgument).
std::string DecodeModeFromEnvironment();

struct LlamaOptions {
  // kFloat, kBFloat16, kHalf, or kChar: dynamic int8 (CPU with oneDNN; see LlamaModel::precision).
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // rows x longest prompt per batch (prefill); bounds activation memory.
  int64_t token_budget = 8192;
  int64_t max_rows = 64;
};

// Per-layer keys/values [B, kv_heads, capacity, head_dim]; slots [0, length) are filled.
struct KVCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;
  int64_t capacity = 0;
};

// Work counters, cumulative since load (or ResetStats). They make the efficiency claims
// testable: prefills equals the number of prompts whatever the number of answers.
struct LlamaStats {
  int64_t prompt_prefills = 0;   // prompt rows run through a prefill
  int64_t prefill_tokens = 0;    // real (unpadded) prompt tokens prefilled
  int64_t answer_tokens = 0;     // answer tokens run over a prompt cache
  int64_t lm_head_rows = 0;      // hidden rows multiplied by the lm_head
  int64_t forward_calls = 0;     // decoder forwards (batches and decode steps)
  int64_t generated_tokens = 0;  // tokens produced by greedy decoding
  int64_t decode_steps = 0;      // batched one-token decode forwards (continuous batching)
  int64_t stopped_rows = 0;      // generations stopped early by their caller (GenerateHooks::row_stop)
};

// What a caller of GenerateGreedy may watch and steer while it runs (both optional).
struct GenerateHooks {
  // After each prefill batch and each decode step, on the decoding thread: the prompt rows that
  // got a token and those tokens (parallel vectors). Must not block (the Node layer queues them).
  std::function<void(const std::vector<int32_t>& rows, const std::vector<int32_t>& tokens)> on_tokens;
  // Per prompt row, a flag its caller sets to stop that row alone (a client gone, a stop string
  // seen); checked before every step. A stopped row keeps the tokens it has; null entries never stop.
  std::vector<std::shared_ptr<std::atomic<bool>>> row_stop;
};

// Contrastive scoring input. Prompts of item i are rows prompt_begin[i] .. prompt_begin[i+1]-1
// of `prompts`: the first is the standard (no-context) prompt, the rest are context prompts.
// Its answers are rows answer_begin[i] .. answer_begin[i+1]-1 of `answers`.
struct ContrastiveRequest {
  RaggedTokens prompts;
  RaggedTokens answers;
  const int32_t* prompt_begin = nullptr;  // items + 1
  const int32_t* answer_begin = nullptr;  // items + 1
  int64_t items = 0;
  double alpha = 0.5;
  // Reference method (one full forward per prompt per answer, logits at every position,
  // batch size 1): the bench baseline, and a cross-check of the fast path.
  bool reference_method = false;
  // Shared-prefix prefill (llama_prefix.h): rows of a batch that begin with the same tokens
  // (chat header, system prompt, instruction) have that prefix's keys/values computed once.
  bool share_prefix = true;
};

class LlamaModel {
 public:
  // Error(kModelConfig) for a bad config.json, Error(kShape) naming a missing or mis-shaped
  // tensor, Error(kUnsupported) for a dtype/device this LibTorch cannot run.
  static std::shared_ptr<LlamaModel> Load(const std::string& dir, const LlamaOptions& opts);

  const LlamaConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  // What the matrix products run in: dtype(), or kChar in dynamic int8 mode, where every
  // projection and the lm_head are int8 oneDNN products (weights quantised once per output
  // channel, each call's rows per row, int32 accumulation on VNNI / AMX-INT8) and everything
  // else (embedding, norms, RoPE, attention, residual stream, KV cache) is float32.
  at::ScalarType precision() const { return int8_ ? at::kChar : dtype_; }
  // EOS ids: config.json plus generation_config.json.
  const std::vector<int64_t>& eos_ids() const { return eos_ids_; }
  LlamaStats stats() const;
  void ResetStats();

  KVCache NewCache(int64_t batch, int64_t capacity) const;
  // ids/positions int64 [B,T]; mask bool [B,T,cache.length+T] (true = may attend). Causal: query
  // t may attend to keys [0, cache.length + t] only, and to at least one of them. Writes the
  // chunk's keys/values at cache.length and advances it. Returns final-normed hidden [B,T,H].
  at::Tensor Forward(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& mask, KVCache* cache) const;
  // lm_head over hidden rows [N,H] -> float32 logits [N,V].
  at::Tensor Logits(const at::Tensor& hidden) const;
  // One decode step (see DecodeStep) and the lm_head: float32 logits [n, V]. With `fast` and
  // fast_decode(), the fused CPU step of llama_decode_cpu.cpp; else DecodeStep + Logits.
  at::Tensor DecodeLogits(const at::Tensor& ids, const at::Tensor& positions, int64_t width, KVCache* cache,
                          bool fast = true) const;
  // Whether decode steps run the fused CPU step: CPU, float32 or bfloat16, AVX-512, and
  // GAINRAG_LLM_DECODE not "aten" at load.
  bool fast_decode() const { return fast_decode_; }

  // Float32 [count, last_n, V]: logits of the last `last_n` positions of each prompt.
  at::Tensor LastLogits(const RaggedTokens& prompts, int64_t last_n, const RunContext& ctx) const;

  // Float64 PPL_CD, flat in item order, then [answer][context] within an item. With `plain`,
  // also the plain perplexity exp(mean NLL under the context logits alone), same layout, from
  // the same forward passes.
  at::Tensor ContrastivePerplexity(const ContrastiveRequest& req, const RunContext& ctx,
                                   at::Tensor* plain = nullptr) const;

  // Greedy decoding with continuous batching (llama_generate.cpp): a pool of slots, one decode
  // forward per step over the active ones, a finished slot refilled from the queue at once.
  // Returns int32 ids and int32 offsets (count + 1) of the new tokens per prompt, EOS included
  // when produced.
  // share_prefix: the tokens every prompt begins with (a chat header, system prompt, instruction)
  // are run once for the call, and each prefill batch's rows share what more they have in common
  // (llama_prefix.h); the tokens equal an unshared run's up to float rounding of the products.
  std::pair<at::Tensor, at::Tensor> GenerateGreedy(const RaggedTokens& prompts, int64_t max_new_tokens,
                                                   const RunContext& ctx, const GenerateHooks* hooks = nullptr,
                                                   bool share_prefix = false) const;

 private:
  struct Layer {
    at::Tensor input_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias;
    at::Tensor post_norm, gate, up, down;
    // With the fused decode step: q/k/v stacked [qd + 2 kvd, H] and gate/up stacked [2 I, H];
    // q, k, v, gate and up are then row views of these (one copy of the weights).
    at::Tensor qkv, gate_up;
    // int8 mode with the fused decode step: the quantised rows of the same products (q/k/v and
    // gate/up stacked), read by onednn::GemvInt8; undefined otherwise.
    onednn::Int8Matrix qkv8, o8, gate_up8, down8;
  };

  LlamaModel() = default;
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  std::pair<at::Tensor, at::Tensor> RopeTables(const at::Tensor& positions) const { return RopeTables(positions, dtype_); }
  std::pair<at::Tensor, at::Tensor> RopeTables(const at::Tensor& positions, at::ScalarType dtype) const;
  // The dtype of Forward's attention arithmetic: float32 when the products run on oneDNN (they
  // return float32; in bfloat16 mode only the KV cache and the products' inputs are rounded, as
  // llama.cpp rounds its), else the model's.
  at::ScalarType AttentionDtype() const { return float32_stream_ ? at::kFloat : dtype_; }
  // The KV cache's dtype: float16 in bfloat16 mode on oneDNN (3 more mantissa bits at the same
  // size, as llama.cpp's default F16 cache; against a float64 forward the bf16 cache's rounding
  // was a quarter of the log-prob error), else the model's.
  at::ScalarType CacheDtype() const { return float32_stream_ && dtype_ == at::kBFloat16 ? at::kHalf : dtype_; }
  at::Tensor Attention(const Layer& layer, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& mask, KVCache* cache, int64_t index) const;
  // Prefill of the given prompt rows (right padded) into a new cache with `extra_capacity` slots
  // after the longest prompt (cache.length = longest). Returns the final hidden states of the
  // last keep[i] positions of row i, rows after one another: [sum keep, H]. With share_prefix
  // the rows' common leading tokens are run once (llama_prefix.h); the result is the same. With
  // share_prefix, known_prefix (one row, length P) holds the keys/values of the first P tokens,
  // which every row has and may share (P <= length - keep): they are copied, not run again.
  at::Tensor Prefill(const RaggedTokens& prompts, const std::vector<int64_t>& rows, const std::vector<int64_t>& keep,
                     int64_t extra_capacity, KVCache* cache, bool share_prefix = false,
                     const KVCache* known_prefix = nullptr) const;
  // Keys/values [1, kv_heads, P, head_dim] of the first P tokens of prompt row `row` (one forward).
  KVCache PrefixCache(const RaggedTokens& prompts, int64_t row, int64_t length) const;
  // One token per cache row 0..n-1: ids/positions int64 [n] (CPU); row i writes its keys at
  // column positions[i] and attends to columns [0, positions[i]]; width = max position + 1.
  // Returns final-normed hidden [n, H].
  at::Tensor DecodeStep(const at::Tensor& ids, const at::Tensor& positions, int64_t width, KVCache* cache) const;
  // DecodeStep + Logits as one fused CPU pass (llama_decode_cpu.cpp).
  at::Tensor DecodeLogitsCpu(const at::Tensor& ids, const at::Tensor& positions, int64_t width, KVCache* cache) const;
  // Load, before the weights: decides dnnl_gemm_ and float32_stream_ (GAINRAG_GEMM, CPU,
  // float32/bfloat16, whether the build has oneDNN).
  void ChooseGemm();
  // Load: decides fast_decode_ and stacks the layers' weights for it.
  void PrepareFastDecode();
  // x W^T + b for Forward: oneDNN over the weights in place with dnnl_gemm_; without oneDNN on
  // the float32 stream, at::linear over W widened to float32 for the call; else at::linear in
  // the model's dtype. The first two return float32, so the residual stream stays float32 in
  // bfloat16 mode.
  at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const;
  // Rows of `tokens` tokens per prefill forward.
  int64_t PrefillRowsPerPass(int64_t tokens) const;
  void ScoreChunk(const ContrastiveRequest& req, const std::vector<int64_t>& items, double* out, double* plain,
                  const std::vector<int64_t>& out_offset, const RunContext& ctx, int64_t* done) const;
  void ScoreReference(const ContrastiveRequest& req, int64_t item, double* out, double* plain,
                      const RunContext& ctx) const;
  // Answer-position logits for the prompt rows given, float32 [rows x answer tokens, V]: row
  // after row, each row's answers in order.
  at::Tensor AnswerLogits(const ContrastiveRequest& req, const std::vector<int64_t>& rows,
                                       const std::vector<int64_t>& row_item) const;

  LlamaConfig config_;
  std::shared_ptr<WeightFiles> weights_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  int64_t token_budget_ = 8192;
  int64_t max_rows_ = 64;
  int64_t sliding_window_ = 0;
  bool fast_decode_ = false;
  // Dynamic int8 mode: the packed int8 product of each projection (and the lm_head), keyed by
  // its float32 weight's data pointer, with the bias it is called with baked in.
  bool int8_ = false;
  std::unordered_map<const void*, std::shared_ptr<const onednn::PackedLinear>> int8_products_;
  onednn::Int8Matrix lm_head8_;  // the lm_head's rows for the fused int8 decode step
  void PackInt8();
  // Forward's products through oneDNN (CPU, float32/bfloat16, built with oneDNN, GAINRAG_GEMM
  // not "torch").
  bool dnnl_gemm_ = false;
  // Forward keeps the residual stream, attention and norm weights in float32, and the products
  // return float32: with dnnl_gemm_, and in bfloat16 mode on a CPU build without oneDNN (where
  // LibTorch 1.13's scalar bf16 GEMM ran prefill at 7 tokens/s, with 6x the log-prob error).
  bool float32_stream_ = false;
  at::Tensor embed_, final_norm_, lm_head_, inv_freq_;
  std::vector<Layer> layers_;
  std::vector<int64_t> eos_ids_;

  struct AtomicStats {
    std::atomic<int64_t> prompt_prefills{0}, prefill_tokens{0}, answer_tokens{0}, lm_head_rows{0},
        forward_calls{0}, generated_tokens{0}, decode_steps{0}, stopped_rows{0};
  };
  std::unique_ptr<AtomicStats> stats_ = std::make_unique<AtomicStats>();
};

}  // namespace gainrag
