// Read-only memory mapping of a whole file. Weights and index matrices are mapped, never read
// into heap memory, so a model or an index larger than RAM still works through the page cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace gainrag {

class MappedFile {
 public:
  // Throws Error(kIo) when the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
// reader never sees a half-written file under the final name.
void WriteFileAtomically(const std::string& path, const void* bytes, size_t size);

}  // namespace gainrag
