#include "train/optim.h"

#include <ATen/core/grad_mode.h>

#include <cmath>

#include "core/error.h"

namespace gainrag {

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  at::NoGradGuard no_grad;
  slots_.reserve(params_.size());
  for (const auto& [name, p] : params_) {
    GR_CHECK(p.defined() && p.is_floating_point(), kInvalidArgument, "parameter ", name, " is not a floating-point tensor");
    Slot s;
    // Moments stay fp32 whatever the compute dtype: they are part of the master state.
    s.exp_avg = at::zeros(p.sizes(), p.options().dtype(at::kFloat));
    s.exp_avg_sq = at::zeros(p.sizes(), p.options().dtype(at::kFloat));
    s.weight_decay = ExcludedFromDecay(name) ? 0.0 : options_.weight_decay;
    slots_.push_back(std::move(s));
  }
}

bool AdamW::ExcludedFromDecay(const std::string& name) {
  const std::string bias = "bias";
  bool ends_bias = name.size() >= bias.size() && name.compare(name.size() - bias.size(), bias.size(), bias) == 0;
  return ends_bias || name.find("LayerNorm") != std::string::npos;
}

void AdamW::Step(double lr) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].second;
    const at::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    Slot& s = slots_[i];
    s.step += 1;
    // Same operation order as torch.optim.AdamW's single-tensor path, so fp32 results agree
    // to rounding with the reference.
    if (s.weight_decay != 0) p.mul_(1.0 - lr * s.weight_decay);
    s.exp_avg.lerp_(grad, 1.0 - options_.beta1);
    s.exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    double bias_correction1 = 1.0 - std::pow(options_.beta1, double(s.step));
    double bias_correction2 = 1.0 - std::pow(options_.beta2, double(s.step));
    double step_size = lr / bias_correction1;
    at::Tensor denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options_.eps);
    p.addcdiv_(s.exp_avg, denom, -step_size);
  }
}

void AdamW::ZeroGrad() {
  // set_to_none, as torch.optim's default: the next backward allocates fresh gradients.
  for (auto& [name, p] : params_) p.mutable_grad() = at::Tensor();
}

std::map<std::string, at::Tensor> AdamW::StateTensors() const {
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].first;
    out["exp_avg." + name] = slots_[i].exp_avg;
    out["exp_avg_sq." + name] = slots_[i].exp_avg_sq;
    out["step." + name] = at::full({1}, slots_[i].step, at::TensorOptions().dtype(at::kLong));
  }
  return out;
}

void AdamW::LoadStateTensors(const std::map<std::string, at::Tensor>& state) {
  at::NoGradGuard no_grad;
  auto get = [&](const std::string& key, at::IntArrayRef shape) -> const at::Tensor& {
    auto it = state.find(key);
    GR_CHECK(it != state.end(), kShape, "optimizer state has no tensor ", key);
    GR_CHECK(it->second.sizes() == shape, kShape, "optimizer state tensor ", key, " has shape ", it->second.sizes(),
             ", the model needs ", shape);
    return it->second;
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].first;
    Slot& s = slots_[i];
    s.exp_avg.copy_(get("exp_avg." + name, s.exp_avg.sizes()));
    s.exp_avg_sq.copy_(get("exp_avg_sq." + name, s.exp_avg_sq.sizes()));
    std::vector<int64_t> one{1};
    s.step = get("step." + name, one).to(at::kLong).item<int64_t>();
  }
}

double LrMultiplier(LrSchedule schedule, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return double(step) / double(std::max<int64_t>(1, warmup));
  if (schedule == LrSchedule::kConstant) return 1.0;
  return std::max(0.0, double(total - step) / double(std::max<int64_t>(1, total - warmup)));
}

double GlobalGradNorm(const std::vector<std::pair<std::string, at::Tensor>>& params) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) norms.push_back(p.grad().to(at::kFloat).norm().reshape({1}));
  }
  if (norms.empty()) return 0.0;
  return at::cat(norms).norm().item<double>();
}

void ScaleGrads(const std::vector<std::pair<std::string, at::Tensor>>& params, double factor) {
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) p.mutable_grad().mul_(factor);
  }
}

at::Tensor ListwiseKdLoss(const at::Tensor& student, const at::Tensor& teacher) {
  GR_CHECK(student.dim() == 2 && student.sizes() == teacher.sizes(), kShape, "student scores ", student.sizes(),
           " and teacher scores ", teacher.sizes(), " must both be [groups, group_size]");
  at::Tensor log_q = at::log_softmax(student.to(at::kFloat), 1);
  at::Tensor p = at::softmax(teacher.to(at::kFloat), 1);
  return at::kl_div(log_q, p, at::Reduction::Sum) / double(student.size(0));
}

}  // namespace gainrag
