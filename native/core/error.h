// Engine errors: every failure a caller can cause is a gainrag::Error with a stable code.
// The Node layer maps the code onto the JS error's `code` property in one place
// (bindings/errors.cpp); a C++ test can catch it directly.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace gainrag {

// THE list of error codes: every code a gainrag failure can carry, C++ or TypeScript. lib/errors.ts
// repeats it (TypeScript cannot include this file) and test/error-contract.test.ts parses both and
// fails when they differ. Append new codes here and there; never reuse or rename one.
#define GAINRAG_ERROR_CODES(X)                                                        \
  X(kInvalidArgument, "E_INVALID_ARG")  /* a bad argument or option */                \
  X(kSafetensors, "E_SAFETENSORS")      /* malformed .safetensors */                  \
  X(kModelConfig, "E_MODEL_CONFIG")     /* config.json missing/invalid/unsupported */ \
  X(kShape, "E_SHAPE")                  /* tensor/matrix shape mismatch */            \
  X(kOutOfMemory, "E_OOM")              /* an allocation failed */                    \
  X(kCancelled, "E_CANCELLED")          /* the call was aborted */                    \
  X(kIo, "E_IO")                        /* a file system call failed (errno kept) */  \
  X(kIndex, "E_INDEX")                  /* a dense index is invalid or misused */     \
  X(kData, "E_DATA")                    /* an input file holds bad data (file:line) */\
  X(kUnsupported, "E_UNSUPPORTED")      /* valid but not implemented */               \
  X(kTorch, "E_TORCH")                  /* LibTorch rejected an operation */          \
  X(kInternal, "E_INTERNAL")            /* a bug: nothing the caller did */           \
  X(kNoAddon, "E_NO_ADDON")             /* the native addon cannot be loaded (JS) */  \
  X(kTokenizer, "E_TOKENIZER")          /* tokenizer files missing/invalid (JS) */    \
  X(kLocked, "E_LOCKED")                /* another live process writes that output */\
  X(kDisposed, "E_DISPOSED")            /* the object was disposed before the call */\
  X(kModelNotFound, "E_MODEL_NOT_FOUND") /* no such model dir / hub repo / file (JS) */\
  X(kUnauthorized, "E_UNAUTHORIZED")    /* the hub refused: gated or private (JS) */  \
  X(kNetwork, "E_NETWORK")              /* the hub could not be reached or broke off */\
  X(kBusy, "E_BUSY")                    /* a server's queue is full: retry after a while */

enum class ErrorCode {
#define GAINRAG_ERROR_ENUM(name, text) name,
  GAINRAG_ERROR_CODES(GAINRAG_ERROR_ENUM)
#undef GAINRAG_ERROR_ENUM
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
