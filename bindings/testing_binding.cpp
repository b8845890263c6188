// Hooks the test suite uses to prove boundary properties (zero-copy in and out, cancellation,
// progress), and the benches' GEMM timer. They run the same marshalling code as the real classes.
#include <chrono>
#include <thread>

#include "bindings/addon_data.h"
#include "bindings/async_task.h"
#include "bindings/marshal.h"
#include "backends/gemm_bench.h"

namespace gainrag::node {
namespace {

// roundTrip(x: Float32Array) -> Promise<{out: Float32Array, inAddress: bigint, outAddress: bigint}>
// Native code doubles x in place through a borrowed view (visible to JS only if no copy was
// made), and returns cumsum(x) as an external buffer over the native tensor's memory.
Napi::Value RoundTrip(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor in = BorrowTypedArray1D(info[0], at::kFloat, "x");
  auto out = std::make_shared<at::Tensor>();
  return StartTask(
      env, "gainrag.roundTrip",
      [in, out](const RunContext&) mutable {
        in.mul_(2.0);
        *out = in.cumsum(0);
      },
      [in, out](Napi::Env env) -> Napi::Value {
        Napi::Object r = Napi::Object::New(env);
        r.Set("inAddress", Napi::BigInt::New(env, uint64_t(reinterpret_cast<uintptr_t>(in.data_ptr()))));
        r.Set("outAddress", Napi::BigInt::New(env, uint64_t(reinterpret_cast<uintptr_t>(out->data_ptr()))));
        r.Set("out", TensorToTypedArray(env, *out));
        return r;
      },
      {}, {info[0]});
}

// addressOf(typedArray) -> bigint: where the array's bytes live.
Napi::Value AddressOf(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "expected a typed array");
  auto arr = info[0].As<Napi::TypedArray>();
  auto* p = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
  return Napi::BigInt::New(info.Env(), uint64_t(reinterpret_cast<uintptr_t>(p)));
}

// sleepSteps(steps, msPerStep, controls) -> Promise<number>: a cancellable job with progress.
Napi::Value SleepSteps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t steps = RequireInt(info[0], "steps", 0, 1000000);
  int64_t ms = RequireInt(info[1], "msPerStep", 0, 10000);
  TaskControls controls = ReadControls(info[2]);
  auto done = std::make_shared<int64_t>(0);
  return StartTask(
      env, "gainrag.sleepSteps",
      [steps, ms, done](const RunContext& ctx) {
        for (int64_t i = 0; i < steps; ++i) {
          ctx.ThrowIfCancelled();
          std::this_thread::sleep_for(std::chrono::milliseconds(ms));
          *done = i + 1;
          ctx.Progress(i + 1, steps);
        }
      },
      [done](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, double(*done)); }, controls);
}

// gemmSeconds(path, m, k, n, gelu, reps) -> Promise<{seconds: number[], flops, kernel}>: one
// Linear layer timed natively on a worker thread (bench/ffn-gemm.ts; see backends/gemm_bench.h).
Napi::Value GemmSeconds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = RequireString(info[0], "path");
  const int64_t m = RequireInt(info[1], "m", 1, 1 << 20), k = RequireInt(info[2], "k", 1, 1 << 16),
                n = RequireInt(info[3], "n", 1, 1 << 16);
  if (!info[4].IsBoolean()) throw Napi::TypeError::New(env, "gelu must be a boolean");
  const bool gelu = info[4].As<Napi::Boolean>().Value();
  const int reps = static_cast<int>(RequireInt(info[5], "reps", 1, 1000));
  auto out = std::make_shared<GemmTiming>();
  return StartTask(
      env, "gainrag.gemmSeconds", [=](const RunContext&) { *out = TimeLinear(path, m, k, n, gelu, reps); },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object r = Napi::Object::New(env);
        Napi::Array s = Napi::Array::New(env, out->seconds.size());
        for (size_t i = 0; i < out->seconds.size(); ++i) s.Set(uint32_t(i), out->seconds[i]);
        r.Set("seconds", s);
        r.Set("flops", out->flops);
        r.Set("kernel", out->kernel);
        return r;
      });
}

}  // namespace

void InitTesting(Napi::Env env, Napi::Object exports) {
  Napi::Object t = Napi::Object::New(env);
  t.Set("roundTrip", Napi::Function::New<RoundTrip>(env, "roundTrip"));
  t.Set("addressOf", Napi::Function::New<AddressOf>(env, "addressOf"));
  t.Set("sleepSteps", Napi::Function::New<SleepSteps>(env, "sleepSteps"));
  t.Set("gemmSeconds", Napi::Function::New<GemmSeconds>(env, "gemmSeconds"));
  exports.Set("testing", t);
}

}  // namespace gainrag::node
