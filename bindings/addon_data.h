// Per-environment addon state: constructors of the wrapped classes, so that native code can
// create JS instances (for example when an async `load` settles).
#pragma once

#include <napi.h>

namespace gainrag::node {

struct AddonData {
  Napi::FunctionReference safetensors_file;
  Napi::FunctionReference encoder;
  Napi::FunctionReference cross_encoder;
  Napi::FunctionReference causal_lm;
  Napi::FunctionReference dense_index;
  Napi::FunctionReference selector_trainer;
};

inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

// Each binding file exports its functions/classes onto `exports`.
void InitEngine(Napi::Env env, Napi::Object exports);
void InitSafetensors(Napi::Env env, Napi::Object exports);
void InitTesting(Napi::Env env, Napi::Object exports);
void InitEncoder(Napi::Env env, Napi::Object exports);          // encoder_binding.cpp: Encoder, CrossEncoder
void InitCausalLM(Napi::Env env, Napi::Object exports);         // causal_lm_binding.cpp: CausalLM
void InitDenseIndex(Napi::Env env, Napi::Object exports);       // dense_index_binding.cpp: DenseIndex
void InitSelectorTrainer(Napi::Env env, Napi::Object exports);  // selector_trainer_binding.cpp
void InitFaiss(Napi::Env env, Napi::Object exports);            // faiss_binding.cpp: importFaiss, exportFaiss

}  // namespace gainrag::node
