// Checkpoint directories. A checkpoint is a Hugging Face model directory (config.json,
// model.safetensors, tokenizer files) plus, for resuming, optimizer.safetensors and
// trainer_state.json. Writes never leave a half-written checkpoint that looks complete:
// everything goes into a sibling temporary directory that is renamed into place at the end.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace gainrag {

// Files copied verbatim from the source model directory when present.
const std::vector<std::string>& TokenizerFileNames();

// Writes `tensors` (converted to contiguous CPU tensors of their own dtype) as safetensors.
void SaveTensorMap(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                   const std::map<std::string, std::string>& metadata = {});
// Reads every tensor of a safetensors file into owned CPU tensors; metadata into `metadata`.
std::map<std::string, at::Tensor> LoadTensorMap(const std::string& path,
                                                std::map<std::string, std::string>* metadata = nullptr);

// Builds a directory through `fill(tmp_dir)` and publishes it as `dir`:
//  - replace = true: `dir` is replaced as a whole (a previous `dir` is moved aside first and
//    removed after the rename, so a crash leaves either the old or the new directory);
//  - replace = false: files are moved into an existing `dir` one by one, config.json last and
//    removed first, so an interrupted save never shows a config.json beside stale weights.
void PublishDirectory(const std::string& dir, bool replace, const std::function<void(const std::string&)>& fill);

void CopyFile(const std::string& from, const std::string& to);

}  // namespace gainrag
