// Llama decoder: batched greedy decoding over a preallocated KV cache. Prompts are right
// padded; each row decodes at its own positions and a key-validity mask hides the padding, so
// a batched row sees exactly what it would see alone. Finished rows leave the batch.
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "models/llama.h"

namespace gainrag {

std::pair<at::Tensor, at::Tensor> LlamaModel::GenerateGreedy(const RaggedTokens& prompts, int64_t max_new_tokens,
                                                             const RunContext& ctx) const {
  c10::InferenceMode guard;
  GR_CHECK(max_new_tokens >= 1, kInvalidArgument, "maxNewTokens must be at least 1");
  const int64_t max_pos = config_.max_position_embeddings;
  for (int64_t r = 0; r < prompts.count; ++r) {
    GR_CHECK(prompts.length(r) >= 1, kInvalidArgument, "prompt ", r, " is empty");
    GR_CHECK(prompts.length(r) + max_new_tokens <= max_pos, kInvalidArgument, "prompt ", r, " has ", prompts.length(r),
             " tokens; with ", max_new_tokens, " new tokens that exceeds the ", max_pos, " positions the model has");
  }
  for (int64_t k = 0; k < prompts.offsets[prompts.count]; ++k)
    GR_CHECK(prompts.ids[k] >= 0 && prompts.ids[k] < config_.vocab_size, kInvalidArgument, "prompt token id ",
             prompts.ids[k], " out of range");
  std::vector<std::vector<int32_t>> produced(prompts.count);
  std::vector<int64_t> rows(prompts.count), cost(prompts.count);
  std::iota(rows.begin(), rows.end(), 0);
  for (int64_t r = 0; r < prompts.count; ++r) cost[r] = prompts.length(r) + max_new_tokens;
  std::stable_sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) { return cost[a] > cost[b]; });
  auto is_eos = [&](int64_t id) { return std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end(); };

  int64_t done_rows = 0;
  size_t next = 0;
  while (next < rows.size()) {
    // Batch by token budget over prompt + new tokens.
    std::vector<int64_t> batch{rows[next++]};
    const int64_t longest = cost[batch[0]];
    while (next < rows.size() && int64_t(batch.size()) < max_rows_ && longest * int64_t(batch.size() + 1) <= token_budget_)
      batch.push_back(rows[next++]);
    ctx.ThrowIfCancelled();
    KVCache cache;
    at::Tensor last = Prefill(prompts, batch, std::vector<int64_t>(batch.size(), 1), max_new_tokens, &cache);
    const int64_t tp = cache.length, cap = cache.capacity;
    std::vector<int64_t> lens, active(batch.begin(), batch.end());
    for (size_t i = 0; i < batch.size(); ++i) lens.push_back(prompts.length(batch[i]));
    at::Tensor valid = at::zeros({int64_t(batch.size()), cap}, at::kBool);
    for (size_t i = 0; i < batch.size(); ++i) valid[int64_t(i)].narrow(0, 0, lens[i]).fill_(true);
    for (int64_t step = 0;; ++step) {
      at::Tensor tokens = Logits(last).argmax(-1).cpu();
      const int64_t* tok = tokens.data_ptr<int64_t>();
      std::vector<int64_t> keep;
      for (size_t i = 0; i < active.size(); ++i) {
        produced[active[i]].push_back(int32_t(tok[i]));
        stats_->generated_tokens++;
        if (!is_eos(tok[i])) keep.push_back(int64_t(i));
      }
      if (keep.empty() || step + 1 >= max_new_tokens) break;
      ctx.ThrowIfCancelled();
      if (keep.size() < active.size()) {
        // Drop finished rows from every per-row state, the cache included.
        at::Tensor idx = at::tensor(keep, at::kLong);
        at::Tensor idx_d = idx.to(device_);
        for (size_t l = 0; l < cache.k.size(); ++l) {
          cache.k[l] = cache.k[l].index_select(0, idx_d);
          cache.v[l] = cache.v[l].index_select(0, idx_d);
        }
        valid = valid.index_select(0, idx);
        tokens = tokens.index_select(0, idx);
        std::vector<int64_t> a2, l2;
        for (int64_t k : keep) a2.push_back(active[k]), l2.push_back(lens[k]);
        active.swap(a2);
        lens.swap(l2);
      }
      const int64_t b = int64_t(active.size());
      at::Tensor pos = at::empty({b, 1}, at::kLong);
      for (int64_t i = 0; i < b; ++i) pos[i][0] = lens[i] + step;
      valid.select(1, tp + step).fill_(true);
      at::Tensor mask = valid.narrow(1, 0, tp + step + 1).unsqueeze(1);
      last = Forward(tokens.view({b, 1}), pos, mask, &cache).view({b, -1});
    }
    done_rows += int64_t(batch.size());
    ctx.Progress(done_rows, prompts.count, "prompts");
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
