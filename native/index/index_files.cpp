// Index directories (open / save) and .npy import.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/json.h"
#include "core/tensor_util.h"
#include "index/checksum.h"
#include "index/dense_index.h"
#include "io/safetensors.h"

namespace gainrag {
namespace {

constexpr const char* kFormat = "gainrag-dense-index";
constexpr int64_t kVersion = 1;

const char* DTypeName(at::ScalarType t) {
  return t == at::kHalf ? "float16" : t == at::kBFloat16 ? "bfloat16" : "float32";
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  GR_CHECK(in.good(), kIndex, "cannot read ", path, ": ", std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::shared_ptr<MappedFile> OpenIndexFile(const std::string& path) {
  try {
    return MappedFile::Open(path);
  } catch (const Error& e) {
    GR_FAIL(kIndex, "index file missing or unreadable: ", e.what());
  }
}

// Streams byte ranges into `path` through a temporary file, fsync and rename.
void WritePartsAtomically(const std::string& path, const std::vector<std::pair<const uint8_t*, size_t>>& parts,
                          const RunContext& ctx) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  GR_CHECK(f != nullptr, kIo, "cannot create ", tmp, ": ", std::strerror(errno));
  bool ok = true;
  try {
    constexpr size_t kStep = size_t{64} << 20;
    for (const auto& [data, size] : parts) {
      for (size_t off = 0; off < size && ok; off += kStep) {
        ctx.ThrowIfCancelled();
        const size_t len = std::min(kStep, size - off);
        ok = std::fwrite(data + off, 1, len, f) == len;
      }
    }
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  ok = ok && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const int err = errno;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    GR_FAIL(kIo, "cannot write ", path, ": ", std::strerror(err ? err : errno));
  }
}

// The manifest's own checksum: its fields in a fixed order, so editing any of them (or either
// file checksum) is detected without depending on how the JSON was formatted.
std::string ManifestChecksum(int64_t dim, const std::string& dtype, int64_t count, const std::string& metric,
                             const std::string& vectors, const std::string& ids) {
  std::ostringstream canon;
  canon << kFormat << '\n' << kVersion << '\n' << dim << '\n' << dtype << '\n' << count << '\n' << metric << '\n'
        << vectors << '\n' << ids << '\n';
  const std::string text = canon.str();
  Checksum c;
  c.Update(text.data(), text.size());
  return c.Hex();
}

// Bytes hashed per step when verifying vectors.bin (also the NaN scan granularity).
constexpr size_t kVerifyStep = size_t{64} << 20;

bool IsIndexDir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::is_empty(dir, ec) && !ec) return true;
  const auto manifest = dir / "manifest.json";
  if (!std::filesystem::is_regular_file(manifest, ec)) return false;
  return ReadSmallFile(manifest.string()).find(kFormat) != std::string::npos;
}

}  // namespace

void WriteIndexManifest(const std::string& dir, int64_t dim, at::ScalarType dtype, int64_t count, Metric metric,
                        const std::string& vectors_checksum, const std::string& ids_checksum) {
  std::ostringstream manifest;
  manifest << "{\"format\": \"" << kFormat << "\", \"version\": " << kVersion << ", \"dim\": " << dim
           << ", \"dtype\": \"" << DTypeName(dtype) << "\", \"count\": " << count << ", \"metric\": \""
           << MetricName(metric) << "\", \"checksums\": {\"vectors\": \"" << vectors_checksum << "\", \"ids\": \""
           << ids_checksum << "\", \"manifest\": \""
           << ManifestChecksum(dim, DTypeName(dtype), count, MetricName(metric), vectors_checksum, ids_checksum)
           << "\"}}\n";
  const std::string text = manifest.str();
  WriteFileAtomically(dir + "/manifest.json", text.data(), text.size());
}

