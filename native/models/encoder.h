// BERT and (XLM-)RoBERTa encoders and their sequence-classification heads, written as plain
// ATen ops so the same forward serves memory-mapped inference and autograd training.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/batching.h"
#include "core/run_context.h"
#include "models/config.h"

namespace gainrag {

class WeightFiles;
namespace onednn {
class PackedLinear;
}

enum class Pooling { kMean, kCls };

// Parses "mean" | "cls"; throws Error(kInvalidArgument).
Pooling ParsePooling(const std::string& name);

// Who computes the Linear layers (QKV, attention output, FFN up/down) on CPU.
enum class GemmPath {
  kDefault,  // GAINRAG_GEMM ("torch" | "dnnl") when set, else kDnnl when compiled in; kTorch
             // wherever the oneDNN path cannot serve the load (CUDA, float16)
  kTorch,    // at::linear (LibTorch's BLAS)
  kDnnl,     // oneDNN matmul on weights packed at load (native/backends/dnnl); CPU only
};

// Parses "torch" | "dnnl" (empty = kDefault); throws Error(kInvalidArgument).
GemmPath ParseGemmPath(const std::string& name);
// GAINRAG_GEMM parsed (kDefault when unset or empty); Error(kInvalidArgument) naming the
// variable otherwise. Encoders and the Llama decoder read it through this.
GemmPath GemmPathFromEnvironment();
// Whether this build has the oneDNN backend (CMake option GAINRAG_WITH_DNNL).
bool DnnlCompiledIn();

struct EncoderOptions {
  // kFloat, kHalf, kBFloat16, or kChar: dynamic int8 (oneDNN path only; see PackedLinear).
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // kDnnl with dtype bfloat16 (or int8) keeps activations, LayerNorm and the residual stream in
  // float32 and runs the Linear products on bf16 (int8) inputs and weights with fp32 (int32)
  // accumulation.
  GemmPath gemm = GemmPath::kDefault;
  // dtype float32 only, oneDNN path only (Error(kUnsupported) elsewhere): each Linear product
  // as bf16x3 (PyTorch's float32 matmul precision "high"; see onednn::PackedLinear::Pack) on
  // the bf16 units, everything else unchanged.
  bool bf16x3 = false;
};

class EncoderModel {
 public:
  // Throws Error(kModelConfig) for a bad config.json, Error(kShape) naming a missing or
  // mis-shaped tensor, Error(kUnsupported) for a dtype the device cannot run.
  static std::shared_ptr<EncoderModel> Load(const std::string& dir, const EncoderOptions& opts);

  const EncoderConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  // The precision asked for at load (with the oneDNN path, that of the matrix products).
  at::ScalarType dtype() const { return precision_; }
  // "torch" or "dnnl": who runs the Linear layers in inference.
  const char* gemm() const { return packed_ ? "dnnl" : "torch"; }
  // PyTorch's names: "highest" (float32 products) or "high" (bf16x3); "" for other dtypes.
  const char* matmul_precision() const { return precision_ != at::kFloat ? "" : bf16x3_ ? "high" : "highest"; }
  bool packed() const { return packed_; }
  const std::string& dir() const { return dir_; }
  // Longest input (tokens) the position table allows.
  int64_t max_tokens() const { return config_.max_tokens(); }

  // Last hidden states [B,T,H]; inputs int64 [B,T] (type_ids may be undefined -> zeros).
  // Inputs may live on any device; they are moved to the model's. Works under autograd.
  // first_token_only: [B, 1, H], the first position's states only (all CLS pooling and the
  // classification heads read); on the oneDNN inference path the last layer then computes
  // that position alone.
  at::Tensor Hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const at::Tensor& type_ids, bool first_token_only = false) const;
  // [B,H] float32 (mean pooling accumulates in float32 whatever the model dtype).
  at::Tensor Pool(const at::Tensor& hidden, const at::Tensor& attention_mask, Pooling pooling) const;
  bool has_classifier() const { return head_ != Head::kNone; }
  // [B, num_labels] logits; throws Error(kUnsupported) when the checkpoint has no head.
  at::Tensor Classify(const at::Tensor& hidden) const;

  // Every weight under its Hugging Face checkpoint name (exactly the names in the checkpoint,
  // e.g. "roberta.encoder.layer.0.attention.self.query.weight", "classifier.out_proj.bias").
  std::vector<std::pair<std::string, at::Tensor*>> NamedParameters();
  // Replace the mapped weights by owned fp32 copies on `device` with requires_grad(true).
  void MakeTrainable(at::Device device);
  // Dropout (HF hidden_dropout_prob / attention_probs_dropout_prob) applies only when training.
  void SetTraining(bool training) { training_ = training; }
  bool training() const { return training_; }
  // Training memory for compute: while grad mode is on, each layer keeps only its input and is
  // recomputed in the backward pass (HF gradient_checkpointing). Inference is unaffected.
  void SetGradientCheckpointing(bool on) { checkpointing_ = on; }
  bool gradient_checkpointing() const { return checkpointing_; }

