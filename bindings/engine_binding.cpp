// engineInfo(), setThreads(n) and releaseTensorMemory().
#include "bindings/addon_data.h"
#include "bindings/errors.h"
#include "bindings/marshal.h"
#include "core/engine.h"
#include "core/tensor_memory.h"
#ifdef GAINRAG_WITH_DNNL
#include "backends/dnnl/packed_linear.h"
#endif

namespace gainrag::node {
namespace {

Napi::Value EngineInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    EngineInfo e = GetEngineInfo();
#ifdef GAINRAG_WITH_DNNL
    // The backends above core/ are reported here, where the layers meet.
    e.backends.push_back("dnnl");  // oneDNN matmuls for the encoders (their CPU default; GAINRAG_GEMM=torch opts out)
    // Asked once: creating the probe primitives costs a few milliseconds.
    static const std::string kernels = [] {
      auto name = [](at::ScalarType t) {
        const std::string k = onednn::KernelName(t);
        return k.empty() ? std::string("none") : k;
      };
      return "f32 " + name(at::kFloat) + ", bf16 " + name(at::kBFloat16) + ", int8 " + name(at::kChar);
    }();
    e.dnnl_kernels = kernels;
    // 8 where the CPU has VNNI, 7 where int8 products code their inputs in 7 bits (Int8Inputs);
    // asked once, like the kernels above (Supports builds a probe primitive).
    static const int int8_input_bits = onednn::Supports(at::kChar) ? (onednn::Int8Inputs().levels == 127 ? 8 : 7) : 0;
#else
    const int int8_input_bits = 0;
#endif
    Napi::Object out = Napi::Object::New(env);
    out.Set("version", e.version);
    out.Set("torch", e.torch);
    Napi::Array backends = Napi::Array::New(env, e.backends.size());
    for (size_t i = 0; i < e.backends.size(); ++i) backends.Set(uint32_t(i), e.backends[i]);
    out.Set("backends", backends);
    out.Set("cudaDevices", e.cuda_devices);
    out.Set("threads", e.threads);
    out.Set("blas", e.blas);
    out.Set("dnnlKernels", e.dnnl_kernels);
    out.Set("int8InputBits", int8_input_bits);
    const TensorMemoryStats m = GetTensorMemoryStats();
    Napi::Object mem = Napi::Object::New(env);
    mem.Set("installed", m.installed);
    mem.Set("capBytes", double(m.cap_bytes));
    mem.Set("cachedBytes", double(m.cached_bytes));
    mem.Set("liveBytes", double(m.live_bytes));
    mem.Set("reused", double(m.reused));
    mem.Set("mapped", double(m.mapped));
    out.Set("tensorMemory", mem);
    return out;
  });
}

Napi::Value SetThreadsJs(const Napi::CallbackInfo& info) {
  int64_t n = RequireInt(info[0], "threads", 1, 4096);
  return Napi::Number::New(info.Env(), ConfigureThreads(static_cast<int>(n)));
}

Napi::Value ReleaseTensorMemoryJs(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    const int64_t before = GetTensorMemoryStats().cached_bytes;
    ReleaseCachedTensorMemory();
    return Napi::Number::New(info.Env(), double(before - GetTensorMemoryStats().cached_bytes));
  });
}

}  // namespace

void InitEngine(Napi::Env env, Napi::Object exports) {
  exports.Set("engineInfo", Napi::Function::New<EngineInfoJs>(env, "engineInfo"));
  exports.Set("setThreads", Napi::Function::New<SetThreadsJs>(env, "setThreads"));
  exports.Set("releaseTensorMemory", Napi::Function::New<ReleaseTensorMemoryJs>(env, "releaseTensorMemory"));
}

}  // namespace gainrag::node
