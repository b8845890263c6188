#include "backends/gemm_bench.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <immintrin.h>

#include <chrono>

#include "core/error.h"

#ifdef GAINRAG_WITH_DNNL
#include "backends/dnnl/packed_linear.h"
#endif

namespace gainrag {
namespace {

constexpr int64_t kPeakIterations = 1 << 22;
constexpr int kAccumulators = 12;  // > FMA latency x ports, so the loop is throughput-bound

// Each of the threads keeps 12 independent 16-lane accumulators in registers: 12 x 16 x 2 flops
// per iteration, no memory traffic.
__attribute__((target("avx512f"))) float FmaLoop(int64_t iterations) {
  __m512 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_set1_ps(float(i) * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-4f);
  for (int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kAccumulators; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

// The same on AVX2 + FMA: 8-lane ymm accumulators (12 of the 16 registers), 12 x 8 x 2 flops per
// iteration.
__attribute__((target("avx2,fma"))) float FmaLoopAvx2(int64_t iterations) {
  __m256 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm256_set1_ps(float(i) * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-4f);
  for (int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < kAccumulators; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float sum = 0.f;
  for (float v : lanes) sum += v;
  return sum;
}

// vdpbf16ps: 32 bf16 products summed pairwise into 16 fp32 lanes, i.e. 64 flops per instruction.
__attribute__((target("avx512f,avx512bf16"))) float Bf16Loop(int64_t iterations) {
  __m512 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3a80);
  for (int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kAccumulators; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

template <typename Fn>
std::vector<double> Time(int reps, Fn&& fn) {
  fn();  // warm-up: primitive creation, page faults, thread pool start
  std::vector<double> out;
  for (int r = 0; r < reps; ++r) {
    auto t = std::chrono::steady_clock::now();
    fn();
    out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  return out;
}

GemmTiming Peak(bool bf16, int reps) {
  __builtin_cpu_init();
  const bool zmm = __builtin_cpu_supports("avx512f");
  GR_CHECK(zmm || (!bf16 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")), kUnsupported,
           bf16 ? "the bf16 peak loop needs AVX-512" : "the fp32 peak loop needs AVX-512 or AVX2 with FMA");
  GR_CHECK(!bf16 || __builtin_cpu_supports("avx512bf16"), kUnsupported, "this CPU has no AVX512-BF16");
  const int threads = at::get_num_threads();
  GemmTiming t;
  t.flops = double(threads) * kPeakIterations * kAccumulators * (zmm ? 16 : 8) * (bf16 ? 4 : 2);
  t.kernel = bf16 ? "vdpbf16ps loop" : zmm ? "vfmadd zmm loop" : "vfmadd ymm loop";
  // One result slot per thread (kept, so the loops are not optimised away).
  std::vector<float> sink(size_t(threads), 0.f);
  t.seconds = Time(reps, [&] {
    at::parallel_for(0, threads, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) sink[size_t(i)] += bf16  ? Bf16Loop(kPeakIterations)
                           : zmm ? FmaLoop(kPeakIterations)
                                 : FmaLoopAvx2(kPeakIterations);
    });
  });
  volatile float keep = sink[0];
  (void)keep;
  return t;
}

}  // namespace

GemmTiming TimeLinear(const std::string& path, int64_t m, int64_t k, int64_t n, bool gelu, int reps) {
  if (path == "peak-f32" || path == "peak-bf16") return Peak(path == "peak-bf16", reps);
  c10::InferenceMode guard;
  at::Tensor x = at::randn({m, k}, at::kFloat);
  at::Tensor w = at::randn({n, k}, at::kFloat).mul_(1.0 / std::sqrt(double(k)));
  at::Tensor b = at::randn({n}, at::kFloat).mul_(0.1);
  GemmTiming t;
  t.flops = 2.0 * double(m) * double(k) * double(n);
  if (path == "torch") {
    t.kernel = "at::linear";
    t.seconds = Time(reps, [&] {
      at::Tensor y = at::linear(x, w, b);
      if (gelu) y = at::gelu(y);
    });
    return t;
  }
#ifdef GAINRAG_WITH_DNNL
  const at::ScalarType precision = path == "dnnl-f32"    ? at::kFloat
                                   : path == "dnnl-bf16" ? at::kBFloat16
                                   : path == "dnnl-int8" || path == "dnnl-int8-plain" ? at::kChar
                                   : path == "dnnl-bf16x3" ? at::kFloat
                                                         : at::kByte;
  GR_CHECK(precision != at::kByte, kInvalidArgument, "unknown GEMM path '", path, "'");
  const bool bf16x3 = path == "dnnl-bf16x3";
  const onednn::Epilogue epilogue = gelu ? onednn::Epilogue::kGeluErf : onednn::Epilogue::kNone;
  // dnnl-int8-plain: the int8 product reading W's quantised rows where they are (PackInt8 plain,
  // what the Llama int8 prefill does where Int8PlainWeights), to compare with the packed layout.
  auto layer = path == "dnnl-int8-plain" ? onednn::PackedLinear::PackInt8(onednn::QuantizeInt8(w, b), epilogue, true)
                                         : onednn::PackedLinear::Pack(w, b, precision, epilogue, bf16x3);
  const bool widened = precision == at::kBFloat16 && !onednn::Supports(at::kBFloat16);  // (see Pack)
  t.kernel = widened ? "bf16 weights widened, " + onednn::KernelName(at::kFloat)
                     : onednn::KernelName(bf16x3 ? at::kBFloat16 : precision, path == "dnnl-int8-plain") + (bf16x3 ? " x3" : "");
  t.seconds = Time(reps, [&] { (void)layer->Forward(x); });
  return t;
#else
  GR_CHECK(path != "dnnl-f32" && path != "dnnl-bf16" && path != "dnnl-int8" && path != "dnnl-int8-plain" && path != "dnnl-bf16x3", kUnsupported,
           "this build has no oneDNN backend");
  GR_FAIL(kInvalidArgument, "unknown GEMM path '", path, "'");
#endif
}

}  // namespace gainrag
