// Engine errors: every failure a caller can cause is a gainrag::Error with a stable code.
// The Node layer maps the code onto the JS error's `code` property in one place
// (bindings/errors.cpp); a C++ test can catch it directly.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace gainrag {

enum class ErrorCode {
  kInvalidArgument,  // E_INVALID_ARG
  kSafetensors,      // E_SAFETENSORS
  kModelConfig,      // E_MODEL_CONFIG
  kShape,            // E_SHAPE
  kOutOfMemory,      // E_OOM
  kCancelled,        // E_CANCELLED
  kIo,               // E_IO
  kIndex,            // E_INDEX
  kData,             // E_DATA
  kUnsupported,      // E_UNSUPPORTED
  kInternal,         // E_INTERNAL
};

const char* ErrorCodeName(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

namespace detail {
template <typename... Args>
std::string Concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

}  // namespace gainrag

// GR_CHECK(cond, kShape, "tensor ", name, " has ", n, " dims") — throws gainrag::Error.
#define GR_CHECK(cond, code, ...)                                                         \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      throw ::gainrag::Error(::gainrag::ErrorCode::code, ::gainrag::detail::Concat(__VA_ARGS__)); \
    }                                                                                     \
  } while (0)

#define GR_FAIL(code, ...) \
  throw ::gainrag::Error(::gainrag::ErrorCode::code, ::gainrag::detail::Concat(__VA_ARGS__))
