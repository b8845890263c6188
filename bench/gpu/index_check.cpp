// GPU check of DenseIndex (no Node needed): the CUDA search against the CPU search on the same
// index and queries, for each storage type and metric, then one timing of the CUDA path.
// Built and run by bench/gpu/run.sh on a machine with CUDA LibTorch.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>

#include "index/dense_index.h"

using namespace gainrag;

namespace {

struct Config {
  int64_t n, dim, q, k;
  at::ScalarType dtype;
  Metric metric;
  int64_t block;
};

// Fraction of the CPU top-k ids that the GPU result also holds (1 up to ties at the k-th place).
double Agreement(const at::Tensor& a, const at::Tensor& b) {
  int64_t same = 0;
  for (int64_t r = 0; r < a.size(0); ++r) {
    at::Tensor hit = at::isin(b[r], a[r]);
    same += hit.sum().item<int64_t>();
  }
  return double(same) / double(a.numel());
}

}  // namespace

int main() {
  at::manual_seed(0);
  const Config configs[] = {
      {100003, 128, 37, 100, at::kFloat, Metric::kInnerProduct, 0},
      {100003, 128, 37, 100, at::kHalf, Metric::kInnerProduct, 30000},
      {50000, 96, 20, 2048, at::kBFloat16, Metric::kCosine, 7777},
      {3001, 64, 5, 3001, at::kHalf, Metric::kCosine, 1000},
  };
  bool ok = true;
  for (const Config& c : configs) {
    at::Tensor x = at::randn({c.n, c.dim});
    at::Tensor q = at::randn({c.q, c.dim});
    DenseIndex index(c.dim, c.dtype, c.metric);
    index.Add(x, at::Tensor());
    SearchOptions o;
    o.corpus_block = c.block;
    SearchResult cpu = index.Search(q, c.k, RunContext(), o);
    index.SetDevice(at::Device(at::kCUDA, 0));
    SearchResult gpu = index.Search(q, c.k, RunContext(), o);
    index.SetDevice(at::Device(at::kCPU));
    const double diff = (cpu.scores - gpu.scores).abs().max().item<double>();
    const double agree = Agreement(cpu.ids, gpu.ids);
    const bool pass = diff < 1e-3 && agree > 0.999;
    ok = ok && pass;
    std::printf("N=%ld dim=%ld Q=%ld k=%ld %s %s block=%ld: max|score diff|=%.2e id agreement=%.5f %s\n", long(c.n),
                long(c.dim), long(c.q), long(c.k), c10::toString(c.dtype), MetricName(c.metric), long(c.block), diff,
                agree, pass ? "OK" : "FAIL");
  }
  // One timing of the CUDA path (correctness-first implementation; speed is a later issue).
  {
    const int64_t n = 2000000, dim = 768, nq = 4096, k = 100;
    DenseIndex index(dim, at::kHalf, Metric::kInnerProduct);
    for (int64_t b = 0; b < n; b += 500000) index.Add(at::randn({500000, dim}), at::Tensor());
    at::Tensor q = at::randn({nq, dim});
    index.SetDevice(at::Device(at::kCUDA, 0));
    index.Search(q.slice(0, 0, 64), k);  // corpus upload + warm-up
    auto t0 = std::chrono::steady_clock::now();
    SearchResult r = index.Search(q, k);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("CUDA search N=%ld x %ld fp16, Q=%ld, k=%ld: %.3f s (%.0f q/s)\n", long(n), long(dim), long(nq), long(k), s,
                nq / s);
  }
  std::printf(ok ? "ALL OK\n" : "SOME FAILED\n");
  return ok ? 0 : 1;
}
