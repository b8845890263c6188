// importFaiss / exportFaiss: FAISS index files (native/index/faiss_io.h). Present in every build;
// without FAISS compiled in they reject with E_UNSUPPORTED (engineInfo().backends says which).
#include "bindings/addon_data.h"
#include "bindings/async_task.h"
#include "bindings/errors.h"
#include "bindings/marshal.h"
#include "core/tensor_util.h"
#include "index/faiss_io.h"

namespace gainrag::node {
namespace {

Napi::Value ControlsAt(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() && info[i].IsObject() ? info[i] : Napi::Object::New(info.Env());
}

// importFaiss(faissFile, dir, dtype, metric, ids: BigInt64Array, controls?) -> {count, dim, type}
Napi::Value ImportFaiss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string file = RequireString(info[0], "faissFile");
  const std::string dir = RequireString(info[1], "dir");
  const std::string dtype_name = RequireString(info[2], "dtype");
  const std::string metric_name = RequireString(info[3], "metric");
  at::Tensor ids = CopyTypedArray1D(info[4], at::kLong, "ids");
  const at::ScalarType dtype = Guard(env, [&] { return ParseFloatType(dtype_name); });
  const Metric metric = Guard(env, [&] { return ParseMetric(metric_name); });
  auto result = std::make_shared<FaissImportResult>();
  return StartTask(
      env, "gainrag.importFaiss",
      [file, dir, dtype, metric, ids, result](const RunContext& ctx) {
        *result = ImportFaissIndex(file, dir, dtype, metric, ids, ctx);
      },
      [result](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("count", Napi::Number::New(env, double(result->count)));
        out.Set("dim", Napi::Number::New(env, double(result->dim)));
        out.Set("type", Napi::String::New(env, result->type));
        return out;
      },
      ReadControls(ControlsAt(info, 5)));
}

// exportFaiss(indexDir, faissFile, controls?) -> BigInt64Array of the index's ids in row order
Napi::Value ExportFaiss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string dir = RequireString(info[0], "indexDir");
  const std::string file = RequireString(info[1], "faissFile");
  auto ids = std::make_shared<std::vector<int64_t>>();
  return StartTask(
      env, "gainrag.exportFaiss", [dir, file, ids](const RunContext& ctx) { *ids = ExportFaissIndex(dir, file, ctx); },
      [ids](Napi::Env env) -> Napi::Value {
        at::Tensor t = at::empty({int64_t(ids->size())}, at::TensorOptions().dtype(at::kLong));
        std::copy(ids->begin(), ids->end(), t.data_ptr<int64_t>());
        return TensorToTypedArray(env, t);
      },
      ReadControls(ControlsAt(info, 2)));
}

}  // namespace

void InitFaiss(Napi::Env env, Napi::Object exports) {
  exports.Set("importFaiss", Napi::Function::New<ImportFaiss>(env, "importFaiss"));
  exports.Set("exportFaiss", Napi::Function::New<ExportFaiss>(env, "exportFaiss"));
  exports.Set("faissAvailable", Napi::Boolean::New(env, FaissAvailable()));
}

}  // namespace gainrag::node
