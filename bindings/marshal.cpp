#include "bindings/marshal.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

namespace gainrag::node {
namespace {

napi_typedarray_type TypedArrayTypeFor(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return napi_float32_array;
    case at::kDouble: return napi_float64_array;
    case at::kInt: return napi_int32_array;
    case at::kLong: return napi_bigint64_array;
    case at::kShort: return napi_int16_array;
    case at::kChar: return napi_int8_array;
    case at::kByte: return napi_uint8_array;
    case at::kBool: return napi_uint8_array;
    case at::kHalf: return napi_uint16_array;      // raw IEEE half bits (no Float16Array in Node 20)
    case at::kBFloat16: return napi_uint16_array;  // raw bfloat16 bits
    default: return napi_uint8_array;
  }
}

const char* TypedArrayName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "Float32Array";
    case at::kDouble: return "Float64Array";
    case at::kInt: return "Int32Array";
    case at::kLong: return "BigInt64Array";
    case at::kShort: return "Int16Array";
    case at::kByte: return "Uint8Array";
    case at::kHalf:
    case at::kBFloat16: return "Uint16Array";
    default: return "typed array";
  }
}

Napi::TypedArray MakeTypedArray(Napi::Env env, napi_typedarray_type type, size_t length, Napi::ArrayBuffer buffer) {
  napi_value result;
  napi_status status = napi_create_typedarray(env, type, length, buffer, 0, &result);
  NAPI_THROW_IF_FAILED(env, status, Napi::TypedArray());
  return Napi::TypedArray(env, result);
}

}  // namespace

at::Tensor BorrowTypedArray(const Napi::Value& value, at::ScalarType expected, std::vector<int64_t> shape,
                            const char* what) {
  Napi::Env env = value.Env();
  if (!value.IsTypedArray()) throw Napi::TypeError::New(env, std::string(what) + " must be a " + TypedArrayName(expected));
  Napi::TypedArray arr = value.As<Napi::TypedArray>();
  if (arr.TypedArrayType() != TypedArrayTypeFor(expected))
    throw Napi::TypeError::New(env, std::string(what) + " must be a " + TypedArrayName(expected));
  if (arr.ArrayBuffer().IsDetached())
    throw Napi::TypeError::New(env, std::string(what) + "'s ArrayBuffer is detached (it was transferred)");
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (static_cast<int64_t>(arr.ElementLength()) != numel)
    throw Napi::RangeError::New(env, std::string(what) + " has " + std::to_string(arr.ElementLength()) +
                                         " elements, expected " + std::to_string(numel));
  auto* base = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
  if (numel == 0) return at::empty(shape, at::TensorOptions().dtype(expected));
  return at::from_blob(base, shape, at::TensorOptions().dtype(expected));
}

at::Tensor BorrowTypedArray1D(const Napi::Value& value, at::ScalarType expected, const char* what) {
  Napi::Env env = value.Env();
  if (!value.IsTypedArray()) throw Napi::TypeError::New(env, std::string(what) + " must be a " + TypedArrayName(expected));
  int64_t n = static_cast<int64_t>(value.As<Napi::TypedArray>().ElementLength());
  return BorrowTypedArray(value, expected, {n}, what);
}

at::Tensor CopyTypedArray(const Napi::Value& value, at::ScalarType expected, std::vector<int64_t> shape,
                          const char* what) {
  return BorrowTypedArray(value, expected, std::move(shape), what).clone();
}

at::Tensor CopyTypedArray1D(const Napi::Value& value, at::ScalarType expected, const char* what) {
  return BorrowTypedArray1D(value, expected, what).clone();
}

Napi::Value TensorKeeper(Napi::Env env, at::Tensor tensor) {
  auto ext = Napi::External<at::Tensor>::New(env, new at::Tensor(std::move(tensor)),
                                             [](Napi::Env, at::Tensor* t) { delete t; });
  // A plain object around the external: task keep_alive lists reference objects only.
  Napi::Object holder = Napi::Object::New(env);
  holder.Set("tensor", ext);
  return holder;
}

std::shared_ptr<FifoGate::Ticket> FifoGate::Take(const std::shared_ptr<FifoGate>& gate) {
  std::lock_guard<std::mutex> lock(gate->mu_);
  return std::make_shared<Ticket>(gate, gate->next_++);
}

void FifoGate::Ticket::Wait(const RunContext& ctx) {
  std::unique_lock<std::mutex> lock(gate_->mu_);
  while (gate_->serving_ != number_) {
    if (ctx.cancelled()) {
      lock.unlock();
      Finish();
      ctx.ThrowIfCancelled();
    }
    gate_->cv_.wait_for(lock, std::chrono::milliseconds(20));
  }
}

