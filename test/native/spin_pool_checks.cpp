// cpu::SpinParallelFor: every index of [0, n) is visited exactly once, for sizes below, at and
// above the thread count, over many back-to-back jobs (the helpers go from spinning to parked
// and back: a pause longer than their spin between two batches), and from two threads at once
// (one of them runs on the helpers, the other on itself). Part of gainrag_native_test.
#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "backends/spin_pool.h"

int SpinPoolChecks() {
  int failures = 0;
  // At least 2 threads, so that the helpers exist (the pool is sized at its first use).
  const int threads = at::get_num_threads();
  if (threads < 2) at::set_num_threads(2);
  auto run = [&](int64_t n) {
    std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
    for (auto& s : seen) s.store(0);
    gainrag::cpu::SpinParallelFor(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) seen[size_t(i)].fetch_add(1);
    });
    int64_t bad = 0;
    for (auto& s : seen) bad += s.load() != 1;
    return bad;
  };
  int64_t bad = 0;
  for (int batch = 0; batch < 2; ++batch) {
    for (int64_t n : {1, 2, 3, 7, 64, 1000})
      for (int rep = 0; rep < 200; ++rep) bad += run(n);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the helpers' spin
  }
  std::atomic<int64_t> bad2{0};
  std::thread other([&] {
    for (int rep = 0; rep < 500; ++rep) bad2 += run(37);
  });
  for (int rep = 0; rep < 500; ++rep) bad += run(41);
  other.join();
  bad += bad2.load();
  if (bad != 0) {
    std::printf("FAIL: spin pool: %lld indices not visited exactly once\n", (long long)bad);
    ++failures;
  } else {
    std::printf("spin pool: every index once over %d threads, parked and spinning, two callers at once\n",
                at::get_num_threads());
  }
  if (threads < 2) at::set_num_threads(threads);
  return failures;
}
