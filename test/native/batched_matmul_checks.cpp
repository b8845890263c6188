// onednn::BatchedMatmul (backends/dnnl/attention.h) against a float64 at::matmul: grouped-query
// broadcast over strided views of larger tensors, written in place, a scale, and the shapes it
// must refuse.
#include <ATen/ATen.h>

#include <cstdio>
#include <string>

#include "core/error.h"
#ifdef GAINRAG_WITH_DNNL
#include "backends/dnnl/attention.h"
#endif

int BatchedMatmulChecks() {
#ifndef GAINRAG_WITH_DNNL
  std::printf("batched matmul: built without oneDNN, checks skipped\n");
  return 0;
#else
  using gainrag::onednn::BatchedMatmul;
  int failures = 0;
  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "FAIL: batched matmul: %s\n", what.c_str());
    ++failures;
  };
  at::manual_seed(7);
  // The decoder's layout: q [rows, kv heads, group, queries, hd] against keys [rows, kv heads, 1,
  // hd, keys] read through transpose/narrow of a longer cache, the output a narrowed view.
  for (int64_t keys : {1, 9, 64, 301}) {
    const int64_t rows = 2, kvh = 3, rep = 4, n = 5, hd = 16, cap = 320;
    at::Tensor q = at::randn({rows, kvh, rep, n + 3, hd}).narrow(3, 1, n);
    at::Tensor cache = at::randn({rows, kvh, cap, hd});
    at::Tensor kt = cache.narrow(2, 0, keys).unsqueeze(2).transpose(-1, -2);
    at::Tensor scores = at::full({rows, kvh, rep, n, keys}, 7.0f);
    BatchedMatmul(q, kt, scores, 0.25f);
    at::Tensor want = at::matmul(q.to(at::kDouble), kt.to(at::kDouble)) * 0.25;
    const double err = (scores.to(at::kDouble) - want).abs().max().item<double>();
    if (!(err < 1e-4)) fail("scores, " + std::to_string(keys) + " keys: max error " + std::to_string(err));
    at::Tensor probs = at::softmax(scores, -1);
    at::Tensor out = at::full({rows, kvh, rep, n + 2, hd}, 3.0f);
    BatchedMatmul(probs, cache.narrow(2, 0, keys).unsqueeze(2), out.narrow(3, 2, n));
    at::Tensor ctx = at::matmul(probs.to(at::kDouble), cache.narrow(2, 0, keys).unsqueeze(2).to(at::kDouble));
    const double cerr = (out.narrow(3, 2, n).to(at::kDouble) - ctx).abs().max().item<double>();
    if (!(cerr < 1e-5)) fail("context, " + std::to_string(keys) + " keys: max error " + std::to_string(cerr));
    // Only the view was written.
    if (!out.narrow(3, 0, 2).eq(3.0f).all().item<bool>()) fail("wrote outside the output view");
  }
  auto refuses = [&](const char* what, auto fn) {
    try {
      fn();
      fail(std::string("accepted ") + what);
    } catch (const gainrag::Error& e) {
      if (e.code() != gainrag::ErrorCode::kShape) fail(std::string(what) + ": wrong error code");
    }
  };
  refuses("mismatched inner dims", [] { BatchedMatmul(at::zeros({2, 3, 4}), at::zeros({2, 5, 6}), at::zeros({2, 3, 6})); });
  refuses("a broadcast on the a side", [] { BatchedMatmul(at::zeros({1, 3, 4}), at::zeros({2, 4, 6}), at::zeros({2, 3, 6})); });
  refuses("double tensors", [] {
    BatchedMatmul(at::zeros({3, 4}, at::kDouble), at::zeros({4, 6}, at::kDouble), at::zeros({3, 6}, at::kDouble));
  });
  refuses("mixed ranks", [] { BatchedMatmul(at::zeros({1, 3, 4}), at::zeros({4, 6}), at::zeros({1, 3, 6})); });
  std::printf("batched matmul: %s\n", failures ? "FAILED" : "4 key lengths against float64, 4 refusals");
  return failures;
#endif
}
