#include "io/tensor_bridge.h"

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

}  // namespace gainrag
