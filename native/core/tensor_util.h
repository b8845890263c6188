// Bridges between engine types and ATen tensors.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "io/safetensors.h"

namespace gainrag {

at::ScalarType ToScalarType(DType dtype);
DType FromScalarType(at::ScalarType type);

// A CPU tensor over a mapped checkpoint tensor, without a copy. The tensor keeps the mapping
// alive. Pages are private copy-on-write, so an accidental in-place write cannot fault.
at::Tensor MappedTensor(const WeightFiles& weights, const std::string& name);

// Parses "float32" | "float16" | "bfloat16" (and short forms); throws Error(kInvalidArgument).
at::ScalarType ParseFloatType(const std::string& name);
// Parses "cpu" | "cuda" | "cuda:N"; throws Error(kInvalidArgument) / Error(kUnsupported).
at::Device ParseDevice(const std::string& name);

}  // namespace gainrag
