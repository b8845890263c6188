// Llama decoder: the fused CPU decode step (one token per sequence, few sequences).
//
// DecodeStep (llama_generate.cpp) runs ~25 ATen ops per layer; with one or a few rows each op's
// dispatch, temporaries and threading cost more than its arithmetic, and the step streamed the
// weights at under half the machine's memory bandwidth. This step is the same computation as
// plain loops over preallocated float32 buffers: RMSNorm, q/k/v as one stacked product with RoPE
// applied in place and the keys/values written straight into the cache column of each row's
// position, single-query attention over the cache (no mask tensors: row i reads columns
// [0, pos[i]]), the o-projection added into the residual, gate and up as one stacked product,
// silu * up in one pass, the down-projection added into the residual, the final norm and the
// lm_head. Every product reads its weights once for all rows (backends/cpu_decode.h).
//
// In bfloat16 mode the weights stay bfloat16 and the KV cache is float16 (CacheDtype), but the
// residual stream, norms (float32 weights), RoPE and attention arithmetic are float32 (the ATen
// path rounds each of them to bfloat16), which is closer to a float64 reference; greedy tokens
// equal the ATen path's on the tests.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cpu_decode.h"
#include "backends/cpu_rows.h"
#include "core/error.h"
#include "models/encoder.h"  // GemmPathFromEnvironment
#include "models/llama.h"
#ifdef GAINRAG_WITH_DNNL
#include "backends/dnnl/int8_gemv.h"
#include "backends/dnnl/packed_linear.h"
#endif

namespace gainrag {

void LlamaModel::ChooseGemm() {
  dnnl_gemm_ = false;
  float32_stream_ = false;
  const GemmPath gemm = GemmPathFromEnvironment();
#ifdef GAINRAG_WITH_DNNL
  // bfloat16 also where oneDNN has only f32 kernels (LinearUnpacked widens the weights per call):
  // LibTorch 1.13's CPU bf16 GEMM ran prefill at a tenth of fp32's speed on an AVX2 EPYC.
  dnnl_gemm_ = gemm != GemmPath::kTorch && device_.is_cpu() &&
               (dtype_ == at::kFloat ? onednn::Supports(at::kFloat)
                                     : dtype_ == at::kBFloat16 && onednn::SupportsBf16Weights());
#else
  (void)gemm;  // still validated: a bad value fails in every build
#endif
  float32_stream_ = dnnl_gemm_ || (gemm != GemmPath::kTorch && device_.is_cpu() && dtype_ == at::kBFloat16);
}

std::string DecodeModeFromEnvironment() {
  const char* env = std::getenv("GAINRAG_LLM_DECODE");
  const std::string mode = env ? env : "";
  GR_CHECK(mode.empty() || mode == "fast" || mode == "aten", kInvalidArgument,
           "GAINRAG_LLM_DECODE must be 'fast' or 'aten', got '", mode, "'");
  return mode;
}

void LlamaModel::PrepareFastDecode() {
  fast_decode_ = false;
  const std::string mode = DecodeModeFromEnvironment();
  if (mode == "aten" || !device_.is_cpu() || !cpu::DecodeKernels()) return;
  if (int8_) {
    // The int8 products' rows were kept where GemvInt8 runs (VNNI, or AVX2 on 7-bit codes); without them int8
    // decodes through DecodeStep, whose products are the packed int8 ones.
    fast_decode_ = lm_head8_.w.defined();
    return;
  }
  if (dtype_ != at::kFloat && dtype_ != at::kBFloat16) return;
  auto usable = [&](const at::Tensor& t) { return !t.defined() || (t.is_contiguous() && t.scalar_type() == dtype_); };
  // Norm weights may be float32 in bfloat16 mode (see Load).
  auto usable_norm = [&](const at::Tensor& t) {
    return t.is_contiguous() && (t.scalar_type() == dtype_ || t.scalar_type() == at::kFloat);
  };
  if (!usable(embed_) || !usable(lm_head_) || !usable_norm(final_norm_)) return;
  for (const Layer& L : layers_) {
    if (!usable_norm(L.input_norm) || !usable_norm(L.post_norm)) return;
    for (const at::Tensor* t : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down, &L.q_bias, &L.k_bias, &L.v_bias,
                                &L.o_bias})
      if (!usable(*t)) return;
  }
  for (Layer& L : layers_) {
    const int64_t qd = L.q.size(0), kvd = L.k.size(0), inter = L.gate.size(0);
    L.qkv = at::cat({L.q, L.k, L.v}, 0).contiguous();
    L.q = L.qkv.narrow(0, 0, qd);
    L.k = L.qkv.narrow(0, qd, kvd);
    L.v = L.qkv.narrow(0, qd + kvd, kvd);
    L.gate_up = at::cat({L.gate, L.up}, 0).contiguous();
    L.gate = L.gate_up.narrow(0, 0, inter);
    L.up = L.gate_up.narrow(0, inter, inter);
  }
  fast_decode_ = true;
}

