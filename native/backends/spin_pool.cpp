#include "backends/spin_pool.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace gainrag::cpu {
namespace {

// How long a helper spins for the next section before parking. Sections of one decode step
// follow one another within microseconds; steps within a generation, within a millisecond.
constexpr int64_t kSpinMicroseconds = 2000;

class SpinPool {
 public:
  explicit SpinPool(int helpers) : helpers_(helpers) {
    for (int h = 0; h < helpers_; ++h) std::thread([this, h] { Work(h); }).detach();
  }

  int helpers() const { return helpers_; }

  // Caller holds busy_ (one job at a time); `parts` - 1 helpers take part (parts <= helpers + 1).
  // Every helper acknowledges every job, taking part or not, so none can still be reading one
  // job's parameters when the next is published.
  void Run(int64_t n, int parts, const std::function<void(int64_t, int64_t)>& fn) {
    fn_ = &fn;
    n_ = n;
    parts_ = parts;
    pending_.store(helpers_, std::memory_order_relaxed);
    {
      // Under the lock so that a helper deciding to park cannot miss the new job.
      std::lock_guard<std::mutex> lock(mu_);
      job_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    Part(0);
    // The helpers' parts: spin, yielding now and then in case one was descheduled.
    for (int64_t i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
      if (i % 4096 == 4095) std::this_thread::yield();
      else _mm_pause();
    }
  }

  std::mutex busy_;

 private:
  void Part(int p) const {
    const int64_t begin = n_ * p / parts_, end = n_ * (p + 1) / parts_;
    if (begin < end) (*fn_)(begin, end);
  }

  void Work(int h) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t job = job_.load(std::memory_order_acquire);
      if (job == seen) {
        // Spin for the next job, then park until one comes.
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicroseconds);
        for (int64_t i = 0; job == seen; ++i) {
          _mm_pause();
          job = job_.load(std::memory_order_acquire);
          if (job == seen && i % 256 == 255 && std::chrono::steady_clock::now() > until) {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return job_.load(std::memory_order_acquire) != seen; });
            job = job_.load(std::memory_order_acquire);
          }
        }
      }
      seen = job;
      if (h + 1 < parts_) Part(h + 1);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  const int helpers_;
  std::atomic<uint64_t> job_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 1;
  std::mutex mu_;
  std::condition_variable cv_;
};

// One pool per process, sized by ATen's thread count at first use (never destroyed: its helpers
// are detached and park when idle).
SpinPool* Pool() {
  static SpinPool* pool = new SpinPool(std::max(0, at::get_num_threads() - 1));
  return pool;
}

}  // namespace

void SpinParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int threads = at::get_num_threads();
  if (n == 1 || threads <= 1 || at::in_parallel_region()) return fn(0, n);
  SpinPool* pool = Pool();
  const int parts = int(std::min<int64_t>({n, int64_t(threads), int64_t(pool->helpers()) + 1}));
  std::unique_lock<std::mutex> lock(pool->busy_, std::try_to_lock);
  if (parts <= 1 || !lock.owns_lock()) return fn(0, n);
  pool->Run(n, parts, fn);
}

}  // namespace gainrag::cpu
