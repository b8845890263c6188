// Data exchange across the JS/native boundary.
//  in:  a typed array's memory is viewed as an at::Tensor (at::from_blob, no copy) only by calls
//       that finish on the JS thread. Async calls copy their inputs on the JS thread before the
//       task is queued (CopyTypedArray, ReadBorrowedTokens): N-API cannot pin an ArrayBuffer, and
//       a caller that transfers or detaches it (structuredClone(buf, {transfer}), buf.transfer())
//       frees or moves the memory under a running worker; keeping the JS object referenced does
//       not prevent that. Inputs of async calls are token ids, queries or rows the index stores
//       anyway, so the copy is one memcpy of data the call then reads many times.
//  out: a native tensor is handed to JS as an external ArrayBuffer whose finalizer frees the
//       tensor; where a runtime forbids external buffers (Electron), we fall back to one copy.
#pragma once

#include <ATen/ATen.h>
#include <napi.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/run_context.h"

#include "core/batching.h"

namespace gainrag::node {

// Checks that `value` is a typed array of `expected` element type (by name in errors) and
// returns a CPU tensor over its memory with the given shape (numel must match).
at::Tensor BorrowTypedArray(const Napi::Value& value, at::ScalarType expected, std::vector<int64_t> shape,
                            const char* what);

// Borrow without a declared shape: a 1-D tensor of the array's length.
at::Tensor BorrowTypedArray1D(const Napi::Value& value, at::ScalarType expected, const char* what);

// The same checks, but the result owns a copy of the bytes (for async calls; see above).
// A detached ArrayBuffer is a TypeError in every variant.
at::Tensor CopyTypedArray(const Napi::Value& value, at::ScalarType expected, std::vector<int64_t> shape,
                          const char* what);
at::Tensor CopyTypedArray1D(const Napi::Value& value, at::ScalarType expected, const char* what);

// A JS object that keeps `tensor` alive until it is garbage-collected. Putting it in a task's
// keep_alive list keeps a copy alive until the task settles, for callers that hold raw pointers.
Napi::Value TensorKeeper(Napi::Env env, at::Tensor tensor);

// Tickets that make async calls on one object run in call order: Take() on the JS thread,
// Wait() in the worker (blocks until every earlier ticket finished), Finish() when done. A
// ticket whose work never waits is finished by its destructor, so it cannot block later ones.
// Safe with libuv's FIFO work queue: an earlier ticket's work always starts before a later one.
class FifoGate {
 public:
  class Ticket {
   public:
    Ticket(std::shared_ptr<FifoGate> gate, uint64_t number) : gate_(std::move(gate)), number_(number) {}
    ~Ticket() { Finish(); }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    // Waits for this ticket's turn; a cancellation while waiting gives up the turn and throws
    // Error(kCancelled).
    void Wait(const RunContext& ctx);
    void Finish();

   private:
    std::shared_ptr<FifoGate> gate_;
    uint64_t number_;
    bool finished_ = false;
  };
  static std::shared_ptr<Ticket> Take(const std::shared_ptr<FifoGate>& gate);
  // Waits for the ticket's turn and passes it on when the scope ends (also on an exception).
  class Turn {
   public:
    Turn(Ticket& ticket, const RunContext& ctx) : ticket_(ticket) { ticket_.Wait(ctx); }
    ~Turn() { ticket_.Finish(); }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

   private:
    Ticket& ticket_;
  };

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ = 0;     // next ticket to hand out
  uint64_t serving_ = 0;  // lowest ticket not finished
  std::set<uint64_t> finished_early_;  // finished tickets above serving_ (cancelled while queued)
};

// Returns a typed array (Float32Array, Int32Array, BigInt64Array, Uint16Array for 16-bit
// floats, ...) over the tensor's memory. Non-contiguous or non-CPU tensors are made contiguous
// CPU tensors first (one copy, by necessity).
Napi::Value TensorToTypedArray(Napi::Env env, at::Tensor tensor);

// A token batch from JS: ids and Arrow-style offsets (and optional type ids) as Int32Arrays,
// copied into native tensors on the JS thread (token ids are small next to the work done on
// them). `keep` holds keepers of those copies (TensorKeeper), so callers that only keep
// ragged() pointers stay valid while the task runs when they pass `keep` to StartTask.
struct BorrowedTokens {
  at::Tensor ids, offsets, type_ids;
  std::vector<Napi::Value> keep;
  RaggedTokens ragged() const;
};

// Reads (ids, offsets) from info[first], info[first + 1], and with `with_types` optional typeIds
// from info[first + 2]. Offsets are not checked here: callers validate them (ValidateRagged).
BorrowedTokens ReadBorrowedTokens(const Napi::CallbackInfo& info, size_t first = 0, bool with_types = true);

// Reads a JS array of strings (TypeError naming `what` otherwise).
std::vector<std::string> ReadStringArray(const Napi::Value& value, const char* what);

// Argument checks on the JS thread.
std::string RequireString(const Napi::Value& value, const char* what);
int64_t RequireInt(const Napi::Value& value, const char* what, int64_t min, int64_t max);
double OptionalNumber(const Napi::Object& obj, const char* key, double fallback);
std::string OptionalString(const Napi::Object& obj, const char* key, const std::string& fallback);

}  // namespace gainrag::node
