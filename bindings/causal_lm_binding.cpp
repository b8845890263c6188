// JS class(es): CausalLM. (Placeholder until the class lands.)
#include "bindings/addon_data.h"

namespace gainrag::node {

void InitCausalLM(Napi::Env env, Napi::Object exports) {}

}  // namespace gainrag::node
