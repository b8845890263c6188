#include "train/selector_trainer.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/error.h"
#include "models/config.h"
#include "io/mapped_file.h"
#include "train/checkpoint.h"

namespace gainrag {
namespace {

constexpr const char* kStateFormat = "gainrag-selector-trainer-1";

// Restores the model's dropout mode on every exit path.
class TrainingMode {
 public:
  TrainingMode(EncoderModel& model, bool training) : model_(model), prev_(model.training()) {
    model_.SetTraining(training);
  }
  ~TrainingMode() { model_.SetTraining(prev_); }

 private:
  EncoderModel& model_;
  bool prev_;
};

std::string FormatDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

int64_t MetaInt(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  auto it = meta.find(key);
  GR_CHECK(it != meta.end(), kData, path, ": trainer state has no '", key, "'");
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    GR_FAIL(kData, path, ": trainer state field '", key, "' is not an integer: ", it->second);
  }
}

}  // namespace

std::shared_ptr<SelectorTrainer> SelectorTrainer::Create(const std::string& model_dir, const TrainerOptions& options) {
  GR_CHECK(options.lr > 0 && std::isfinite(options.lr), kInvalidArgument, "lr must be a positive number, got ", options.lr);
  GR_CHECK(options.weight_decay >= 0, kInvalidArgument, "weight decay must be >= 0, got ", options.weight_decay);
  GR_CHECK(options.max_grad_norm >= 0, kInvalidArgument, "max grad norm must be >= 0 (0 = off), got ", options.max_grad_norm);
  GR_CHECK(options.grad_accum >= 1, kInvalidArgument, "grad accumulation must be >= 1, got ", options.grad_accum);
  GR_CHECK(options.warmup_steps >= 0 && options.total_steps >= 0, kInvalidArgument, "warmup/total steps must be >= 0");
  GR_CHECK(options.compute_dtype == at::kFloat || options.compute_dtype == at::kBFloat16 ||
               options.compute_dtype == at::kHalf,
           kInvalidArgument, "training dtype must be float32, bfloat16 or float16");
  GR_CHECK(options.compute_dtype != at::kHalf || options.device.is_cuda(), kUnsupported,
           "float16 training (with loss scaling) needs a CUDA device; use bfloat16 or float32 on CPU");
  std::shared_ptr<SelectorTrainer> t(new SelectorTrainer());
  t->source_dir_ = model_dir;
  t->options_ = options;
  EncoderOptions eo;  // master weights are fp32 whatever the compute dtype
  eo.device = options.device;
  eo.gemm = GemmPath::kTorch;  // trained through autograd (at::linear), never packed
  t->model_ = EncoderModel::Load(model_dir, eo);
  GR_CHECK(t->model_->has_classifier(), kModelConfig, model_dir,
           " has no sequence-classification head: the selector must be a cross-encoder (reranker)");
  t->model_->MakeTrainable(options.device);
  t->model_->SetGradientCheckpointing(options.gradient_checkpointing);
  for (auto& [name, ptr] : t->model_->NamedParameters()) {
    t->params_.emplace_back(name, *ptr);
    if (options.compute_dtype != at::kFloat) {
      // Mixed precision with fp32 master weights: the model computes with low-precision copies,
      // their gradients are accumulated into the masters in fp32, the masters are updated and
      // copied back after each step.
      *ptr = ptr->detach().to(options.compute_dtype).requires_grad_(true);
      t->compute_slots_.push_back(ptr);
    }
  }
  AdamWOptions ao;
  ao.weight_decay = options.weight_decay;
  t->optimizer_ = std::make_unique<AdamW>(t->params_, ao);
  return t;
}

int64_t SelectorTrainer::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, p] : params_) n += p.numel();
  return n;
}

void SelectorTrainer::ValidateTokens(const RaggedTokens& tokens) const {
  const EncoderConfig& c = model_->config();
  const int64_t limit = model_->max_tokens();
  for (int64_t r = 0; r < tokens.count; ++r) {
    const int64_t len = tokens.length(r);
    GR_CHECK(len > 0 && len <= limit, kShape, "pair row ", r, " has ", len, " tokens; the model takes 1..", limit);
  }
  const int64_t n = tokens.offsets[tokens.count];
  if (n == 0) return;
  const auto [lo, hi] = std::minmax_element(tokens.ids, tokens.ids + n);
  GR_CHECK(*lo >= 0 && *hi < c.vocab_size, kShape, "token id ", (*lo < 0 ? *lo : *hi), " is outside the vocabulary of ",
           c.vocab_size);
  if (tokens.type_ids) {
    const auto [tlo, thi] = std::minmax_element(tokens.type_ids, tokens.type_ids + n);
    GR_CHECK(*tlo >= 0 && *thi < std::max<int64_t>(c.type_vocab_size, 1), kShape, "token type id ",
             (*tlo < 0 ? *tlo : *thi), " is outside the model's ", c.type_vocab_size, " token types");
  }
}

