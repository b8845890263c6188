#include "bindings/errors.h"

#include <c10/util/Exception.h>

#include <filesystem>
#include <new>
#include <stdexcept>
#include <utility>

#include "core/error.h"

namespace gainrag::node {

namespace {
NativeFailure Failure(ErrorCode code, std::string message) { return {ErrorCodeName(code), std::move(message)}; }
}  // namespace

NativeFailure CaptureCurrentException() {
  try {
    throw;
  } catch (const gainrag::Error& e) {
    return Failure(e.code(), e.what());
  } catch (const c10::OutOfMemoryError& e) {
    return Failure(ErrorCode::kOutOfMemory, e.what_without_backtrace());
  } catch (const c10::Error& e) {
    // LibTorch shape/type checks surface here; keep the message, drop the C++ backtrace.
    // LibTorch 1.13's CPU allocator reports a failed allocation as a plain c10::Error (no
    // OutOfMemoryError subtype), so this is the one place where a message decides a code: it
    // turns the text into E_OOM once, and every caller above branches on the code only.
    std::string msg = e.what_without_backtrace();
    const bool oom = msg.find("out of memory") != std::string::npos || msg.find("DefaultCPUAllocator: can't allocate") != std::string::npos;
    return Failure(oom ? ErrorCode::kOutOfMemory : ErrorCode::kTorch, msg);
  } catch (const std::bad_alloc&) {
    return Failure(ErrorCode::kOutOfMemory, "out of memory");
  } catch (const std::filesystem::filesystem_error& e) {
    return Failure(ErrorCode::kIo, e.what());
  } catch (const std::out_of_range& e) {
    // std::stoll/stoul and .at() outside gainrag's own checks: bad numbers in an input file.
    return Failure(ErrorCode::kData, std::string("value out of range: ") + e.what());
  } catch (const std::invalid_argument& e) {
    return Failure(ErrorCode::kData, std::string("invalid value: ") + e.what());
  } catch (const std::exception& e) {
    return Failure(ErrorCode::kInternal, e.what());
  } catch (...) {
    return Failure(ErrorCode::kInternal, "unknown native exception");
  }
}

Napi::Error MakeError(Napi::Env env, ErrorCode code, const std::string& message) {
  return MakeError(env, std::string(ErrorCodeName(code)), message);
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