std::shared_ptr<DenseIndex> DenseIndex::Open(const std::string& dir, Verify verify) {
  const std::string manifest_path = dir + "/manifest.json";
  json::Value m;
  try {
    m = json::Parse(ReadSmallFile(manifest_path));
  } catch (const std::invalid_argument& e) {
    GR_FAIL(kIndex, manifest_path, ": invalid JSON: ", e.what());
  }
  auto field = [&](const char* key) -> const json::Value& {
    const json::Value* v = m.find(key);
    GR_CHECK(v != nullptr, kIndex, manifest_path, ": missing '", key, "'");
    return *v;
  };
  GR_CHECK(field("format").is_string() && field("format").as_string() == kFormat, kIndex, manifest_path,
           ": not a gainrag dense index (format must be '", kFormat, "')");
  GR_CHECK(field("version").is_integer() && field("version").as_int() == kVersion, kIndex, manifest_path,
           ": unsupported index version (this build reads version ", kVersion, ")");
  const json::Value& dim = field("dim");
  const json::Value& count = field("count");
  GR_CHECK(dim.is_integer() && dim.as_int() > 0, kIndex, manifest_path, ": 'dim' must be a positive integer");
  GR_CHECK(count.is_integer() && count.as_int() >= 0, kIndex, manifest_path, ": 'count' must be a non-negative integer");
  GR_CHECK(field("dtype").is_string() && field("metric").is_string(), kIndex, manifest_path,
           ": 'dtype' and 'metric' must be strings");
  at::ScalarType dtype;
  Metric metric;
  try {
    dtype = ParseFloatType(field("dtype").as_string());
    metric = ParseMetric(field("metric").as_string());
  } catch (const Error& e) {
    GR_FAIL(kIndex, manifest_path, ": ", e.what());
  }
  // Checksums: absent only in manifests written before they existed.
  std::string sum_vectors, sum_ids;
  if (const json::Value* sums = m.find("checksums"); sums != nullptr && !sums->is_null()) {
    auto hex = [&](const char* key) {
      const json::Value* v = sums->is_object() ? sums->find(key) : nullptr;
      GR_CHECK(v != nullptr && v->is_string() && v->as_string().size() == 16, kIndex, manifest_path,
               ": 'checksums.", key, "' must be a 16-digit hex string");
      return v->as_string();
    };
    sum_vectors = hex("vectors");
    sum_ids = hex("ids");
    GR_CHECK(hex("manifest") == ManifestChecksum(dim.as_int(), field("dtype").as_string(), count.as_int(),
                                                 field("metric").as_string(), sum_vectors, sum_ids),
             kIndex, manifest_path, ": manifest checksum mismatch (a field such as metric, dtype or count was edited)");
  }
  auto index = std::make_shared<DenseIndex>(dim.as_int(), dtype, metric);
  const int64_t n = count.as_int();

  auto vectors = OpenIndexFile(dir + "/vectors.bin");
  const uint64_t expect = static_cast<uint64_t>(n) * static_cast<uint64_t>(dim.as_int()) * c10::elementSize(dtype);
  GR_CHECK(vectors->size() == expect, kIndex, dir, "/vectors.bin has ", vectors->size(), " bytes but the manifest (",
           n, " x ", dim.as_int(), " ", DTypeName(dtype), ") needs ", expect, (vectors->size() < expect ? " (truncated)" : ""));
  auto ids = OpenIndexFile(dir + "/ids.bin");
  GR_CHECK(ids->size() == static_cast<uint64_t>(n) * 8, kIndex, dir, "/ids.bin has ", ids->size(), " bytes but ", n,
           " ids need ", n * 8, (ids->size() < static_cast<uint64_t>(n) * 8 ? " (truncated)" : ""));

  if (!sum_ids.empty()) {
    Checksum c;
    c.Update(ids->data(), ids->size());
    GR_CHECK(c.Hex() == sum_ids, kIndex, dir, "/ids.bin does not match its checksum (edited or corrupt)");
  }
  if (verify == Verify::kFull && n > 0) {
    // One pass over the file: the checksum, and NaN/Inf rows (legacy indexes have no checksum,
    // and a NaN row would silently never be returned).
    Checksum c;
    const size_t row_bytes = static_cast<size_t>(dim.as_int()) * c10::elementSize(dtype);
    const size_t step = std::max(row_bytes, kVerifyStep / row_bytes * row_bytes);
    const DType raw = dtype == at::kHalf ? DType::kF16 : dtype == at::kBFloat16 ? DType::kBF16 : DType::kF32;
    for (size_t off = 0; off < vectors->size(); off += step) {
      const size_t len = std::min(step, vectors->size() - off);
      c.Update(vectors->data() + off, len);
      const int64_t bad = FirstNonFinite(raw, vectors->data() + off, static_cast<int64_t>(len / c10::elementSize(dtype)));
      GR_CHECK(bad < 0, kIndex, dir, "/vectors.bin row ", static_cast<int64_t>(off / row_bytes) + bad / dim.as_int(),
               " holds NaN or Inf");
    }
    GR_CHECK(sum_vectors.empty() || c.Hex() == sum_vectors, kIndex, dir,
             "/vectors.bin does not match its checksum (edited or corrupt)");
  }
  if (n > 0) {
    index->mapped_file_ = vectors;
    index->mapped_ = at::from_blob(const_cast<uint8_t*>(vectors->data()), {n, dim.as_int()},
                                   [keep = vectors](void*) mutable { keep.reset(); },
                                   at::TensorOptions().dtype(dtype));
    index->mapped_rows_ = n;
    index->ids_.resize(static_cast<size_t>(n));
    std::memcpy(index->ids_.data(), ids->data(), static_cast<size_t>(n) * 8);
    for (int64_t i = 0; i < n; ++i) {
      GR_CHECK(index->ids_[i] >= 0, kIndex, dir, "/ids.bin row ", i, " holds id ", index->ids_[i],
               " (ids must be non-negative; -1 means no result)");
      if (index->ids_[i] != i) index->ids_consecutive_ = false;
      index->max_id_ = std::max(index->max_id_, index->ids_[i]);
    }
    if (!index->ids_consecutive_) {
      std::vector<int64_t> sorted = index->ids_;
      std::sort(sorted.begin(), sorted.end());
      auto dup = std::adjacent_find(sorted.begin(), sorted.end());
      GR_CHECK(dup == sorted.end(), kIndex, dir, "/ids.bin holds id ", (dup == sorted.end() ? 0 : *dup), " twice");
      index->sorted_ids_.swap(sorted);  // reused by the duplicate check of later adds
      index->sorted_valid_ = true;
    }
  }
  return index;
}

