#include "models/config.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/json.h"

namespace gainrag {
namespace {

json::Value ReadConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  GR_CHECK(FileExists(path), kModelConfig, "no config.json in ", dir);
  try {
    json::Value v = json::Parse(ReadTextFile(path));
    GR_CHECK(v.is_object(), kModelConfig, path, " must hold a JSON object");
    return v;
  } catch (const std::invalid_argument& e) {
    GR_FAIL(kModelConfig, path, ": ", e.what());
  }
}

class Fields {
 public:
  Fields(const json::Value& root, std::string where) : root_(root), where_(std::move(where)) {}

  int64_t Int(const char* key, bool required, int64_t fallback = 0) const {
    const json::Value* v = root_.find(key);
    if (!v || v->is_null()) {
      GR_CHECK(!required, kModelConfig, where_, ": missing required field '", key, "'");
      return fallback;
    }
    GR_CHECK(v->is_integer(), kModelConfig, where_, ": field '", key, "' must be an integer");
    return v->as_int();
  }
  int64_t PositiveInt(const char* key, bool required, int64_t fallback = 0) const {
    int64_t x = Int(key, required, fallback);
    GR_CHECK(x > 0 || (!required && x == fallback), kModelConfig, where_, ": field '", key, "' must be positive, got ", x);
    return x;
  }
  double Number(const char* key, double fallback) const {
    const json::Value* v = root_.find(key);
    if (!v || v->is_null()) return fallback;
    GR_CHECK(v->is_number(), kModelConfig, where_, ": field '", key, "' must be a number");
    return v->as_number();
  }
  bool Bool(const char* key, bool fallback) const {
    const json::Value* v = root_.find(key);
    if (!v || v->is_null()) return fallback;
    GR_CHECK(v->is_bool(), kModelConfig, where_, ": field '", key, "' must be a boolean");
    return v->as_bool();
  }
  std::string String(const char* key, const std::string& fallback) const {
    const json::Value* v = root_.find(key);
    if (!v || v->is_null()) return fallback;
    GR_CHECK(v->is_string(), kModelConfig, where_, ": field '", key, "' must be a string");
    return v->as_string();
  }

