// Module entry: sets LibTorch's thread pool once, then lets each binding file register itself.
#include <napi.h>

#include "bindings/addon_data.h"
#include "bindings/async_task.h"
#include "core/engine.h"
#include "core/tensor_memory.h"

namespace gainrag::node {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // LibTorch's intra-op pool is process-wide and separate from libuv's worker threads: set it
  // once, here. Tasks run on libuv threads and fan out into this pool.
  static const int threads = ConfigureThreads(0);
  (void)threads;
  InstallTensorMemory();
  env.SetInstanceData(new AddonData());
  exports.Set("CancelToken", CancelToken::Define(env));
  InitEngine(env, exports);
  InitSafetensors(env, exports);
  InitTesting(env, exports);
  InitEncoder(env, exports);
  InitCausalLM(env, exports);
  InitDenseIndex(env, exports);
  InitSelectorTrainer(env, exports);
  InitFaiss(env, exports);
  return exports;
}

}  // namespace gainrag::node

static Napi::Object InitGainrag(Napi::Env env, Napi::Object exports) {
  return gainrag::node::Init(env, exports);
}

NODE_API_MODULE(gainrag, InitGainrag)
