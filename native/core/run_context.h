// What a long native job needs from its caller, without knowing about Node: a cancellation
// flag checked between batches, and a progress sink. The Node layer backs these with an
// AbortSignal and a thread-safe function; a C++ test can pass nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/error.h"

namespace gainrag {

class RunContext {
 public:
  using ProgressFn = std::function<void(int64_t done, int64_t total, const std::string& note)>;

  RunContext() : cancelled_(std::make_shared<std::atomic<bool>>(false)) {}
  RunContext(std::shared_ptr<std::atomic<bool>> cancelled, ProgressFn progress)
      : cancelled_(cancelled ? std::move(cancelled) : std::make_shared<std::atomic<bool>>(false)),
        progress_(std::move(progress)) {}

  bool cancelled() const { return cancelled_->load(std::memory_order_relaxed); }
  // Call between batches: throws Error(kCancelled) once the caller asked to stop.
  void ThrowIfCancelled() const {
    if (cancelled()) throw Error(ErrorCode::kCancelled, "operation was cancelled");
  }
  void Progress(int64_t done, int64_t total, const std::string& note = "") const {
    if (progress_) progress_(done, total, note);
  }

 private:
  std::shared_ptr<std::atomic<bool>> cancelled_;
  ProgressFn progress_;
};

}  // namespace gainrag
