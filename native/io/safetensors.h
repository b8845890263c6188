// safetensors reader (memory-mapped) and writer. Every header field is validated before any
// byte of tensor data is touched: a corrupt file is an Error(kSafetensors), never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace gainrag {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

const char* DTypeName(DType dtype);     // safetensors spelling: "F32", "BF16", ...
size_t DTypeSize(DType dtype);
bool ParseDType(const std::string& name, DType* out);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t offset = 0;  // absolute byte offset in the file
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // kMapped: data stays in the page cache (readSafetensors, checkpoints read once); kOwned:
  // read into process memory (models, which must survive the file being rewritten in place).
  static std::shared_ptr<SafetensorsFile> Open(const std::string& path,
                                               MappedFile::Mode mode = MappedFile::Mode::kMapped);

  const std::string& path() const { return file_->path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;
  const uint8_t* data(const TensorInfo& info) const { return file_->data() + info.offset; }
  const std::shared_ptr<MappedFile>& file() const { return file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// One logical checkpoint: `model.safetensors`, or shards listed by
// `model.safetensors.index.json` (`weight_map`: tensor name -> shard file).
class WeightFiles {
 public:
  // `path` is a model directory or a single .safetensors file. The weights are read into memory
  // the process owns (see MappedFile::Mode::kOwned) and every floating-point tensor is checked
  // for NaN/Inf: Error(kSafetensors) naming the tensor, rather than a model that outputs NaN.
  static std::shared_ptr<WeightFiles> Open(const std::string& path);

  bool has(const std::string& name) const;
  // Throws Error(kShape) naming the tensor when it is absent.
  const TensorInfo& info(const std::string& name) const;
  const uint8_t* data(const std::string& name) const;
  std::shared_ptr<MappedFile> file_of(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, size_t> shard_of_;
};

// Index of the first NaN/Inf element of a floating-point tensor's raw bytes, or -1 (also for
// integer dtypes). Reads the bits directly: no temporary tensor as large as the weights.
int64_t FirstNonFinite(DType dtype, const uint8_t* data, int64_t numel);

// A tensor to write: raw little-endian bytes already laid out row-major.
struct TensorBytes {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes a safetensors file atomically (temporary file + rename).
void WriteSafetensors(const std::string& path, const std::vector<TensorBytes>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace gainrag
