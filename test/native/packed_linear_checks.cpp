// The oneDNN linear layers (native/backends/dnnl/packed_linear.cpp) against float64 products
// computed here: float32, bf16x3 (float32 layers whose products run as hi·hi + hi·lo + lo·hi on
// the bf16 units) and bfloat16, with and without the GELU epilogue, at depths that are and are
// not multiples of the 16-float split kernel, and row counts with and without a 64-row tail.
// The error of an output is measured against its natural scale, sum_k |x_k| |w_k|: bf16x3 must
// land within a small multiple of 2^-16 of it, float32 near 2^-24, and bfloat16 (for contrast:
// the split must really be more accurate than one bf16 product) far above bf16x3. Part of
// gainrag_native_test; without oneDNN it checks nothing.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#ifdef GAINRAG_WITH_DNNL
#include <ATen/ATen.h>

#include "backends/dnnl/packed_linear.h"
#endif

#ifdef GAINRAG_WITH_DNNL
namespace {

int RowKernelChecks() {
  int failures = 0;
  for (int64_t k : {1, 7, 8, 15, 16, 100, 768, 3001}) {
    const int64_t bad = gainrag::onednn::RowKernelMismatches(40, k, uint32_t(k));
    if (bad != 0) {
      std::fprintf(stderr, "FAIL: packed linear row kernels, width %lld: %lld elements differ between vector and portable\n",
                   (long long)k, (long long)bad);
      ++failures;
    }
  }
  std::printf("packed linear row kernels (int8 codes, bf16x3 split): vector vs portable at 8 widths, %d failed\n", failures);
  return failures;
}

// An int8 product against the same integers multiplied here in int64: the only differences
// allowed are the float32 rescaling's roundings (~1e-7 of the output's scale). Rows and weight
// channels at their extremes (every code at its top or bottom, every weight +-127) are where a
// saturating int16 pair sum (vpmaddubsw on CPUs without VNNI) would show, by whole percents.
int Int8ProductChecks() {
  using namespace gainrag::onednn;
  if (!Supports(at::kChar)) {
    std::printf("packed linear int8: no int8 kernel on this CPU, not checked\n");
    return 0;
  }
  int failures = 0;
  double worst = 0;
  const Int8InputCode code = Int8Inputs();
  for (int64_t k : {64, 768, 3000}) {
    const int64_t m = 70, n = 40;
    at::manual_seed(uint64_t(k));
    at::Tensor x = at::randn({m, k}), w = at::randn({n, k}) * 0.05, b = at::randn({n}) * 0.1;
    x.index_put_({0}, at::full({k}, 3.0f));
    x.index_put_({1}, at::full({k}, -3.0f));
    x.index_put_({2}, at::where(at::arange(k) % 2 == 0, at::full({k}, 3.0f), at::full({k}, -3.0f)));
    w.index_put_({0}, at::full({k}, 0.2f));
    w.index_put_({1}, at::full({k}, -0.2f));
    auto layer = PackedLinear::Pack(w, b, at::kChar, Epilogue::kNone);
    at::Tensor y = layer->Forward(x).to(at::kDouble);
    const Int8Matrix q = QuantizeInt8(w, b);
    const int8_t* wq = q.w.data_ptr<int8_t>();
    std::vector<uint8_t> row(static_cast<size_t>(k));
    for (int64_t r = 0; r < m; ++r) {
      const Int8RowCode rc = QuantizeRowU8(x.data_ptr<float>() + r * k, row.data(), k);
      const double s = rc.scale;
      for (int64_t o = 0; o < n; ++o) {
        int64_t acc = 0, mag = 0;
        for (int64_t i = 0; i < k; ++i) {
          const int64_t v = int64_t(row[size_t(i)]) - rc.zero, wi = wq[o * k + i];
          acc += v * wi;
          mag += std::abs(v * wi);
        }
        const double cs = s * q.scale[o].item<double>();
        const double ref = double(acc) * cs + b[o].item<double>();
        const double err = std::fabs(y[r][o].item<double>() - ref) / (double(mag) * cs + std::fabs(b[o].item<double>()));
        worst = std::max(worst, err);
      }
    }
  }
  if (worst > 1e-6) {
    std::fprintf(stderr, "FAIL: packed linear int8 products differ from exact integer products by %.3g of their scale\n", worst);
    ++failures;
  }
  std::printf("packed linear int8 (%d-level input codes): 3 depths against int64 products, extremes included, worst %.2g of scale; %d failed\n",
              int(code.levels), worst, failures);
  return failures;
}

}  // namespace
#endif

int PackedLinearChecks() {
#ifndef GAINRAG_WITH_DNNL
  return 0;
#else
  using gainrag::onednn::Epilogue;
  using gainrag::onednn::PackedLinear;
  // (The vector and portable row kernels are compared below as well.)
  int failures = Int8ProductChecks();
  if (!gainrag::onednn::SupportsBf16x3()) {
    std::printf("packed linear: no bf16 kernel on this CPU, bf16x3 not checked\n");
    return failures + RowKernelChecks();
  }
  double worst_f32 = 0, worst_x3 = 0, least_b16 = 1;
  struct Shape { int64_t m, k, n; bool gelu; };
  for (Shape s : {Shape{70, 768, 200, false}, Shape{5, 3000, 64, true}, Shape{130, 100, 33, false}, Shape{1, 17, 8, true}}) {
    at::manual_seed(7 + s.k);
    at::Tensor x = at::randn({s.m, s.k}) * 2.0, w = at::randn({s.n, s.k}) * 0.05, b = at::randn({s.n}) * 0.1;
    at::Tensor x64 = x.to(at::kDouble), w64 = w.to(at::kDouble);
    at::Tensor ref = at::addmm(b.to(at::kDouble), x64, w64.t());
    if (s.gelu) ref = 0.5 * ref * (1.0 + at::erf(ref / std::sqrt(2.0)));
    // sum_k |x_k| |w_k| + |b| per output; GELU's slope is at most ~1.13, so the same scale serves.
    at::Tensor scale = at::addmm(b.to(at::kDouble).abs(), x64.abs(), w64.abs().t());
    auto error = [&](at::ScalarType precision, bool split) {
      auto layer = PackedLinear::Pack(w, b, precision, s.gelu ? Epilogue::kGeluErf : Epilogue::kNone, split);
      at::Tensor y = layer->Forward(x);
      if (split && y.scalar_type() != at::kFloat) return 1.0;  // a float32 layer answers in float32
      return ((y.to(at::kDouble) - ref).abs() / scale).max().item<double>();
    };
    const double f32 = error(at::kFloat, false), x3 = error(at::kFloat, true), b16 = error(at::kBFloat16, false);
    worst_f32 = std::max(worst_f32, f32), worst_x3 = std::max(worst_x3, x3), least_b16 = std::min(least_b16, b16);
    const bool ok = f32 < 1e-6 && x3 < 2e-5 && b16 > 8 * x3;
    if (!ok) {
      std::fprintf(stderr, "FAIL: packed linear [%lld, %lld] x [%lld, %lld]%s: relative error float32 %.3g, bf16x3 %.3g, bfloat16 %.3g\n",
                   (long long)s.m, (long long)s.k, (long long)s.k, (long long)s.n, s.gelu ? " + GELU" : "", f32, x3, b16);
      ++failures;
    }
  }
  failures += RowKernelChecks();
  std::printf("packed linear: 4 shapes against float64, worst relative error float32 %.2g, bf16x3 %.2g (bfloat16 at least %.2g); %d failed\n",
              worst_f32, worst_x3, least_b16, failures);
  return failures;
#endif
}
