// The pattern every heavy call follows: validate on the JS thread, run `work` on a libuv worker
// thread, settle a Promise. Inputs stay referenced (so borrowed typed-array memory stays valid)
// until the Promise settles. Cancellation is a flag checked by the native code between batches;
// progress goes back through a thread-safe function.
#pragma once

#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bindings/errors.h"
#include "core/run_context.h"

namespace gainrag::node {

// JS class CancelToken: `cancel()` sets the flag that a running task polls.
class CancelToken : public Napi::ObjectWrap<CancelToken> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit CancelToken(const Napi::CallbackInfo& info);
  std::shared_ptr<std::atomic<bool>> flag() const { return flag_; }

 private:
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value IsCancelled(const Napi::CallbackInfo& info);
  std::shared_ptr<std::atomic<bool>> flag_ = std::make_shared<std::atomic<bool>>(false);
};

struct TaskControls {
  std::shared_ptr<std::atomic<bool>> cancel;  // may be null
  Napi::Function on_progress;                 // may be empty
};

// Reads `{cancel?: CancelToken, onProgress?: (done, total, note) => void}` from `value`.
TaskControls ReadControls(const Napi::Value& value);

using TaskWork = std::function<void(const RunContext&)>;
using TaskFinish = std::function<Napi::Value(Napi::Env)>;

// Starts the task and returns its Promise. `keep_alive` values are referenced until it settles.
Napi::Promise StartTask(Napi::Env env, const char* name, TaskWork work, TaskFinish finish,
                        const TaskControls& controls = {}, const std::vector<Napi::Value>& keep_alive = {});

}  // namespace gainrag::node
