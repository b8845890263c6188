#include "core/tensor_util.h"

#include "core/error.h"

namespace gainrag {

at::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF64: return at::kDouble;
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI64: return at::kLong;
    case DType::kI32: return at::kInt;
    case DType::kI16: return at::kShort;
    case DType::kI8: return at::kChar;
    case DType::kU8: return at::kByte;
    case DType::kBool: return at::kBool;
  }
  GR_FAIL(kInternal, "unknown dtype");
}

DType FromScalarType(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::kF64;
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kLong: return DType::kI64;
    case at::kInt: return DType::kI32;
    case at::kShort: return DType::kI16;
    case at::kChar: return DType::kI8;
    case at::kByte: return DType::kU8;
    case at::kBool: return DType::kBool;
    default: GR_FAIL(kUnsupported, "tensor type ", c10::toString(type), " has no safetensors dtype");
  }
}

at::Tensor MappedTensor(const WeightFiles& weights, const std::string& name) {
  const TensorInfo& info = weights.info(name);
  auto keep = weights.file_of(name);
  void* data = const_cast<uint8_t*>(weights.data(name));
  return at::from_blob(
      data, info.shape, [keep](void*) mutable { keep.reset(); },
      at::TensorOptions().dtype(ToScalarType(info.dtype)));
}

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
