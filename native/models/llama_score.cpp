// Llama decoder: prefill, contrastive perplexity, last-position logits, greedy decoding.
//
// Contrastive scoring prefills every prompt exactly once, with its first gold answer appended
// (causal attention: the prompt's keys do not depend on it). The other answers then run together
// as one query chunk over that prompt's KV cache, with a mask that lets each answer see the
// prompt and its own earlier tokens only. With one answer this is the reference method's forward
// minus its lm_head over every prompt position; with many, each extra answer costs its own tokens
// only. The final answer token is never run (its hidden state predicts nothing we need), and the
// lm_head is applied only to the rows that predict an answer token.
//
// On CPU a batch is prefilled in passes of a few rows (PrefillRowsPerPass) that write one batch
// cache: small models are bound by elementwise memory traffic, so activations that stay in cache
// beat wide batches; the answer chunk still runs over the whole batch.
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "models/llama.h"
#include "models/llama_prefix.h"

namespace gainrag {

int64_t LlamaModel::PrefillRowsPerPass(int64_t tokens) const {
  if (!device_.is_cpu()) return max_rows_;
  tokens = std::max<int64_t>(tokens, 1);
  if (config_.hidden_size < 256) {
    // Per-token GEMM work (~hidden^2) is small next to the elementwise and attention work, so
    // wide passes gain nothing and lose the cache: passes whose activations fit in ~256 KiB
    // (measured on the llama-tiny fixture: 2 rows of 240 tokens beat 8 and 32).
    const int64_t width = std::max(config_.hidden_size, config_.intermediate_size) * at::elementSize(dtype_);
    return std::max<int64_t>(1, (int64_t(256) << 10) / (tokens * width));
  }
  // GEMM-bound: ~1k tokens per pass keeps the products efficient (a 512-wide model ran its
  // 240-token prompts 1.5x faster 3 to a pass than one at a time).
  return std::max<int64_t>(1, 1024 / tokens);
}

namespace {

// Causal mask [rows, t, before + t] for chunks of t queries after `before` keys every query may
// see: query j sees the chunk's keys 0..j that are below its row's length (right padding;
// a padded query still sees the keys before it, so no row is fully masked).
at::Tensor ChunkMask(int64_t rows, int64_t t, int64_t before, const at::Tensor& lens) {
  at::Tensor ar = at::arange(t, at::kLong);
  at::Tensor own = ar.view({1, 1, t}).le(ar.view({1, t, 1})).logical_and(ar.view({1, 1, t}).lt(lens));
  if (before == 0) return own.expand({rows, t, t});
  return at::cat({at::ones({rows, t, before}, at::kBool), own.expand({rows, t, t})}, 2);
}

// Keys/values of every group's shared prefix (plan from PlanSharedPrefix): [groups, kv_heads,
// longest prefix, head_dim]; group g's slots [0, group_length[g]) are filled. The global prefix
// runs once (after the `known` cache's tokens, which are not run again), then the groups'
// longer prefixes together as one chunk over it.
KVCache SharedPrefixCache(const LlamaModel& model, const RaggedTokens& prompts, const std::vector<int64_t>& rows,
                          const PrefixPlan& plan, const KVCache* known) {
  const int64_t ng = int64_t(plan.group_length.size()), g0 = plan.global;
  const int64_t longest = *std::max_element(plan.group_length.begin(), plan.group_length.end());
  KVCache pc = model.NewCache(ng, std::max<int64_t>(longest, 1));
  if (longest == 0) return pc;
  auto tokens = [&](int64_t source_row) { return prompts.ids + prompts.offsets[rows[source_row]]; };
  if (g0 > 0) {
    KVCache one = model.NewCache(1, g0);
    const int64_t have = known ? std::min(known->length, g0) : 0;
    for (size_t l = 0; l < one.k.size() && have > 0; ++l) {
      one.k[l].narrow(2, 0, have).copy_(known->k[l].narrow(2, 0, have));
      one.v[l].narrow(2, 0, have).copy_(known->v[l].narrow(2, 0, have));
    }
    one.length = have;
    if (have < g0) {
      const int64_t n = g0 - have;
      at::Tensor ids = at::empty({1, n}, at::kLong);
      std::copy(tokens(plan.group_source[0]) + have, tokens(plan.group_source[0]) + g0, ids.data_ptr<int64_t>());
      model.Forward(ids, (at::arange(n, at::kLong) + have).unsqueeze(0),
                    ChunkMask(1, n, have, at::full({1, 1, 1}, n, at::kLong)), &one);
    }
    for (size_t l = 0; l < pc.k.size(); ++l) {
      pc.k[l].narrow(2, 0, g0).copy_(one.k[l].expand({ng, -1, -1, -1}));
      pc.v[l].narrow(2, 0, g0).copy_(one.v[l].expand({ng, -1, -1, -1}));
    }
  }
  std::vector<int64_t> longer;
  int64_t extra = 0;
  for (int64_t g = 0; g < ng; ++g)
    if (plan.group_length[g] > g0) longer.push_back(g), extra = std::max(extra, plan.group_length[g] - g0);
  if (!longer.empty()) {
    const int64_t n = int64_t(longer.size());
    KVCache sub = model.NewCache(n, g0 + extra);
    for (size_t l = 0; l < pc.k.size() && g0 > 0; ++l) {
      sub.k[l].narrow(2, 0, g0).copy_(pc.k[l].narrow(0, 0, 1).narrow(2, 0, g0).expand({n, -1, -1, -1}));
      sub.v[l].narrow(2, 0, g0).copy_(pc.v[l].narrow(0, 0, 1).narrow(2, 0, g0).expand({n, -1, -1, -1}));
    }
    sub.length = g0;
    at::Tensor ids = at::zeros({n, extra}, at::kLong), lens = at::empty({n, 1, 1}, at::kLong);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t g = longer[i], e = plan.group_length[g] - g0;
      std::copy(tokens(plan.group_source[g]) + g0, tokens(plan.group_source[g]) + g0 + e,
                ids.data_ptr<int64_t>() + i * extra);
      lens.data_ptr<int64_t>()[i] = e;
    }
    at::Tensor pos = (at::arange(extra, at::kLong) + g0).unsqueeze(0).expand({n, extra});
    model.Forward(ids, pos, ChunkMask(n, extra, g0, lens), &sub);
    at::Tensor idx = at::tensor(longer, at::kLong).to(model.device());
    for (size_t l = 0; l < pc.k.size(); ++l) {
      pc.k[l].narrow(2, g0, extra).index_copy_(0, idx, sub.k[l].narrow(2, g0, extra));
      pc.v[l].narrow(2, g0, extra).index_copy_(0, idx, sub.v[l].narrow(2, g0, extra));
    }
  }
  pc.length = longest;
  return pc;
}

}  // namespace

