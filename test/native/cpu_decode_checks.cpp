// The matrix-vector kernels (AVX-512 and AVX2, each where the CPU runs it) of the CPU decode step (native/backends/cpu_decode.cpp)
// against a float64 product computed here, over the shapes that exercise each code path: 1-11
// rows (every register block size, and a block of 8 followed by a remainder), inputs with and
// without a masked tail, outputs that are and are not multiples of the blocks, float32 and
// bfloat16 weights, overwrite and accumulate. Part of gainrag_native_test.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu_decode.h"

namespace {

uint16_t ToBf16(float f) {  // truncation is fine: the reference uses the same bf16 values
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return uint16_t(bits >> 16);
}

float FromBf16(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

int GemvChecks(const char* isa) {
  using namespace gainrag::cpu;
  int failures = 0, cases = 0;
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  for (Elem elem : {Elem::kF32, Elem::kBF16})
    for (int64_t in : {1, 15, 16, 17, 48, 64, 200, 1027})
      for (int64_t out : {1, 3, 16, 37, 130})
        for (int64_t rows : {1, 2, 3, 4, 5, 7, 8, 11})
          for (bool accumulate : {false, true}) {
            std::vector<float> x(size_t(rows * in)), wf(size_t(out * in));
            std::vector<uint16_t> wb(wf.size());
            for (auto& v : x) v = uni(rng);
            for (size_t i = 0; i < wf.size(); ++i) {
              wb[i] = ToBf16(uni(rng));
              wf[i] = elem == Elem::kBF16 ? FromBf16(wb[i]) : uni(rng);
            }
            const int64_t ldy = out + 5;  // a row stride wider than out: the padding must stay put
            std::vector<float> y(size_t(rows * ldy));
            for (auto& v : y) v = uni(rng);
            const std::vector<float> y0 = y;
            const void* w = elem == Elem::kBF16 ? static_cast<const void*>(wb.data()) : wf.data();
            Gemv(x.data(), rows, in, w, elem, out, y.data(), ldy, accumulate);
            double worst = 0;
            bool padding_kept = true;
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t o = 0; o < out; ++o) {
                double ref = accumulate ? y0[size_t(r * ldy + o)] : 0.0;
                for (int64_t k = 0; k < in; ++k) ref += double(x[size_t(r * in + k)]) * wf[size_t(o * in + k)];
                worst = std::max(worst, std::fabs(ref - y[size_t(r * ldy + o)]) / (1.0 + std::sqrt(double(in))));
              }
              for (int64_t o = out; o < ldy; ++o) padding_kept &= y[size_t(r * ldy + o)] == y0[size_t(r * ldy + o)];
            }
            ++cases;
            if (worst > 1e-5 || !padding_kept) {
              std::fprintf(stderr, "FAIL: cpu Gemv (%s) %s rows=%lld in=%lld out=%lld acc=%d: error %.3g%s\n",
                           isa, elem == Elem::kBF16 ? "bf16" : "fp32", (long long)rows, (long long)in, (long long)out,
                           int(accumulate), worst, padding_kept ? "" : ", wrote past out");
              ++failures;
            }
          }
  std::printf("cpu decode Gemv (%s): %d shapes against a float64 product, %d failed\n", isa, cases, failures);
  return failures;
}

}  // namespace

// Returns the number of failed checks (messages on stderr).
int CpuDecodeChecks() {
  using namespace gainrag::cpu;
  if (!DecodeKernels()) {
    std::printf("cpu decode kernels: not available on this CPU, skipped\n");
    return 0;
  }
  int failures = 0;
  for (DecodeIsa isa : {DecodeIsa::kAvx512, DecodeIsa::kAvx2}) {
    if (isa > DetectedDecodeIsa()) continue;
    SetDecodeIsa(isa);
    failures += GemvChecks(DecodeIsaName(isa));
  }
  SetDecodeIsa(DetectedDecodeIsa());
  return failures;
}
