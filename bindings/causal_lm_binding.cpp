// JS class CausalLM (raw surface; lib/models/causal-lm.ts is the typed API): a loaded Llama
// decoder. Token batches come in as borrowed Int32Arrays (ids + offsets); results go out as
// external buffers owned by native tensors.
#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <memory>
#include <mutex>

#include "bindings/addon_data.h"
#include "bindings/async_task.h"
#include "bindings/marshal.h"
#include "core/batching.h"
#include "core/tensor_util.h"
#include "models/llama.h"

namespace gainrag::node {
namespace {

using Model = std::shared_ptr<LlamaModel>;

// Borrows one (ids, offsets) pair of arguments; `keep` collects the JS values that must outlive the task.
RaggedTokens BorrowRagged(const Napi::CallbackInfo& info, size_t first, std::vector<Napi::Value>* keep) {
  BorrowedTokens tokens = ReadBorrowedTokens(info, first, /*with_types=*/false);
  Guard(info.Env(), [&] { ValidateRagged(tokens.ragged(), tokens.ids.numel()); });
  keep->insert(keep->end(), tokens.keep.begin(), tokens.keep.end());
  return tokens.ragged();  // points into native copies, kept alive through `keep`
}

// Per item and context prompt, the minimum PPL_CD over the item's answers (off the JS thread).
at::Tensor MinOverAnswers(const ContrastiveRequest& req, const at::Tensor& flat) {
  int64_t contexts = 0;
  for (int64_t i = 0; i < req.items; ++i) contexts += req.prompt_begin[i + 1] - req.prompt_begin[i] - 1;
  at::Tensor out = at::empty({contexts}, at::kDouble);
  const double* src = flat.data_ptr<double>();
  double* dst = out.data_ptr<double>();
  for (int64_t i = 0; i < req.items; ++i) {
    const int64_t n_ctx = req.prompt_begin[i + 1] - req.prompt_begin[i] - 1;
    const int64_t n_ans = req.answer_begin[i + 1] - req.answer_begin[i];
    for (int64_t c = 0; c < n_ctx; ++c) {
      double m = src[c];
      for (int64_t a = 1; a < n_ans; ++a) m = std::min(m, src[a * n_ctx + c]);
      dst[c] = m;
    }
    src += n_ans * n_ctx;
    dst += n_ctx;
  }
  return out;
}

// Tokens from the decoding thread to a JS callback: one queued call per step, dropped (never
// waited for) when the queue cannot take it -- the Promise's result has every token anyway.
class TokenStream {
 public:
  TokenStream(Napi::Env env, Napi::Function fn)
      : tsfn_(Napi::ThreadSafeFunction::New(env, fn, "gainrag.generate.tokens", 0, 1)) {}
  ~TokenStream() { Close(); }

  void Send(const std::vector<int32_t>& rows, const std::vector<int32_t>& tokens) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    auto* step = new Step{rows, tokens};
    if (tsfn_.NonBlockingCall(step, Deliver) != napi_ok) delete step;
  }

  void Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
    tsfn_.Release();
  }

 private:
  struct Step {
    std::vector<int32_t> rows, tokens;
  };
  static void Deliver(Napi::Env env, Napi::Function fn, Step* step) {
    std::unique_ptr<Step> owned(step);
    if (env == nullptr || fn.IsEmpty()) return;
    auto copy = [&](const std::vector<int32_t>& v) {
      Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
      std::copy(v.begin(), v.end(), a.Data());
      return a;
    };
    // A throwing callback must not take down the generation.
    try {
      fn.Call({copy(owned->rows), copy(owned->tokens)});
    } catch (...) {
    }
  }

  Napi::ThreadSafeFunction tsfn_;
  std::mutex mutex_;
  bool closed_ = false;
};