at::Tensor LlamaModel::Prefill(const RaggedTokens& prompts, const std::vector<int64_t>& rows,
                               const std::vector<int64_t>& keep, int64_t extra_capacity, KVCache* cache,
                               bool share_prefix, const KVCache* known_prefix) const {
  const int64_t b = int64_t(rows.size()), hdim = config_.hidden_size;
  int64_t tp = 1, kept = 0;
  std::vector<int64_t> limit(b), out_at(b);
  for (int64_t i = 0; i < b; ++i) {
    tp = std::max<int64_t>(tp, prompts.length(rows[i]));
    limit[i] = prompts.length(rows[i]) - keep[i];  // kept positions stay in the suffix
    out_at[i] = kept;
    kept += keep[i];
  }
  const int64_t known = share_prefix && known_prefix ? known_prefix->length : 0;
  for (int64_t i = 0; i < b; ++i)
    GR_CHECK(known <= limit[i], kInternal, "known prefix of ", known, " tokens is longer than row ", i, " may share");
  const PrefixPlan plan = PlanSharedPrefix(prompts, rows, limit, share_prefix ? kMinSharedPrefixTokens : 0, known);
  *cache = NewCache(b, tp + extra_capacity);
  KVCache prefix = SharedPrefixCache(*this, prompts, rows, plan, known > 0 ? known_prefix : nullptr);
  at::Tensor out = at::empty({kept, hdim}, at::TensorOptions().dtype(dtype_).device(device_));
  // Passes of a few rows of one group each write their rows of the one batch cache; a pass pads
  // to its own longest suffix (rows come longest first when planned by PlanBatches). Group by
  // group, batch order within one: without sharing that is batch order, pass rows contiguous.
  std::vector<int64_t> order(b);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return plan.group[x] < plan.group[y]; });
  for (int64_t k0 = 0; k0 < b;) {
    const int64_t g = plan.group[order[k0]], shared = plan.group_length[g];
    int64_t nr = 0, tps = 1;
    bool contiguous = true;
    while (k0 + nr < b && plan.group[order[k0 + nr]] == g) {
      const int64_t longer = std::max<int64_t>(tps, prompts.length(rows[order[k0 + nr]]) - shared);
      if (nr > 0 && nr + 1 > PrefillRowsPerPass(longer)) break;
      contiguous = contiguous && order[k0 + nr] == order[k0] + nr;
      tps = longer, ++nr;
    }
    at::Tensor ids = at::zeros({nr, tps}, at::kLong), lens = at::empty({nr, 1, 1}, at::kLong);
    std::vector<int64_t> pick, dest;
    for (int64_t i = 0; i < nr; ++i) {
      const int64_t row = order[k0 + i], len = prompts.length(rows[row]) - shared;
      const int32_t* src = prompts.ids + prompts.offsets[rows[row]] + shared;
      std::copy(src, src + len, ids.data_ptr<int64_t>() + i * tps);
      lens.data_ptr<int64_t>()[i] = len;
      for (int64_t t = len - keep[row], j = 0; t < len; ++t, ++j) pick.push_back(i * tps + t), dest.push_back(out_at[row] + j);
    }
    // The pass's own cache: a view of its rows of the batch cache when they are contiguous,
    // else a small one copied into the batch cache after.
    KVCache part;
    if (!contiguous) part = NewCache(nr, shared + tps);
    part.capacity = contiguous ? cache->capacity : shared + tps;
    for (size_t l = 0; l < cache->k.size(); ++l) {
      if (contiguous) {
        part.k.push_back(cache->k[l].narrow(0, order[k0], nr));
        part.v.push_back(cache->v[l].narrow(0, order[k0], nr));
      }
      if (shared > 0) {
        part.k[l].narrow(2, 0, shared).copy_(prefix.k[l].narrow(0, g, 1).narrow(2, 0, shared).expand({nr, -1, -1, -1}));
        part.v[l].narrow(2, 0, shared).copy_(prefix.v[l].narrow(0, g, 1).narrow(2, 0, shared).expand({nr, -1, -1, -1}));
      }
    }
    part.length = shared;
    at::Tensor pos = (at::arange(tps, at::kLong) + shared).unsqueeze(0).expand({nr, tps});
    at::Tensor hidden = Forward(ids, pos, ChunkMask(nr, tps, shared, lens), &part);
    at::Tensor picked = hidden.reshape({nr * tps, hdim}).index_select(0, at::tensor(pick, at::kLong).to(device_));
    if (dest.front() + int64_t(dest.size()) - 1 == dest.back() && std::is_sorted(dest.begin(), dest.end()))
      out.narrow(0, dest.front(), int64_t(dest.size())).copy_(picked);
    else
      out.index_copy_(0, at::tensor(dest, at::kLong).to(device_), picked);
    const int64_t filled = shared + tps;
    at::Tensor idx;
    if (!contiguous) idx = at::tensor(std::vector<int64_t>(order.begin() + k0, order.begin() + k0 + nr), at::kLong).to(device_);
    for (size_t l = 0; l < cache->k.size(); ++l) {
      if (!contiguous) {
        cache->k[l].narrow(2, 0, filled).index_copy_(0, idx, part.k[l].narrow(2, 0, filled));
        cache->v[l].narrow(2, 0, filled).index_copy_(0, idx, part.v[l].narrow(2, 0, filled));
      }
      // Slots past this pass's padding up to the batch length: keys never attended, but they
      // must be finite (0 x NaN garbage would poison the attention output).
      if (filled < tp) {
        if (contiguous) {
          part.k[l].narrow(2, filled, tp - filled).zero_(), part.v[l].narrow(2, filled, tp - filled).zero_();
        } else {
          cache->k[l].narrow(2, filled, tp - filled).index_fill_(0, idx, 0);
          cache->v[l].narrow(2, filled, tp - filled).index_fill_(0, idx, 0);
        }
      }
    }
    k0 += nr;
  }
  cache->length = tp;
  stats_->prompt_prefills += b;
  stats_->prefill_tokens += plan.planned_tokens - known;  // the known prefix ran before
  return out;
}

