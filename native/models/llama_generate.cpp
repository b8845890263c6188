// Llama decoder: greedy decoding with continuous batching.
//
// A pool of slots shares one KV cache [slots, kv_heads, capacity, head_dim]. Slot row i holds
// one sequence with its token at position p stored in column p, so rows never need aligning:
// each decode step is one batched forward of one token per active row (DecodeStep), every row
// writing its own column and attending to columns [0, its position]. A row that stops (EOS or
// the token limit) is refilled at once from the queue: the waiting prompts are prefilled
// together (the usual right-padded Prefill into a scratch cache) and copied into the free rows,
// so one long answer never holds the others back. Active rows are kept at 0..n-1 (a finished
// row takes the last active row's state), so a step narrows the cache instead of gathering it.
// With GenerateHooks, each step's tokens go to the caller as they are made (streaming), and a
// row the caller stops leaves its slot before the next step (the others carry on).
//
// A row sees exactly what it would see alone (its own positions, other columns masked), so the
// tokens equal one-prompt-at-a-time decoding up to float rounding of the batched products.
// Attention here is the plain two-matmul form on every LibTorch: with one query per row the
// scores are tiny, and one code path is what the CPU tests check.
#include <ATen/TensorIndexing.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "models/llama.h"
#include "models/llama_prefix.h"

namespace gainrag {
namespace {

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

struct Slot {
  int64_t prompt;  // row of the request
  int64_t length;  // prompt tokens
};

}  // namespace

at::Tensor LlamaModel::DecodeStep(const at::Tensor& ids, const at::Tensor& positions, int64_t width,
                                  KVCache* cache) const {
  const int64_t n = ids.size(0), hd = config_.head_dim, heads = config_.num_heads, kvh = config_.num_kv_heads;
  const int64_t rep = heads / kvh;
  GR_CHECK(width >= 1 && width <= cache->capacity, kInternal, "KV cache overflow");
  GR_CHECK(sliding_window_ <= 0 || width <= sliding_window_, kUnsupported, "sequence of ", width,
           " tokens exceeds the model's sliding attention window (", sliding_window_,
           "), which this engine does not implement");
  auto long_opts = at::TensorOptions().dtype(at::kLong).device(device_);
  at::Tensor pos = positions.to(device_);
  at::Tensor rows = at::arange(n, long_opts);
  // Columns past a row's position hold an earlier occupant's keys (finite): hidden.
  at::Tensor hide = at::arange(width, long_opts).view({1, 1, 1, width}).gt(pos.view({n, 1, 1, 1}));
  auto [cos, sin] = RopeTables(pos.view({n, 1}));  // [n,1,1,D]
  at::Tensor h = at::embedding(embed_, ids.to(device_).view({n, 1}));
  const double scale = 1.0 / std::sqrt(double(hd));
  // LibTorch's product, or in int8 mode the packed int8 one (Linear).
  auto linear = [&](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = at::Tensor()) {
    return int8_ ? Linear(x, w, b) : at::linear(x, w, b);
  };
  using at::indexing::Slice;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    at::Tensor x = RmsNorm(h, L.input_norm);
    at::Tensor q = linear(x, L.q, L.q_bias).view({n, 1, heads, hd}).transpose(1, 2);
    at::Tensor k = linear(x, L.k, L.k_bias).view({n, 1, kvh, hd}).transpose(1, 2);
    at::Tensor v = linear(x, L.v, L.v_bias).view({n, kvh, hd});
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
    at::Tensor ck = cache->k[l].narrow(0, 0, n), cv = cache->v[l].narrow(0, 0, n);
    // Row i writes column pos[i]: one scatter per layer, whatever the number of rows.
    ck.index_put_({rows, Slice(), pos}, k.view({n, kvh, hd}).to(ck.scalar_type()));
    cv.index_put_({rows, Slice(), pos}, v.to(cv.scalar_type()));
    // Query heads sharing a kv head are stacked: [n, kvh, rep, hd] x [n, kvh, hd, W].
    at::Tensor qg = (q * scale).reshape({n, kvh, rep, hd});
    // (A cache of another dtype, CacheDtype(), is read in the step's.)
    at::Tensor scores = at::matmul(qg, ck.narrow(2, 0, width).to(dtype_).transpose(-1, -2)).to(at::kFloat);
    scores.masked_fill_(hide, -std::numeric_limits<float>::infinity());
    at::Tensor probs = at::softmax(scores, -1).to(dtype_);
    at::Tensor o = at::matmul(probs, cv.narrow(2, 0, width).to(dtype_)).reshape({n, 1, heads * hd});
    h = h + linear(o, L.o, L.o_bias);
    at::Tensor y = RmsNorm(h, L.post_norm);
    h = h + linear(at::silu(linear(y, L.gate)) * linear(y, L.up), L.down);
  }
  stats_->forward_calls++;
  stats_->decode_steps++;
  return RmsNorm(h, final_norm_).view({n, config_.hidden_size});
}