void DenseIndex::SaveFiles(const std::string& dir, const RunContext& ctx) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  GR_CHECK(!ec, kIo, "cannot create directory ", dir, ": ", ec.message());
  if (mapped_file_) mapped_file_->CheckUnchanged(ErrorCode::kIndex);
  const size_t row_bytes = static_cast<size_t>(dim_) * c10::elementSize(dtype_);
  std::vector<std::pair<const uint8_t*, size_t>> parts;
  if (mapped_rows_ > 0) parts.emplace_back(static_cast<const uint8_t*>(mapped_.data_ptr()), mapped_rows_ * row_bytes);
  if (owned_rows_ > 0) parts.emplace_back(static_cast<const uint8_t*>(owned_.data_ptr()), owned_rows_ * row_bytes);
  Checksum sum_vectors, sum_ids;
  for (const auto& [data, size] : parts) sum_vectors.Update(data, size);
  sum_ids.Update(ids_.data(), ids_.size() * 8);
  WritePartsAtomically(dir + "/vectors.bin", parts, ctx);
  WritePartsAtomically(dir + "/ids.bin", {{reinterpret_cast<const uint8_t*>(ids_.data()), ids_.size() * 8}}, ctx);
  WriteIndexManifest(dir, dim_, dtype_, size(), metric_, sum_vectors.Hex(), sum_ids.Hex());
}