KVCache LlamaModel::PrefixCache(const RaggedTokens& prompts, int64_t row, int64_t length) const {
  GR_CHECK(length >= 1 && length <= prompts.length(row), kInternal, "prefix of ", length, " tokens of a ",
           prompts.length(row), "-token row");
  KVCache c = NewCache(1, length);
  at::Tensor ids = at::empty({1, length}, at::kLong);
  const int32_t* src = prompts.ids + prompts.offsets[row];
  std::copy(src, src + length, ids.data_ptr<int64_t>());
  Forward(ids, at::arange(length, at::kLong).unsqueeze(0), ChunkMask(1, length, 0, at::full({1, 1, 1}, length, at::kLong)),
          &c);
  stats_->prefill_tokens += length;
  return c;
}

at::Tensor LlamaModel::LastLogits(const RaggedTokens& prompts, int64_t last_n, const RunContext& ctx) const {
  c10::InferenceMode guard;
  for (int64_t r = 0; r < prompts.count; ++r)
  {
    GR_CHECK(prompts.length(r) >= last_n, kInvalidArgument, "prompt ", r, " has fewer than ", last_n, " tokens");
    GR_CHECK(prompts.length(r) <= config_.max_position_embeddings, kInvalidArgument, "prompt ", r, " has ",
             prompts.length(r), " tokens, more than the ", config_.max_position_embeddings, " positions the model has");
  }
  for (int64_t k = 0; k < prompts.offsets[prompts.count]; ++k)
    GR_CHECK(prompts.ids[k] >= 0 && prompts.ids[k] < config_.vocab_size, kInvalidArgument, "prompt token id ",
             prompts.ids[k], " out of range");
  std::vector<int64_t> rows(prompts.count), cost(prompts.count);
  std::iota(rows.begin(), rows.end(), 0);
  for (int64_t r = 0; r < prompts.count; ++r) cost[r] = prompts.length(r);
  at::Tensor out = at::empty({prompts.count, last_n, config_.vocab_size}, at::kFloat);
  for (const auto& batch : PlanBatches(rows, cost, token_budget_, max_rows_).batches) {
    ctx.ThrowIfCancelled();
    KVCache cache;
    at::Tensor hidden = Prefill(prompts, batch, std::vector<int64_t>(batch.size(), last_n), 0, &cache);
    at::Tensor logits = Logits(hidden).view({-1, last_n, config_.vocab_size}).cpu();
    for (size_t i = 0; i < batch.size(); ++i) out[batch[i]].copy_(logits[int64_t(i)]);
  }
  return out;
}

