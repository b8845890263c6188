// ATen helpers every layer uses: dtype and device names as the API spells them. (The
// safetensors <-> ATen bridge is io/tensor_bridge.h: core/ depends on nothing above it.)
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace gainrag {

// Parses "float32" | "float16" | "bfloat16" (and short forms); throws Error(kInvalidArgument).
at::ScalarType ParseFloatType(const std::string& name);
// Parses "cpu" | "cuda" | "cuda:N"; throws Error(kInvalidArgument) / Error(kUnsupported).
at::Device ParseDevice(const std::string& name);

}  // namespace gainrag
