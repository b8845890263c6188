#include "core/tensor_util.h"

#include "core/error.h"

namespace gainrag {

at::ScalarType ParseFloatType(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "f32") return at::kFloat;
  if (name == "float16" || name == "fp16" || name == "f16" || name == "half") return at::kHalf;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  GR_FAIL(kInvalidArgument, "dtype must be float32, float16 or bfloat16, got '", name, "'");
}

at::Device ParseDevice(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    GR_CHECK(at::hasCUDA(), kUnsupported, "device '", name, "' requested but this build or machine has no CUDA");
    int index = 0;
    if (name.size() > 5 && name[4] == ':') index = std::stoi(name.substr(5));
    else GR_CHECK(name == "cuda", kInvalidArgument, "device must be cpu, cuda or cuda:N, got '", name, "'");
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  GR_FAIL(kInvalidArgument, "device must be cpu, cuda or cuda:N, got '", name, "'");
}

}  // namespace gainrag
