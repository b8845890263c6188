// Zero-copy data exchange across the JS/native boundary.
//  in:  a typed array's memory is viewed as an at::Tensor (at::from_blob, no copy); the caller
//       keeps the JS object referenced (StartTask keep_alive) while native code reads it.
//  out: a native tensor is handed to JS as an external ArrayBuffer whose finalizer frees the
//       tensor; where a runtime forbids external buffers (Electron), we fall back to one copy.
#pragma once

#include <ATen/ATen.h>
#include <napi.h>

#include <string>
#include <vector>

#include "core/batching.h"

namespace gainrag::node {

// Checks that `value` is a typed array of `expected` element type (by name in errors) and
// returns a CPU tensor over its memory with the given shape (numel must match).
at::Tensor BorrowTypedArray(const Napi::Value& value, at::ScalarType expected, std::vector<int64_t> shape,
                            const char* what);

// Borrow without a declared shape: a 1-D tensor of the array's length.
at::Tensor BorrowTypedArray1D(const Napi::Value& value, at::ScalarType expected, const char* what);

// Returns a typed array (Float32Array, Int32Array, BigInt64Array, Uint16Array for 16-bit
// floats, ...) over the tensor's memory. Non-contiguous or non-CPU tensors are made contiguous
// CPU tensors first (one copy, by necessity).
Napi::Value TensorToTypedArray(Napi::Env env, at::Tensor tensor);

// A token batch borrowed from JS: ids and Arrow-style offsets (and optional type ids) as
// Int32Arrays. `keep` lists the JS arrays to hold referenced until the task settles.
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
