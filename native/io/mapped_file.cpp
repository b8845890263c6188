#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace gainrag {

void RequireRegularFile(const std::string& path) {
  struct stat st {};
  GR_CHECK(::stat(path.c_str(), &st) == 0, kIo, "cannot open ", path, ": ", std::strerror(errno));
  GR_CHECK(S_ISREG(st.st_mode), kIo, path, " is not a regular file (a FIFO, device or directory cannot be loaded)");
}

std::shared_ptr<MappedFile> MappedFile::Open(const std::string& path, Mode mode) {
  RequireRegularFile(path);
  // O_NONBLOCK: if the path is swapped for a FIFO between the stat and the open, the open
  // returns at once and the fstat below rejects it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  GR_CHECK(fd >= 0, kIo, "cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    GR_FAIL(kIo, path, " is not a regular file");
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->mode_ = mode;
  file->size_ = static_cast<size_t>(st.st_size);
  file->dev_ = st.st_dev;
  file->ino_ = st.st_ino;
  file->mtime_ = st.st_mtim;
  if (mode == Mode::kOwned) {
    if (file->size_ > 0) {
      // 64-byte alignment: tensors over this memory are used like mmap'd (page-aligned) ones.
      void* p = std::aligned_alloc(64, (file->size_ + 63) / 64 * 64);
      if (p == nullptr) {
        ::close(fd);
        GR_FAIL(kOutOfMemory, "cannot allocate ", file->size_, " bytes to load ", path);
      }
      file->data_ = static_cast<const uint8_t*>(p);
      size_t done = 0;
      while (done < file->size_) {
        ssize_t got = ::pread(fd, static_cast<uint8_t*>(p) + done, file->size_ - done, static_cast<off_t>(done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
          int err = got < 0 ? errno : 0;
          ::close(fd);
          GR_FAIL(kIo, "cannot read ", path, ": ", err ? std::strerror(err) : "file shrank while it was read");
        }
        done += static_cast<size_t>(got);
      }
    }
    ::close(fd);
    return file;
  }
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    int err = errno;
    if (p == MAP_FAILED) {
      ::close(fd);
      GR_FAIL(kIo, "cannot map ", path, ": ", std::strerror(err));
    }
    file->data_ = static_cast<const uint8_t*>(p);
  }
  file->fd_ = fd;
  return file;
}

bool MappedFile::Unchanged() const {
  if (mode_ == Mode::kOwned || fd_ < 0) return true;
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return false;
  return static_cast<size_t>(st.st_size) == size_ && st.st_dev == dev_ && st.st_ino == ino_ &&
         st.st_mtim.tv_sec == mtime_.tv_sec && st.st_mtim.tv_nsec == mtime_.tv_nsec;
}

void MappedFile::CheckUnchanged(ErrorCode code) const {
  if (Unchanged()) return;
  throw Error(code,
              detail::Concat(path_, " was modified in place after it was opened (size or modification time changed); "
                                    "reopen it (write replacements to a new file and rename them instead)"));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) {
    if (mode_ == Mode::kOwned) std::free(const_cast<uint8_t*>(data_));
    else ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  if (fd_ >= 0) ::close(fd_);
}

void WriteFileAtomically(const std::string& path, const void* bytes, size_t size) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  GR_CHECK(f != nullptr, kIo, "cannot create ", tmp, ": ", std::strerror(errno));
  size_t written = size == 0 ? 0 : std::fwrite(bytes, 1, size, f);
  bool ok = written == size && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    GR_FAIL(kIo, "cannot write ", path, ": ", std::strerror(err));
  }
}

}  // namespace gainrag
