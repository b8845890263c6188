// Shared-prefix planning (see llama_prefix.h).
#include "models/llama_prefix.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace gainrag {
namespace {

int64_t CommonPrefix(const RaggedTokens& t, int64_t a, int64_t b) {
  const int32_t* x = t.ids + t.offsets[a];
  const int32_t* y = t.ids + t.offsets[b];
  const int64_t n = std::min(t.length(a), t.length(b));
  int64_t k = 0;
  while (k < n && x[k] == y[k]) ++k;
  return k;
}

}  // namespace

int64_t CommonPrefixLength(const RaggedTokens& prompts, const std::vector<int64_t>& rows,
                           const std::vector<int64_t>& limit) {
  if (rows.size() < 2) return 0;
  int64_t common = std::max<int64_t>(limit[0], 0);
  for (size_t i = 1; i < rows.size() && common > 0; ++i)
    common = std::min({common, CommonPrefix(prompts, rows[0], rows[i]), std::max<int64_t>(limit[i], 0)});
  return common;
}

PrefixPlan PlanSharedPrefix(const RaggedTokens& prompts, const std::vector<int64_t>& rows,
                            const std::vector<int64_t>& limit, int64_t min_tokens, int64_t known) {
  const int64_t b = int64_t(rows.size());
  PrefixPlan plan;
  plan.group.assign(b, 0);
  for (int64_t r : rows) plan.unshared_tokens += prompts.length(r);
  plan.planned_tokens = plan.unshared_tokens;
  if (min_tokens <= 0) known = 0;
  if (b < 2 || min_tokens <= 0) {
    // One group; with a known prefix it is that prefix (one row runs only its suffix).
    plan.global = known;
    plan.group_length = {known};
    plan.group_source = {0};
    return plan;
  }
  // Sorted by their tokens, rows with a long common beginning are neighbours, and the prefix
  // all rows share is the shortest neighbour overlap.
  std::vector<int64_t> order(b);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
    const int32_t* x = prompts.ids + prompts.offsets[rows[i]];
    const int32_t* y = prompts.ids + prompts.offsets[rows[j]];
    return std::lexicographical_compare(x, x + prompts.length(rows[i]), y, y + prompts.length(rows[j]));
  });
  std::vector<int64_t> next(b - 1);
  int64_t global = std::numeric_limits<int64_t>::max();
  for (int64_t k = 0; k + 1 < b; ++k) {
    const int64_t i = order[k], j = order[k + 1];
    next[k] = std::min({CommonPrefix(prompts, rows[i], rows[j]), limit[i], limit[j]});
    global = std::min(global, next[k]);
  }
  for (int64_t i = 0; i < b; ++i) global = std::min(global, std::max<int64_t>(limit[i], 0));
  plan.global = global >= min_tokens ? global : 0;
  plan.global = std::max(plan.global, known);  // (the rows share it: the caller's promise)

  // Groups: runs of neighbours. A row joins the current group while that saves at least as many
  // tokens as closing the group would (a short overlap would cut the group's prefix for all).
  std::vector<std::vector<int64_t>> groups;
  std::vector<int64_t> lengths;
  std::vector<int64_t> cur{order[0]};
  int64_t run = std::numeric_limits<int64_t>::max();
  auto close = [&] {
    groups.push_back(cur);
    lengths.push_back(cur.size() >= 2 ? run : plan.global);
  };
  for (int64_t k = 0; k + 1 < b; ++k) {
    const int64_t n = int64_t(cur.size());
    const int64_t joined = std::min(run, next[k]);
    const int64_t saved_now = n >= 2 ? (n - 1) * (run - plan.global) : 0;
    if (joined - plan.global >= min_tokens && n * (joined - plan.global) >= saved_now) {
      cur.push_back(order[k + 1]);
      run = joined;
    } else {
      close();
      cur = {order[k + 1]};
      run = std::numeric_limits<int64_t>::max();
    }
  }
  close();
  // Groups numbered by their first row in batch order (deterministic, whatever the sort did).
  std::vector<int64_t> gorder(groups.size());
  std::iota(gorder.begin(), gorder.end(), 0);
  auto first = [&](int64_t g) { return *std::min_element(groups[g].begin(), groups[g].end()); };
  std::sort(gorder.begin(), gorder.end(), [&](int64_t x, int64_t y) { return first(x) < first(y); });
  plan.planned_tokens = plan.global;
  for (int64_t g : gorder) {
    const int64_t id = int64_t(plan.group_length.size());
    plan.group_length.push_back(lengths[g]);
    plan.group_source.push_back(first(g));
    plan.planned_tokens += lengths[g] - plan.global;
    for (int64_t i : groups[g]) {
      plan.group[i] = id;
      plan.planned_tokens += prompts.length(rows[i]) - lengths[g];
    }
  }
  return plan;
}

}  // namespace gainrag