at::Tensor LlamaModel::AnswerLogits(const ContrastiveRequest& req, const std::vector<int64_t>& rows,
                                                 const std::vector<int64_t>& row_item) const {
  const RaggedTokens& A = req.answers;
  const int64_t b = int64_t(rows.size());
  // The first answer rides in the prefill, after its prompt (causal: the prompt's keys do not
  // change); the others run as one chunk over the prompt's cache, every token but the last.
  std::vector<int32_t> seq_ids, seq_off{0};
  std::vector<int64_t> lens(b), keep(b), chunk_len(b, 0);
  int64_t chunk = 0;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t item = row_item[i], a0 = req.answer_begin[item];
    const int32_t* p = req.prompts.ids + req.prompts.offsets[rows[i]];
    lens[i] = req.prompts.length(rows[i]);
    keep[i] = A.length(a0);  // the prompt's last position, then answer 0 but its last token
    seq_ids.insert(seq_ids.end(), p, p + lens[i]);
    seq_ids.insert(seq_ids.end(), A.ids + A.offsets[a0], A.ids + A.offsets[a0] + keep[i] - 1);
    seq_off.push_back(int32_t(seq_ids.size()));
    for (int64_t a = a0 + 1; a < req.answer_begin[item + 1]; ++a) chunk_len[i] += A.length(a) - 1;
    chunk = std::max(chunk, chunk_len[i]);
  }
  const RaggedTokens seqs{seq_ids.data(), seq_off.data(), nullptr, b};
  std::vector<int64_t> seq_rows(b);
  std::iota(seq_rows.begin(), seq_rows.end(), 0);
  KVCache cache;
  at::Tensor pre = Prefill(seqs, seq_rows, keep, chunk, &cache, req.share_prefix);  // [sum keep, H]
  // Counted as answer tokens, not prompt tokens.
  const int64_t first_answer_tokens = int64_t(seq_ids.size()) - std::accumulate(lens.begin(), lens.end(), int64_t(0));
  stats_->prefill_tokens -= first_answer_tokens;
  stats_->answer_tokens += first_answer_tokens;
  const int64_t tp = cache.length, hdim = pre.size(1);
  at::Tensor rows_h = pre;
  std::vector<int64_t> first_slot(b);
  if (chunk > 0) {
    at::Tensor ids = at::zeros({b, chunk}, at::kLong), pos = at::zeros({b, chunk}, at::kLong);
    // Keys: the prompt only (not answer 0 after it), then the answer's own earlier slots.
    at::Tensor own = at::zeros({b, chunk, chunk}, at::kBool), plen = at::tensor(lens, at::kLong).view({b, 1, 1});
    auto ia = ids.accessor<int64_t, 2>();
    auto pa = pos.accessor<int64_t, 2>();
    auto oa = own.accessor<bool, 3>();
    for (int64_t i = 0; i < b; ++i) {
      const int64_t item = row_item[i];
      int64_t s = 0;
      for (int64_t a = req.answer_begin[item] + 1; a < req.answer_begin[item + 1]; ++a) {
        const int32_t* src = A.ids + A.offsets[a];
        const int64_t first = s;
        for (int64_t t = 0; t + 1 < A.length(a); ++t, ++s) {
          ia[i][s] = src[t];
          pa[i][s] = lens[i] + t;
          for (int64_t k = first; k <= s; ++k) oa[i][s][k] = true;
        }
      }
      // Padding slots see the prompt like the rest (any real key keeps the softmax finite).
    }
    at::Tensor mask = at::cat({at::arange(tp, at::kLong).view({1, 1, tp}).lt(plen).expand({b, chunk, tp}), own}, 2);
    at::Tensor ans_flat = Forward(ids, pos, mask, &cache).reshape({b * chunk, hdim});
    std::vector<int64_t> slot_rows;
    for (int64_t i = 0; i < b; ++i) {
      first_slot[i] = pre.size(0) + int64_t(slot_rows.size());
      for (int64_t s = 0; s < chunk_len[i]; ++s) slot_rows.push_back(i * chunk + s);
    }
    int64_t run = 0;
    for (int64_t c : chunk_len) run += c;
    stats_->answer_tokens += run;
    rows_h = at::cat({pre, ans_flat.index_select(0, at::tensor(slot_rows, at::kLong).to(device_))}, 0);
  }
  // lm_head input: the prefill rows (per row: prompt's last position, answer 0's tokens), then
  // the other answers' slots of row 0, row 1, ...
  at::Tensor logits = Logits(rows_h);  // [rows, V] float32
  std::vector<int64_t> pick;
  int64_t at_pre = 0;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t item = row_item[i];
    for (int64_t t = 0; t < keep[i]; ++t) pick.push_back(at_pre + t);
    int64_t s = 0;
    for (int64_t a = req.answer_begin[item] + 1; a < req.answer_begin[item + 1]; ++a) {
      pick.push_back(at_pre);  // first answer token: the prompt's last position
      for (int64_t t = 1; t < A.length(a); ++t) pick.push_back(first_slot[i] + s++);
    }
    at_pre += keep[i];
  }
  if (int64_t(pick.size()) == at_pre) return logits;  // one answer per row: in order already
  return logits.index_select(0, at::tensor(pick, at::kLong).to(logits.device()));
}

