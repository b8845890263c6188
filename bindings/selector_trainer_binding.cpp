// JS class(es): SelectorTrainer. (Placeholder until the class lands.)
#include "bindings/addon_data.h"

namespace gainrag::node {

void InitSelectorTrainer(Napi::Env env, Napi::Object exports) {}

}  // namespace gainrag::node
