#include "bindings/async_task.h"

#include <mutex>

namespace gainrag::node {

Napi::Function CancelToken::Define(Napi::Env env) {
  return DefineClass(env, "CancelToken",
                     {InstanceMethod<&CancelToken::Cancel>("cancel"),
                      InstanceAccessor<&CancelToken::IsCancelled>("cancelled")});
}

CancelToken::CancelToken(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CancelToken>(info) {}

Napi::Value CancelToken::Cancel(const Napi::CallbackInfo& info) {
  flag_->store(true);
  return info.Env().Undefined();
}

Napi::Value CancelToken::IsCancelled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), flag_->load());
}

TaskControls ReadControls(const Napi::Value& value) {
  TaskControls controls;
  if (!value.IsObject()) return controls;
  Napi::Object obj = value.As<Napi::Object>();
  Napi::Value cancel = obj.Get("cancel");
  if (cancel.IsObject()) {
    auto* token = Napi::ObjectWrap<CancelToken>::Unwrap(cancel.As<Napi::Object>());
    if (token) controls.cancel = token->flag();
  }
  Napi::Value progress = obj.Get("onProgress");
  if (progress.IsFunction()) controls.on_progress = progress.As<Napi::Function>();
  return controls;
}

namespace {

struct ProgressEvent {
  int64_t done = 0;
  int64_t total = 0;
  std::string note;
  // Set on the last event only: settles the Promise. It travels through the same FIFO queue as
  // the progress events, so every progress callback runs before the Promise settles.
  std::function<void(Napi::Env)> settle;
};

class Task : public Napi::AsyncWorker {
 public:
  Task(Napi::Env env, const char* name, TaskWork work, TaskFinish finish, const TaskControls& controls,
       const std::vector<Napi::Value>& keep_alive)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        finish_(std::move(finish)),
        cancel_(controls.cancel) {
    for (const auto& v : keep_alive)
      if (v.IsObject()) kept_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    if (!controls.on_progress.IsEmpty()) {
      progress_ = Napi::ThreadSafeFunction::New(env, controls.on_progress, "gainrag.progress", 0, 1);
      has_progress_ = true;
    }
  }

  ~Task() override {
    if (has_progress_) progress_.Release();
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    RunContext::ProgressFn progress;
    if (has_progress_) {
      progress = [this](int64_t done, int64_t total, const std::string& note) {
        auto* ev = new ProgressEvent{done, total, note, nullptr};
        if (progress_.NonBlockingCall(ev, Deliver) != napi_ok) delete ev;
      };
    }
    RunContext ctx(cancel_, progress);
    try {
      work_(ctx);
    } catch (...) {
      failure_ = CaptureCurrentException();
      failed_ = true;
    }
  }

  void OnOK() override {
    Napi::Promise::Deferred deferred = deferred_;
    TaskFinish finish = finish_;
    bool failed = failed_;
    NativeFailure failure = failure_;
    // Inputs stay referenced until the Promise settles, which may be after this worker is gone.
    auto kept = std::make_shared<std::vector<Napi::ObjectReference>>(std::move(kept_));
    auto settle = [deferred, finish, failed, failure, kept](Napi::Env env) {
      Napi::HandleScope scope(env);
      if (failed) {
        deferred.Reject(MakeError(env, failure).Value());
        return;
      }
      (void)kept;
      try {
        deferred.Resolve(finish ? finish(env) : env.Undefined());
      } catch (const Napi::Error& e) {
        deferred.Reject(e.Value());
      } catch (...) {
        deferred.Reject(MakeError(env, CaptureCurrentException()).Value());
      }
    };
    if (has_progress_) {
      auto* ev = new ProgressEvent{0, 0, "", settle};
      if (progress_.NonBlockingCall(ev, Deliver) == napi_ok) return;
      delete ev;
    }
    settle(Env());
  }

  static void Deliver(Napi::Env env, Napi::Function fn, ProgressEvent* e) {
    if (e->settle) {
      e->settle(env);
    } else {
      // A throwing progress callback must not take down the task.
      try {
        fn.Call({Napi::Number::New(env, double(e->done)), Napi::Number::New(env, double(e->total)),
                 Napi::String::New(env, e->note)});
      } catch (...) {
      }
    }
    delete e;
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  TaskWork work_;
  TaskFinish finish_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::vector<Napi::ObjectReference> kept_;
  Napi::ThreadSafeFunction progress_;
  bool has_progress_ = false;
  bool failed_ = false;
  NativeFailure failure_;
};

}  // namespace

Napi::Promise StartTask(Napi::Env env, const char* name, TaskWork work, TaskFinish finish,
                        const TaskControls& controls, const std::vector<Napi::Value>& keep_alive) {
  auto* task = new Task(env, name, std::move(work), std::move(finish), controls, keep_alive);
  Napi::Promise promise = task->Promise();
  task->Queue();  // deletes itself after OnOK/OnError
  return promise;
}

}  // namespace gainrag::node