void FifoGate::Ticket::Finish() {
  std::lock_guard<std::mutex> lock(gate_->mu_);
  if (finished_) return;
  finished_ = true;
  gate_->finished_early_.insert(number_);
  while (!gate_->finished_early_.empty() && *gate_->finished_early_.begin() == gate_->serving_) {
    gate_->finished_early_.erase(gate_->finished_early_.begin());
    ++gate_->serving_;
  }
  gate_->cv_.notify_all();
}

Napi::Value TensorToTypedArray(Napi::Env env, at::Tensor tensor) {
  if (!tensor.device().is_cpu()) tensor = tensor.cpu();
  if (tensor.scalar_type() == at::kBool) tensor = tensor.to(at::kByte);
  tensor = tensor.contiguous();
  const size_t nbytes = tensor.numel() * tensor.element_size();
  const size_t length = static_cast<size_t>(tensor.numel());
  const napi_typedarray_type type = TypedArrayTypeFor(tensor.scalar_type());
  if (nbytes == 0) return MakeTypedArray(env, type, 0, Napi::ArrayBuffer::New(env, 0));

  auto* holder = new at::Tensor(tensor);
  napi_value ab;
  napi_status status = napi_create_external_arraybuffer(
      env, holder->data_ptr(), nbytes,
      [](napi_env env, void*, void* hint) {
        auto* t = static_cast<at::Tensor*>(hint);
        int64_t bytes = static_cast<int64_t>(t->numel() * t->element_size());
        delete t;
        int64_t adjusted;
        napi_adjust_external_memory(env, -bytes, &adjusted);
      },
      holder, &ab);
  if (status == napi_ok) {
    int64_t adjusted;
    napi_adjust_external_memory(env, static_cast<int64_t>(nbytes), &adjusted);
    return MakeTypedArray(env, type, length, Napi::ArrayBuffer(env, ab));
  }
  // External buffers not allowed here (e.g. Electron's memory cage): copy once.
  delete holder;
  Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, nbytes);
  std::memcpy(copy.Data(), tensor.data_ptr(), nbytes);
  return MakeTypedArray(env, type, length, copy);
}

RaggedTokens BorrowedTokens::ragged() const {
  RaggedTokens t;
  t.ids = ids.data_ptr<int32_t>();
  t.offsets = offsets.data_ptr<int32_t>();
  t.type_ids = type_ids.defined() ? type_ids.data_ptr<int32_t>() : nullptr;
  t.count = offsets.numel() - 1;
  return t;
}

BorrowedTokens ReadBorrowedTokens(const Napi::CallbackInfo& info, size_t first, bool with_types) {
  Napi::Env env = info.Env();
  BorrowedTokens a;
  a.ids = CopyTypedArray1D(info[first], at::kInt, "ids");
  a.offsets = CopyTypedArray1D(info[first + 1], at::kInt, "offsets");
  if (a.offsets.numel() < 1) throw Napi::RangeError::New(env, "offsets must hold count + 1 entries (at least [0])");
  a.keep = {TensorKeeper(env, a.ids), TensorKeeper(env, a.offsets)};
  Napi::Value types = with_types ? info[first + 2] : env.Undefined();
  if (!types.IsUndefined() && !types.IsNull()) {
    a.type_ids = CopyTypedArray1D(types, at::kInt, "typeIds");
    if (a.type_ids.numel() != a.ids.numel()) throw Napi::RangeError::New(env, "typeIds must have one entry per id");
    a.keep.push_back(TensorKeeper(env, a.type_ids));
  }
  return a;
}

std::vector<std::string> ReadStringArray(const Napi::Value& value, const char* what) {
  Napi::Env env = value.Env();
  if (!value.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
  Napi::Array arr = value.As<Napi::Array>();
  std::vector<std::string> out;
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, std::string(what) + "[" + std::to_string(i) + "] must be a string");
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

std::string RequireString(const Napi::Value& value, const char* what) {
  if (!value.IsString()) throw Napi::TypeError::New(value.Env(), std::string(what) + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

int64_t RequireInt(const Napi::Value& value, const char* what, int64_t min, int64_t max) {
  Napi::Env env = value.Env();
  if (!value.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must be a number");
  double d = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d) throw Napi::TypeError::New(env, std::string(what) + " must be an integer");
  if (d < double(min) || d > double(max))
    throw Napi::RangeError::New(env, std::string(what) + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  return static_cast<int64_t>(d);
}

double OptionalNumber(const Napi::Object& obj, const char* key, double fallback) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) throw Napi::TypeError::New(obj.Env(), std::string(key) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

std::string OptionalString(const Napi::Object& obj, const char* key, const std::string& fallback) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsString()) throw Napi::TypeError::New(obj.Env(), std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace gainrag::node