 private:
  const json::Value& root_;
  std::string where_;
};

// Upper bounds far above any real checkpoint: a config number past one is an edited or
// corrupt file, and checking it here stops the loader from sizing vectors and tensors by it
// (num_hidden_layers: 30000000 would reserve gigabytes before the first missing tensor).
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxWidth = int64_t{1} << 20;      // hidden, intermediate, head sizes
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxPositions = int64_t{1} << 24;

void CheckLimit(const std::string& where, const char* key, int64_t value, int64_t limit) {
  GR_CHECK(value <= limit, kModelConfig, where, ": field '", key, "' is ", value, ", above the limit of ", limit,
           " (corrupt or unsupported config)");
}

// eps fields divide by sqrt(var + eps): NaN, <= 0 or absurd values give NaN outputs, not errors.
void CheckEps(const std::string& where, const char* key, double eps) {
  GR_CHECK(std::isfinite(eps) && eps > 0 && eps < 1, kModelConfig, where, ": field '", key,
           "' must be a finite number in (0, 1), got ", eps);
}

}  // namespace

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ReadTextFile(const std::string& path) {
  // Opening a FIFO for reading blocks until a writer appears: refuse anything but a file.
  struct stat st {};
  GR_CHECK(::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode), kIo, path, " is missing or not a regular file");
  std::ifstream in(path, std::ios::binary);
  GR_CHECK(in.good(), kIo, "cannot open ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

EncoderConfig LoadEncoderConfig(const std::string& dir) {
  json::Value root = ReadConfig(dir);
  Fields f(root, dir + "/config.json");
  EncoderConfig c;
  c.model_type = f.String("model_type", "");
  if (c.model_type == "bert") {
    c.family = EncoderFamily::kBert;
  } else if (c.model_type == "xlm-roberta" || c.model_type == "roberta") {
    c.family = EncoderFamily::kXlmRoberta;
  } else {
    GR_FAIL(kModelConfig, dir, "/config.json: model_type '", c.model_type,
            "' is not an encoder this engine runs (bert, roberta, xlm-roberta)");
  }
  if (const json::Value* a = root.find("architectures"); a && a->is_array())
    for (const auto& x : a->as_array()) if (x.is_string()) c.architectures.push_back(x.as_string());
  c.vocab_size = f.PositiveInt("vocab_size", true);
  c.hidden_size = f.PositiveInt("hidden_size", true);
  c.num_layers = f.PositiveInt("num_hidden_layers", true);
  c.num_heads = f.PositiveInt("num_attention_heads", true);
  c.intermediate_size = f.PositiveInt("intermediate_size", true);
  c.max_position_embeddings = f.PositiveInt("max_position_embeddings", true);
  c.type_vocab_size = f.Int("type_vocab_size", false, 2);
  c.pad_token_id = f.Int("pad_token_id", false, c.family == EncoderFamily::kBert ? 0 : 1);
  c.layer_norm_eps = f.Number("layer_norm_eps", 1e-12);
  c.hidden_act = f.String("hidden_act", "gelu");
  GR_CHECK(c.hidden_size % c.num_heads == 0, kModelConfig, dir, "/config.json: hidden_size ", c.hidden_size,
           " is not divisible by num_attention_heads ", c.num_heads);
  GR_CHECK(c.hidden_act == "gelu" || c.hidden_act == "gelu_new" || c.hidden_act == "relu" || c.hidden_act == "gelu_pytorch_tanh",
           kModelConfig, dir, "/config.json: hidden_act '", c.hidden_act, "' is not supported");
  std::string pos_type = f.String("position_embedding_type", "absolute");
  GR_CHECK(pos_type == "absolute", kModelConfig, dir, "/config.json: position_embedding_type '", pos_type, "' is not supported");
  if (const json::Value* labels = root.find("id2label"); labels && labels->is_object())
    c.num_labels = static_cast<int64_t>(labels->as_object().size());
  c.num_labels = f.Int("num_labels", false, c.num_labels);
  GR_CHECK(c.max_tokens() > 0, kModelConfig, dir, "/config.json: max_position_embeddings too small");
  const std::string where = dir + "/config.json";
  CheckEps(where, "layer_norm_eps", c.layer_norm_eps);
  CheckLimit(where, "num_hidden_layers", c.num_layers, kMaxLayers);
  CheckLimit(where, "hidden_size", c.hidden_size, kMaxWidth);
  CheckLimit(where, "intermediate_size", c.intermediate_size, kMaxWidth);
  CheckLimit(where, "num_attention_heads", c.num_heads, kMaxWidth);
  CheckLimit(where, "vocab_size", c.vocab_size, kMaxVocab);
  CheckLimit(where, "max_position_embeddings", c.max_position_embeddings, kMaxPositions);
  GR_CHECK(c.type_vocab_size >= 0 && c.type_vocab_size <= 1024, kModelConfig, where,
           ": field 'type_vocab_size' must be in [0, 1024], got ", c.type_vocab_size);
  GR_CHECK(c.num_labels >= 0 && c.num_labels <= kMaxWidth, kModelConfig, where, ": field 'num_labels' must be in [0, ",
           kMaxWidth, "], got ", c.num_labels);
  return c;
}

LlamaConfig LoadLlamaConfig(const std::string& dir) {
  json::Value root = ReadConfig(dir);
  Fields f(root, dir + "/config.json");
  LlamaConfig c;
  c.model_type = f.String("model_type", "");
  GR_CHECK(c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2", kModelConfig, dir,
           "/config.json: model_type '", c.model_type, "' is not a decoder this engine runs (llama)");
  c.vocab_size = f.PositiveInt("vocab_size", true);
  c.hidden_size = f.PositiveInt("hidden_size", true);
  c.intermediate_size = f.PositiveInt("intermediate_size", true);
  c.num_layers = f.PositiveInt("num_hidden_layers", true);
  c.num_heads = f.PositiveInt("num_attention_heads", true);
  c.num_kv_heads = f.PositiveInt("num_key_value_heads", false, c.num_heads);
  GR_CHECK(c.num_heads % c.num_kv_heads == 0, kModelConfig, dir, "/config.json: num_attention_heads ", c.num_heads,
           " is not a multiple of num_key_value_heads ", c.num_kv_heads);
  c.head_dim = f.PositiveInt("head_dim", false, c.hidden_size / c.num_heads);
  c.max_position_embeddings = f.PositiveInt("max_position_embeddings", false, 2048);
  c.rms_norm_eps = f.Number("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = f.Bool("tie_word_embeddings", false);
  c.attention_bias = f.Bool("attention_bias", false);
  c.mlp_bias = f.Bool("mlp_bias", false);
  std::string act = f.String("hidden_act", "silu");
  GR_CHECK(act == "silu", kModelConfig, dir, "/config.json: hidden_act '", act, "' is not supported (silu)");

  // Rotary settings: transformers 5 writes `rope_parameters` (theta inside); older configs have
  // `rope_theta` at the top level and an optional `rope_scaling` block.
  const json::Value* params = root.find("rope_parameters");
  if (!params || params->is_null()) params = root.find("rope_scaling");
  c.rope.theta = f.Number("rope_theta", 10000.0);
  if (params && params->is_object()) {
    Fields p(*params, dir + "/config.json rope parameters");
    c.rope.theta = p.Number("rope_theta", c.rope.theta);
    c.rope.type = p.String("rope_type", p.String("type", "default"));
    c.rope.factor = p.Number("factor", 1.0);
    c.rope.low_freq_factor = p.Number("low_freq_factor", 1.0);
    c.rope.high_freq_factor = p.Number("high_freq_factor", 4.0);
    c.rope.original_max_position_embeddings = p.Int("original_max_position_embeddings", false, 8192);
  } else if (params && !params->is_null()) {
    GR_FAIL(kModelConfig, dir, "/config.json: rope parameters must be an object");
  }
  GR_CHECK(c.rope.type == "default" || c.rope.type == "llama3" || c.rope.type == "linear", kModelConfig, dir,
           "/config.json: rope_type '", c.rope.type, "' is not supported (default, linear, llama3)");
  GR_CHECK(std::isfinite(c.rope.theta) && c.rope.theta > 0, kModelConfig, dir, "/config.json: rope_theta must be positive");
  // factor divides the frequencies, and llama3 divides by (high - low): 0 or NaN there turns
  // every rotary angle into NaN/Inf.
  GR_CHECK(std::isfinite(c.rope.factor) && c.rope.factor > 0, kModelConfig, dir,
           "/config.json: rope factor must be a positive number, got ", c.rope.factor);
  if (c.rope.type == "llama3") {
    GR_CHECK(std::isfinite(c.rope.low_freq_factor) && std::isfinite(c.rope.high_freq_factor) &&
                 c.rope.low_freq_factor > 0 && c.rope.high_freq_factor > c.rope.low_freq_factor,
             kModelConfig, dir, "/config.json: llama3 rope needs 0 < low_freq_factor < high_freq_factor");
    GR_CHECK(c.rope.original_max_position_embeddings > 0, kModelConfig, dir,
             "/config.json: original_max_position_embeddings must be positive");
  }
  {
    const std::string where = dir + "/config.json";
    CheckEps(where, "rms_norm_eps", c.rms_norm_eps);
    CheckLimit(where, "num_hidden_layers", c.num_layers, kMaxLayers);
    CheckLimit(where, "hidden_size", c.hidden_size, kMaxWidth);
    CheckLimit(where, "intermediate_size", c.intermediate_size, kMaxWidth);
    CheckLimit(where, "num_attention_heads", c.num_heads, kMaxWidth);
    CheckLimit(where, "head_dim", c.head_dim, kMaxWidth);
    CheckLimit(where, "vocab_size", c.vocab_size, kMaxVocab);
    CheckLimit(where, "max_position_embeddings", c.max_position_embeddings, kMaxPositions);
  }

  c.bos_token_id = f.Int("bos_token_id", false, -1);
  c.pad_token_id = f.Int("pad_token_id", false, -1);
  if (const json::Value* eos = root.find("eos_token_id"); eos && !eos->is_null()) {
    if (eos->is_array()) {
      for (const auto& e : eos->as_array()) {
        GR_CHECK(e.is_integer(), kModelConfig, dir, "/config.json: eos_token_id entries must be integers");
        c.eos_token_ids.push_back(e.as_int());
      }
    } else {
      GR_CHECK(eos->is_integer(), kModelConfig, dir, "/config.json: eos_token_id must be an integer or a list");
      c.eos_token_ids.push_back(eos->as_int());
    }
  }
  return c;
}

}  // namespace gainrag
