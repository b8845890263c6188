// Timing of one Linear layer (y = act(x W^T + b)) on each CPU GEMM path, and of the machine's
// register-resident FMA peak, for bench/ffn-gemm.ts: the issue-#19 goal is stated as a share
// of that peak on the BERT-base FFN products, so both are measured in the same process and run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gainrag {

struct GemmTiming {
  std::vector<double> seconds;  // one entry per timed call (after one untimed warm-up call)
  double flops = 0;             // floating-point (or integer multiply-add) operations per call
  std::string kernel;           // who ran it, e.g. "brg:avx512_core" or "at::linear"
};

// path: "torch" (at::linear + at::gelu, as the LibTorch encoder path), "dnnl-f32", "dnnl-bf16",
// "dnnl-int8", "dnnl-int8-plain" (int8 reading W's quantised rows in place: PackInt8 plain),
// "dnnl-bf16x3" (float32 as three bf16 products; the packed layers of
// native/backends/dnnl), "peak-f32" (fp32 FMA loop, AVX-512 or else AVX2) or
// "peak-bf16" (AVX512-BF16 dot-product loop; m, k, n ignored for the two peaks). gelu: the
// product's epilogue is GELU (erf). Throws Error(kInvalidArgument) for an unknown path and
// Error(kUnsupported) for one this build or CPU lacks.
GemmTiming TimeLinear(const std::string& path, int64_t m, int64_t k, int64_t n, bool gelu, int reps);

}  // namespace gainrag
