// SelectorTrainer: listwise knowledge distillation of a cross-encoder (the GainRAG selector)
// from teacher gains. Each step takes `groups` groups of `group_size` (query, passage) pairs,
// scores them with the classifier head, and minimises KL(softmax(teacher) || softmax(student))
// per group (batchmean), with gradient accumulation, clipping, AdamW and a linear warmup/decay
// schedule. Weights and optimizer state are fp32; with bf16 (CPU/CUDA) or fp16 (CUDA, dynamic
// loss scaling) the model runs on low-precision copies of the fp32 master weights (whose
// gradients are accumulated into the masters in fp32), which works for every op the encoder
// uses, where LibTorch 1.13's CPU autocast does not cover layer_norm.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/batching.h"
#include "core/run_context.h"
#include "models/encoder.h"
#include "train/optim.h"

namespace gainrag {

struct TrainerOptions {
  double lr = 6e-5;
  double weight_decay = 0.01;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // optimizer steps of the whole run (for the decay)
  LrSchedule schedule = LrSchedule::kLinear;
  double max_grad_norm = 1.0;  // 0 = no clipping
  int64_t grad_accum = 1;
  at::ScalarType compute_dtype = at::kFloat;  // kFloat | kBFloat16 | kHalf (CUDA only)
  at::Device device = at::kCPU;
  bool gradient_checkpointing = false;
  uint64_t seed = 42;  // dropout randomness is a function of (seed, micro step)
};

struct StepResult {
  double loss = 0;        // this micro-batch's KD loss (unscaled)
  double lr = 0;          // learning rate of the optimizer step this micro-batch belongs to
  double grad_norm = -1;  // total gradient norm before clipping; -1 when no update happened
  bool updated = false;   // an optimizer step was taken
  bool skipped = false;   // fp16: gradients overflowed, the update was skipped
  int64_t optimizer_step = 0;  // optimizer steps done after this call
};

class SelectorTrainer {
 public:
  static std::shared_ptr<SelectorTrainer> Create(const std::string& model_dir, const TrainerOptions& options);

  // tokens: groups * group_size pair rows (group-major); teacher: [groups * group_size] floats.
  StepResult Step(const RaggedTokens& tokens, const float* teacher, int64_t groups, int64_t group_size,
                  const RunContext& ctx);
  // Classifier logits (first label) of the current weights, dropout off: [rows] float32.
  at::Tensor Score(const RaggedTokens& tokens, const RunContext& ctx);

  // Writes a Hugging Face checkpoint to `dir` (atomically). With `with_state`, also the
  // optimizer moments and counters; `extra_files` (name -> text) are written beside them.
  // `replace` = false merges into an existing directory (the final model in the output dir).
  void Save(const std::string& dir, bool with_state, const std::map<std::string, std::string>& extra_files,
            bool replace);
  // Restores weights, optimizer moments and counters from a checkpoint written with state.
  void LoadState(const std::string& dir);
  // Sets the schedule's warmup and total optimizer steps (known once the data is).
  void SetSchedule(int64_t warmup_steps, int64_t total_steps);

  int64_t optimizer_step() const { return optimizer_step_; }
  int64_t micro_step() const { return micro_step_; }
  double loss_scale() const { return loss_scale_; }
  const EncoderModel& model() const { return *model_; }
  const TrainerOptions& options() const { return options_; }
  int64_t num_parameters() const;

 private:
  SelectorTrainer() = default;
  void ValidateTokens(const RaggedTokens& tokens) const;
  double CurrentLr() const;
  StepResult OptimizerStep(StepResult r);
  void AccumulateMasterGrads();
  void SyncComputeWeights();

  std::mutex mu_;  // one step / save at a time (JS may call without awaiting)
  std::string source_dir_;
  TrainerOptions options_;
  std::shared_ptr<EncoderModel> model_;
  std::vector<std::pair<std::string, at::Tensor>> params_;  // fp32 master weights (HF names)
  std::vector<at::Tensor*> compute_slots_;  // the model's low-precision copies (mixed precision only)
  std::unique_ptr<AdamW> optimizer_;
  int64_t optimizer_step_ = 0;
  int64_t micro_step_ = 0;
  int64_t pending_micro_ = 0;  // micro-batches accumulated since the last update
  double loss_scale_ = 65536.0;
  int64_t good_steps_ = 0;     // fp16: updates since the last overflow (scale growth)
};

}  // namespace gainrag
