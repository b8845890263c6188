// The one place where C++ failures become JS errors. Workers capture the in-flight exception
// as a NativeFailure on the worker thread; the JS thread turns it into an Error with `code`.
#pragma once

#include <napi.h>

#include <string>

#include "core/error.h"

namespace gainrag::node {

struct NativeFailure {
  std::string code;     // "E_SHAPE", "E_OOM", ...
  std::string message;
};

// Call inside a catch(...) block: classifies the current exception.
NativeFailure CaptureCurrentException();

Napi::Error MakeError(Napi::Env env, const NativeFailure& failure);
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message);
Napi::Error MakeError(Napi::Env env, ErrorCode code, const std::string& message);

// Runs `fn` on the JS thread and rethrows any C++ failure as a JS error with a code.
template <typename Fn>
auto Guard(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw MakeError(env, CaptureCurrentException());
  }
}

}  // namespace gainrag::node
