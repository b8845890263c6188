// JS classes Encoder (pooled embeddings) and CrossEncoder (classifier scores) over one native
// EncoderModel. Both are created by async loaders; token batches come in as Int32Arrays (ids +
// Arrow-style offsets, copied on the JS thread: marshal.h) and results go out as external
// Float32Arrays. dispose() drops the wrapper's model reference; running calls hold their own,
// so the weights are freed when the last one settles. Later calls fail with E_DISPOSED.
#include "bindings/addon_data.h"
#include "bindings/async_task.h"
#include "bindings/marshal.h"
#include "core/tensor_util.h"
#include "io/tensor_bridge.h"
#include "models/encoder.h"

namespace gainrag::node {
namespace {

using ModelPtr = std::shared_ptr<EncoderModel>;

EncodeRequest ReadRequest(const Napi::Value& value, Napi::Env env) {
  EncodeRequest req;
  if (value.IsUndefined() || value.IsNull()) return req;
  if (!value.IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = value.As<Napi::Object>();
  req.pooling = Guard(env, [&] { return ParsePooling(OptionalString(o, "pooling", "mean")); });
  Napi::Value norm = o.Get("normalize");
  if (!norm.IsUndefined() && !norm.IsNull()) {
    if (!norm.IsBoolean()) throw Napi::TypeError::New(env, "normalize must be a boolean");
    req.normalize = norm.As<Napi::Boolean>().Value();
  }
  if (o.Has("batchTokens") && !o.Get("batchTokens").IsUndefined())
    req.batch_tokens = RequireInt(o.Get("batchTokens"), "batchTokens", 1, int64_t(1) << 40);
  if (o.Has("maxRows") && !o.Get("maxRows").IsUndefined())
    req.max_rows = RequireInt(o.Get("maxRows"), "maxRows", 1, int64_t(1) << 31);
  return req;
}

Napi::Object Describe(Napi::Env env, Napi::Object self, const EncoderModel& m) {
  const EncoderConfig& c = m.config();
  self.Set("dim", Napi::Number::New(env, double(c.hidden_size)));
  self.Set("maxTokens", Napi::Number::New(env, double(m.max_tokens())));
  self.Set("numLabels", Napi::Number::New(env, double(m.has_classifier() ? c.num_labels : 0)));
  self.Set("modelType", Napi::String::New(env, c.model_type));
  // The names the load options take (not the safetensors spelling "F32", "I8", ...).
  const at::ScalarType t = m.dtype();
  const char* dtype = t == at::kChar ? "int8" : t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
  self.Set("dtype", Napi::String::New(env, dtype));
  self.Set("device", Napi::String::New(env, m.device().str()));
  self.Set("gemm", Napi::String::New(env, m.gemm()));
  self.Set("matmulPrecision", Napi::String::New(env, m.matmul_precision()));
  self.Set("dir", Napi::String::New(env, m.dir()));
  return self;
}

// Shared by both classes: run `fn` over the batch off the JS thread, hand back a Float32Array.
using BatchedFn = at::Tensor (*)(const EncoderModel&, const RaggedTokens&, const EncodeRequest&, const RunContext&);

Napi::Value RunModel(const Napi::CallbackInfo& info, const ModelPtr& model, BatchedFn fn, const char* name) {
  Napi::Env env = info.Env();
  if (!model) throw MakeError(env, "E_DISPOSED", std::string(name) + ": the model was disposed");
  BorrowedTokens tokens = ReadBorrowedTokens(info);
  EncodeRequest req = ReadRequest(info[3], env);
  TaskControls controls = ReadControls(info[4]);
  auto out = std::make_shared<at::Tensor>();
  return StartTask(
      env, name,
      [model, tokens, req, out, fn](const RunContext& ctx) {
        RaggedTokens ragged = tokens.ragged();
        ValidateRagged(ragged, tokens.ids.numel());
        *out = fn(*model, ragged, req, ctx);
      },
      [out](Napi::Env env) -> Napi::Value { return TensorToTypedArray(env, *out); }, controls, tokens.keep);
}

class EncoderWrap : public Napi::ObjectWrap<EncoderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Encoder", {InstanceMethod<&EncoderWrap::Embed>("embed"),
                                        InstanceMethod<&EncoderWrap::Dispose>("dispose")});
  }
  explicit EncoderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EncoderWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "Encoder is created by loadEncoder(dir, options)");
    model_ = *info[0].As<Napi::External<ModelPtr>>().Data();
    Describe(info.Env(), info.This().As<Napi::Object>(), *model_);
  }

 private:
  // embed(ids, offsets, typeIds?, {pooling, normalize, batchTokens, maxRows}, controls) -> Float32Array n x dim
  Napi::Value Embed(const Napi::CallbackInfo& info) { return RunModel(info, model_, &EncodeBatched, "gainrag.embed"); }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }
  ModelPtr model_;
};

