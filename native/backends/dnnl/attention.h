// Self-attention of an encoder layer on oneDNN matmuls, one batch row at a time over that row's
// real keys only, so no padded [B, heads, T, T] score tensor and no additive mask exist.
// Like packed_linear.h, this header names no oneDNN type.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace gainrag::onednn {

// qkv: float32 [B, T, 3H], contiguous, the stacked query/key/value product (query columns
// first, then key, then value; within each, head-major as HF's view [T, heads, H / heads]).
// key_lengths[b] in 1..T: row b's real tokens are its first key_lengths[b] positions (right
// padding). Returns ctx float32 [B, T, H] (heads concatenated, as HF before the output dense):
// softmax(q k^T / sqrt(H / heads)) v with keys past key_lengths[b] left out, for every query
// position, padded ones included (as HF computes them). Inference only.
// qkv may also be float32 [N, 3H] with the rows back to back and no padding (row b's tokens
// start where row b - 1's end; the lengths sum to N); ctx is then [N, H].
// first_query_only: only each row's first position attends (over all its keys), and ctx is
// [B, H], row b's first token; what a last layer needs when only the first token is read (CLS
// pooling, sequence classification).
at::Tensor RaggedSelfAttention(const at::Tensor& qkv, const std::vector<int64_t>& key_lengths, int64_t heads,
                               bool first_query_only = false);

// c = scale * a x b over the last two dims; leading dims are batch dims, where b may have 1 to
// broadcast (grouped-query attention reads one kv head for several query heads). Any strides:
// views of larger tensors are read, and written, in place. float32 CPU, 2 to 6 dims, all of
// one rank. Throws Error(kShape) on mismatched shapes, Error(kUnsupported) when oneDNN cannot
// build the product.
void BatchedMatmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, float scale = 1.0f);

}  // namespace gainrag::onednn