at::Tensor LlamaModel::DecodeLogits(const at::Tensor& ids, const at::Tensor& positions, int64_t width, KVCache* cache,
                                    bool fast) const {
  if (fast && fast_decode_) return DecodeLogitsCpu(ids, positions, width, cache);
  return Logits(DecodeStep(ids, positions, width, cache));
}

namespace {

cpu::Elem ElemOf(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return cpu::Elem::kBF16;
    case at::kHalf: return cpu::Elem::kF16;
    default: return cpu::Elem::kF32;
  }
}

float Value(const at::Tensor& t, int64_t i) {
  return t.scalar_type() == at::kBFloat16 ? float(t.data_ptr<c10::BFloat16>()[i]) : t.data_ptr<float>()[i];
}

// x[r, 0..n) += bias (dtype of the model).
void AddBias(float* x, int64_t rows, int64_t ld, const at::Tensor& bias) {
  if (!bias.defined()) return;
  const int64_t n = bias.size(0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) x[r * ld + i] += Value(bias, i);
}

// Keys or values of one row, [kv_heads, hd] float32 -> cache column `pos` of row `row`.
void StoreColumn(const float* src, const at::Tensor& cache, int64_t row, int64_t pos, int64_t kv_heads, int64_t hd) {
  const int64_t cap = cache.size(2);
  for (int64_t g = 0; g < kv_heads; ++g) {
    const int64_t off = ((row * kv_heads + g) * cap + pos) * hd;
    if (cache.scalar_type() == at::kBFloat16) {
      c10::BFloat16* dst = cache.data_ptr<c10::BFloat16>() + off;
      for (int64_t i = 0; i < hd; ++i) dst[i] = c10::BFloat16(src[g * hd + i]);
    } else if (cache.scalar_type() == at::kHalf) {
      c10::Half* dst = cache.data_ptr<c10::Half>() + off;
      for (int64_t i = 0; i < hd; ++i) dst[i] = c10::Half(src[g * hd + i]);
    } else {
      std::memcpy(cache.data_ptr<float>() + off, src + g * hd, size_t(hd) * 4);
    }
  }
}

}  // namespace

