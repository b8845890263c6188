// Batched inference over ragged token rows: length-bucketed batches under a token budget,
// one padded forward per batch, results scattered back to input order.
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <functional>

#include "core/error.h"
#include "core/omp_threads.h"
#include "models/encoder.h"

namespace gainrag {
namespace {

// Checks every row before the first batch runs, so a bad row fails fast instead of after
// minutes of work (and never reaches an embedding lookup out of range).
void ValidateRows(const EncoderModel& model, const RaggedTokens& tokens) {
  const EncoderConfig& c = model.config();
  const int64_t limit = model.max_tokens();
  for (int64_t r = 0; r < tokens.count; ++r) {
    const int64_t len = tokens.length(r);
    GR_CHECK(len > 0, kShape, "row ", r, " has no tokens");
    GR_CHECK(len <= limit, kShape, "row ", r, " has ", len, " tokens; the model takes at most ", limit,
             " (truncate with maxLength)");
  }
  const int64_t n = tokens.offsets[tokens.count];
  if (n == 0) return;
  const int32_t* ids = tokens.ids;
  const auto [lo, hi] = std::minmax_element(ids, ids + n);
  GR_CHECK(*lo >= 0 && *hi < c.vocab_size, kShape, "token id ", (*lo < 0 ? *lo : *hi), " is outside the vocabulary of ",
           c.vocab_size);
  if (tokens.type_ids) {
    const auto [tlo, thi] = std::minmax_element(tokens.type_ids, tokens.type_ids + n);
    const int64_t types = std::max<int64_t>(c.type_vocab_size, 1);
    GR_CHECK(*tlo >= 0 && *thi < types, kShape, "token type id ", (*tlo < 0 ? *tlo : *thi),
             " is outside the model's ", types, " token types");
  }
}

// Batches of less arithmetic than this run on the calling thread alone. For a tiny model every op
// is microseconds of work, and waking the OpenMP team for each one costs more than it saves:
// bert-tiny (2 layers, hidden 64), 256 SQuAD passages of ~127 tokens, measured on the 2-core
// machine took 0.23 s on one thread against 0.44-0.53 s on two (the profile: a quarter of the
// worker threads' samples in the kernel's scheduler). ~2e8 multiply-adds is ~1 ms of one core;
// BERT-base batches are ~1000x that.
constexpr double kSerialBatchMacs = 2e8;

double BatchMacs(const EncoderConfig& c, const PaddedBatch& batch) {
  const double tokens = double(batch.input_ids.numel());
  const double per_token = double(c.hidden_size) * double(4 * c.hidden_size + 2 * c.intermediate_size) +
                           double(batch.input_ids.size(1)) * double(2 * c.hidden_size);  // products + attention
  return tokens * per_token * double(c.num_layers);
}

using BatchFn = std::function<at::Tensor(const PaddedBatch&)>;

at::Tensor RunBatched(const EncoderModel& model, const RaggedTokens& tokens, const EncodeRequest& req,
                      int64_t width, const RunContext& ctx, const BatchFn& fn) {
  at::Tensor out = at::empty({tokens.count, width}, at::kFloat);
  if (tokens.count == 0) return out;
  ValidateRows(model, tokens);
  const int64_t budget = req.batch_tokens > 0 ? req.batch_tokens : model.device().is_cpu() ? 1024 : 65536;
  const BatchPlan plan = PlanBatches(tokens, budget, req.max_rows);
  c10::InferenceMode guard;
  int64_t done = 0;
  for (const auto& rows : plan.batches) {
    ctx.ThrowIfCancelled();
    PaddedBatch batch = MakePaddedBatch(tokens, rows, model.config().pad_token_id);
    OneOmpThreadScope serial(model.device().is_cpu() && BatchMacs(model.config(), batch) < kSerialBatchMacs);
    at::Tensor result = fn(batch).to(at::kCPU, at::kFloat).contiguous();
    out.index_copy_(0, at::tensor(batch.rows, at::kLong), result);
    done += static_cast<int64_t>(rows.size());
    ctx.Progress(done, tokens.count, "");
  }
  return out;
}

}  // namespace

at::Tensor EncodeBatched(const EncoderModel& model, const RaggedTokens& tokens, const EncodeRequest& req,
                         const RunContext& ctx) {
  return RunBatched(model, tokens, req, model.config().hidden_size, ctx, [&](const PaddedBatch& b) {
    at::Tensor h = model.Hidden(b.input_ids, b.attention_mask, tokens.type_ids ? b.type_ids : at::Tensor());
    at::Tensor pooled = model.Pool(h, b.attention_mask, req.pooling);
    if (req.normalize) pooled = pooled / pooled.norm(2, {1}, true).clamp_min(1e-12);
    return pooled;
  });
}

at::Tensor ScoreBatched(const EncoderModel& model, const RaggedTokens& tokens, const EncodeRequest& req,
                        const RunContext& ctx) {
  GR_CHECK(model.has_classifier(), kUnsupported, model.dir(),
           " has no sequence-classification head (classifier.* tensors); load it as an Encoder");
  return RunBatched(model, tokens, req, model.config().num_labels, ctx, [&](const PaddedBatch& b) {
    at::Tensor h = model.Hidden(b.input_ids, b.attention_mask, tokens.type_ids ? b.type_ids : at::Tensor());
    return model.Classify(h);
  });
}

}  // namespace gainrag
