// Bridge between safetensors files (io/safetensors.h) and ATen tensors: dtype mapping and
// zero-copy views of mapped checkpoint tensors. It lives in io/, beside the format it bridges,
// so that core/ needs nothing from the layers above it.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "io/safetensors.h"

namespace gainrag {

at::ScalarType ToScalarType(DType dtype);
DType FromScalarType(at::ScalarType type);

// A CPU tensor over a mapped checkpoint tensor, without a copy. The tensor keeps the mapping
// alive. Pages are private copy-on-write, so an accidental in-place write cannot fault.
at::Tensor MappedTensor(const WeightFiles& weights, const std::string& name);

}  // namespace gainrag