namespace {

// -log p(answer token) under log_softmax((1+a) z_ctx - a z_noctx), per answer position (on the
// model's device; no host sync here).
at::Tensor TokenNll(const at::Tensor& z_ctx, const at::Tensor& z_noctx, const at::Tensor& targets, double alpha) {
  at::Tensor lp = at::log_softmax((1 + alpha) * z_ctx - alpha * z_noctx, -1);
  return lp.gather(1, targets.unsqueeze(1)).squeeze(1).neg();
}

// [2, N] float64 on the host: row 0 the contrastive NLL, row 1 the plain NLL under z_ctx alone
// (retrieved_ppl); one device-to-host copy for both.
at::Tensor BothNll(const at::Tensor& z_ctx, const at::Tensor& z_noctx, const at::Tensor& targets, double alpha) {
  at::Tensor plain = at::log_softmax(z_ctx, -1).gather(1, targets.unsqueeze(1)).squeeze(1).neg();
  return at::stack({TokenNll(z_ctx, z_noctx, targets, alpha), plain}).to(at::kDouble).cpu();
}

// PPL_CD per answer from per-token NLLs laid out answer after answer.
void PerplexityPerAnswer(const double* nll, const std::vector<int64_t>& answer_lens, double* out, int64_t stride) {
  int64_t at_tok = 0;
  for (size_t a = 0; a < answer_lens.size(); ++a) {
    double sum = 0;
    for (int64_t t = 0; t < answer_lens[a]; ++t) sum += nll[at_tok++];
    out[int64_t(a) * stride] = std::exp(sum / double(answer_lens[a]));
  }
}

}  // namespace

