// JS class DenseIndex (raw; lib/retrieval/dense-index.ts is the typed wrapper).
// Every data-moving call runs off the JS thread. Searches share the index; add/setDevice take it
// exclusively, so a search never sees a half-grown storage. Inputs are copied on the JS thread
// (marshal.h: a detached ArrayBuffer must not free memory under a worker). Adds run in call
// order (a FifoGate ticket taken at call time), so consecutive ids follow the calls, not lock
// order. dispose() drops this object's reference: running tasks hold their own, so memory is
// freed when the last of them settles; later calls fail with E_DISPOSED.
#include <mutex>
#include <shared_mutex>

#include "bindings/addon_data.h"
#include "bindings/async_task.h"
#include "bindings/marshal.h"
#include "core/error.h"
#include "core/tensor_util.h"
#include "index/dense_index.h"
#include "index/faiss_ann.h"
#include "index/index_writer.h"

namespace gainrag::node {
namespace {

// A Float32Array of whole rows of `dim` values, borrowed (no copy); RangeError otherwise, checked
// before anything is copied.
at::Tensor BorrowRows(Napi::Env env, const Napi::Value& value, int64_t dim, const char* name) {
  at::Tensor flat = BorrowTypedArray1D(value, at::kFloat, name);
  if (flat.numel() % dim != 0)
    throw Napi::RangeError::New(env, std::string(name) + " length " + std::to_string(flat.numel()) + " is not a multiple of dim " + std::to_string(dim));
  return flat;
}

struct IndexHolder {
  std::shared_ptr<DenseIndex> index;
  std::shared_mutex mutex;
  std::shared_ptr<FifoGate> add_order = std::make_shared<FifoGate>();
  std::atomic<int64_t> size{0};  // read by the JS getter without taking the lock
  std::shared_ptr<FaissAnn> ann;  // approximate search (ann.faiss), when attached
};

const char* DTypeString(at::ScalarType t) {
  return t == at::kHalf ? "float16" : t == at::kBFloat16 ? "bfloat16" : "float32";
}

Napi::Object ControlsArg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() && info[i].IsObject() ? info[i].As<Napi::Object>() : Napi::Object::New(info.Env());
}

class DenseIndexWrap : public Napi::ObjectWrap<DenseIndexWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DenseIndex",
                       {InstanceAccessor<&DenseIndexWrap::Size>("size"),
                        InstanceAccessor<&DenseIndexWrap::Dim>("dim"),
                        InstanceAccessor<&DenseIndexWrap::DType>("dtype"),
                        InstanceAccessor<&DenseIndexWrap::MetricGetter>("metric"),
                        InstanceAccessor<&DenseIndexWrap::Device>("device"),
                        InstanceMethod<&DenseIndexWrap::Add>("add"),
                        InstanceMethod<&DenseIndexWrap::AddNpy>("addNpy"),
                        InstanceMethod<&DenseIndexWrap::Search>("search"),
                        InstanceMethod<&DenseIndexWrap::AttachAnn>("attachAnn"),
                        InstanceMethod<&DenseIndexWrap::SearchAnn>("searchAnn"),
                        InstanceMethod<&DenseIndexWrap::Save>("save"),
                        InstanceMethod<&DenseIndexWrap::SaveFiles>("saveFiles"),
                        InstanceMethod<&DenseIndexWrap::SetDevice>("setDevice"),
                        InstanceMethod<&DenseIndexWrap::Row>("row"),
                        InstanceMethod<&DenseIndexWrap::Dispose>("dispose"),
                        InstanceAccessor<&DenseIndexWrap::Disposed>("disposed")});
  }

  explicit DenseIndexWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DenseIndexWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "DenseIndex is created by createDenseIndex() or openDenseIndex()");
    holder_ = std::make_shared<IndexHolder>();
    holder_->index = *info[0].As<Napi::External<std::shared_ptr<DenseIndex>>>().Data();
    holder_->size = holder_->index->size();
  }

  static Napi::Object New(Napi::Env env, std::shared_ptr<DenseIndex> index) {
    auto ext = Napi::External<std::shared_ptr<DenseIndex>>::New(
        env, new std::shared_ptr<DenseIndex>(std::move(index)),
        [](Napi::Env, std::shared_ptr<DenseIndex>* p) { delete p; });
    return GetAddonData(env).dense_index.New({ext});
  }

 private:
  // Every method starts here: E_DISPOSED once dispose() ran.
  const std::shared_ptr<IndexHolder>& Live(Napi::Env env) const {
    if (!holder_) throw MakeError(env, "E_DISPOSED", "this DenseIndex was disposed");
    return holder_;
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    holder_.reset();
    return info.Env().Undefined();
  }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !holder_); }
  Napi::Value Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(Live(info.Env())->size.load())); }
  Napi::Value Dim(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(Live(info.Env())->index->dim())); }
  Napi::Value DType(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), DTypeString(Live(info.Env())->index->dtype()));
  }
  Napi::Value MetricGetter(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), MetricName(Live(info.Env())->index->metric()));
  }
  Napi::Value Device(const Napi::CallbackInfo& info) {
    std::shared_lock lock(Live(info.Env())->mutex);
    return Napi::String::New(info.Env(), holder_->index->device().str());
  }

  // add(vectors: Float32Array, ids?: BigInt64Array, controls?)
  Napi::Value Add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto holder = Live(env);
    const int64_t dim = holder->index->dim();
    // Check the length before copying (a wrong call should not cost a copy).
    at::Tensor view = BorrowRows(env, info[0], dim, "vectors");
    const int64_t n = view.numel() / dim;
    at::Tensor ids;
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) ids = CopyTypedArray(info[1], at::kLong, {n}, "ids");
    TaskControls controls = ReadControls(ControlsArg(info, 2));
    at::Tensor vectors = view.clone().view({n, dim});
    auto turn = FifoGate::Take(holder->add_order);
    return StartTask(
        env, "gainrag.DenseIndex.add",
        [holder, vectors, ids, turn](const RunContext& ctx) {
          FifoGate::Turn my_turn(*turn, ctx);
          std::unique_lock lock(holder->mutex);
          holder->index->Add(vectors, ids, ctx);
          holder->size = holder->index->size();
        },
        nullptr, controls);
  }

  // addNpy(path, controls?): appends the rows of a float32/float16 .npy file with consecutive ids.
  Napi::Value AddNpy(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = RequireString(info[0], "path");
    auto holder = Live(env);
    auto added = std::make_shared<int64_t>(0);
    TaskControls controls = ReadControls(ControlsArg(info, 1));
    auto turn = FifoGate::Take(holder->add_order);
    return StartTask(
        env, "gainrag.DenseIndex.addNpy",
        [holder, path, added, turn](const RunContext& ctx) {
          at::Tensor m = MapNpyMatrix(path);
          FifoGate::Turn my_turn(*turn, ctx);
          std::unique_lock lock(holder->mutex);
          holder->index->Add(m, at::Tensor(), ctx);
          holder->size = holder->index->size();
          *added = m.size(0);
        },
        [added](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, double(*added)); },
        controls);
  }

  // search(queries: Float32Array, k, {corpusBlock?, queryBlock?, queryGroup?}, controls?) -> {ids, scores}
  Napi::Value Search(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto holder = Live(env);
    const int64_t dim = holder->index->dim();
    at::Tensor flat = BorrowRows(env, info[0], dim, "queries");
    const int64_t size = holder->size.load();
    if (size == 0) throw MakeError(env, "E_INDEX", "cannot search an empty index");
    const int64_t k = RequireInt(info[1], "k", 1, size);
    SearchOptions options;
    if (info.Length() > 2 && info[2].IsObject()) {
      Napi::Object o = info[2].As<Napi::Object>();
      options.corpus_block = static_cast<int64_t>(OptionalNumber(o, "corpusBlock", 0));
      options.query_block = static_cast<int64_t>(OptionalNumber(o, "queryBlock", 0));
      options.query_group = static_cast<int64_t>(OptionalNumber(o, "queryGroup", 0));
      if (options.corpus_block < 0 || options.query_block < 0 || options.query_group < 0)
        throw Napi::RangeError::New(env, "corpusBlock, queryBlock and queryGroup must be positive");
    }
    TaskControls controls = ReadControls(ControlsArg(info, 3));
    at::Tensor queries = flat.clone().view({flat.numel() / dim, dim});  // Q x dim: small next to the corpus
    auto result = std::make_shared<SearchResult>();
    return StartTask(
        env, "gainrag.DenseIndex.search",
        [holder, queries, k, options, result](const RunContext& ctx) {
          std::shared_lock lock(holder->mutex);
          *result = holder->index->Search(queries, k, ctx, options);
        },
        [result](Napi::Env env) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("ids", TensorToTypedArray(env, result->ids));
          out.Set("scores", TensorToTypedArray(env, result->scores));
          return out;
        },
        controls);
  }

  // attachAnn(file) -> FAISS class name: later searchAnn calls go through this FAISS index.
  Napi::Value AttachAnn(const Napi::CallbackInfo& info) {
    std::string file = RequireString(info[0], "file");
    auto holder = Live(info.Env());
    auto type = std::make_shared<std::string>();
    return StartTask(
        info.Env(), "gainrag.DenseIndex.attachAnn",
        [holder, file, type](const RunContext&) {
          std::unique_lock lock(holder->mutex);
          holder->ann = FaissAnn::Open(file, holder->index);
          *type = holder->ann->type();
        },
        [type](Napi::Env env) -> Napi::Value { return Napi::String::New(env, *type); });
  }

  // searchAnn(queries, k, {nprobe?, efSearch?}, controls?) -> {ids, scores}
  Napi::Value SearchAnn(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto holder = Live(env);
    const int64_t dim = holder->index->dim();
    at::Tensor flat = BorrowRows(env, info[0], dim, "queries");
    const int64_t k = RequireInt(info[1], "k", 1, std::max<int64_t>(1, holder->size.load()));
    AnnSearchOptions options;
    if (info.Length() > 2 && info[2].IsObject()) {
      Napi::Object o = info[2].As<Napi::Object>();
      options.nprobe = static_cast<int64_t>(OptionalNumber(o, "nprobe", 0));
      options.ef_search = static_cast<int64_t>(OptionalNumber(o, "efSearch", 0));
    }
    TaskControls controls = ReadControls(ControlsArg(info, 3));
    at::Tensor queries = flat.clone().view({flat.numel() / dim, dim});
    auto result = std::make_shared<SearchResult>();
    return StartTask(
        env, "gainrag.DenseIndex.searchAnn",
        [holder, queries, k, options, result](const RunContext& ctx) {
          std::shared_lock lock(holder->mutex);
          GR_CHECK(holder->ann != nullptr, kIndex, "this index has no FAISS index attached");
          GR_CHECK(holder->ann->size() == holder->index->size(), kIndex, "rows were added after the FAISS index was "
                   "built: it covers ", holder->ann->size(), " of ", holder->index->size(), " rows");
          *result = holder->ann->Search(queries, k, options, ctx);
        },
        [result](Napi::Env env) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("ids", TensorToTypedArray(env, result->ids));
          out.Set("scores", TensorToTypedArray(env, result->scores));
          return out;
        },
        controls);
  }

  Napi::Value SaveImpl(const Napi::CallbackInfo& info, bool files_only) {
    std::string dir = RequireString(info[0], "dir");
    auto holder = Live(info.Env());
    return StartTask(
        info.Env(), "gainrag.DenseIndex.save",
        [holder, dir, files_only](const RunContext& ctx) {
          std::shared_lock lock(holder->mutex);
          if (files_only) holder->index->SaveFiles(dir, ctx);
          else holder->index->Save(dir, ctx);
        },
        nullptr, ReadControls(ControlsArg(info, 1)));
  }
  Napi::Value Save(const Napi::CallbackInfo& info) { return SaveImpl(info, false); }
  Napi::Value SaveFiles(const Napi::CallbackInfo& info) { return SaveImpl(info, true); }

  Napi::Value SetDevice(const Napi::CallbackInfo& info) {
    std::string name = RequireString(info[0], "device");
    auto holder = Live(info.Env());
    return Guard(info.Env(), [&] {
      at::Device device = ParseDevice(name);
      std::unique_lock lock(holder->mutex);
      holder->index->SetDevice(device);
      return info.Env().Undefined();
    });
  }

  Napi::Value Row(const Napi::CallbackInfo& info) {
    auto holder = Live(info.Env());
    const int64_t r = RequireInt(info[0], "row", 0, std::max<int64_t>(0, holder->size.load() - 1));
    return Guard(info.Env(), [&] {
      std::shared_lock lock(holder->mutex);
      return TensorToTypedArray(info.Env(), holder->index->Row(r));
    });
  }

  std::shared_ptr<IndexHolder> holder_;
};