class CrossEncoderWrap : public Napi::ObjectWrap<CrossEncoderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CrossEncoder", {InstanceMethod<&CrossEncoderWrap::Score>("score"),
                                             InstanceMethod<&CrossEncoderWrap::Dispose>("dispose")});
  }
  explicit CrossEncoderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CrossEncoderWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "CrossEncoder is created by loadCrossEncoder(dir, options)");
    model_ = *info[0].As<Napi::External<ModelPtr>>().Data();
    Describe(info.Env(), info.This().As<Napi::Object>(), *model_);
  }

 private:
  // score(ids, offsets, typeIds?, {batchTokens, maxRows}, controls) -> Float32Array n x numLabels
  Napi::Value Score(const Napi::CallbackInfo& info) { return RunModel(info, model_, &ScoreBatched, "gainrag.score"); }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }
  ModelPtr model_;
};

// loadEncoder(dir, {device, dtype, gemm, matmulPrecision}) / loadCrossEncoder(dir, {...}) -> Promise<instance>
template <bool kCross>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir = RequireString(info[0], "dir");
  EncoderOptions opts;
  if (info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    std::string device = OptionalString(o, "device", "cpu");
    std::string dtype = OptionalString(o, "dtype", "float32");
    std::string gemm = OptionalString(o, "gemm", "");
    std::string matmul = OptionalString(o, "matmulPrecision", "highest");
    Guard(env, [&] {
      opts.device = ParseDevice(device);
      // int8 is an encoder-only mode (dynamic int8 products on the oneDNN path).
      opts.dtype = dtype == "int8" ? at::kChar : ParseFloatType(dtype);
      opts.gemm = ParseGemmPath(gemm);
      GR_CHECK(matmul == "highest" || matmul == "high", kInvalidArgument,
               "matmulPrecision must be 'highest' or 'high', got '", matmul, "'");
      opts.bf16x3 = matmul == "high";
    });
  } else if (!info[1].IsUndefined() && !info[1].IsNull()) {
    throw Napi::TypeError::New(env, "options must be an object");
  }
  auto result = std::make_shared<ModelPtr>();
  return StartTask(
      env, kCross ? "gainrag.loadCrossEncoder" : "gainrag.loadEncoder",
      [dir, opts, result](const RunContext&) {
        *result = EncoderModel::Load(dir, opts);
        GR_CHECK(!kCross || (*result)->has_classifier(), kModelConfig, dir,
                 " has no sequence-classification head (classifier.* tensors), so it cannot score pairs");
      },
      [result](Napi::Env env) -> Napi::Value {
        auto ext = Napi::External<ModelPtr>::New(env, new ModelPtr(*result), [](Napi::Env, ModelPtr* p) { delete p; });
        AddonData& data = GetAddonData(env);
        return (kCross ? data.cross_encoder : data.encoder).New({ext});
      });
}

}  // namespace

void InitEncoder(Napi::Env env, Napi::Object exports) {
  Napi::Function enc = EncoderWrap::Define(env);
  Napi::Function cross = CrossEncoderWrap::Define(env);
  GetAddonData(env).encoder = Napi::Persistent(enc);
  GetAddonData(env).cross_encoder = Napi::Persistent(cross);
  exports.Set("Encoder", enc);
  exports.Set("CrossEncoder", cross);
  exports.Set("loadEncoder", Napi::Function::New<LoadModel<false>>(env, "loadEncoder"));
  exports.Set("loadCrossEncoder", Napi::Function::New<LoadModel<true>>(env, "loadCrossEncoder"));
}

}  // namespace gainrag::node