void LlamaModel::ScoreChunk(const ContrastiveRequest& req, const std::vector<int64_t>& items, double* out,
                            double* plain, const std::vector<int64_t>& out_offset, const RunContext& ctx, int64_t* done) const {
  const int64_t n_prompts = req.prompts.count;
  std::vector<int64_t> cost(n_prompts, 0), prompt_item(n_prompts, -1);
  std::vector<int64_t> std_rows, ctx_rows;
  for (int64_t item : items) {
    int64_t answer_tokens = 0;
    for (int64_t a = req.answer_begin[item]; a < req.answer_begin[item + 1]; ++a) answer_tokens += req.answers.length(a);
    for (int64_t p = req.prompt_begin[item]; p < req.prompt_begin[item + 1]; ++p) {
      prompt_item[p] = item;
      cost[p] = req.prompts.length(p) + answer_tokens;
      (p == req.prompt_begin[item] ? std_rows : ctx_rows).push_back(p);
    }
  }
  // Answer token ids (on the device) and answer lengths per item.
  std::vector<at::Tensor> targets(req.items);
  std::vector<std::vector<int64_t>> answer_lens(req.items);
  for (int64_t item : items) {
    std::vector<int64_t> ids;
    for (int64_t a = req.answer_begin[item]; a < req.answer_begin[item + 1]; ++a) {
      answer_lens[item].push_back(req.answers.length(a));
      for (int64_t t = 0; t < req.answers.length(a); ++t) ids.push_back(req.answers.ids[req.answers.offsets[a] + t]);
    }
    targets[item] = at::tensor(ids, at::kLong).to(device_);
  }
  std::vector<at::Tensor> z_noctx(req.items);
  for (const auto& batch : PlanBatches(std_rows, cost, token_budget_, max_rows_).batches) {
    ctx.ThrowIfCancelled();
    std::vector<int64_t> row_item;
    for (int64_t p : batch) row_item.push_back(prompt_item[p]);
    at::Tensor logits = AnswerLogits(req, batch, row_item);
    for (size_t i = 0, at = 0; i < batch.size(); at += targets[row_item[i]].size(0), ++i)
      z_noctx[row_item[i]] = logits.narrow(0, at, targets[row_item[i]].size(0));
    *done += int64_t(batch.size());
    ctx.Progress(*done, req.prompts.count, "prompts");
  }
  for (const auto& batch : PlanBatches(ctx_rows, cost, token_budget_, max_rows_).batches) {
    ctx.ThrowIfCancelled();
    std::vector<int64_t> row_item;
    for (int64_t p : batch) row_item.push_back(prompt_item[p]);
    at::Tensor logits = AnswerLogits(req, batch, row_item);
    std::vector<at::Tensor> z_no, tg;
    for (int64_t item : row_item) z_no.push_back(z_noctx[item]), tg.push_back(targets[item]);
    // One device-to-host copy per batch.
    at::Tensor host = BothNll(logits, at::cat(z_no), at::cat(tg), req.alpha);
    const double* p = host.data_ptr<double>();
    const double* q = p + host.size(1);
    for (size_t i = 0; i < batch.size(); ++i) {
      const int64_t item = row_item[i];
      const int64_t n_ctx = req.prompt_begin[item + 1] - req.prompt_begin[item] - 1;
      const int64_t c = batch[i] - req.prompt_begin[item] - 1;
      PerplexityPerAnswer(p, answer_lens[item], out + out_offset[item] + c, n_ctx);
      PerplexityPerAnswer(q, answer_lens[item], plain + out_offset[item] + c, n_ctx);
      p += targets[item].size(0);
      q += targets[item].size(0);
    }
    *done += int64_t(batch.size());
    ctx.Progress(*done, req.prompts.count, "prompts");
  }
}