// new DenseIndexWriter(dir, dim, dtype, metric): streams rows into an index directory.
// append/appendNpy/finish run off the JS thread, one at a time (a mutex orders them).
class DenseIndexWriterWrap : public Napi::ObjectWrap<DenseIndexWriterWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DenseIndexWriter",
                       {InstanceAccessor<&DenseIndexWriterWrap::Count>("count"),
                        InstanceMethod<&DenseIndexWriterWrap::Append>("append"),
                        InstanceMethod<&DenseIndexWriterWrap::AppendNpy>("appendNpy"),
                        InstanceMethod<&DenseIndexWriterWrap::AppendFile>("appendFile"),
                        InstanceMethod<&DenseIndexWriterWrap::Finish>("finish"),
                        InstanceMethod<&DenseIndexWriterWrap::Abort>("abort")});
  }

  explicit DenseIndexWriterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DenseIndexWriterWrap>(info) {
    Napi::Env env = info.Env();
    const std::string dir = RequireString(info[0], "dir");
    const int64_t dim = RequireInt(info[1], "dim", 1, 1 << 20);
    const std::string dtype = RequireString(info[2], "dtype");
    const std::string metric = RequireString(info[3], "metric");
    state_ = std::make_shared<State>();
    state_->writer = Guard(env, [&] {
      return std::make_shared<DenseIndexWriter>(dir, dim, ParseFloatType(dtype), ParseMetric(metric));
    });
  }

 private:
  struct State {
    std::shared_ptr<DenseIndexWriter> writer;
    std::mutex mutex;
    std::atomic<int64_t> count{0};
  };

  Napi::Value Count(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(state_->count.load())); }

  Napi::Value Append(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t dim = state_->writer->dim();
    at::Tensor flat = BorrowRows(env, info[0], dim, "vectors");
    TaskControls controls = ReadControls(ControlsArg(info, 1));
    const int64_t n = flat.numel() / dim;
    at::Tensor ids = OptionalIds(info, 2, n);
    at::Tensor vectors = flat.clone().view({n, dim});  // detach-safe copy (marshal.h)
    auto state = state_;
    return StartTask(
        env, "gainrag.DenseIndexWriter.append",
        [state, vectors, ids](const RunContext& ctx) {
          std::lock_guard lock(state->mutex);
          AbortWhenAsked cleanup{state->writer.get()};
          state->writer->Append(vectors, ctx, ids);
          state->count = state->writer->count();
        },
        nullptr, controls);
  }

  Napi::Value AppendNpy(const Napi::CallbackInfo& info) {
    std::string path = RequireString(info[0], "path");
    auto state = state_;
    auto added = std::make_shared<int64_t>(0);
    return StartTask(
        info.Env(), "gainrag.DenseIndexWriter.appendNpy",
        [state, path, added](const RunContext& ctx) {
          at::Tensor m = MapNpyMatrix(path);
          std::lock_guard lock(state->mutex);
          AbortWhenAsked cleanup{state->writer.get()};
          state->writer->Append(m, ctx);
          state->count = state->writer->count();
          *added = m.size(0);
        },
        [added](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, double(*added)); },
        ReadControls(ControlsArg(info, 1)));
  }

  static at::Tensor OptionalIds(const Napi::CallbackInfo& info, size_t i, int64_t n) {
    if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return at::Tensor();
    return CopyTypedArray(info[i], at::kLong, {n}, "ids");
  }

  // appendFile(path, offset, rows, dtype, ids?, controls?): rows stored inside another file.
  Napi::Value AppendFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = RequireString(info[0], "path");
    const int64_t offset = RequireInt(info[1], "offset", 0, int64_t{1} << 53);
    const int64_t rows = RequireInt(info[2], "rows", 0, int64_t{1} << 40);
    const std::string dtype_name = RequireString(info[3], "dtype");
    at::ScalarType dtype = Guard(env, [&] { return ParseFloatType(dtype_name); });
    at::Tensor ids = OptionalIds(info, 4, rows);
    auto state = state_;
    return StartTask(
        env, "gainrag.DenseIndexWriter.appendFile",
        [state, path, offset, rows, dtype, ids](const RunContext& ctx) {
          std::lock_guard lock(state->mutex);
          AbortWhenAsked cleanup{state->writer.get()};
          state->writer->AppendFileRows(path, static_cast<uint64_t>(offset), rows, dtype, ids, ctx);
          state->count = state->writer->count();
        },
        nullptr, ReadControls(ControlsArg(info, 5)));
  }

  Napi::Value Finish(const Napi::CallbackInfo& info) {
    auto state = state_;
    return StartTask(
        info.Env(), "gainrag.DenseIndexWriter.finish",
        [state](const RunContext&) {
          std::lock_guard lock(state->mutex);
          AbortWhenAsked cleanup{state->writer.get()};
          state->writer->Finish();
        },
        [state](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, double(state->count.load())); });
  }

  Napi::Value Abort(const Napi::CallbackInfo& info) {
    // Never waits on the JS thread for a running append (seconds on a large one): the request
    // stops it at its next chunk, and whichever side holds the writer last removes the files.
    state_->writer->RequestAbort();
    std::unique_lock lock(state_->mutex, std::try_to_lock);
    if (lock.owns_lock()) state_->writer->Abort();
    return info.Env().Undefined();
  }

  // Run by a task holding the writer: completes an abort requested while it ran.
  struct AbortWhenAsked {
    DenseIndexWriter* writer;
    ~AbortWhenAsked() {
      if (writer->abort_requested()) writer->Abort();
    }
  };

  std::shared_ptr<State> state_;
};

