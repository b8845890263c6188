// Batched inference over ragged token rows: length-bucketed batches under a token budget,
// one padded forward per batch, results scattered back to input order.
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>

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

// Below this much arithmetic a batch (a tiny model's, or one of a few short rows) runs whole on
// one thread, and the threads take different batches: no team to wake per op. Measured on the
// 2-core machine with xlmr-tiny-reranker (2 layers, hidden 128; 256 SQuAD pairs of ~128 tokens,
// batches of 1024 tokens at ~4e8 multiply-adds): splitting every op over 2 threads was no
// faster than 1 thread (~100 ms of forward a call); 2 batches at a time on one thread each take
// about half. BERT-base batches (~7e9) keep per-op threading: there oneDNN's products run near
// the machine's peak on both cores, and two batches in flight would double the activations.
constexpr double kBatchParallelMacs = 2e9;

// GAINRAG_BATCH_PARALLEL=0 turns the batch-parallel schedule off (A/B measurements, and a
// fallback should a backend misbehave under it); anything else, or unset, leaves it on.
bool BatchParallelAllowed() {
  static const bool allowed = [] {
    const char* env = std::getenv("GAINRAG_BATCH_PARALLEL");
    return !(env && std::string(env) == "0");
  }();
  return allowed;
}

// Whether to run whole batches concurrently, one per thread: only on the oneDNN path, whose
// primitives run serially when called inside a parallel region (LibTorch's BLAS may start its
// own threads there), and only when every batch is small enough to gain from it.
bool UseBatchParallel(const EncoderModel& model, const RaggedTokens& tokens, const BatchPlan& plan) {
  if (!BatchParallelAllowed() || plan.batches.size() < 2 || at::get_num_threads() < 2) return false;
  if (!model.device().is_cpu() || !model.packed() || model.training()) return false;
  const EncoderConfig& c = model.config();
  const double per_token_macs = double(c.hidden_size) * double(4 * c.hidden_size + 2 * c.intermediate_size);
  for (const auto& rows : plan.batches) {
    int64_t longest = 0;
    for (int64_t r : rows) longest = std::max(longest, tokens.length(r));
    const double padded = double(rows.size()) * double(longest);
    const double macs = padded * (per_token_macs + double(longest) * double(2 * c.hidden_size)) * double(c.num_layers);
    if (macs >= kBatchParallelMacs) return false;
  }
  return true;
}

at::Tensor RunBatched(const EncoderModel& model, const RaggedTokens& tokens, const EncodeRequest& req,
                      int64_t width, const RunContext& ctx, const BatchFn& fn) {
  at::Tensor out = at::empty({tokens.count, width}, at::kFloat);
  if (tokens.count == 0) return out;
  ValidateRows(model, tokens);
  const int64_t budget = req.batch_tokens > 0 ? req.batch_tokens : model.device().is_cpu() ? 1024 : 65536;
  const BatchPlan plan = PlanBatches(tokens, budget, req.max_rows);
  c10::InferenceMode guard;
  if (UseBatchParallel(model, tokens, plan)) {
    // Each thread takes the next batch until none is left; results are scattered on this
    // thread afterwards. LibTorch's parallel_for rethrows a worker's exception (a cancellation
    // included) here once the region ends; the others stop at their next batch.
    const int64_t count = static_cast<int64_t>(plan.batches.size());
    std::vector<at::Tensor> results(static_cast<size_t>(count));
    std::atomic<int64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex progress_mu;
    int64_t done = 0;
    at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
      c10::InferenceMode worker_guard;  // thread-local, as is the scope's
      try {
        for (int64_t i = next++; i < count && !failed.load(std::memory_order_relaxed); i = next++) {
          ctx.ThrowIfCancelled();
          const auto& rows = plan.batches[static_cast<size_t>(i)];
          PaddedBatch batch = MakePaddedBatch(tokens, rows, model.config().pad_token_id);
          results[static_cast<size_t>(i)] = fn(batch).to(at::kCPU, at::kFloat).contiguous();
          std::lock_guard<std::mutex> lock(progress_mu);
          done += static_cast<int64_t>(rows.size());
          ctx.Progress(done, tokens.count, "");
        }
      } catch (...) {
        failed = true;
        throw;
      }
    });
    for (int64_t i = 0; i < count; ++i) {
      const auto& rows = plan.batches[static_cast<size_t>(i)];
      out.index_copy_(0, at::tensor(rows, at::kLong), results[static_cast<size_t>(i)]);
    }
    return out;
  }
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
    const bool cls = req.pooling == Pooling::kCls;  // reads the first position only
    at::Tensor h = model.Hidden(b.input_ids, b.attention_mask, tokens.type_ids ? b.type_ids : at::Tensor(), cls);
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
    at::Tensor h = model.Hidden(b.input_ids, b.attention_mask, tokens.type_ids ? b.type_ids : at::Tensor(),
                                /*first_token_only=*/true);
    return model.Classify(h);
  });
}

}  // namespace gainrag
