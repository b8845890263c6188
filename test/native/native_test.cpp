// The engine without Node: JSON edge cases, configs, safetensors, an encoder's parity with the
// transformers reference, and exact search, all from plain C++. Run by test/foundation.test.ts
// as `gainrag_native_test FIXTURES_DIR`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/batching.h"
#include "core/error.h"
#include "core/json.h"
#include "core/tensor_util.h"
#include "io/safetensors.h"
#include "io/tensor_bridge.h"
#include "index/dense_index.h"
#include "models/config.h"
#include "models/encoder.h"

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
int LlamaDecodeChecks(const std::string& dir);
int CpuDecodeChecks();
int CpuRowsChecks();
int PackedLinearChecks();
int Int8GemvChecks();
int SpinPoolChecks();
int TensorMemoryChecks();
int BatchedMatmulChecks();

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
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
    return 2;
  }
  const std::string fixtures = argv[1];
  // First, so that every later check runs on the engine's allocator, as the addon does.
  failures += TensorMemoryChecks();
  failures += BatchedMatmulChecks();
  const std::string bert_dir = fixtures + "/bert-tiny", llama_dir = fixtures + "/llama-tiny";

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

  // Encoder parity: the reference's token ids in, mean-pooled vectors out, against transformers.
  {
    json::Value ref = json::Parse(ReadTextFile(fixtures + "/bert-tiny.reference.json"));
    std::vector<int32_t> ids, offsets{0};
    for (const auto& row : ref.find("input_ids")->as_array()) {
      const auto& mask = ref.find("attention_mask")->as_array()[offsets.size() - 1].as_array();
      for (size_t t = 0; t < row.as_array().size(); ++t)
        if (mask[t].as_int() == 1) ids.push_back(static_cast<int32_t>(row.as_array()[t].as_int()));
      offsets.push_back(static_cast<int32_t>(ids.size()));
    }
    RaggedTokens tokens;
    tokens.ids = ids.data();
    tokens.offsets = offsets.data();
    tokens.count = static_cast<int64_t>(offsets.size()) - 1;
    auto model = EncoderModel::Load(bert_dir, EncoderOptions());
    at::Tensor got = EncodeBatched(*model, tokens, EncodeRequest(), RunContext());
    double worst = 0;
    const auto& expected = ref.find("mean_pooled")->as_array();
    for (int64_t i = 0; i < got.size(0); ++i)
      for (int64_t j = 0; j < got.size(1); ++j) {
        double e = expected[i].as_array()[j].as_number();
        worst = std::max(worst, std::abs(got[i][j].item<double>() - e) / std::max(std::abs(e), 1e-6));
      }
    Check(got.size(0) == tokens.count && worst < 1e-4, "bert-tiny mean pooling matches transformers (max rel " + std::to_string(worst) + ")");
  }

  // Exact search against a float64 brute force.
  {
    at::manual_seed(3);
    at::Tensor corpus = at::randn({1000, 32}), queries = at::randn({7, 32});
    DenseIndex index(32, at::kFloat, Metric::kInnerProduct);
    index.Add(corpus, at::Tensor());
    SearchResult r = index.Search(queries, 10);
    at::Tensor expect = std::get<1>(at::matmul(queries.to(at::kDouble), corpus.to(at::kDouble).t()).topk(10));
    Check(at::equal(r.ids, expect), "dense index top-10 equals brute force");
    ExpectError(ErrorCode::kShape, [&] { index.Add(at::randn({2, 31}), at::Tensor()); }, "dimension mismatch");
  }

  failures += LlamaDecodeChecks(llama_dir);
  failures += CpuDecodeChecks();
  failures += CpuRowsChecks();
  failures += PackedLinearChecks();
  failures += Int8GemvChecks();
  failures += SpinPoolChecks();

  if (failures == 0) std::printf("all native checks passed\n");
  return failures == 0 ? 0 : 1;
}