std::pair<at::Tensor, at::Tensor> LlamaModel::GenerateGreedy(const RaggedTokens& prompts, int64_t max_new_tokens,
                                                             const RunContext& ctx, const GenerateHooks* hooks,
                                                             bool share_prefix) const {
  c10::InferenceMode guard;
  GR_CHECK(max_new_tokens >= 1, kInvalidArgument, "maxNewTokens must be at least 1");
  const int64_t max_pos = config_.max_position_embeddings, count = prompts.count;
  // Columns a sequence needs: its prompt and every new token but the last (never fed back).
  int64_t capacity = 1;
  for (int64_t r = 0; r < count; ++r) {
    GR_CHECK(prompts.length(r) >= 1, kInvalidArgument, "prompt ", r, " is empty");
    GR_CHECK(prompts.length(r) + max_new_tokens <= max_pos, kInvalidArgument, "prompt ", r, " has ", prompts.length(r),
             " tokens; with ", max_new_tokens, " new tokens that exceeds the ", max_pos, " positions the model has");
    capacity = std::max<int64_t>(capacity, prompts.length(r) + max_new_tokens - 1);
  }
  for (int64_t k = 0; k < prompts.offsets[count]; ++k)
    GR_CHECK(prompts.ids[k] >= 0 && prompts.ids[k] < config_.vocab_size, kInvalidArgument, "prompt token id ",
             prompts.ids[k], " out of range");
  std::vector<std::vector<int32_t>> produced(count);
  auto is_eos = [&](int64_t id) { return std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end(); };
  int64_t finished = 0;
  // The tokens of the current step, for the caller's on_tokens.
  std::vector<int32_t> step_rows, step_tokens;
  const bool streaming = hooks && hooks->on_tokens;
  // Appends a token to a prompt's output; true when that sequence is done.
  auto take = [&](int64_t prompt, int64_t token) {
    produced[prompt].push_back(int32_t(token));
    stats_->generated_tokens++;
    if (streaming) step_rows.push_back(int32_t(prompt)), step_tokens.push_back(int32_t(token));
    const bool done = is_eos(token) || int64_t(produced[prompt].size()) >= max_new_tokens;
    if (done) ctx.Progress(++finished, count, "prompts");
    return done;
  };
  auto flush_step = [&] {
    if (!streaming || step_rows.empty()) return;
    hooks->on_tokens(step_rows, step_tokens);
    step_rows.clear();
    step_tokens.clear();
  };
  // A row its caller stopped: counted once, it leaves (or never enters) the slots.
  std::vector<char> stop_seen(count, 0);
  auto stopped = [&](int64_t prompt) {
    if (!hooks || prompt >= int64_t(hooks->row_stop.size()) || !hooks->row_stop[prompt] || !hooks->row_stop[prompt]->load()) return false;
    if (!stop_seen[prompt]) {
      stop_seen[prompt] = 1;
      stats_->stopped_rows++;
      ctx.Progress(++finished, count, "prompts");
    }
    return true;
  };

  if (count > 0) {
    // Slots: the token budget bounds the cache (slots x capacity), as it bounds a prefill batch.
    const int64_t slots = std::max<int64_t>(1, std::min({token_budget_ / capacity, max_rows_, count}));
    KVCache cache = NewCache(slots, capacity);
    // Masked columns are multiplied by zero weights: they must never hold NaN/inf garbage.
    for (size_t l = 0; l < cache.k.size(); ++l) cache.k[l].zero_(), cache.v[l].zero_();
    // The prefix every prompt shares (the last token of each stays in its own prefill: its
    // hidden state makes the first new token) runs once for the call. Refill batches are often
    // a single row, and without it each would run the prefix again.
    KVCache call_prefix;
    if (share_prefix && count >= 2) {
      std::vector<int64_t> all(count), limit(count);
      for (int64_t r = 0; r < count; ++r) all[r] = r, limit[r] = prompts.length(r) - 1;
      const int64_t common = CommonPrefixLength(prompts, all, limit);
      if (common >= kMinSharedPrefixTokens) {
        ctx.ThrowIfCancelled();
        call_prefix = PrefixCache(prompts, 0, common);
      }
    }
    const KVCache* known = call_prefix.length > 0 ? &call_prefix : nullptr;
    std::vector<Slot> active;
    int64_t next = 0;
    // Columns filled in a slot: its prompt and every produced token but the last.
    auto filled = [&](const Slot& s) { return s.length + int64_t(produced[s.prompt].size()) - 1; };
    // Frees slot row i: the last active row's state moves into it (rows stay 0..n-1).
    auto drop = [&](int64_t i) {
      const int64_t last = int64_t(active.size()) - 1;
      if (i != last) {
        const int64_t cols = filled(active[last]);
        for (size_t l = 0; l < cache.k.size(); ++l) {
          cache.k[l][i].narrow(1, 0, cols).copy_(cache.k[l][last].narrow(1, 0, cols));
          cache.v[l][i].narrow(1, 0, cols).copy_(cache.v[l][last].narrow(1, 0, cols));
        }
        active[i] = active[last];
      }
      active.pop_back();
    };
    for (;;) {
      // Rows stopped by their caller since the last step leave first (from the back, as below).
      for (int64_t i = int64_t(active.size()) - 1; i >= 0; --i)
        if (stopped(active[i].prompt)) drop(i);
      // Refill free slots from the queue with one batched prefill; a prompt may finish on its
      // first token, so repeat until the slots are full or the queue is empty.
      while (int64_t(active.size()) < slots && next < count) {
        ctx.ThrowIfCancelled();
        std::vector<int64_t> rows;
        while (int64_t(active.size() + rows.size()) < slots && next < count) {
          const int64_t r = next++;
          if (!stopped(r)) rows.push_back(r);
        }
        if (rows.empty()) continue;
        KVCache scratch;
        at::Tensor last = Prefill(prompts, rows, std::vector<int64_t>(rows.size(), 1), 0, &scratch, share_prefix, known);
        at::Tensor tokens = Logits(last).argmax(-1).cpu();
        const int64_t* tok = tokens.data_ptr<int64_t>();
        for (size_t i = 0; i < rows.size(); ++i) {
          if (take(rows[i], tok[i])) continue;
          const int64_t row = int64_t(active.size()), len = prompts.length(rows[i]);
          for (size_t l = 0; l < cache.k.size(); ++l) {
            cache.k[l][row].narrow(1, 0, len).copy_(scratch.k[l][int64_t(i)].narrow(1, 0, len));
            cache.v[l][row].narrow(1, 0, len).copy_(scratch.v[l][int64_t(i)].narrow(1, 0, len));
          }
          active.push_back({rows[i], len});
        }
        flush_step();
      }
      if (active.empty()) break;
      ctx.ThrowIfCancelled();
      const int64_t n = int64_t(active.size());
      at::Tensor ids = at::empty({n}, at::kLong), pos = at::empty({n}, at::kLong);
      int64_t width = 0;
      for (int64_t i = 0; i < n; ++i) {
        ids.data_ptr<int64_t>()[i] = produced[active[i].prompt].back();
        pos.data_ptr<int64_t>()[i] = filled(active[i]);
        width = std::max(width, filled(active[i]) + 1);
      }
      // The fused CPU step at every row count: since its kernel keeps x in registers and
      // prefetches, bf16 with 8 rows measured 190-263 tokens/s against LibTorch's bf16 products'
      // 161-220 (they were ahead of the old kernel, 199 vs 137).
      at::Tensor tokens = DecodeLogits(ids, pos, width, &cache).argmax(-1).cpu();
      const int64_t* tok = tokens.data_ptr<int64_t>();
      std::vector<char> done(n);
      for (int64_t i = 0; i < n; ++i) done[i] = take(active[i].prompt, tok[i]);
      flush_step();
      // Close the holes from the back: every row after i is alive by the time i is handled.
      for (int64_t i = n - 1; i >= 0; --i)
        if (done[i]) drop(i);
    }
  }
  std::vector<int32_t> offsets{0}, ids;
  for (const auto& p : produced) {
    ids.insert(ids.end(), p.begin(), p.end());
    offsets.push_back(int32_t(ids.size()));
  }
  at::Tensor ids_t = at::empty({int64_t(ids.size())}, at::kInt);
  std::copy(ids.begin(), ids.end(), ids_t.data_ptr<int32_t>());
  at::Tensor off_t = at::empty({int64_t(offsets.size())}, at::kInt);
  std::copy(offsets.begin(), offsets.end(), off_t.data_ptr<int32_t>());
  return {ids_t, off_t};
}

}  // namespace gainrag
