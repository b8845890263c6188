// Optimisation pieces of the selector trainer, written against ATen so that they follow
// PyTorch's reference semantics exactly (the KD parity fixture was produced by torch.optim.AdamW
// and HF's get_linear_schedule_with_warmup):
//  - AdamW with decoupled weight decay and per-parameter bias-corrected moments;
//  - the linear warmup / linear decay learning-rate schedule;
//  - global gradient-norm computation and clipping (torch.nn.utils.clip_grad_norm_).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace gainrag {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

class AdamW {
 public:
  // `params` are leaf tensors (requires_grad) with their Hugging Face names; the handles share
  // storage with the model's parameters.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options);

  // HF Trainer convention: biases and LayerNorm weights are not decayed.
  static bool ExcludedFromDecay(const std::string& name);

  // One update with learning rate `lr`. Parameters without a gradient are skipped (and their
  // step counter does not advance), as torch.optim does.
  void Step(double lr);
  void ZeroGrad();

  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }

  // Moments and step counters, keyed "exp_avg.NAME", "exp_avg_sq.NAME", "step.NAME".
  std::map<std::string, at::Tensor> StateTensors() const;
  // Restores what StateTensors() produced; throws Error(kShape) on a name or shape mismatch.
  void LoadStateTensors(const std::map<std::string, at::Tensor>& state);

 private:
  struct Slot {
    at::Tensor exp_avg;
    at::Tensor exp_avg_sq;
    int64_t step = 0;
    double weight_decay = 0;
  };
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<Slot> slots_;
  AdamWOptions options_;
};

// Learning-rate multiplier for optimizer step `step` (0-based): `linear` warms up over
// `warmup` steps then decays linearly to 0 at `total`; `constant` warms up then stays at 1.
enum class LrSchedule { kLinear, kConstant };
double LrMultiplier(LrSchedule schedule, int64_t step, int64_t warmup, int64_t total);

// L2 norm over all gradients (parameters without one are ignored), as a double.
double GlobalGradNorm(const std::vector<std::pair<std::string, at::Tensor>>& params);
// Scales every gradient by `factor` in place.
void ScaleGrads(const std::vector<std::pair<std::string, at::Tensor>>& params, double factor);

// Listwise distillation loss of the selector: KL(softmax(teacher) || softmax(student)) per
// group, summed and divided by the number of groups (kl_div reduction="batchmean").
// student, teacher: [groups, group_size] float tensors.
at::Tensor ListwiseKdLoss(const at::Tensor& student, const at::Tensor& teacher);

}  // namespace gainrag