// createDenseIndex(dim, dtype, metric)
Napi::Value CreateDenseIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t dim = RequireInt(info[0], "dim", 1, 1 << 20);
  const std::string dtype = RequireString(info[1], "dtype");
  const std::string metric = RequireString(info[2], "metric");
  auto index = Guard(env, [&] { return std::make_shared<DenseIndex>(dim, ParseFloatType(dtype), ParseMetric(metric)); });
  return DenseIndexWrap::New(env, index);
}

// openDenseIndex(dir, verify?: 'full' | 'header')
Napi::Value OpenDenseIndex(const Napi::CallbackInfo& info) {
  std::string dir = RequireString(info[0], "dir");
  std::string mode = info.Length() > 1 && !info[1].IsUndefined() ? RequireString(info[1], "verify") : "full";
  if (mode != "full" && mode != "header") throw Napi::RangeError::New(info.Env(), "verify must be 'full' or 'header', got '" + mode + "'");
  const DenseIndex::Verify verify = mode == "full" ? DenseIndex::Verify::kFull : DenseIndex::Verify::kHeader;
  auto result = std::make_shared<std::shared_ptr<DenseIndex>>();
  return StartTask(
      info.Env(), "gainrag.openDenseIndex", [dir, verify, result](const RunContext&) { *result = DenseIndex::Open(dir, verify); },
      [result](Napi::Env env) -> Napi::Value { return DenseIndexWrap::New(env, *result); });
}

