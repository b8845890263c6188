#include "io/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/json.h"

namespace gainrag {
namespace {

struct DTypeEntry { DType dtype; const char* name; size_t size; };
constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1}, {DType::kU8, "U8", 1}, {DType::kBool, "BOOL", 1},
};

// The format caps headers at 100 MB; a bigger claimed length is corruption, not a big model.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > UINT64_MAX / a) return true;
  *out = a * b;
  return false;
}

std::string ReadText(const std::string& path) {
  RequireRegularFile(path);  // an ifstream on a FIFO blocks until a writer appears
  std::ifstream in(path, std::ios::binary);
  GR_CHECK(in.good(), kIo, "cannot open ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Whether anything exists at `path` (stat, no open: opening a FIFO blocks). A FIFO or device
// found here is then rejected by MappedFile::Open with a clear E_IO.
bool IsFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode);
}

}  // namespace

const char* DTypeName(DType dtype) {
  for (const auto& e : kDTypes) if (e.dtype == dtype) return e.name;
  return "?";
}
size_t DTypeSize(DType dtype) {
  for (const auto& e : kDTypes) if (e.dtype == dtype) return e.size;
  return 0;
}
bool ParseDType(const std::string& name, DType* out) {
  for (const auto& e : kDTypes)
    if (name == e.name) { *out = e.dtype; return true; }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t FirstNonFinite(DType dtype, const uint8_t* data, int64_t numel) {
  // A value is NaN or Inf exactly when all its exponent bits are set. Blocks are scanned
  // without an early exit (so the compiler vectorises the loop); only a block that has a hit
  // is searched again for its first one.
  auto scan = [&](auto word, uint64_t mask_bits) -> int64_t {
    using W = decltype(word);
    const W mask = static_cast<W>(mask_bits);
    constexpr int64_t kBlock = 4096;
    W buf[kBlock];
    for (int64_t b = 0; b < numel; b += kBlock) {
      const int64_t len = std::min(kBlock, numel - b);
      std::memcpy(buf, data + b * int64_t(sizeof(W)), size_t(len) * sizeof(W));  // alignment-safe
      bool hit = false;
      for (int64_t i = 0; i < len; ++i) hit |= (buf[i] & mask) == mask;
      if (!hit) continue;
      for (int64_t i = 0; i < len; ++i)
        if ((buf[i] & mask) == mask) return b + i;
    }
    return -1;
  };
  switch (dtype) {
    case DType::kF64: return scan(uint64_t{0}, 0x7FF0000000000000ULL);
    case DType::kF32: return scan(uint32_t{0}, 0x7F800000ULL);
    case DType::kF16: return scan(uint16_t{0}, 0x7C00ULL);
    case DType::kBF16: return scan(uint16_t{0}, 0x7F80ULL);
    default: return -1;
  }
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::Open(const std::string& path, MappedFile::Mode mode) {
  auto st = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  st->file_ = MappedFile::Open(path, mode);
  const size_t size = st->file_->size();
  const uint8_t* bytes = st->file_->data();
  GR_CHECK(size >= 8, kSafetensors, path, ": file is ", size, " bytes, too short for a safetensors header");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian u64
  GR_CHECK(header_len <= kMaxHeaderBytes, kSafetensors, path, ": header length ", header_len, " exceeds the 100 MB limit");
  GR_CHECK(header_len <= size - 8, kSafetensors, path, ": header length ", header_len,
           " runs past the end of the file (", size, " bytes)");
  const size_t data_begin = 8 + header_len;
  const size_t data_size = size - data_begin;

  json::Value header;
  try {
    header = json::Parse(std::string_view(reinterpret_cast<const char*>(bytes + 8), header_len));
  } catch (const std::invalid_argument& e) {
    GR_FAIL(kSafetensors, path, ": header is not valid JSON (", e.what(), ")");
  }
  GR_CHECK(header.is_object(), kSafetensors, path, ": header must be a JSON object, got ", header.kind_name());

  for (const auto& [name, entry] : header.as_object()) {
    if (name == "__metadata__") {
      GR_CHECK(entry.is_object(), kSafetensors, path, ": __metadata__ must be an object");
      for (const auto& [k, v] : entry.as_object()) {
        GR_CHECK(v.is_string(), kSafetensors, path, ": __metadata__.", k, " must be a string");
        st->metadata_[k] = v.as_string();
      }
      continue;
    }
    GR_CHECK(entry.is_object(), kSafetensors, path, ": entry '", name, "' must be an object");
    const json::Value* dtype = entry.find("dtype");
    const json::Value* shape = entry.find("shape");
    const json::Value* offsets = entry.find("data_offsets");
    GR_CHECK(dtype && dtype->is_string(), kSafetensors, path, ": tensor '", name, "' has no dtype string");
    GR_CHECK(shape && shape->is_array(), kSafetensors, path, ": tensor '", name, "' has no shape array");
    GR_CHECK(offsets && offsets->is_array() && offsets->as_array().size() == 2, kSafetensors, path,
             ": tensor '", name, "' needs data_offsets [begin, end]");
    TensorInfo info;
    info.name = name;
    GR_CHECK(ParseDType(dtype->as_string(), &info.dtype), kSafetensors, path, ": tensor '", name,
             "' has unknown dtype '", dtype->as_string(), "'");
    uint64_t numel = 1;
    for (const auto& d : shape->as_array()) {
      GR_CHECK(d.is_integer() && d.as_int() >= 0, kSafetensors, path, ": tensor '", name,
               "' has a shape entry that is not a non-negative integer");
      GR_CHECK(!MulOverflows(numel, static_cast<uint64_t>(d.as_int()), &numel), kSafetensors, path,
               ": tensor '", name, "' shape overflows");
      info.shape.push_back(d.as_int());
    }
    const auto& off = offsets->as_array();
    GR_CHECK(off[0].is_integer() && off[1].is_integer() && off[0].as_int() >= 0 && off[1].as_int() >= off[0].as_int(),
             kSafetensors, path, ": tensor '", name, "' has invalid data_offsets");
    uint64_t begin = off[0].as_int(), end = off[1].as_int();
    GR_CHECK(end <= data_size, kSafetensors, path, ": tensor '", name, "' data_offsets [", begin, ", ", end,
             "] run past the end of the data section (", data_size, " bytes)");
    uint64_t expect = 0;
    GR_CHECK(!MulOverflows(numel, DTypeSize(info.dtype), &expect) && expect == end - begin, kSafetensors, path,
             ": tensor '", name, "' spans ", end - begin, " bytes but shape and dtype need ", expect);
    info.offset = data_begin + begin;
    info.nbytes = end - begin;
    GR_CHECK(st->by_name_.count(name) == 0, kSafetensors, path, ": duplicate tensor '", name, "'");
    st->by_name_[name] = st->tensors_.size();
    st->tensors_.push_back(std::move(info));
  }

  // Tensors must not overlap (the format also requires them to be contiguous; we only demand
  // disjointness, which is what memory safety needs).
  std::vector<const TensorInfo*> order;
  for (const auto& t : st->tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto* prev = order[i - 1];
    GR_CHECK(order[i]->offset >= prev->offset + prev->nbytes || order[i]->nbytes == 0 || prev->nbytes == 0,
             kSafetensors, path, ": tensors '", prev->name, "' and '", order[i]->name, "' overlap");
  }
  return st;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

std::shared_ptr<WeightFiles> WeightFiles::Open(const std::string& path) {
  auto wf = std::shared_ptr<WeightFiles>(new WeightFiles());
  auto add_shard = [&](const std::string& file) {
    auto shard = SafetensorsFile::Open(file, MappedFile::Mode::kOwned);
    for (const auto& t : shard->tensors()) {
      const int64_t bad = FirstNonFinite(t.dtype, shard->data(t), t.numel());
      GR_CHECK(bad < 0, kSafetensors, file, ": tensor '", t.name, "' holds NaN or Inf (element ", bad,
               "); the checkpoint is corrupt or diverged");
      wf->shard_of_[t.name] = wf->shards_.size();
    }
    wf->shards_.push_back(shard);
  };
  const bool is_file = path.size() > 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0;
  if (is_file) {
    add_shard(path);
    return wf;
  }
  const std::string single = path + "/model.safetensors";
  const std::string index = path + "/model.safetensors.index.json";
  if (IsFile(single)) {
    add_shard(single);
  } else if (IsFile(index)) {
    json::Value doc;
    try {
      doc = json::Parse(ReadText(index));
    } catch (const std::invalid_argument& e) {
      GR_FAIL(kSafetensors, index, ": ", e.what());
    }
    const json::Value* map = doc.find("weight_map");
    GR_CHECK(map && map->is_object(), kSafetensors, index, ": missing weight_map object");
    std::map<std::string, size_t> shard_index;
    for (const auto& [name, file] : map->as_object()) {
      GR_CHECK(file.is_string() && file.as_string().find('/') == std::string::npos, kSafetensors, index,
               ": weight_map entry for '", name, "' must be a file name in the same directory");
      if (!shard_index.count(file.as_string())) {
        shard_index[file.as_string()] = wf->shards_.size();
        add_shard(path + "/" + file.as_string());
      }
      GR_CHECK(wf->shard_of_.count(name) && wf->shard_of_[name] == shard_index[file.as_string()], kSafetensors,
               index, ": tensor '", name, "' is not in shard ", file.as_string());
    }
  } else {
    GR_FAIL(kSafetensors, "no model.safetensors or model.safetensors.index.json in ", path,
            " (PyTorch .bin checkpoints are not loaded: convert them to safetensors)");
  }
  return wf;
}

bool WeightFiles::has(const std::string& name) const { return shard_of_.count(name) > 0; }

const TensorInfo& WeightFiles::info(const std::string& name) const {
  auto it = shard_of_.find(name);
  GR_CHECK(it != shard_of_.end(), kShape, "checkpoint has no tensor '", name, "'");
  return *shards_[it->second]->find(name);
}

const uint8_t* WeightFiles::data(const std::string& name) const {
  auto it = shard_of_.find(name);
  GR_CHECK(it != shard_of_.end(), kShape, "checkpoint has no tensor '", name, "'");
  const auto& shard = shards_[it->second];
  return shard->data(*shard->find(name));
}

std::shared_ptr<MappedFile> WeightFiles::file_of(const std::string& name) const {
  auto it = shard_of_.find(name);
  GR_CHECK(it != shard_of_.end(), kShape, "checkpoint has no tensor '", name, "'");
  return shards_[it->second]->file();
}

std::vector<std::string> WeightFiles::names() const {
  std::vector<std::string> out;
  for (const auto& kv : shard_of_) out.push_back(kv.first);
  return out;
}

void WriteSafetensors(const std::string& path, const std::vector<TensorBytes>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      if (it != metadata.begin()) header += ",";
      header += json::Quote(it->first) + ":" + json::Quote(it->second);
    }
    header += "}";
    first = false;
  }
  size_t offset = 0;
  for (const auto& t : tensors) {
    if (!first) header += ",";
    first = false;
    header += json::Quote(t.name) + ":{\"dtype\":\"" + DTypeName(t.dtype) + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.nbytes) + "]}";
    offset += t.nbytes;
  }
  header += "}";
  while ((8 + header.size()) % 8 != 0) header += ' ';  // keep tensor data 8-byte aligned
  std::string blob;
  blob.reserve(8 + header.size() + offset);
  uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) blob += static_cast<char>((len >> (8 * i)) & 0xFF);
  blob += header;
  for (const auto& t : tensors) blob.append(static_cast<const char*>(t.data), t.nbytes);
  WriteFileAtomically(path, blob.data(), blob.size());
}

}  // namespace gainrag