class CausalLMWrap : public Napi::ObjectWrap<CausalLMWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CausalLM",
                       {InstanceAccessor<&CausalLMWrap::Info>("info"),
                        InstanceMethod<&CausalLMWrap::Stats>("stats"),
                        InstanceMethod<&CausalLMWrap::ResetStats>("resetStats"),
                        InstanceMethod<&CausalLMWrap::Contrastive>("contrastive"),
                        InstanceMethod<&CausalLMWrap::LastLogits>("lastLogits"),
                        InstanceMethod<&CausalLMWrap::Generate>("generate"),
                        InstanceMethod<&CausalLMWrap::Dispose>("dispose")});
  }

  explicit CausalLMWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CausalLMWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "CausalLM is created by loadCausalLM(dir, options)");
    model_ = *info[0].As<Napi::External<Model>>().Data();
  }

 private:
  // dispose() drops this wrapper's reference; running calls hold their own (`Model model`), so
  // the weights are freed when the last one settles. Every later call: E_DISPOSED.
  const Model& Live(Napi::Env env) const {
    if (!model_) throw MakeError(env, "E_DISPOSED", "this CausalLM was disposed");
    return model_;
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const LlamaConfig& c = Live(env)->config();
    Napi::Object o = Napi::Object::New(env);
    o.Set("modelType", c.model_type);
    o.Set("vocabSize", double(c.vocab_size));
    o.Set("hiddenSize", double(c.hidden_size));
    o.Set("numLayers", double(c.num_layers));
    o.Set("contextLength", double(c.max_position_embeddings));
    o.Set("bosTokenId", double(c.bos_token_id));
    Napi::Array eos = Napi::Array::New(env, model_->eos_ids().size());
    for (size_t i = 0; i < model_->eos_ids().size(); ++i) eos.Set(uint32_t(i), double(model_->eos_ids()[i]));
    o.Set("eosTokenIds", eos);
    at::ScalarType t = model_->precision();
    o.Set("dtype", t == at::kChar ? "int8" : t == at::kFloat ? "float32" : t == at::kBFloat16 ? "bfloat16" : "float16");
    o.Set("device", model_->device().str());
    return o;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    LlamaStats s = Live(info.Env())->stats();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("promptPrefills", double(s.prompt_prefills));
    o.Set("prefillTokens", double(s.prefill_tokens));
    o.Set("answerTokens", double(s.answer_tokens));
    o.Set("lmHeadRows", double(s.lm_head_rows));
    o.Set("forwardCalls", double(s.forward_calls));
    o.Set("generatedTokens", double(s.generated_tokens));
    o.Set("decodeSteps", double(s.decode_steps));
    o.Set("stoppedRows", double(s.stopped_rows));
    return o;
  }

  Napi::Value ResetStats(const Napi::CallbackInfo& info) {
    Live(info.Env())->ResetStats();
    return info.Env().Undefined();
  }

  // contrastive(promptIds, promptOffsets, answerIds, answerOffsets, promptBegin, answerBegin,
  //             alpha, referenceMethod, sharePrefix, controls)
  //   -> Promise<{perAnswer: Float64Array (item, answer, context), min: Float64Array (item, context),
  //               plainPerAnswer, plainMin: the same for the plain perplexity (context logits only)}>
  Napi::Value Contrastive(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep;
    ContrastiveRequest req;
    req.prompts = BorrowRagged(info, 0, &keep);
    req.answers = BorrowRagged(info, 2, &keep);
    // Copies (detach-safe, see marshal.h), kept alive through `keep` for the raw pointers below.
    at::Tensor pb = CopyTypedArray1D(info[4], at::kInt, "promptBegin");
    at::Tensor ab = CopyTypedArray1D(info[5], at::kInt, "answerBegin");
    if (pb.numel() < 1 || pb.numel() != ab.numel())
      throw Napi::RangeError::New(env, "promptBegin and answerBegin must both have items + 1 entries");
    req.items = pb.numel() - 1;
    req.prompt_begin = pb.data_ptr<int32_t>();
    req.answer_begin = ab.data_ptr<int32_t>();
    RaggedTokens pcheck{nullptr, req.prompt_begin, nullptr, req.items};
    RaggedTokens acheck{nullptr, req.answer_begin, nullptr, req.items};
    Guard(env, [&] {
      ValidateRagged(pcheck, req.prompts.count);
      ValidateRagged(acheck, req.answers.count);
    });
    keep.push_back(TensorKeeper(env, pb));
    keep.push_back(TensorKeeper(env, ab));
    if (!info[6].IsNumber()) throw Napi::TypeError::New(env, "alpha must be a number");
    req.alpha = info[6].As<Napi::Number>().DoubleValue();
    req.reference_method = info[7].ToBoolean().Value();
    if (!info[8].IsUndefined() && !info[8].IsBoolean()) throw Napi::TypeError::New(env, "sharePrefix must be a boolean");
    req.share_prefix = info[8].IsUndefined() || info[8].As<Napi::Boolean>().Value();
    auto result = std::make_shared<std::array<at::Tensor, 4>>();
    Model model = Live(env);
    return StartTask(
        env, "gainrag.CausalLM.contrastive",
        [model, req, result](const RunContext& ctx) {
          auto& r = *result;
          r[0] = model->ContrastivePerplexity(req, ctx, &r[2]);
          r[1] = MinOverAnswers(req, r[0]);
          r[3] = MinOverAnswers(req, r[2]);
        },
        [result](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("perAnswer", TensorToTypedArray(env, (*result)[0]));
          o.Set("min", TensorToTypedArray(env, (*result)[1]));
          o.Set("plainPerAnswer", TensorToTypedArray(env, (*result)[2]));
          o.Set("plainMin", TensorToTypedArray(env, (*result)[3]));
          return o;
        },
        ReadControls(info[9]), keep);
  }

  // lastLogits(ids, offsets, lastN, controls) -> Promise<Float32Array> [count, lastN, vocab]
  Napi::Value LastLogits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep;
    RaggedTokens prompts = BorrowRagged(info, 0, &keep);
    int64_t last_n = RequireInt(info[2], "lastN", 1, 1 << 20);
    auto result = std::make_shared<at::Tensor>();
    Model model = Live(env);
    return StartTask(
        env, "gainrag.CausalLM.lastLogits",
        [model, prompts, last_n, result](const RunContext& ctx) { *result = model->LastLogits(prompts, last_n, ctx); },
        [result](Napi::Env env) { return TensorToTypedArray(env, *result); }, ReadControls(info[3]), keep);
  }

  // generate(ids, offsets, maxNewTokens, controls, stream?, sharePrefix?) -> Promise<{ids: Int32Array, offsets: Int32Array}>
  //   stream: {onTokens?: (rows: Int32Array, tokens: Int32Array) => void, rowCancel?: (CancelToken | undefined)[]}
  // onTokens gets each step's tokens as they are made, through a thread-safe function (queued,
  // never blocking the decoder; calls may still arrive after the Promise settles, so the result,
  // not the calls, is the complete answer). rowCancel[i].cancel() stops prompt i alone.
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep;
    RaggedTokens prompts = BorrowRagged(info, 0, &keep);
    int64_t max_new = RequireInt(info[2], "maxNewTokens", 1, 1 << 20);
    auto hooks = std::make_shared<GenerateHooks>();
    std::shared_ptr<TokenStream> stream;
    if (info.Length() > 4 && !info[4].IsUndefined()) {
      if (!info[4].IsObject()) throw Napi::TypeError::New(env, "stream must be an object");
      Napi::Object o = info[4].As<Napi::Object>();
      Napi::Value cancels = o.Get("rowCancel");
      if (!cancels.IsUndefined()) {
        if (!cancels.IsArray()) throw Napi::TypeError::New(env, "stream.rowCancel must be an array");
        Napi::Array a = cancels.As<Napi::Array>();
        if (a.Length() > uint32_t(prompts.count)) throw Napi::RangeError::New(env, "stream.rowCancel has more entries than prompts");
        for (uint32_t i = 0; i < a.Length(); ++i) {
          Napi::Value v = a.Get(i);
          auto* token = v.IsObject() ? Napi::ObjectWrap<CancelToken>::Unwrap(v.As<Napi::Object>()) : nullptr;
          if (!v.IsUndefined() && !token) throw Napi::TypeError::New(env, "stream.rowCancel entries must be CancelTokens or undefined");
          hooks->row_stop.push_back(token ? token->flag() : nullptr);
          if (token) keep.push_back(v);
        }
      }
      Napi::Value fn = o.Get("onTokens");
      if (!fn.IsUndefined()) {
        if (!fn.IsFunction()) throw Napi::TypeError::New(env, "stream.onTokens must be a function");
        stream = std::make_shared<TokenStream>(env, fn.As<Napi::Function>());
        hooks->on_tokens = [stream](const std::vector<int32_t>& rows, const std::vector<int32_t>& tokens) { stream->Send(rows, tokens); };
      }
    }
    if (info.Length() > 5 && !info[5].IsUndefined() && !info[5].IsBoolean())
      throw Napi::TypeError::New(env, "sharePrefix must be a boolean");
    const bool share_prefix = info.Length() > 5 && info[5].IsBoolean() && info[5].As<Napi::Boolean>().Value();
    auto result = std::make_shared<std::pair<at::Tensor, at::Tensor>>();
    Model model = Live(env);
    return StartTask(
        env, "gainrag.CausalLM.generate",
        [model, prompts, max_new, result, hooks, stream, share_prefix](const RunContext& ctx) {
          // The stream closes with the call, however it ends; queued steps are still delivered.
          struct Close {
            TokenStream* s;
            ~Close() { if (s) s->Close(); }
          } close{stream.get()};
          *result = model->GenerateGreedy(prompts, max_new, ctx, hooks.get(), share_prefix);
        },
        [result](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("ids", TensorToTypedArray(env, result->first));
          o.Set("offsets", TensorToTypedArray(env, result->second));
          return o;
        },
        ReadControls(info[3]), keep);
  }

  Model model_;
};