// buildFaissAnn(indexDir, outFile, factory, trainSize, controls?) -> rows added
Napi::Value BuildFaissAnnJs(const Napi::CallbackInfo& info) {
  AnnBuildOptions options;
  const std::string dir = RequireString(info[0], "indexDir");
  const std::string file = RequireString(info[1], "outFile");
  options.factory = RequireString(info[2], "factory");
  options.train_size = RequireInt(info[3], "trainSize", 0, int64_t{1} << 40);
  auto rows = std::make_shared<int64_t>(0);
  return StartTask(
      info.Env(), "gainrag.buildFaissAnn",
      [dir, file, options, rows](const RunContext& ctx) { *rows = BuildFaissAnn(dir, file, options, ctx); },
      [rows](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, double(*rows)); },
      ReadControls(ControlsArg(info, 4)));
}

// npyInfo(path) -> {rows, dim, dtype}: header check only (the data stays mapped, unread).
Napi::Value NpyInfo(const Napi::CallbackInfo& info) {
  std::string path = RequireString(info[0], "path");
  return Guard(info.Env(), [&] {
    at::Tensor m = MapNpyMatrix(path);
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("rows", Napi::Number::New(info.Env(), double(m.size(0))));
    out.Set("dim", Napi::Number::New(info.Env(), double(m.size(1))));
    out.Set("dtype", Napi::String::New(info.Env(), DTypeString(m.scalar_type())));
    return out;
  });
}

}  // namespace

void InitDenseIndex(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DenseIndexWrap::Define(env);
  GetAddonData(env).dense_index = Napi::Persistent(ctor);
  exports.Set("DenseIndex", ctor);
  exports.Set("createDenseIndex", Napi::Function::New<CreateDenseIndex>(env, "createDenseIndex"));
  exports.Set("openDenseIndex", Napi::Function::New<OpenDenseIndex>(env, "openDenseIndex"));
  exports.Set("DenseIndexWriter", DenseIndexWriterWrap::Define(env));
  exports.Set("npyInfo", Napi::Function::New<NpyInfo>(env, "npyInfo"));
  exports.Set("buildFaissAnn", Napi::Function::New<BuildFaissAnnJs>(env, "buildFaissAnn"));
}

}  // namespace gainrag::node
