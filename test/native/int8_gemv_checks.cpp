// onednn::GemvInt8 (the int8 LLM's decode products) against PackedLinear::Forward at int8, the
// product prefill and the ATen decode step use: same weights, same rows. Both quantise each row
// the same way, sum exactly in int32 and run the same rescaling pass, so the outputs must be
// equal bit for bit, at depths that are and are not multiples of the 64-byte VNNI step, output
// counts with and without a tail of the 4-output block, 1-9 rows (the 4-row register blocks and
// their remainders), with and without accumulating into y, with and without a bias, and for
// stacked matrices (StackInt8) against the separate products. Part of gainrag_native_test;
// without oneDNN, or on a CPU with neither VNNI nor AVX2, it checks nothing.
#include <cstdio>
#include <cstring>
#include <string>

#ifdef GAINRAG_WITH_DNNL
#include <ATen/ATen.h>

#include "backends/dnnl/int8_gemv.h"
#include "backends/dnnl/packed_linear.h"
#endif

int Int8GemvChecks() {
#ifndef GAINRAG_WITH_DNNL
  return 0;
#else
  using namespace gainrag::onednn;
  if (!SupportsInt8Gemv() || !Supports(at::kChar)) {
    std::printf("int8 gemv: no int8 decode kernel (VNNI, or AVX2 with 7-bit codes) or no oneDNN int8 kernel here, not checked\n");
    return 0;
  }
  int failures = 0;
  // Every kernel this CPU runs at this process's input codes (kAvx2Pairs only on 7-bit codes:
  // foundation.test.ts runs this program with GAINRAG_INT8_INPUT_BITS=7 as well).
  struct KernelCase { Int8Kernel kernel; const char* name; };
  const KernelCase kernels[] = {{Int8Kernel::kAuto, "auto"}, {Int8Kernel::kVnni512, "vnni512"},
                                {Int8Kernel::kAvx2Pairs, "avx2-pairs"}, {Int8Kernel::kAvx2Signed, "avx2-signed"}};
  std::string checked;
  for (const KernelCase& kc : kernels)
    if (kc.kernel != Int8Kernel::kAuto && RunsInt8Kernel(kc.kernel)) checked += std::string(checked.empty() ? "" : ", ") + kc.name;
  struct Shape { int64_t k, n; bool bias; };
  for (Shape s : {Shape{17, 5, true}, Shape{64, 33, false}, Shape{1000, 100, true}, Shape{2816, 130, false}}) {
    at::manual_seed(11 + s.k);
    at::Tensor w = at::randn({s.n, s.k}) * 0.05;
    w.index_put_({0}, at::full({s.k}, 0.05f));  // codes all +127
    w.index_put_({s.n - 1}, at::full({s.k}, -0.05f));  // codes all -127
    at::Tensor b = s.bias ? at::randn({s.n}) : at::zeros({s.n});
    const Int8Matrix m = QuantizeInt8(w, b);
    auto product = PackedLinear::PackInt8(m, Epilogue::kNone);
    for (int64_t rows : {1, 2, 3, 4, 5, 6, 7, 8, 9, 40}) {
      // Rows at several scales, one of them all zeros, and two at the extreme codes: all but one
      // entry at the row's minimum (codes 0) or at its maximum (the top code). Against the
      // constant weight rows (codes all +127 or -127) these are the sums that would saturate
      // int16 pair sums without the sign trick.
      at::Tensor x = at::randn({rows, s.k}) * at::exp(at::randn({rows, 1}));
      if (rows > 2) x.index_put_({1}, at::zeros({s.k}));
      if (rows > 3) {
        x.index_put_({2}, at::full({s.k}, -1.0f));
        x.index_put_({2, 0}, 1.0f);
        x.index_put_({3}, at::full({s.k}, 2.0f));
        x.index_put_({3, s.k - 1}, -2.0f);
      }
      at::Tensor expect = product->Forward(x);
      at::Tensor base = at::randn({rows, s.n});
      at::Tensor expect_acc = base + expect;
      for (const KernelCase& kc : kernels) {
        if (!RunsInt8Kernel(kc.kernel)) continue;
        at::Tensor y = at::empty({rows, s.n});
        GemvInt8(x.data_ptr<float>(), rows, m, y.data_ptr<float>(), s.n, false, kc.kernel);
        at::Tensor acc = base.clone();
        GemvInt8(x.data_ptr<float>(), rows, m, acc.data_ptr<float>(), s.n, true, kc.kernel);
        const bool same = std::memcmp(y.data_ptr(), expect.data_ptr(), size_t(rows * s.n) * 4) == 0;
        const bool same_acc = std::memcmp(acc.data_ptr(), expect_acc.data_ptr(), size_t(rows * s.n) * 4) == 0;
        if (!same || !same_acc) {
          std::printf("FAIL: int8 gemv (%s) k=%lld n=%lld rows=%lld differs from the packed int8 product (max %g, accumulated %g)\n",
                      kc.name, (long long)s.k, (long long)s.n, (long long)rows, (y - expect).abs().max().item<double>(),
                      (acc - expect_acc).abs().max().item<double>());
          ++failures;
        }
      }
    }
  }
  // Stacked matrices: the product of [A; B] equals A's outputs followed by B's.
  {
    at::manual_seed(5);
    const int64_t k = 320;
    at::Tensor wa = at::randn({48, k}), wb = at::randn({21, k}) * 3.0, ba = at::randn({48}), bb = at::zeros({21});
    const Int8Matrix a = QuantizeInt8(wa, ba), bm = QuantizeInt8(wb, bb), ab = StackInt8({a, bm});
    at::Tensor x = at::randn({3, k});
    at::Tensor ya = at::empty({3, 48}), yb = at::empty({3, 21}), yab = at::empty({3, 69});
    GemvInt8(x.data_ptr<float>(), 3, a, ya.data_ptr<float>(), 48, false);
    GemvInt8(x.data_ptr<float>(), 3, bm, yb.data_ptr<float>(), 21, false);
    GemvInt8(x.data_ptr<float>(), 3, ab, yab.data_ptr<float>(), 69, false);
    if (!at::equal(at::cat({ya, yb}, 1), yab)) {
      std::printf("FAIL: int8 gemv of stacked matrices differs from the separate products\n");
      ++failures;
    }
    // Products on plain weights (PackInt8 plain), here views of the stack as the int8 Llama
    // takes them, equal the packed products of the separate matrices, at 3 and 200 rows.
    const Int8Matrix bview{ab.w.narrow(0, 48, 21), ab.scale.narrow(0, 48, 21), ab.colsum.narrow(0, 48, 21),
                           ab.bias.narrow(0, 48, 21)};
    for (int64_t rows : {3, 200}) {
      at::Tensor xr = at::randn({rows, k});
      at::Tensor packed = PackedLinear::PackInt8(bm, Epilogue::kNone)->Forward(xr);
      at::Tensor plain = PackedLinear::PackInt8(bview, Epilogue::kNone, true)->Forward(xr);
      if (!at::equal(packed, plain)) {
        std::printf("FAIL: int8 product on plain weights (a view of a stack), %lld rows, differs from the packed one (max %g)\n",
                    (long long)rows, (packed - plain).abs().max().item<double>());
        ++failures;
      }
    }
  }
  if (failures == 0)
    std::printf("int8 gemv (kernels: %s; %d-bit input codes) and int8 products on plain weights: equal to the packed int8 products bit for bit\n",
                checked.c_str(), Int8Inputs().levels == 127 ? 8 : 7);
  return failures;
#endif
}
