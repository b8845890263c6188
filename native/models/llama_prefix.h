// Shared-prefix planning for Llama prefill. The prompts of a synthesis batch begin with the same
// tokens (chat header, system prompt, the "Passage #1 title:" label), and passages of one
// article share their title too. Causal attention makes a prefix's keys/values independent of
// what follows it, so a prefix common to several rows can be run once and its cache copied to
// each of them; only the rows' own suffixes are then prefilled.
//
// Two levels: a prefix every row of the batch shares (`global`), and groups of rows that share
// a longer one (found by sorting the rows' tokens: rows with a long common beginning end up next
// to one another). Pure planning, no tensors: LlamaModel::Prefill runs the plan.
#pragma once

#include <cstdint>
#include <vector>

#include "core/batching.h"

namespace gainrag {

// Shorter common prefixes are not worth their extra forward.
constexpr int64_t kMinSharedPrefixTokens = 8;

struct PrefixPlan {
  int64_t global = 0;                  // leading tokens shared by every row (0: none worth sharing)
  std::vector<int64_t> group;          // per row (index into `rows`): its group
  std::vector<int64_t> group_length;   // per group: its shared prefix length, >= global
  std::vector<int64_t> group_source;   // per group: a row (index into `rows`) holding the prefix tokens
  // Tokens the plan runs (global once, each group's extra once, every row's suffix), and the
  // tokens an unshared prefill runs; equal when nothing is shared.
  int64_t planned_tokens = 0;
  int64_t unshared_tokens = 0;
};

// rows: the prompt rows of one prefill batch; limit[i]: at most this many leading tokens of
// rows[i] may be shared (the positions whose hidden states the caller needs stay in the suffix).
// A prefix shorter than `min_tokens` is not worth an extra forward and is not shared; with
// min_tokens <= 0 nothing is shared (one group, length 0).
// known: the caller has the keys/values of the first `known` tokens, which every row shares and
// may share (known <= limit[i]), from an earlier forward (greedy generation runs the prefix
// common to all its prompts once per call, its refill batches are often a single row); the plan's
// global prefix is then at least `known`, whatever the batch size. With min_tokens <= 0 it is ignored.
PrefixPlan PlanSharedPrefix(const RaggedTokens& prompts, const std::vector<int64_t>& rows,
                            const std::vector<int64_t>& limit, int64_t min_tokens, int64_t known = 0);

// The number of leading tokens every prompt row shares, each row's count capped at limit[i]
// (0 for fewer than two rows).
int64_t CommonPrefixLength(const RaggedTokens& prompts, const std::vector<int64_t>& rows,
                           const std::vector<int64_t>& limit);

}  // namespace gainrag
