// Hugging Face config.json -> typed configs. Unknown model types and missing or inconsistent
// fields are Error(kModelConfig) with the field named, before any weight is mapped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gainrag {

enum class EncoderFamily { kBert, kXlmRoberta };

struct EncoderConfig {
  EncoderFamily family = EncoderFamily::kBert;
  std::string model_type;
  std::vector<std::string> architectures;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 0;
  int64_t pad_token_id = 0;
  int64_t num_labels = 1;
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";
  // RoBERTa family numbers positions from pad_token_id + 1; BERT from 0.
  int64_t position_offset() const { return family == EncoderFamily::kXlmRoberta ? pad_token_id + 1 : 0; }
  // Longest input the position table allows.
  int64_t max_tokens() const { return max_position_embeddings - position_offset(); }
};

struct RopeConfig {
  std::string type = "default";  // "default" | "llama3" | "linear"
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  RopeConfig rope;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = -1;
};

// Both throw Error(kModelConfig); `dir` is a model directory holding config.json.
EncoderConfig LoadEncoderConfig(const std::string& dir);
LlamaConfig LoadLlamaConfig(const std::string& dir);

// Text helpers used by loaders and writers.
std::string ReadTextFile(const std::string& path);
bool FileExists(const std::string& path);

}  // namespace gainrag
