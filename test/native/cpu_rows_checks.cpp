// The row kernels of the encoders' CPU inference path (native/backends/cpu_rows.cpp) against
// float64 references computed here: exp over its whole float32 range, NaN and the underflow
// edge; softmax, residual-add + LayerNorm and SwiGLU over row widths that exercise a masked tail only
// (1, 17), whole registers (128, 768) and both (100), in place and out of place, many rows (so
// the work is split over threads), for each instruction set the CPU runs; RoPE's head rotation.
// Part of gainrag_native_test.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu_decode.h"
#include "backends/cpu_rows.h"

namespace {

int Report(bool ok, const char* what, double worst, int* failures) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: cpu rows (%s) %s: error %.3g\n",
                 gainrag::cpu::DecodeIsaName(gainrag::cpu::ActiveDecodeIsa()), what, worst);
    ++*failures;
  }
  return 1;
}

// The checks for whichever kernels cpu::ActiveDecodeIsa() selects; adds to *cases.
int ChecksForActiveIsa(int* cases) {
  using namespace gainrag::cpu;
  int failures = 0;
  std::mt19937 rng(99);

  {  // exp: relative error over [-87, 88.5], exact zero below the normal range, NaN kept
    std::vector<float> x;
    for (double v = -87.0; v <= 88.5; v += 0.0137) x.push_back(float(v));
    x.push_back(0.f);
    x.push_back(-1e-30f);
    std::vector<float> y(x.size());
    ExpVector(x.data(), int64_t(x.size()), y.data());
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double ref = std::exp(double(x[i]));
      worst = std::max(worst, std::fabs(double(y[i]) - ref) / ref);
    }
    *cases += Report(worst < 2e-7 && y[y.size() - 2] == 1.f, "exp relative error", worst, &failures);
    const float edge[4] = {-88.f, -1000.f, -std::numeric_limits<float>::infinity(), std::nanf("")};
    float out[4];
    ExpVector(edge, 4, out);
    *cases += Report(out[0] == 0.f && out[1] == 0.f && out[2] == 0.f && std::isnan(out[3]), "exp edges", 0, &failures);
  }

  std::normal_distribution<float> gauss(0.f, 3.f);
  for (int64_t n : {1, 17, 100, 128, 768}) {
    const int64_t rows = 300;
    std::vector<float> x(size_t(rows * n));
    for (auto& v : x) v = gauss(rng);
    x[0] = -1e30f;  // a masked key: its probability must come out 0, the rest of the row sums to 1
    if (n > 2) x[size_t(n + 1)] = -std::numeric_limits<float>::infinity();  // masked_fill's value
    std::vector<float> p = x;
    SoftmaxRows(p.data(), rows, n);
    double worst = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data() + r * n;
      double top = -INFINITY, sum = 0;
      for (int64_t j = 0; j < n; ++j) top = std::max(top, double(xr[j]));
      for (int64_t j = 0; j < n; ++j) sum += std::exp(double(xr[j]) - top);
      for (int64_t j = 0; j < n; ++j) {
        const double ref = std::exp(double(xr[j]) - top) / sum;
        worst = std::max(worst, std::fabs(double(p[size_t(r * n + j)]) - ref));
      }
    }
    *cases += Report(worst < 1e-6, n == 1 ? "softmax n=1" : "softmax", worst, &failures);

    std::vector<float> a(size_t(rows * n)), res(a.size()), gamma(static_cast<size_t>(n)), beta(static_cast<size_t>(n));
    for (auto& v : a) v = gauss(rng);
    for (auto& v : res) v = gauss(rng) + 5.f;  // an offset mean: the variance must be taken about it
    for (auto& v : gamma) v = 1.f + 0.1f * gauss(rng);
    for (auto& v : beta) v = 0.1f * gauss(rng);
    std::vector<float> out(a.size()), inplace = a;
    AddLayerNormRows(a.data(), res.data(), rows, n, gamma.data(), beta.data(), 1e-5f, out.data());
    AddLayerNormRows(inplace.data(), res.data(), rows, n, gamma.data(), beta.data(), 1e-5f, inplace.data());
    double worst_ln = 0;
    bool same = true;
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (int64_t j = 0; j < n; ++j) mean += double(a[size_t(r * n + j)]) + res[size_t(r * n + j)];
      mean /= double(n);
      for (int64_t j = 0; j < n; ++j) {
        const double d = double(a[size_t(r * n + j)]) + res[size_t(r * n + j)] - mean;
        var += d * d;
      }
      var /= double(n);
      for (int64_t j = 0; j < n; ++j) {
        const size_t i = size_t(r * n + j);
        const double ref = (double(a[i]) + res[i] - mean) / std::sqrt(var + 1e-5) * gamma[size_t(j)] + beta[size_t(j)];
        worst_ln = std::max(worst_ln, std::fabs(double(out[i]) - ref));
        same &= out[i] == inplace[i];
      }
    }
    *cases += Report(worst_ln < 2e-5, "add + layer norm", worst_ln, &failures);

    // SwiGLU over [gate | up] rows, with gates far in both tails (exp(-g) past its range).
    std::vector<float> gu(size_t(rows * 2 * n)), act(size_t(rows * n));
    for (auto& v : gu) v = gauss(rng);
    gu[0] = -100.f;
    if (n > 1) gu[1] = 100.f;
    SiluMulRows(gu.data(), rows, n, act.data());
    double worst_silu = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const double g = gu[size_t(r * 2 * n + j)], u = gu[size_t(r * 2 * n + n + j)];
        const double ref = g / (1.0 + std::exp(-g)) * u;
        worst_silu = std::max(worst_silu, std::fabs(double(act[size_t(r * n + j)]) - ref) / std::max(1.0, std::fabs(ref)));
      }
    }
    *cases += Report(worst_silu < 1e-6, "silu * up", worst_silu, &failures);
    *cases += Report(same, "add + layer norm in place equals out of place", 0, &failures);
  }
  {  // RoPE, rotate_half pairing: 3 heads of 8, each pair (i, i + 4) turned by its own angle
    const int64_t heads = 3, hd = 8;
    std::vector<float> x(size_t(heads * hd)), c(size_t(hd / 2)), sn(size_t(hd / 2));
    for (auto& v : x) v = gauss(rng);
    for (int64_t i = 0; i < hd / 2; ++i) c[size_t(i)] = float(std::cos(0.3 * double(i + 1))), sn[size_t(i)] = float(std::sin(0.3 * double(i + 1)));
    std::vector<float> y = x;
    RotateHalfHeads(y.data(), heads, hd, c.data(), sn.data());
    double worst = 0;
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double a = x[size_t(h * hd + i)], b = x[size_t(h * hd + i + hd / 2)];
        worst = std::max(worst, std::fabs(double(y[size_t(h * hd + i)]) - (a * c[size_t(i)] - b * sn[size_t(i)])));
        worst = std::max(worst, std::fabs(double(y[size_t(h * hd + i + hd / 2)]) - (b * c[size_t(i)] + a * sn[size_t(i)])));
      }
    }
    *cases += Report(worst < 1e-5, "rotate half heads", worst, &failures);
  }
  return failures;
}

}  // namespace

// Returns the number of failed checks (messages on stderr). Every compiled path this CPU runs
// (AVX-512, AVX2, portable) against the same references.
int CpuRowsChecks() {
  using namespace gainrag::cpu;
  int failures = 0, cases = 0;
  std::string paths;
  for (DecodeIsa isa : {DecodeIsa::kAvx512, DecodeIsa::kAvx2, DecodeIsa::kNone}) {
    if (isa > DetectedDecodeIsa()) continue;
    SetDecodeIsa(isa);
    failures += ChecksForActiveIsa(&cases);
    paths += paths.empty() ? DecodeIsaName(isa) : std::string(", ") + DecodeIsaName(isa);
  }
  SetDecodeIsa(DetectedDecodeIsa());
  std::printf("cpu row kernels (%s): %d checks against float64 references, %d failed\n", paths.c_str(), cases, failures);
  return failures;
}
