// The fused CPU decode step (native/models/llama_decode_cpu.cpp) against the ATen decode step on
// the bundled llama-tiny: the same greedy tokens and logits within a tolerance, float32 and
// bfloat16, one row and two rows at ragged positions. Part of gainrag_native_test.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <c10/core/InferenceMode.h>

#include "backends/cpu_decode.h"
#include "core/error.h"
#include "models/llama.h"

namespace {

gainrag::KVCache Clone(const gainrag::KVCache& c) {
  gainrag::KVCache out = c;
  for (auto& t : out.k) t = t.clone();
  for (auto& t : out.v) t = t.clone();
  return out;
}

}  // namespace

// Returns the number of failed checks (messages on stderr).
int LlamaDecodeChecks(const std::string& dir) {
  using namespace gainrag;
  c10::InferenceMode guard;
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) std::fprintf(stderr, "FAIL: %s\n", what.c_str()), ++failures;
  };
  const std::vector<std::vector<int64_t>> prompts = {{0, 17, 250, 3, 999, 42}, {0, 512, 7}};
  // kChar: dynamic int8 (oneDNN builds only), whose fused step runs the same int8 products as
  // the ATen step's (onednn::GemvInt8, equal bit for bit), so only the float32 glue differs.
  std::vector<at::ScalarType> dtypes = {at::kFloat, at::kBFloat16};
#ifdef GAINRAG_WITH_DNNL
  dtypes.push_back(at::kChar);
#endif
  for (at::ScalarType dtype : dtypes) {
    LlamaOptions opts;
    opts.dtype = dtype;
    std::shared_ptr<LlamaModel> model;
    try {
      model = LlamaModel::Load(dir, opts);
    } catch (const Error& e) {
      // int8 needs a oneDNN int8 kernel for this CPU; anything else is a failure.
      check(dtype == at::kChar && e.code() == ErrorCode::kUnsupported, std::string("llama load: ") + e.what());
      continue;
    }
    const std::string name = dtype == at::kFloat ? "float32" : dtype == at::kBFloat16 ? "bfloat16" : "int8";
    if (!model->fast_decode()) {
      std::printf("llama fused decode step: not available on this CPU (%s), ATen path only\n", name.c_str());
      continue;
    }
    // Every compiled kernel set this CPU runs (AVX-512, then AVX2), against the same ATen step.
    std::vector<cpu::DecodeIsa> isas;
    for (cpu::DecodeIsa isa : {cpu::DecodeIsa::kAvx512, cpu::DecodeIsa::kAvx2})
      if (isa <= cpu::DetectedDecodeIsa()) isas.push_back(isa);
    for (cpu::DecodeIsa isa : isas)
    for (int64_t rows : {1, 2}) {
      cpu::SetDecodeIsa(isa);
      const int64_t t = int64_t(prompts[0].size()), cap = 32;
      at::Tensor ids = at::ones({rows, t}, at::kLong), pos = at::arange(t).repeat({rows, 1});
      at::Tensor mask = at::ones({t, t}, at::kBool).tril().expand({rows, t, t}).contiguous();
      std::vector<int64_t> length(rows);
      for (int64_t r = 0; r < rows; ++r) {
        length[r] = int64_t(prompts[r].size());
        for (int64_t i = 0; i < length[r]; ++i) ids[r][i] = prompts[r][i];
      }
      KVCache fast = model->NewCache(rows, cap);
      for (size_t l = 0; l < fast.k.size(); ++l) fast.k[l].zero_(), fast.v[l].zero_();
      at::Tensor hidden = model->Forward(ids, pos, mask, &fast);
      KVCache aten = Clone(fast);
      std::vector<int64_t> tok_fast(rows), tok_aten(rows);
      for (int64_t r = 0; r < rows; ++r)
        tok_fast[r] = tok_aten[r] = model->Logits(hidden[r][length[r] - 1].unsqueeze(0)).argmax(-1).item<int64_t>();
      double worst = 0;
      bool same = true;
      for (int64_t step = 0; step < 12 && same; ++step) {
        at::Tensor p = at::empty({rows}, at::kLong), a = at::empty({rows}, at::kLong), b = at::empty({rows}, at::kLong);
        int64_t width = 0;
        for (int64_t r = 0; r < rows; ++r) {
          p[r] = length[r] + step;
          a[r] = tok_fast[r];
          b[r] = tok_aten[r];
          width = std::max(width, length[r] + step + 1);
        }
        at::Tensor lf = model->DecodeLogits(a, p, width, &fast, true);
        at::Tensor la = model->DecodeLogits(b, p, width, &aten, false);
        worst = std::max(worst, ((lf - la).abs().max() / la.abs().max()).item<double>());
        for (int64_t r = 0; r < rows; ++r) {
          tok_fast[r] = lf[r].argmax().item<int64_t>();
          tok_aten[r] = la[r].argmax().item<int64_t>();
          same = same && tok_fast[r] == tok_aten[r];
        }
      }
      // int8: the glue's float32 rounding differs from ATen's by ~1e-7, which can move an
      // activation across a quantisation step; one step is ~1/127 of a row's largest value.
      const double tol = dtype == at::kFloat ? 1e-5 : dtype == at::kBFloat16 ? 3e-2 : 2e-3;
      const std::string what = "llama fused decode step, " + name + ", " + cpu::DecodeIsaName(isa) + ", " +
                               std::to_string(rows) + " row(s)";
      check(same, what + ": greedy tokens equal the ATen step");
      check(worst < tol, what + ": logits within " + std::to_string(tol) + " of the ATen step (max rel " +
                             std::to_string(worst) + ")");
      std::printf("%s: max rel logit difference %.3g\n", what.c_str(), worst);
    }
    cpu::SetDecodeIsa(cpu::DetectedDecodeIsa());
  }
  return failures;
}