// loadCausalLM(dir, {device?, dtype?, tokenBudget?, maxRows?}) -> Promise<CausalLM>
Napi::Value LoadCausalLM(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir = RequireString(info[0], "dir");
  LlamaOptions opts;
  Napi::Object o = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  std::string device = OptionalString(o, "device", "cpu");
  std::string dtype = OptionalString(o, "dtype", "float32");
  Guard(env, [&] {
    opts.device = ParseDevice(device);
    opts.dtype = dtype == "int8" ? at::kChar : ParseFloatType(dtype);
  });
  double budget = OptionalNumber(o, "tokenBudget", 8192), rows = OptionalNumber(o, "maxRows", 64);
  if (!(budget >= 1) || !(rows >= 1)) throw Napi::RangeError::New(env, "tokenBudget and maxRows must be at least 1");
  opts.token_budget = int64_t(budget);
  opts.max_rows = int64_t(rows);
  auto result = std::make_shared<Model>();
  return StartTask(
      env, "gainrag.loadCausalLM", [dir, opts, result](const RunContext&) { *result = LlamaModel::Load(dir, opts); },
      [result](Napi::Env env) -> Napi::Value {
        auto ext = Napi::External<Model>::New(env, new Model(*result), [](Napi::Env, Model* p) { delete p; });
        return GetAddonData(env).causal_lm.New({ext});
      });
}

}  // namespace

void InitCausalLM(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = CausalLMWrap::Define(env);
  GetAddonData(env).causal_lm = Napi::Persistent(ctor);
  exports.Set("CausalLM", ctor);
  exports.Set("loadCausalLM", Napi::Function::New<LoadCausalLM>(env, "loadCausalLM"));
}

}  // namespace gainrag::node
