// JS class(es): DenseIndex. (Placeholder until the class lands.)
#include "bindings/addon_data.h"

namespace gainrag::node {

void InitDenseIndex(Napi::Env env, Napi::Object exports) {}

}  // namespace gainrag::node