void LlamaModel::ScoreReference(const ContrastiveRequest& req, int64_t item, double* out, double* plain,
                                const RunContext& ctx) const {
  const int64_t p0 = req.prompt_begin[item], n_ctx = req.prompt_begin[item + 1] - p0 - 1;
  for (int64_t a = req.answer_begin[item]; a < req.answer_begin[item + 1]; ++a) {
    const int64_t len = req.answers.length(a);
    const int32_t* ans = req.answers.ids + req.answers.offsets[a];
    at::Tensor targets = at::tensor(std::vector<int64_t>(ans, ans + len), at::kLong).to(device_);
    at::Tensor z_noctx;
    for (int64_t p = p0; p <= p0 + n_ctx; ++p) {
      ctx.ThrowIfCancelled();
      const int64_t plen = req.prompts.length(p), total = plen + len;
      std::vector<int32_t> seq(req.prompts.ids + req.prompts.offsets[p], req.prompts.ids + req.prompts.offsets[p + 1]);
      seq.insert(seq.end(), ans, ans + len);
      const int32_t offs[2] = {0, int32_t(total)};
      RaggedTokens one{seq.data(), offs, nullptr, 1};
      KVCache cache;
      at::Tensor hidden = Prefill(one, {0}, {total}, 0, &cache);
      at::Tensor z = Logits(hidden).narrow(0, plen - 1, len);  // every position, then slice
      if (p == p0) {
        z_noctx = z;
      } else {
        at::Tensor nll = BothNll(z, z_noctx, targets, req.alpha);
        const int64_t at = (a - req.answer_begin[item]) * n_ctx + (p - p0 - 1);
        PerplexityPerAnswer(nll.data_ptr<double>(), {len}, out + at, 1);
        PerplexityPerAnswer(nll.data_ptr<double>() + len, {len}, plain + at, 1);
      }
    }
  }
}

