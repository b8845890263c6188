// JS class(es): Encoder and CrossEncoder. (Placeholder until the class lands.)
#include "bindings/addon_data.h"

namespace gainrag::node {

void InitEncoder(Napi::Env env, Napi::Object exports) {}

}  // namespace gainrag::node
