// JS class SelectorTrainer over the native trainer. Created by createSelectorTrainer(dir, opts)
// (async: loading and copying the weights takes a while). Token batches come in as borrowed
// Int32Arrays (ids + offsets [+ typeIds]) and teacher scores as a Float32Array, both copied on
// the JS thread (marshal.h); every step, save and load runs off the JS thread. Steps run in
// call order (a FifoGate ticket taken at call time): the native mutex alone would let two
// unawaited steps run in either order. dispose() drops this object's reference (running
// tasks keep their own); later calls fail with E_DISPOSED.
#include <cmath>

#include "bindings/addon_data.h"
#include "bindings/async_task.h"
#include "bindings/marshal.h"
#include "core/tensor_util.h"
#include "train/selector_trainer.h"

namespace gainrag::node {
namespace {

using TrainerPtr = std::shared_ptr<SelectorTrainer>;


double NumberOption(const Napi::Object& o, const char* key, double fallback, double min, double max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a number");
  double x = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || x < min || x > max)
    throw Napi::RangeError::New(o.Env(), std::string(key) + " must be in [" + std::to_string(min) + ", " +
                                             std::to_string(max) + "], got " + std::to_string(x));
  return x;
}

int64_t IntOption(const Napi::Object& o, const char* key, int64_t fallback, int64_t min, int64_t max) {
  Napi::Value v = o.Get(key);
  return v.IsUndefined() ? fallback : RequireInt(v, key, min, max);
}

bool BoolOption(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

TrainerOptions ReadTrainerOptions(const Napi::Value& value, Napi::Env env) {
  TrainerOptions t;
  if (value.IsUndefined() || value.IsNull()) return t;
  if (!value.IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = value.As<Napi::Object>();
  t.lr = NumberOption(o, "lr", t.lr, 1e-12, 10);
  t.weight_decay = NumberOption(o, "weightDecay", t.weight_decay, 0, 10);
  t.max_grad_norm = NumberOption(o, "maxGradNorm", t.max_grad_norm, 0, 1e12);
  t.warmup_steps = IntOption(o, "warmupSteps", 0, 0, int64_t(1) << 40);
  t.total_steps = IntOption(o, "totalSteps", 0, 0, int64_t(1) << 40);
  t.grad_accum = IntOption(o, "gradAccum", 1, 1, 1 << 20);
  t.seed = uint64_t(IntOption(o, "seed", 42, 0, (int64_t(1) << 53)));
  t.gradient_checkpointing = BoolOption(o, "gradientCheckpointing", false);
  std::string schedule = OptionalString(o, "schedule", "linear");
  if (schedule == "linear") {
    t.schedule = LrSchedule::kLinear;
  } else if (schedule == "constant") {
    t.schedule = LrSchedule::kConstant;
  } else {
    throw Napi::RangeError::New(env, "schedule must be 'linear' or 'constant', got '" + schedule + "'");
  }
  std::string device = OptionalString(o, "device", "cpu");
  std::string dtype = OptionalString(o, "dtype", "float32");
  Guard(env, [&] {
    t.device = ParseDevice(device);
    t.compute_dtype = ParseFloatType(dtype);
  });
  return t;
}

class SelectorTrainerWrap : public Napi::ObjectWrap<SelectorTrainerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SelectorTrainer",
                       {InstanceMethod<&SelectorTrainerWrap::Step>("step"),
                        InstanceMethod<&SelectorTrainerWrap::Score>("score"),
                        InstanceMethod<&SelectorTrainerWrap::Save>("save"),
                        InstanceMethod<&SelectorTrainerWrap::LoadState>("loadState"),
                        InstanceMethod<&SelectorTrainerWrap::SetSchedule>("setSchedule"),
                        InstanceMethod<&SelectorTrainerWrap::Info>("info"),
                        InstanceMethod<&SelectorTrainerWrap::Dispose>("dispose")});
  }