double SelectorTrainer::CurrentLr() const {
  return options_.lr * LrMultiplier(options_.schedule, optimizer_step_, options_.warmup_steps, options_.total_steps);
}

StepResult SelectorTrainer::Step(const RaggedTokens& tokens, const float* teacher, int64_t groups, int64_t group_size,
                                 const RunContext& ctx) {
  std::lock_guard<std::mutex> lock(mu_);
  ctx.ThrowIfCancelled();
  // A linear schedule with no total decays to lr 0 at once: every step would silently do
  // nothing. Callers set the schedule first (setSchedule / totalSteps, or train()).
  GR_CHECK(options_.schedule == LrSchedule::kConstant || options_.total_steps > 0, kInvalidArgument,
           "step() before the learning-rate schedule is known: call setSchedule(warmupSteps, totalSteps) (or pass "
           "totalSteps, or use train()) first; with totalSteps 0 the linear schedule has lr 0");
  GR_CHECK(groups >= 1 && group_size >= 2, kInvalidArgument, "a step needs >= 1 group of >= 2 passages, got ", groups,
           " x ", group_size);
  GR_CHECK(tokens.count == groups * group_size, kShape, "expected ", groups * group_size, " pair rows (", groups, " x ",
           group_size, "), got ", tokens.count);
  ValidateRagged(tokens, tokens.offsets[tokens.count]);
  ValidateTokens(tokens);
  at::Tensor target = at::from_blob(const_cast<float*>(teacher), {groups, group_size}, at::kFloat).clone();
  GR_CHECK(at::isfinite(target).all().item<bool>(), kData, "teacher scores must be finite numbers");

  std::vector<int64_t> rows(size_t(tokens.count));
  std::iota(rows.begin(), rows.end(), 0);
  PaddedBatch b = MakePaddedBatch(tokens, rows, model_->config().pad_token_id);
  const at::Device dev = options_.device;
  // Dropout draws from the global generator: seeding it per micro-step makes a resumed run
  // draw the same masks as an uninterrupted one.
  at::manual_seed(options_.seed * 0x9E3779B97F4A7C15ULL + uint64_t(micro_step_));

  StepResult r;
  at::Tensor loss;
  {
    TrainingMode mode(*model_, true);
    at::Tensor h = model_->Hidden(b.input_ids.to(dev), b.attention_mask.to(dev),
                                  tokens.type_ids ? b.type_ids.to(dev) : at::Tensor());
    at::Tensor student = model_->Classify(h).select(1, 0).to(at::kFloat).view({groups, group_size});
    loss = ListwiseKdLoss(student, target.to(dev));
  }
  // Honour an abort that arrived during the forward pass: nothing has changed yet (no
  // gradients, no step counters), so the trainer is exactly as before this call.
  ctx.ThrowIfCancelled();
  double factor = 1.0 / double(options_.grad_accum);
  if (options_.compute_dtype == at::kHalf) factor *= loss_scale_;
  (factor == 1.0 ? loss : loss * factor).backward();
  AccumulateMasterGrads();
  r.loss = loss.item<double>();
  r.lr = CurrentLr();
  ++micro_step_;
  if (++pending_micro_ >= options_.grad_accum) r = OptimizerStep(r);
  r.optimizer_step = optimizer_step_;
  return r;
}

void SelectorTrainer::AccumulateMasterGrads() {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < compute_slots_.size(); ++i) {
    at::Tensor& low = *compute_slots_[i];
    if (!low.grad().defined()) continue;
    at::Tensor& master = params_[i].second;
    if (master.grad().defined()) {
      master.mutable_grad().add_(low.grad().to(at::kFloat));
    } else {
      master.mutable_grad() = low.grad().to(at::kFloat);
    }
    low.mutable_grad() = at::Tensor();
  }
}

void SelectorTrainer::SyncComputeWeights() {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < compute_slots_.size(); ++i) compute_slots_[i]->copy_(params_[i].second);
}

StepResult SelectorTrainer::OptimizerStep(StepResult r) {
  const bool fp16 = options_.compute_dtype == at::kHalf;
  pending_micro_ = 0;
  if (fp16) ScaleGrads(params_, 1.0 / loss_scale_);
  const double norm = GlobalGradNorm(params_);
  r.grad_norm = norm;
  if (!std::isfinite(norm)) {
    optimizer_->ZeroGrad();
    // fp16 overflow is expected now and then: skip the update and halve the scale (as
    // torch.cuda.amp.GradScaler). In fp32/bf16 it means the run diverged.
    GR_CHECK(fp16, kData, "gradients are not finite at optimizer step ", optimizer_step_,
             " (training diverged; lower the learning rate)");
    loss_scale_ = std::max(1.0, loss_scale_ / 2);
    good_steps_ = 0;
    r.skipped = true;
    return r;
  }
  if (options_.max_grad_norm > 0) {
    const double coef = options_.max_grad_norm / (norm + 1e-6);
    if (coef < 1.0) ScaleGrads(params_, coef);
  }
  optimizer_->Step(CurrentLr());
  optimizer_->ZeroGrad();
  SyncComputeWeights();
  ++optimizer_step_;
  r.updated = true;
  if (fp16 && ++good_steps_ >= 2000) {
    loss_scale_ *= 2;
    good_steps_ = 0;
  }
  return r;
}

