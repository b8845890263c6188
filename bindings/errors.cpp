#include "bindings/errors.h"

#include <c10/util/Exception.h>

#include <new>

#include "core/error.h"

namespace gainrag::node {

NativeFailure CaptureCurrentException() {
  try {
    throw;
  } catch (const gainrag::Error& e) {
    return {ErrorCodeName(e.code()), e.what()};
  } catch (const c10::OutOfMemoryError& e) {
    return {"E_OOM", e.what_without_backtrace()};
  } catch (const c10::Error& e) {
    // LibTorch shape/type checks surface here; keep the message, drop the C++ backtrace.
    std::string msg = e.what_without_backtrace();
    const bool oom = msg.find("out of memory") != std::string::npos || msg.find("DefaultCPUAllocator: can't allocate") != std::string::npos;
    return {oom ? "E_OOM" : "E_TORCH", msg};
  } catch (const std::bad_alloc&) {
    return {"E_OOM", "out of memory"};
  } catch (const std::exception& e) {
    return {"E_INTERNAL", e.what()};
  } catch (...) {
    return {"E_INTERNAL", "unknown native exception"};
  }
}

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

Napi::Error MakeError(Napi::Env env, const NativeFailure& failure) {
  return MakeError(env, failure.code, failure.message);
}

}  // namespace gainrag::node