at::Tensor LlamaModel::ContrastivePerplexity(const ContrastiveRequest& req, const RunContext& ctx,
                                             at::Tensor* plain) const {
  c10::InferenceMode guard;
  const int64_t max_pos = config_.max_position_embeddings;
  std::vector<int64_t> out_offset(req.items + 1, 0);
  for (int64_t i = 0; i < req.items; ++i) {
    const int64_t n_prompts = req.prompt_begin[i + 1] - req.prompt_begin[i];
    const int64_t n_ans = req.answer_begin[i + 1] - req.answer_begin[i];
    GR_CHECK(n_prompts >= 1 && req.prompt_begin[i + 1] <= req.prompts.count, kInvalidArgument, "item ", i,
             " has no standard prompt");
    GR_CHECK(n_ans >= 1 && req.answer_begin[i + 1] <= req.answers.count, kInvalidArgument, "item ", i, " has no answers");
    int64_t longest_answer = 0;
    for (int64_t a = req.answer_begin[i]; a < req.answer_begin[i + 1]; ++a) {
      GR_CHECK(req.answers.length(a) >= 1, kInvalidArgument, "item ", i, " answer ", a - req.answer_begin[i], " is empty");
      longest_answer = std::max<int64_t>(longest_answer, req.answers.length(a));
    }
    for (int64_t p = req.prompt_begin[i]; p < req.prompt_begin[i + 1]; ++p) {
      const int64_t len = req.prompts.length(p);
      GR_CHECK(len >= 1, kInvalidArgument, "item ", i, " prompt ", p - req.prompt_begin[i], " is empty");
      GR_CHECK(len + longest_answer <= max_pos, kInvalidArgument, "item ", i, " prompt ", p - req.prompt_begin[i],
               " has ", len, " tokens plus a ", longest_answer, "-token answer: more than the ", max_pos,
               " positions the model has");
    }
    for (int64_t j = req.answer_begin[i]; j < req.answer_begin[i + 1]; ++j)
      for (int64_t t = 0; t < req.answers.length(j); ++t) {
        int32_t id = req.answers.ids[req.answers.offsets[j] + t];
        GR_CHECK(id >= 0 && id < config_.vocab_size, kInvalidArgument, "item ", i, ": token id ", id, " out of range");
      }
    out_offset[i + 1] = out_offset[i] + n_ans * (n_prompts - 1);
  }
  for (int64_t k = 0; k < req.prompts.offsets[req.prompts.count]; ++k)
    GR_CHECK(req.prompts.ids[k] >= 0 && req.prompts.ids[k] < config_.vocab_size, kInvalidArgument, "prompt token id ",
             req.prompts.ids[k], " out of range");
  at::Tensor out = at::full({out_offset[req.items]}, std::nan(""), at::kDouble);
  at::Tensor plain_out = at::full({out_offset[req.items]}, std::nan(""), at::kDouble);
  if (plain) *plain = plain_out;
  double* o = out.data_ptr<double>();
  double* po = plain_out.data_ptr<double>();
  if (req.reference_method) {
    for (int64_t i = 0; i < req.items; ++i) {
      ScoreReference(req, i, o + out_offset[i], po + out_offset[i], ctx);
      ctx.Progress(i + 1, req.items, "items");
    }
    return out;
  }
  // Items go in chunks whose no-context logits (kept until their contexts are scored) stay
  // under ~256 MiB, so vocabulary size never makes memory grow with the item count.
  const int64_t limit = std::max<int64_t>(1, (int64_t(256) << 20) / (4 * config_.vocab_size));
  std::vector<int64_t> chunk;
  int64_t chunk_tokens = 0, done = 0;
  for (int64_t i = 0; i < req.items; ++i) {
    int64_t tokens = req.answers.offsets[req.answer_begin[i + 1]] - req.answers.offsets[req.answer_begin[i]];
    chunk.push_back(i);
    chunk_tokens += tokens;
    if (chunk_tokens >= limit || i + 1 == req.items) {
      ScoreChunk(req, chunk, o, po, out_offset, ctx, &done);
      chunk.clear();
      chunk_tokens = 0;
    }
  }
  return out;
}

}  // namespace gainrag