at::Tensor SelectorTrainer::Score(const RaggedTokens& tokens, const RunContext& ctx) {
  std::lock_guard<std::mutex> lock(mu_);
  TrainingMode mode(*model_, false);
  EncodeRequest req;
  return ScoreBatched(*model_, tokens, req, ctx).select(1, 0).contiguous();
}

void SelectorTrainer::Save(const std::string& dir, bool with_state, const std::map<std::string, std::string>& extra_files,
                           bool replace) {
  std::lock_guard<std::mutex> lock(mu_);
  GR_CHECK(!with_state || pending_micro_ == 0, kInvalidArgument,
           "trainer state can only be saved at an optimizer-step boundary (", pending_micro_,
           " accumulated micro-batches pending)");
  for (const auto& [name, text] : extra_files) {
    GR_CHECK(!name.empty() && name.find('/') == std::string::npos && name[0] != '.', kInvalidArgument,
             "extra checkpoint file name must be a plain file name, got '", name, "'");
  }
  PublishDirectory(dir, replace, [&](const std::string& tmp) {
    std::map<std::string, at::Tensor> weights;
    for (const auto& [name, p] : params_) weights[name] = p;
    SaveTensorMap(tmp + "/model.safetensors", weights, {{"format", "pt"}});
    for (const auto& f : TokenizerFileNames()) {
      if (FileExists(source_dir_ + "/" + f)) CopyFile(source_dir_ + "/" + f, tmp + "/" + f);
    }
    if (with_state) {
      std::map<std::string, std::string> meta = {
          {"format", kStateFormat},
          {"optimizer_step", std::to_string(optimizer_step_)},
          {"micro_step", std::to_string(micro_step_)},
          {"loss_scale", FormatDouble(loss_scale_)},
          {"good_steps", std::to_string(good_steps_)},
      };
      SaveTensorMap(tmp + "/optimizer.safetensors", optimizer_->StateTensors(), meta);
    }
    for (const auto& [name, text] : extra_files) WriteFileAtomically(tmp + "/" + name, text.data(), text.size());
    // config.json last: within the temporary directory order does not matter, but a merge
    // into an existing directory moves it last too.
    CopyFile(source_dir_ + "/config.json", tmp + "/config.json");
  });
}

void SelectorTrainer::SetSchedule(int64_t warmup_steps, int64_t total_steps) {
  GR_CHECK(warmup_steps >= 0 && total_steps >= 0, kInvalidArgument, "warmup/total steps must be >= 0");
  std::lock_guard<std::mutex> lock(mu_);
  options_.warmup_steps = warmup_steps;
  options_.total_steps = total_steps;
}

void SelectorTrainer::LoadState(const std::string& dir) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string opt_path = dir + "/optimizer.safetensors";
  GR_CHECK(FileExists(opt_path), kIo, dir, " has no optimizer.safetensors: not a resumable checkpoint");
  std::map<std::string, std::string> meta;
  auto state = LoadTensorMap(opt_path, &meta);
  auto fmt = meta.find("format");
  GR_CHECK(fmt != meta.end() && fmt->second == kStateFormat, kData, opt_path, " is not a gainrag trainer state");
  auto weights = LoadTensorMap(dir + "/model.safetensors");
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : params_) {
      auto it = weights.find(name);
      GR_CHECK(it != weights.end(), kShape, dir, "/model.safetensors has no tensor ", name);
      GR_CHECK(it->second.sizes() == p.sizes(), kShape, dir, "/model.safetensors: ", name, " has shape ",
               it->second.sizes(), ", the model needs ", p.sizes());
      p.copy_(it->second);
    }
  }
  optimizer_->LoadStateTensors(state);
  SyncComputeWeights();
  optimizer_step_ = MetaInt(meta, "optimizer_step", opt_path);
  micro_step_ = MetaInt(meta, "micro_step", opt_path);
  good_steps_ = MetaInt(meta, "good_steps", opt_path);
  auto ls = meta.find("loss_scale");
  loss_scale_ = ls != meta.end() ? std::atof(ls->second.c_str()) : 65536.0;
  pending_micro_ = 0;
  optimizer_->ZeroGrad();
}

}  // namespace gainrag