  explicit SelectorTrainerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SelectorTrainerWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "SelectorTrainer is created by createSelectorTrainer(dir, options)");
    trainer_ = *info[0].As<Napi::External<TrainerPtr>>().Data();
  }

 private:
  // step(ids, offsets, typeIds?, teacher: Float32Array, groups, groupSize, controls?)
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TrainerPtr trainer = Live(env);
    BorrowedTokens tokens = ReadBorrowedTokens(info);
    int64_t groups = RequireInt(info[4], "groups", 1, int64_t(1) << 31);
    int64_t group_size = RequireInt(info[5], "groupSize", 2, int64_t(1) << 31);
    at::Tensor teacher = CopyTypedArray(info[3], at::kFloat, {groups * group_size}, "teacher");
    if (tokens.offsets.numel() - 1 != groups * group_size)
      throw Napi::RangeError::New(env, "token rows (" + std::to_string(tokens.offsets.numel() - 1) +
                                           ") must equal groups x groupSize (" + std::to_string(groups * group_size) + ")");
    TaskControls controls = ReadControls(info[6]);
    auto result = std::make_shared<StepResult>();
    auto turn = FifoGate::Take(step_order_);
    return StartTask(
        env, "gainrag.SelectorTrainer.step",
        [trainer, tokens, teacher, groups, group_size, result, turn](const RunContext& ctx) {
          FifoGate::Turn my_turn(*turn, ctx);
          *result = trainer->Step(tokens.ragged(), teacher.data_ptr<float>(), groups, group_size, ctx);
        },
        [result](Napi::Env env) -> Napi::Value {
          Napi::Object r = Napi::Object::New(env);
          r.Set("loss", result->loss);
          r.Set("lr", result->lr);
          r.Set("gradNorm", result->grad_norm < 0 ? env.Null() : Napi::Number::New(env, result->grad_norm));
          r.Set("updated", result->updated);
          r.Set("skipped", result->skipped);
          r.Set("optimizerStep", double(result->optimizer_step));
          return r;
        },
        controls, tokens.keep);
  }

  // score(ids, offsets, typeIds?, controls?) -> Promise<Float32Array>
  Napi::Value Score(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TrainerPtr trainer = Live(env);
    BorrowedTokens tokens = ReadBorrowedTokens(info);
    TaskControls controls = ReadControls(info[3]);
    auto out = std::make_shared<at::Tensor>();
    return StartTask(
        env, "gainrag.SelectorTrainer.score",
        [trainer, tokens, out](const RunContext& ctx) {
          RaggedTokens ragged = tokens.ragged();
          ValidateRagged(ragged, tokens.ids.numel());
          *out = trainer->Score(ragged, ctx);
        },
        [out](Napi::Env env) -> Napi::Value { return TensorToTypedArray(env, *out); }, controls, tokens.keep);
  }

  // save(dir, {withState?, replace?, files?: {name: text}}) -> Promise<void>
  Napi::Value Save(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string dir = RequireString(info[0], "dir");
    bool with_state = false, replace = true;
    std::map<std::string, std::string> files;
    if (info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      with_state = BoolOption(o, "withState", false);
      replace = BoolOption(o, "replace", true);
      Napi::Value f = o.Get("files");
      if (!f.IsUndefined()) {
        if (!f.IsObject()) throw Napi::TypeError::New(env, "files must be an object of name -> text");
        Napi::Object fo = f.As<Napi::Object>();
        Napi::Array names = fo.GetPropertyNames();
        for (uint32_t i = 0; i < names.Length(); ++i) {
          std::string name = names.Get(i).As<Napi::String>().Utf8Value();
          files[name] = RequireString(fo.Get(name), "files entry");
        }
      }
    } else if (!info[1].IsUndefined()) {
      throw Napi::TypeError::New(env, "options must be an object");
    }
    TrainerPtr trainer = Live(env);
    return StartTask(
        env, "gainrag.SelectorTrainer.save",
        [trainer, dir, with_state, files, replace](const RunContext&) { trainer->Save(dir, with_state, files, replace); },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  }

  Napi::Value LoadState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string dir = RequireString(info[0], "dir");
    TrainerPtr trainer = Live(env);
    return StartTask(
        env, "gainrag.SelectorTrainer.loadState", [trainer, dir](const RunContext&) { trainer->LoadState(dir); },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  }

  // setSchedule(warmupSteps, totalSteps): cheap, synchronous.
  Napi::Value SetSchedule(const Napi::CallbackInfo& info) {
    int64_t warmup = RequireInt(info[0], "warmupSteps", 0, int64_t(1) << 40);
    int64_t total = RequireInt(info[1], "totalSteps", 0, int64_t(1) << 40);
    TrainerPtr trainer = Live(info.Env());
    Guard(info.Env(), [&] { trainer->SetSchedule(warmup, total); });
    return info.Env().Undefined();
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Live(env);
    Napi::Object r = Napi::Object::New(env);
    const EncoderConfig& c = trainer_->model().config();
    r.Set("modelType", c.model_type);
    r.Set("hiddenSize", double(c.hidden_size));
    r.Set("numLayers", double(c.num_layers));
    r.Set("maxTokens", double(trainer_->model().max_tokens()));
    r.Set("parameters", double(trainer_->num_parameters()));
    r.Set("optimizerStep", double(trainer_->optimizer_step()));
    r.Set("microStep", double(trainer_->micro_step()));
    r.Set("lossScale", trainer_->loss_scale());
    return r;
  }

  const TrainerPtr& Live(Napi::Env env) const {
    if (!trainer_) throw MakeError(env, "E_DISPOSED", "this SelectorTrainer was disposed");
    return trainer_;
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    trainer_.reset();
    return info.Env().Undefined();
  }

  TrainerPtr trainer_;
  std::shared_ptr<FifoGate> step_order_ = std::make_shared<FifoGate>();
};

// createSelectorTrainer(dir, options) -> Promise<SelectorTrainer>
Napi::Value CreateSelectorTrainer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir = RequireString(info[0], "dir");
  TrainerOptions opts = ReadTrainerOptions(info[1], env);
  auto result = std::make_shared<TrainerPtr>();
  return StartTask(
      env, "gainrag.createSelectorTrainer", [dir, opts, result](const RunContext&) { *result = SelectorTrainer::Create(dir, opts); },
      [result](Napi::Env env) -> Napi::Value {
        auto ext = Napi::External<TrainerPtr>::New(env, new TrainerPtr(*result), [](Napi::Env, TrainerPtr* p) { delete p; });
        return GetAddonData(env).selector_trainer.New({ext});
      });
}

}  // namespace

void InitSelectorTrainer(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = SelectorTrainerWrap::Define(env);
  GetAddonData(env).selector_trainer = Napi::Persistent(ctor);
  exports.Set("SelectorTrainer", ctor);
  exports.Set("createSelectorTrainer", Napi::Function::New<CreateSelectorTrainer>(env, "createSelectorTrainer"));
}

}  // namespace gainrag::node