at::Tensor LlamaModel::DecodeLogitsCpu(const at::Tensor& ids_in, const at::Tensor& positions, int64_t width,
                                       KVCache* cache) const {
  const LlamaConfig& c = config_;
  const int64_t n = ids_in.size(0), H = c.hidden_size, hd = c.head_dim, heads = c.num_heads, kvh = c.num_kv_heads;
  const int64_t rep = heads / kvh, qd = heads * hd, kvd = kvh * hd, qkv_n = qd + 2 * kvd, inter = c.intermediate_size;
  const int64_t V = c.vocab_size;
  GR_CHECK(width >= 1 && width <= cache->capacity, kInternal, "KV cache overflow");
  GR_CHECK(sliding_window_ <= 0 || width <= sliding_window_, kUnsupported, "sequence of ", width,
           " tokens exceeds the model's sliding attention window (", sliding_window_,
           "), which this engine does not implement");
  at::Tensor ids = ids_in.to(at::kLong).contiguous(), pos_t = positions.to(at::kLong).contiguous();
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* pos = pos_t.data_ptr<int64_t>();
  for (int64_t r = 0; r < n; ++r)
    GR_CHECK(pos[r] >= 0 && pos[r] < width && id[r] >= 0 && id[r] < V, kInternal, "decode row ", r, " out of range");
  const cpu::Elem we = dtype_ == at::kBFloat16 ? cpu::Elem::kBF16 : cpu::Elem::kF32;
  const float eps = float(c.rms_norm_eps);
  // All scratch in one allocation: residual, normed, q/k/v, rotated queries, attention, gate/up.
  const int64_t sizes[] = {n * H, n * H, n * qkv_n, n * qd, n * qd, n * 2 * inter, n * inter};
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  at::Tensor scratch = at::empty({total}, at::kFloat);
  float* p = scratch.data_ptr<float>();
  float *h = p, *x = h + sizes[0], *qkv = x + sizes[1], *qrot = qkv + sizes[2], *att = qrot + sizes[3];
  float *gu = att + sizes[4], *act = gu + sizes[5];
  // Embedding rows and the rotary angles (float32, as RopeTables computes them).
  const int64_t half = hd / 2;
  std::vector<float> cos(size_t(n * half)), sin(size_t(n * half));
  const float* inv_freq = inv_freq_.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < H; ++i) h[r * H + i] = Value(embed_, id[r] * H + i);
    for (int64_t i = 0; i < half; ++i) {
      const float f = float(pos[r]) * inv_freq[i];
      cos[r * half + i] = std::cos(f);
      sin[r * half + i] = std::sin(f);
    }
  }
  const float scale = float(1.0 / std::sqrt(double(hd)));
  // One product of the step: x [n, in] times the float32/bfloat16 matrix w, or in int8 mode its
  // quantised rows w8 (whose bias is part of the product; the layer's bias tensors are then not
  // added again).
  auto product = [&](const float* xin, int64_t in, const at::Tensor& w, const onednn::Int8Matrix& w8, int64_t out,
                     float* y, int64_t ldy, bool accumulate) {
#ifdef GAINRAG_WITH_DNNL
    if (int8_) return onednn::GemvInt8(xin, n, w8, y, ldy, accumulate);
#else
    (void)w8;
#endif
    cpu::Gemv(xin, n, in, w.data_ptr(), we, out, y, ldy, accumulate);
  };
  auto add_bias = [&](float* y, int64_t ld, const at::Tensor& bias) {
    if (!int8_) AddBias(y, n, ld, bias);
  };
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    cpu::RmsNormRows(h, n, H, L.input_norm.data_ptr(), ElemOf(L.input_norm), eps, x);
    product(x, H, L.qkv, L.qkv8, qkv_n, qkv, qkv_n, false);
    add_bias(qkv, qkv_n, L.q_bias);
    add_bias(qkv + qd, qkv_n, L.k_bias);
    add_bias(qkv + qd + kvd, qkv_n, L.v_bias);
    for (int64_t r = 0; r < n; ++r) {
      float* row = qkv + r * qkv_n;
      std::memcpy(qrot + r * qd, row, size_t(qd) * 4);
      cpu::RotateHalfHeads(qrot + r * qd, heads, hd, &cos[r * half], &sin[r * half]);
      cpu::RotateHalfHeads(row + qd, kvh, hd, &cos[r * half], &sin[r * half]);
      StoreColumn(row + qd, cache->k[l], r, pos[r], kvh, hd);
      StoreColumn(row + qd + kvd, cache->v[l], r, pos[r], kvh, hd);
    }
    cpu::DecodeAttention(qrot, cache->k[l].data_ptr(), cache->v[l].data_ptr(), ElemOf(cache->k[l]), n, kvh, rep, cache->k[l].size(2),
                         hd, pos, scale, att);
    product(att, qd, L.o, L.o8, H, h, H, true);
    add_bias(h, H, L.o_bias);
    cpu::RmsNormRows(h, n, H, L.post_norm.data_ptr(), ElemOf(L.post_norm), eps, x);
    product(x, H, L.gate_up, L.gate_up8, 2 * inter, gu, 2 * inter, false);
    cpu::SiluMulRows(gu, n, inter, act);
    product(act, inter, L.down, L.down8, H, h, H, true);
  }
  cpu::RmsNormRows(h, n, H, final_norm_.data_ptr(), ElemOf(final_norm_), eps, x);
  at::Tensor logits = at::empty({n, V}, at::kFloat);
  product(x, H, lm_head_, lm_head8_, V, logits.data_ptr<float>(), V, false);
  stats_->forward_calls++;
  stats_->decode_steps++;
  stats_->lm_head_rows += n;
  return logits;
}

}  // namespace gainrag
