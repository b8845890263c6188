// JS class SafetensorsFile: header metadata, and each tensor as a typed array over the mapped
// file (no copy; the array keeps the mapping alive).
#include "bindings/addon_data.h"
#include "bindings/async_task.h"
#include "bindings/marshal.h"
#include "io/safetensors.h"
#include "io/tensor_bridge.h"

namespace gainrag::node {
namespace {

class SafetensorsFileWrap : public Napi::ObjectWrap<SafetensorsFileWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SafetensorsFile",
                       {InstanceAccessor<&SafetensorsFileWrap::Path>("path"),
                        InstanceMethod<&SafetensorsFileWrap::Tensors>("tensors"),
                        InstanceMethod<&SafetensorsFileWrap::Metadata>("metadata"),
                        InstanceMethod<&SafetensorsFileWrap::Tensor>("tensor")});
  }

  explicit SafetensorsFileWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SafetensorsFileWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "SafetensorsFile is created by openSafetensors(path)");
    file_ = *info[0].As<Napi::External<std::shared_ptr<SafetensorsFile>>>().Data();
  }

 private:
  Napi::Value Path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), file_->path()); }

  Napi::Value Tensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto& tensors = file_->tensors();
    Napi::Array out = Napi::Array::New(env, tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", t.name);
      o.Set("dtype", DTypeName(t.dtype));
      Napi::Array shape = Napi::Array::New(env, t.shape.size());
      for (size_t d = 0; d < t.shape.size(); ++d) shape.Set(uint32_t(d), Napi::Number::New(env, double(t.shape[d])));
      o.Set("shape", shape);
      o.Set("byteOffset", Napi::Number::New(env, double(t.offset)));
      o.Set("byteLength", Napi::Number::New(env, double(t.nbytes)));
      out.Set(uint32_t(i), o);
    }
    return out;
  }

  Napi::Value Metadata(const Napi::CallbackInfo& info) {
    Napi::Object out = Napi::Object::New(info.Env());
    for (const auto& [k, v] : file_->metadata()) out.Set(k, v);
    return out;
  }

  Napi::Value Tensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = RequireString(info[0], "name");
    const TensorInfo* t = file_->find(name);
    if (!t) throw MakeError(env, "E_SHAPE", file_->path() + " has no tensor '" + name + "'");
    return Guard(env, [&] {
      auto keep = file_->file();
      at::Tensor view = at::from_blob(const_cast<uint8_t*>(file_->data(*t)), t->shape,
                                      [keep](void*) mutable { keep.reset(); },
                                      at::TensorOptions().dtype(ToScalarType(t->dtype)));
      return TensorToTypedArray(env, view);
    });
  }

  std::shared_ptr<SafetensorsFile> file_;
};

Napi::Value OpenSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = RequireString(info[0], "path");
  auto result = std::make_shared<std::shared_ptr<SafetensorsFile>>();
  return StartTask(
      env, "gainrag.openSafetensors", [path, result](const RunContext&) { *result = SafetensorsFile::Open(path); },
      [result](Napi::Env env) -> Napi::Value {
        auto ext = Napi::External<std::shared_ptr<SafetensorsFile>>::New(
            env, new std::shared_ptr<SafetensorsFile>(*result),
            [](Napi::Env, std::shared_ptr<SafetensorsFile>* p) { delete p; });
        return GetAddonData(env).safetensors_file.New({ext});
      });
}

}  // namespace

void InitSafetensors(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = SafetensorsFileWrap::Define(env);
  GetAddonData(env).safetensors_file = Napi::Persistent(ctor);
  exports.Set("SafetensorsFile", ctor);
  exports.Set("openSafetensors", Napi::Function::New<OpenSafetensors>(env, "openSafetensors"));
}

}  // namespace gainrag::node