 private:
  enum class Head { kNone, kRobertaClassification, kBertPooler };
  struct Linear {
    at::Tensor weight, bias;
    // Inference with the oneDNN path: the same layer packed at load (bias, and for the FFN up
    // projection the activation, applied inside the product).
    std::shared_ptr<const onednn::PackedLinear> packed;
  };
  struct Norm {
    at::Tensor weight, bias;
  };
  struct Layer {
    Linear query, key, value, attn_out, intermediate, output;
    Norm attn_norm, out_norm;
    // Inference only: query/key/value stacked into one [3H, H] product (query/key/value are
    // then views into it). Undefined once the model is trainable.
    Linear qkv;
  };

  EncoderModel() = default;
  at::Tensor Dropout(const at::Tensor& x, double p) const;
  // key_lengths (inference on the oneDNN path only): each row's real tokens, right padding; then
  // attention runs per row over those keys and `bias` is not read.
  at::Tensor SelfAttention(const Layer& layer, const at::Tensor& x, const at::Tensor& bias, bool training,
                           const std::vector<int64_t>* key_lengths) const;
  at::Tensor LayerForward(const Layer& layer, const at::Tensor& x, const at::Tensor& bias, bool training,
                          const std::vector<int64_t>* key_lengths = nullptr) const;
  // The last layer for the first token of each row only (ragged oneDNN inference): [B, H].
  at::Tensor FirstTokenLayerForward(const Layer& layer, const at::Tensor& x,
                                    const std::vector<int64_t>& key_lengths) const;
  // LayerNorm(sum + residual); `sum` is overwritten (it is a product's fresh output).
  at::Tensor AddLayerNorm(at::Tensor& sum, const at::Tensor& residual, const Norm& norm, double eps,
                          bool training) const;
  at::Tensor Activation(const at::Tensor& x) const;
  // l(x): the packed product when there is one and no autograd graph is wanted, else at::linear.
  at::Tensor Apply(const Linear& l, const at::Tensor& x) const;
  // Activation(l(x)), fused into the product on the packed path.
  at::Tensor ApplyActivated(const Linear& l, const at::Tensor& x) const;
  // Packs the Linear layers for oneDNN at `precision`; defined in encoder_dnnl.cpp.
  void PackForDnnl(at::ScalarType precision, bool bf16x3);

  std::string dir_;
  EncoderConfig config_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;      // storage and activation dtype
  at::ScalarType precision_ = at::kFloat;  // reported dtype (see dtype())
  bool packed_ = false;                    // layers carry oneDNN packings
  bool bf16x3_ = false;                    // ... as bf16x3 products
  bool training_ = false;
  bool checkpointing_ = false;
  double hidden_dropout_ = 0.1;
  double attention_dropout_ = 0.1;
  double classifier_dropout_ = 0.1;

  at::Tensor word_emb_, pos_emb_, type_emb_;
  Norm emb_norm_;
  std::vector<Layer> layers_;
  Head head_ = Head::kNone;
  Linear head_dense_, head_out_;  // RoBERTa: dense + out_proj; BERT: pooler + classifier
  // Checkpoint name of every tensor above, in load order.
  std::vector<std::pair<std::string, at::Tensor*>> named_;
};

// fn(x) without keeping fn's activations: the backward replays fn on the saved input, with the
// forward's random-generator state (dropout masks repeat), and differentiates that. `params`
// must hold every tensor requiring grad that fn reads besides x; their gradients flow through
// this call. Defined in encoder_checkpoint.cpp.
at::Tensor CheckpointedCall(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x,
                            const std::vector<at::Tensor>& params);

// What a batched run produces: one row per input row, in input order.
struct EncodeRequest {
  Pooling pooling = Pooling::kMean;
  bool normalize = false;       // L2-normalise embeddings
  // rows x longest row per batch; 0 = by device: small on CPU (activations stay in cache and
  // matrix products are already at BLAS speed), large on CUDA (occupancy).
  int64_t batch_tokens = 0;
  int64_t max_rows = 256;
};

// Embeddings [n, H] float32 on CPU. Rows longer than the model allows are Error(kShape)
// (the tokenizer truncates; the engine refuses rather than silently clipping).
at::Tensor EncodeBatched(const EncoderModel& model, const RaggedTokens& tokens, const EncodeRequest& req,
                         const RunContext& ctx);
// Classifier logits [n, num_labels] float32 on CPU.
at::Tensor ScoreBatched(const EncoderModel& model, const RaggedTokens& tokens, const EncodeRequest& req,
                        const RunContext& ctx);

}  // namespace gainrag
