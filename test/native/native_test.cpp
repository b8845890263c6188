// The engine without Node: config parsing, JSON edge cases and safetensors reading from plain
// C++. Run by test/foundation.test.ts as `gainrag_native_test BERT_DIR LLAMA_DIR`.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "core/json.h"
#include "core/tensor_util.h"
#include "io/safetensors.h"
#include "models/config.h"

namespace {

int failures = 0;

void Check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

template <typename Fn>
void ExpectError(gainrag::ErrorCode code, Fn fn, const std::string& what) {
  try {
    fn();
    Check(false, what + " (no error)");
  } catch (const gainrag::Error& e) {
    Check(e.code() == code, what + " (code " + gainrag::ErrorCodeName(e.code()) + ": " + e.what() + ")");
  }
}

}  // namespace

int RunChecks(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return RunChecks(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: unexpected exception: %s\n", e.what());
    return 1;
  }
}

int RunChecks(int argc, char** argv) {
  using namespace gainrag;
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s BERT_DIR LLAMA_DIR\n", argv[0]);
    return 2;
  }
  const std::string bert_dir = argv[1], llama_dir = argv[2];

  auto doc = json::Parse(R"({"a": [1, -2.5e3, true, null], "s": "\u00e9\ud83d\ude00\n", "n": 9007199254740993})");
  Check(doc.find("a")->as_array()[1].as_number() == -2500.0, "json number");
  Check(doc.find("s")->as_string() == "\xc3\xa9\xf0\x9f\x98\x80\n", "json unicode escapes");
  Check(doc.find("n")->is_integer() && doc.find("n")->as_int() == 9007199254740993LL, "json int64 exact");
  for (const char* bad : {"{", "[1,]", "{\"a\" 1}", "\"\\x\"", "01x", "[1] 2"}) {
    bool threw = false;
    try { json::Parse(bad); } catch (const std::invalid_argument&) { threw = true; }
    Check(threw, std::string("json rejects ") + bad);
  }

  EncoderConfig bert = LoadEncoderConfig(bert_dir);
  Check(bert.family == EncoderFamily::kBert && bert.hidden_size == 64 && bert.num_layers == 2, "bert config");
  Check(bert.position_offset() == 0 && bert.max_tokens() == 128, "bert positions");
  LlamaConfig llama = LoadLlamaConfig(llama_dir);
  Check(llama.num_kv_heads == 2 && llama.head_dim == 16 && !llama.tie_word_embeddings, "llama config");
  Check(llama.rope.theta == 500000.0 && llama.rope.type == "default", "llama rope_parameters");
  Check(llama.eos_token_ids.size() == 1 && llama.eos_token_ids[0] == 2, "llama eos");
  ExpectError(ErrorCode::kModelConfig, [&] { LoadLlamaConfig(bert_dir); }, "bert dir is not a llama");
  ExpectError(ErrorCode::kModelConfig, [&] { LoadEncoderConfig(llama_dir); }, "llama dir is not an encoder");
  ExpectError(ErrorCode::kModelConfig, [&] { LoadEncoderConfig("/nonexistent"); }, "missing config.json");

  auto weights = WeightFiles::Open(bert_dir);
  const auto& info = weights->info("embeddings.word_embeddings.weight");
  Check(info.shape.size() == 2 && info.shape[0] == 1200 && info.shape[1] == 64, "bert embedding shape");
  at::Tensor emb = MappedTensor(*weights, "embeddings.word_embeddings.weight");
  Check(emb.data_ptr() == static_cast<const void*>(weights->data("embeddings.word_embeddings.weight")), "mapped, not copied");
  Check(std::isfinite(emb.sum().item<double>()), "embedding values finite");
  ExpectError(ErrorCode::kShape, [&] { weights->info("no.such.tensor"); }, "missing tensor");

  if (failures == 0) std::printf("all native checks passed\n");
  return failures == 0 ? 0 : 1;
}
