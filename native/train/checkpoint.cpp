#include "train/checkpoint.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "io/tensor_bridge.h"
#include "models/config.h"

namespace fs = std::filesystem;

namespace gainrag {

const std::vector<std::string>& TokenizerFileNames() {
  static const std::vector<std::string> names = {
      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model",
      "vocab.txt",      "added_tokens.json",     "merges.txt",              "vocab.json"};
  return names;
}

void SaveTensorMap(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;
  std::vector<TensorBytes> out;
  keep.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    keep.push_back(c);
    out.push_back({name, FromScalarType(c.scalar_type()), c.sizes().vec(), c.data_ptr(), size_t(c.nbytes())});
  }
  WriteSafetensors(path, out, metadata);
}

std::map<std::string, at::Tensor> LoadTensorMap(const std::string& path, std::map<std::string, std::string>* metadata) {
  auto file = SafetensorsFile::Open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& info : file->tensors()) {
    at::Tensor view = at::from_blob(const_cast<uint8_t*>(file->data(info)), info.shape,
                                    at::TensorOptions().dtype(ToScalarType(info.dtype)));
    out[info.name] = view.clone();  // owned: the mapping closes when `file` goes
  }
  if (metadata) *metadata = file->metadata();
  return out;
}

void CopyFile(const std::string& from, const std::string& to) {
  std::string text = ReadTextFile(from);
  WriteFileAtomically(to, text.data(), text.size());
}

namespace {

std::string UniqueSibling(const std::string& dir, const char* tag) {
  static std::atomic<uint64_t> counter{0};
  fs::path p(dir);
  std::string base = p.filename().string();
  if (base.empty()) base = p.parent_path().filename().string();
  fs::path parent = fs::absolute(p).lexically_normal().parent_path();
  if (p.filename().empty()) parent = parent.parent_path();
  return (parent / ("." + base + tag + std::to_string(::getpid()) + "-" + std::to_string(counter++))).string();
}

}  // namespace

void PublishDirectory(const std::string& dir, bool replace, const std::function<void(const std::string&)>& fill) {
  std::error_code ec;
  fs::path target = fs::absolute(fs::path(dir)).lexically_normal();
  if (target.filename().empty()) target = target.parent_path();
  fs::create_directories(target.parent_path(), ec);
  GR_CHECK(!ec, kIo, "cannot create ", target.parent_path().string(), ": ", ec.message());
  const std::string tmp = UniqueSibling(target.string(), ".tmp-");
  fs::create_directories(tmp, ec);
  GR_CHECK(!ec, kIo, "cannot create ", tmp, ": ", ec.message());
  try {
    fill(tmp);
    if (replace || !fs::exists(target)) {
      std::string old;
      if (fs::exists(target)) {
        old = UniqueSibling(target.string(), ".old-");
        fs::rename(target, old, ec);
        GR_CHECK(!ec, kIo, "cannot move ", target.string(), " aside: ", ec.message());
      }
      fs::rename(tmp, target, ec);
      GR_CHECK(!ec, kIo, "cannot rename ", tmp, " to ", target.string(), ": ", ec.message());
      if (!old.empty()) fs::remove_all(old, ec);
      return;
    }
    GR_CHECK(fs::is_directory(target), kIo, target.string(), " exists and is not a directory");
    fs::remove(target / "config.json", ec);
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(tmp)) files.push_back(entry.path());
    for (const auto& f : files) {
      if (f.filename() == "config.json") continue;
      fs::rename(f, target / f.filename(), ec);
      GR_CHECK(!ec, kIo, "cannot move ", f.string(), " into ", target.string(), ": ", ec.message());
    }
    if (fs::exists(fs::path(tmp) / "config.json")) {
      fs::rename(fs::path(tmp) / "config.json", target / "config.json", ec);
      GR_CHECK(!ec, kIo, "cannot move config.json into ", target.string(), ": ", ec.message());
    }
    fs::remove_all(tmp, ec);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace gainrag
