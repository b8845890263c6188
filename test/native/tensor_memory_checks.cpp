// The caching CPU tensor allocator (native/core/tensor_memory.h): freed large blocks come back
// for the next tensor of their size class, every block keeps LibTorch's 64-byte alignment, the
// books balance after concurrent use, and releasing empties the cache.
#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor_memory.h"

namespace {

int failures = 0;

void Check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: tensor memory: %s\n", what.c_str());
    ++failures;
  }
}

}  // namespace

int TensorMemoryChecks() {
  using namespace gainrag;
  InstallTensorMemory();
  const TensorMemoryStats s0 = GetTensorMemoryStats();
  if (!s0.installed) {
    std::printf("tensor memory: not installed (sanitizer build), checks skipped\n");
    return 0;
  }
  for (int64_t n : {1, 7, 100, 4096, 100000, 300000, 1 << 20, 5 << 20}) {
    at::Tensor t = at::empty({n}, at::kFloat);
    Check(reinterpret_cast<uintptr_t>(t.data_ptr()) % 64 == 0, "64-byte alignment at " + std::to_string(n) + " floats");
    t.fill_(1.5f);
    Check(t.sum().item<double>() == 1.5 * double(n), "contents at " + std::to_string(n) + " floats");
  }
  const int64_t floats = int64_t(6) << 20;  // 24 MiB, a large block
  void* first = nullptr;
  {
    at::Tensor a = at::full({floats}, 2.0f);
    first = a.data_ptr();
    Check(GetTensorMemoryStats().live_bytes >= floats * 4, "a live large block is counted");
  }
  const TensorMemoryStats s1 = GetTensorMemoryStats();
  Check(s1.cached_bytes >= floats * 4 || s1.cap_bytes < floats * 4, "a freed large block is kept under the cap");
  if (s1.cap_bytes >= floats * 4) {
    // Same size class (a few bytes longer): the block just freed comes back.
    at::Tensor b = at::empty({floats + 3}, at::kFloat);
    Check(b.data_ptr() == first, "a freed block is reused by the next tensor of its class");
    Check(GetTensorMemoryStats().reused == s1.reused + 1, "reuse is counted");
    b.fill_(-1.0f);
    Check(b.min().item<float>() == -1.0f && b.max().item<float>() == -1.0f, "a reused block holds what was written");
  }
  // Concurrent allocation and release from several threads; the books balance afterwards.
  const int64_t live_before = GetTensorMemoryStats().live_bytes;
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([w] {
      uint32_t r = 12345u + uint32_t(w);
      std::vector<at::Tensor> keep;
      for (int i = 0; i < 300; ++i) {
        r = r * 1664525u + 1013904223u;
        const int64_t n = int64_t(1 + (r >> 8) % (3 << 20));  // up to 12 MiB
        keep.push_back(at::empty({n}, at::kFloat).fill_(float(i)));
        if (keep.size() > 3) keep.erase(keep.begin());
      }
    });
  for (auto& t : threads) t.join();
  const TensorMemoryStats s2 = GetTensorMemoryStats();
  Check(s2.live_bytes == live_before, "live bytes balance after concurrent use (" + std::to_string(s2.live_bytes) +
                                          " vs " + std::to_string(live_before) + ")");
  Check(s2.cached_bytes <= s2.cap_bytes, "the cache stays under its cap");
  ReleaseCachedTensorMemory();
  Check(GetTensorMemoryStats().cached_bytes == 0, "release empties the cache");
  return failures;
}
