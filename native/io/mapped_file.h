// Read-only views of whole files. Index matrices are memory-mapped, never read into heap
// memory, so an index larger than RAM still works through the page cache. Model weights are
// loaded into memory the process owns instead (Mode::kOwned): a mapping dies with SIGBUS when
// someone truncates the file in place (`cp new.safetensors model.safetensors`), and a model is
// used long after it is loaded. Mapped index files are checked (CheckUnchanged) before each
// use instead, which turns the in-place rewrite into an error rather than a crash.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>

namespace gainrag {

enum class ErrorCode;

class MappedFile {
 public:
  enum class Mode { kMapped, kOwned };
  // Throws Error(kIo) when the file cannot be opened, read or mapped, or is not a regular file
  // (a FIFO or a device is rejected before it is opened, so it cannot block the call).
  static std::shared_ptr<MappedFile> Open(const std::string& path, Mode mode = Mode::kMapped);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool owned() const { return mode_ == Mode::kOwned; }

  // For a mapped file: true while the file behind the mapping still has the size and
  // modification time it had at open (fstat on the descriptor kept open for this). An owned
  // file is always intact.
  bool Unchanged() const;
  // Error(`code`) naming the file when Unchanged() is false.
  void CheckUnchanged(ErrorCode code) const;

 private:
  MappedFile() = default;
  std::string path_;
  Mode mode_ = Mode::kMapped;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;  // kept open (mapped mode) so that Unchanged() sees the mapped inode
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  timespec mtime_{};
};

// Throws Error(kIo) unless `path` names a regular file (stat, no open: a FIFO never blocks).
void RequireRegularFile(const std::string& path);

// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
// reader never sees a half-written file under the final name.
void WriteFileAtomically(const std::string& path, const void* bytes, size_t size);

}  // namespace gainrag
