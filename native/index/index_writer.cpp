#include "index/index_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"

namespace gainrag {
namespace {

constexpr int64_t kChunk = 65536;

void WriteAll(FILE* f, const void* data, size_t size, const std::string& what) {
  if (size > 0 && std::fwrite(data, 1, size, f) != size) GR_FAIL(kIo, "cannot write ", what, ": ", std::strerror(errno));
}

void CloseSynced(FILE*& f, const std::string& what) {
  if (f == nullptr) return;
  bool ok = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  ok = std::fclose(f) == 0 && ok;
  f = nullptr;
  GR_CHECK(ok, kIo, "cannot write ", what, ": ", std::strerror(errno));
}

}  // namespace

DenseIndexWriter::DenseIndexWriter(const std::string& dir, int64_t dim, at::ScalarType dtype, Metric metric)
    : dir_(dir), dim_(dim), dtype_(dtype), metric_(metric) {
  DenseIndex check(dim, dtype, metric);  // validates dim and dtype
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  GR_CHECK(!ec, kIo, "cannot create directory ", dir, ": ", ec.message());
  const std::string suffix = ".tmp-" + std::to_string(::getpid());
  vectors_tmp_ = dir + "/vectors.bin" + suffix;
  ids_tmp_ = dir + "/ids.bin" + suffix;
  vectors_ = std::fopen(vectors_tmp_.c_str(), "wb");
  GR_CHECK(vectors_ != nullptr, kIo, "cannot create ", vectors_tmp_, ": ", std::strerror(errno));
  ids_ = std::fopen(ids_tmp_.c_str(), "wb");
  if (ids_ == nullptr) {
    Abort();
    GR_FAIL(kIo, "cannot create ", ids_tmp_, ": ", std::strerror(errno));
  }
}

DenseIndexWriter::~DenseIndexWriter() { Abort(); }

void DenseIndexWriter::ThrowIfAborted() const {
  if (abort_requested()) throw Error(ErrorCode::kCancelled, "index writer for " + dir_ + " was aborted");
}

void DenseIndexWriter::Append(const at::Tensor& vectors, const RunContext& ctx, const at::Tensor& given_ids) {
  ThrowIfAborted();
  GR_CHECK(vectors_ != nullptr, kIo, "index writer for ", dir_, " is closed");
  GR_CHECK(vectors.dim() == 2, kShape, "vectors must be a [n, dim] matrix");
  GR_CHECK(vectors.size(1) == dim_, kShape, "vectors have dimension ", vectors.size(1), " but the index has ", dim_);
  const int64_t n = vectors.size(0);
  // Validate everything first (all-or-nothing), converting into one staging buffer per chunk.
  const int64_t stage_rows = std::min(n, kChunk);
  if (!staging_.defined() || staging_.size(0) < stage_rows)
    staging_ = at::empty({stage_rows, dim_}, at::TensorOptions().dtype(dtype_));
  for (int64_t b = 0; b < n; b += kChunk) {
    ctx.ThrowIfCancelled();
    ThrowIfAborted();
    const int64_t e = std::min(n, b + kChunk);
    ConvertRows(vectors.slice(0, b, e), staging_.slice(0, 0, e - b), metric_, count_ + b);
  }
  std::vector<int64_t> ids(static_cast<size_t>(n));
  if (given_ids.defined()) {
    GR_CHECK(given_ids.scalar_type() == at::kLong && given_ids.numel() == n, kShape, "ids must be ", n, " int64 values, got ",
             given_ids.numel());
    at::Tensor c = given_ids.contiguous();
    std::copy(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + n, ids.begin());
    for (int64_t i = 0; i < n; ++i)
      GR_CHECK(ids[i] >= 0, kIndex, "id ", ids[i], " is negative (ids must be >= 0; -1 means no result)");
  } else {
    for (int64_t i = 0; i < n; ++i) ids[i] = count_ + i;
  }
  const long vec_pos = std::ftell(vectors_);
  const long ids_pos = std::ftell(ids_);
  Checksum sum_vectors = sum_vectors_, sum_ids = sum_ids_;  // committed only if the call succeeds
  try {
    for (int64_t b = 0; b < n; b += kChunk) {
      ThrowIfAborted();
      const int64_t e = std::min(n, b + kChunk);
      at::Tensor chunk = staging_.slice(0, 0, e - b);
      // Converted twice for inputs over one chunk: cheaper than holding them all converted.
      if (n > kChunk) ConvertRows(vectors.slice(0, b, e), chunk, metric_, count_ + b);
      const size_t bytes = static_cast<size_t>(chunk.numel() * chunk.element_size());
      WriteAll(vectors_, chunk.data_ptr(), bytes, vectors_tmp_);
      sum_vectors.Update(chunk.data_ptr(), bytes);
      ctx.Progress(e, n, "write");
    }
    WriteAll(ids_, ids.data(), ids.size() * 8, ids_tmp_);
    sum_ids.Update(ids.data(), ids.size() * 8);
  } catch (...) {
    // Roll back to the state before this call.
    std::fflush(vectors_);
    std::fflush(ids_);
    if (::ftruncate(::fileno(vectors_), vec_pos) != 0 || ::ftruncate(::fileno(ids_), ids_pos) != 0) Abort();
    else {
      std::fseek(vectors_, vec_pos, SEEK_SET);
      std::fseek(ids_, ids_pos, SEEK_SET);
    }
    throw;
  }
  count_ += n;
  sum_vectors_ = sum_vectors;
  sum_ids_ = sum_ids;
}

void DenseIndexWriter::AppendFileRows(const std::string& path, uint64_t offset, int64_t rows, at::ScalarType dtype,
                                      const at::Tensor& ids, const RunContext& ctx) {
  GR_CHECK(dtype == at::kFloat || dtype == at::kHalf, kInvalidArgument, "file rows must be float32 or float16");
  GR_CHECK(rows >= 0, kInvalidArgument, "rows must be >= 0");
  GR_CHECK(!ids.defined() || ids.numel() == rows, kShape, "ids must be ", rows, " int64 values, got ", ids.numel());
  auto file = MappedFile::Open(path);
  const uint64_t row_bytes = static_cast<uint64_t>(dim_) * c10::elementSize(dtype);
  const uint64_t need = static_cast<uint64_t>(rows) * row_bytes;
  GR_CHECK(offset <= file->size() && need <= file->size() - offset, kData, path, ": ", rows, " x ", dim_,
           " vectors at byte ", offset, " run past the end of the file (", file->size(), " bytes)");
  // The data offset inside a container need not be aligned for the element type: copy each
  // chunk into an aligned buffer instead of viewing the mapping.
  at::Tensor chunk = at::empty({std::min<int64_t>(rows, kChunk), dim_}, at::TensorOptions().dtype(dtype));
  for (int64_t b = 0; b < rows; b += kChunk) {
    ctx.ThrowIfCancelled();
    const int64_t e = std::min(rows, b + kChunk);
    at::Tensor part = chunk.slice(0, 0, e - b);
    std::memcpy(part.data_ptr(), file->data() + offset + static_cast<uint64_t>(b) * row_bytes, (e - b) * row_bytes);
    Append(part, RunContext(), ids.defined() ? ids.slice(0, b, e) : at::Tensor());
    ctx.Progress(e, rows, "import");
  }
}

void DenseIndexWriter::Finish() {
  ThrowIfAborted();
  GR_CHECK(vectors_ != nullptr, kIo, "index writer for ", dir_, " is closed");
  try {
    CloseSynced(vectors_, vectors_tmp_);
    CloseSynced(ids_, ids_tmp_);
    GR_CHECK(std::rename(vectors_tmp_.c_str(), (dir_ + "/vectors.bin").c_str()) == 0, kIo, "cannot rename ", vectors_tmp_,
             ": ", std::strerror(errno));
    GR_CHECK(std::rename(ids_tmp_.c_str(), (dir_ + "/ids.bin").c_str()) == 0, kIo, "cannot rename ", ids_tmp_, ": ",
             std::strerror(errno));
  } catch (...) {
    Abort();
    throw;
  }
  WriteIndexManifest(dir_, dim_, dtype_, count_, metric_, sum_vectors_.Hex(), sum_ids_.Hex());
}

void DenseIndexWriter::Abort() {
  if (vectors_ != nullptr) std::fclose(vectors_);
  if (ids_ != nullptr) std::fclose(ids_);
  if (vectors_ != nullptr || ids_ != nullptr) {
    std::remove(vectors_tmp_.c_str());
    std::remove(ids_tmp_.c_str());
  }
  vectors_ = nullptr;
  ids_ = nullptr;
}

}  // namespace gainrag