void DenseIndex::Save(const std::string& dir, const RunContext& ctx) const {
  namespace fs = std::filesystem;
  const fs::path target = fs::path(dir).lexically_normal();
  const fs::path final_path = target.has_filename() ? target : target.parent_path();
  const std::string suffix = std::to_string(::getpid());
  const fs::path tmp = final_path.string() + ".tmp-" + suffix;
  std::error_code ec;
  const bool exists = fs::exists(final_path, ec);
  // Replacing is only allowed for an existing index (or an empty directory): never wipe a
  // directory of unrelated files because of a wrong argument.
  GR_CHECK(!exists || (fs::is_directory(final_path, ec) && IsIndexDir(final_path)), kIo, dir,
           " exists and is not a gainrag index directory; refusing to replace it");
  fs::remove_all(tmp, ec);
  try {
    SaveFiles(tmp.string(), ctx);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  if (exists) {
    const fs::path old = final_path.string() + ".old-" + suffix;
    fs::rename(final_path, old, ec);
    GR_CHECK(!ec, kIo, "cannot replace ", dir, ": ", ec.message());
    fs::rename(tmp, final_path, ec);
    GR_CHECK(!ec, kIo, "cannot rename ", tmp.string(), " to ", dir, ": ", ec.message());
    fs::remove_all(old, ec);  // an opened index keeps its mapping; Linux frees it when unmapped
  } else {
    fs::rename(tmp, final_path, ec);
    GR_CHECK(!ec, kIo, "cannot rename ", tmp.string(), " to ", dir, ": ", ec.message());
  }
}

at::Tensor MapNpyMatrix(const std::string& path, std::shared_ptr<MappedFile>* keep) {
  auto file = MappedFile::Open(path);
  const uint8_t* d = file->data();
  const size_t size = file->size();
  GR_CHECK(size >= 10 && std::memcmp(d, "\x93NUMPY", 6) == 0, kIndex, path, ": not a .npy file");
  const int major = d[6];
  size_t header_len, header_start;
  if (major == 1) {
    header_len = d[8] | (size_t(d[9]) << 8);
    header_start = 10;
  } else {
    GR_CHECK((major == 2 || major == 3) && size >= 12, kIndex, path, ": unsupported .npy version ", major);
    header_len = d[8] | (size_t(d[9]) << 8) | (size_t(d[10]) << 16) | (size_t(d[11]) << 24);
    header_start = 12;
  }
  GR_CHECK(header_start + header_len <= size, kIndex, path, ": truncated .npy header");
  const std::string header(reinterpret_cast<const char*>(d + header_start), header_len);
  auto value_of = [&](const std::string& key) -> std::string {
    size_t k = header.find("'" + key + "'");
    GR_CHECK(k != std::string::npos, kIndex, path, ": .npy header has no '", key, "'");
    size_t colon = header.find(':', k);
    GR_CHECK(colon != std::string::npos, kIndex, path, ": malformed .npy header");
    size_t b = header.find_first_not_of(" ", colon + 1);
    GR_CHECK(b != std::string::npos, kIndex, path, ": malformed .npy header");
    size_t e = header[b] == '(' ? header.find(')', b) + 1 : header[b] == '\'' ? header.find('\'', b + 1) + 1
                                                                              : header.find_first_of(",}", b);
    GR_CHECK(e != std::string::npos && e > b, kIndex, path, ": malformed .npy header");
    return header.substr(b, e - b);
  };
  const std::string descr = value_of("descr");
  at::ScalarType dtype;
  if (descr == "'<f4'") dtype = at::kFloat;
  else if (descr == "'<f2'") dtype = at::kHalf;
  else GR_FAIL(kIndex, path, ": .npy dtype ", descr, " is not supported (need little-endian float32 '<f4' or float16 '<f2')");
  GR_CHECK(value_of("fortran_order") == "False", kIndex, path, ": .npy array is in Fortran order; save it in C order");
  std::string shape = value_of("shape");
  std::vector<int64_t> dims;
  for (size_t i = 1; i + 1 < shape.size();) {
    size_t j = shape.find_first_of(",)", i);
    std::string tok = shape.substr(i, j - i);
    tok.erase(0, tok.find_first_not_of(' '));
    if (!tok.empty()) {
      GR_CHECK(tok.find_first_not_of("0123456789 L") == std::string::npos, kIndex, path, ": bad .npy shape ", shape);
      // Parsed by hand: std::stoll throws an uncoded std::out_of_range on a 23-digit dimension.
      int64_t v = 0;
      size_t digits = 0;
      for (char c : tok) {
        if (c < '0' || c > '9') continue;
        GR_CHECK(v <= (INT64_MAX - 9) / 10, kIndex, path, ": .npy shape ", shape, " has a dimension too large");
        v = v * 10 + (c - '0');
        ++digits;
      }
      GR_CHECK(digits > 0, kIndex, path, ": bad .npy shape ", shape);
      dims.push_back(v);
    }
    i = j + 1;
  }
  GR_CHECK(dims.size() == 2 && dims[1] > 0, kIndex, path, ": .npy array must be 2-D [rows, dim], shape is ", shape);
  const size_t offset = header_start + header_len;
  uint64_t need = 0;
  GR_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(dims[0]), static_cast<uint64_t>(dims[1]), &need) &&
               !__builtin_mul_overflow(need, static_cast<uint64_t>(c10::elementSize(dtype)), &need),
           kIndex, path, ": .npy shape ", shape, " is too large");
  GR_CHECK(size - offset == need, kIndex, path, ": data has ", size - offset, " bytes but shape ", shape, " needs ", need,
           size - offset < need ? " (truncated)" : "");
  GR_CHECK(offset % c10::elementSize(dtype) == 0, kIndex, path, ": misaligned .npy data");
  if (keep) *keep = file;
  if (dims[0] == 0) return at::empty({0, dims[1]}, at::TensorOptions().dtype(dtype));
  return at::from_blob(const_cast<uint8_t*>(d + offset), {dims[0], dims[1]}, [file](void*) mutable { file.reset(); },
                       at::TensorOptions().dtype(dtype));
}

}  // namespace gainrag
