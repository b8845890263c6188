// Token batches as they cross into the engine: flat int32 ids + offsets (Arrow layout), and
// the batch planner every model uses: sort rows by length, then cut batches by a token budget
// (rows x longest row), so padding stays small and no batch pads to the global maximum.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace gainrag {

struct RaggedTokens {
  const int32_t* ids = nullptr;
  const int32_t* offsets = nullptr;     // count + 1 entries, offsets[0] == 0
  const int32_t* type_ids = nullptr;    // optional, same layout as ids
  int64_t count = 0;
  int64_t length(int64_t row) const { return offsets[row + 1] - offsets[row]; }
};

// Throws Error(kShape) when offsets are not non-decreasing from 0 to `total_ids`.
void ValidateRagged(const RaggedTokens& tokens, int64_t total_ids);

struct BatchPlan {
  std::vector<std::vector<int64_t>> batches;  // row indices per batch, in execution order
};

// max_tokens bounds rows * longest_row_in_batch; max_rows bounds the rows per batch.
BatchPlan PlanBatches(const RaggedTokens& tokens, int64_t max_tokens, int64_t max_rows);
// The same planner over a subset of rows with their own cost (tokens a row will occupy, e.g. a
// prompt plus its answers): `rows` sorted by cost[row], longest first (stable), then cut so that
// rows * costliest <= max_tokens. Batches hold the given row ids.
BatchPlan PlanBatches(std::vector<int64_t> rows, const std::vector<int64_t>& cost, int64_t max_tokens, int64_t max_rows);

struct PaddedBatch {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor attention_mask;  // [B, T] int64 (1 = token)
  at::Tensor type_ids;        // [B, T] int64, zeros when the batch has none
  std::vector<int64_t> rows;  // original row per batch position
};

// Right-pads the given rows with `pad_id` into CPU tensors.
PaddedBatch MakePaddedBatch(const RaggedTokens& tokens, const std::vector<int64_t>& rows, int64_t pad_id);

}  // namespace gainrag
