#include "core/batching.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace gainrag {

void ValidateRagged(const RaggedTokens& tokens, int64_t total_ids) {
  GR_CHECK(tokens.count >= 0, kShape, "negative row count");
  GR_CHECK(tokens.offsets != nullptr, kShape, "missing offsets");
  GR_CHECK(tokens.offsets[0] == 0, kShape, "offsets must start at 0");
  for (int64_t i = 0; i < tokens.count; ++i)
    GR_CHECK(tokens.offsets[i + 1] >= tokens.offsets[i], kShape, "offsets decrease at row ", i);
  GR_CHECK(tokens.offsets[tokens.count] == total_ids, kShape, "offsets end at ", tokens.offsets[tokens.count],
           " but there are ", total_ids, " ids");
}

BatchPlan PlanBatches(std::vector<int64_t> rows, const std::vector<int64_t>& cost, int64_t max_tokens, int64_t max_rows) {
  GR_CHECK(max_tokens > 0 && max_rows > 0, kInvalidArgument, "batch limits must be positive");
  // Longest first: the largest batch runs first, so an out-of-memory shows up at once.
  std::stable_sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) { return cost[a] > cost[b]; });
  BatchPlan plan;
  std::vector<int64_t> current;
  int64_t longest = 0;
  for (int64_t row : rows) {
    int64_t len = std::max<int64_t>(cost[row], 1);
    int64_t next_longest = std::max(longest, len);
    if (!current.empty() &&
        (int64_t(current.size()) + 1 > max_rows || next_longest * int64_t(current.size() + 1) > max_tokens)) {
      plan.batches.push_back(std::move(current));
      current.clear();
      next_longest = len;
    }
    current.push_back(row);
    longest = next_longest;
  }
  if (!current.empty()) plan.batches.push_back(std::move(current));
  return plan;
}

BatchPlan PlanBatches(const RaggedTokens& tokens, int64_t max_tokens, int64_t max_rows) {
  std::vector<int64_t> rows(tokens.count);
  std::iota(rows.begin(), rows.end(), 0);
  std::vector<int64_t> cost(tokens.count);
  for (int64_t r = 0; r < tokens.count; ++r) cost[r] = tokens.length(r);
  return PlanBatches(std::move(rows), cost, max_tokens, max_rows);
}

PaddedBatch MakePaddedBatch(const RaggedTokens& tokens, const std::vector<int64_t>& rows, int64_t pad_id) {
  int64_t longest = 0;
  for (int64_t r : rows) longest = std::max<int64_t>(longest, tokens.length(r));
  longest = std::max<int64_t>(longest, 1);
  const int64_t b = static_cast<int64_t>(rows.size());
  PaddedBatch out;
  out.input_ids = at::full({b, longest}, pad_id, at::kLong);
  out.attention_mask = at::zeros({b, longest}, at::kLong);
  out.type_ids = at::zeros({b, longest}, at::kLong);
  auto ids = out.input_ids.accessor<int64_t, 2>();
  auto mask = out.attention_mask.accessor<int64_t, 2>();
  auto types = out.type_ids.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i) {
    const int64_t r = rows[i];
    const int32_t* src = tokens.ids + tokens.offsets[r];
    const int32_t* tsrc = tokens.type_ids ? tokens.type_ids + tokens.offsets[r] : nullptr;
    for (int64_t t = 0; t < tokens.length(r); ++t) {
      ids[i][t] = src[t];
      mask[i][t] = 1;
      if (tsrc) types[i][t] = tsrc[t];
    }
  }
  out.rows = rows;
  return out;
}

}  // namespace gainrag
