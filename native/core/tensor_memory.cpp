#include "core/tensor_memory.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace gainrag {
namespace {

// Every block starts with a 64-byte header (keeping LibTorch's 64-byte alignment) that says how
// it was obtained, so the deleter needs no lookup: 0 = malloc, else the mapped class size.
constexpr size_t kHeader = 64;
constexpr size_t kLargeMin = size_t(1) << 20;  // below this malloc keeps blocks on its heap anyway

// Size classes an eighth of a power of two apart (at least 64 KiB): a block is reused for any
// request of its class, wasting at most 12.5%.
size_t SizeClass(size_t total) {
  size_t floor2 = size_t(1) << (63 - __builtin_clzll(total));
  const size_t step = std::max<size_t>(size_t(64) << 10, floor2 / 8);
  return (total + step - 1) / step * step;
}

int64_t CapFromEnv() {
  const char* env = std::getenv("GAINRAG_TENSOR_CACHE_MB");
  if (!env || !*env) return int64_t(1024) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(env, &end, 10);
  if (end && *end == '\0' && mb >= 0 && mb < (int64_t(1) << 40)) return int64_t(mb) << 20;
  // Read while LibTorch's first tensor is allocated, where no error can reach a caller: say so
  // once, loudly, and keep the default rather than guess.
  std::fprintf(stderr, "gainrag: GAINRAG_TENSOR_CACHE_MB=%s is not a whole number of MiB; using 1024\n", env);
  return int64_t(1024) << 20;
}

class BlockCache {
 public:
  BlockCache() : cap_(CapFromEnv()) {}

  void* Take(size_t cls) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = by_class_.find(cls);
      if (it != by_class_.end() && !it->second.empty()) {
        auto node = it->second.back();
        it->second.pop_back();
        void* p = node->ptr;
        lru_.erase(node);
        cached_ -= int64_t(cls), live_ += int64_t(cls), ++reused_;
        return p;
      }
    }
    void* p = Map(cls);
    if (!p) {
      Release();  // the cache may hold what the system lacks
      p = Map(cls);
    }
    TORCH_CHECK(p, "out of memory: could not map a CPU tensor block of ", cls, " bytes");
    std::lock_guard<std::mutex> lock(mu_);
    live_ += int64_t(cls), ++mapped_;
    return p;
  }

  void Give(void* p, size_t cls) {
    std::vector<std::pair<void*, size_t>> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_ -= int64_t(cls);
      if (int64_t(cls) > cap_) {
        evicted.emplace_back(p, cls);
      } else {
        // Oldest freed blocks go first: a workload's shapes change, its recent ones repeat.
        while (cached_ + int64_t(cls) > cap_) evicted.push_back(PopOldest());
        lru_.push_front({p, cls});
        by_class_[cls].push_back(lru_.begin());
        cached_ += int64_t(cls);
      }
    }
    for (auto& [q, n] : evicted) munmap(q, n);
  }

  void Release() {
    std::vector<std::pair<void*, size_t>> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (!lru_.empty()) evicted.push_back(PopOldest());
    }
    for (auto& [q, n] : evicted) munmap(q, n);
  }

  TensorMemoryStats Stats() {
    std::lock_guard<std::mutex> lock(mu_);
    TensorMemoryStats s;
    s.cap_bytes = cap_, s.cached_bytes = cached_, s.live_bytes = live_, s.reused = reused_, s.mapped = mapped_;
    return s;
  }

 private:
  struct Block {
    void* ptr;
    size_t cls;
  };

  static void* Map(size_t cls) {
    void* p = mmap(nullptr, cls, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    return p;
  }

  // Caller holds mu_.
  std::pair<void*, size_t> PopOldest() {
    Block b = lru_.back();
    auto& v = by_class_[b.cls];
    for (size_t i = 0; i < v.size(); ++i)
      if (v[i]->ptr == b.ptr) {
        v.erase(v.begin() + long(i));
        break;
      }
    lru_.pop_back();
    cached_ -= int64_t(b.cls);
    return {b.ptr, b.cls};
  }

  const int64_t cap_;
  std::mutex mu_;
  std::list<Block> lru_;  // front: most recently freed
  std::unordered_map<size_t, std::vector<std::list<Block>::iterator>> by_class_;
  int64_t cached_ = 0, live_ = 0, reused_ = 0, mapped_ = 0;
};

BlockCache& Cache() {
  static BlockCache* cache = new BlockCache();  // never destroyed: tensors may outlive statics
  return *cache;
}

void Free(void* data) {
  if (!data) return;
  char* base = static_cast<char*>(data) - kHeader;
  size_t cls;
  std::memcpy(&cls, base, sizeof cls);
  if (cls == 0) std::free(base);
  else Cache().Give(base, cls);
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n == 0) return {nullptr, nullptr, &Free, cpu};
    const size_t total = n + kHeader;
    char* base = nullptr;
    size_t cls = 0;
    if (total >= kLargeMin) {
      cls = SizeClass(total);
      base = static_cast<char*>(Cache().Take(cls));
    } else {
      void* p = nullptr;
      TORCH_CHECK(posix_memalign(&p, kHeader, total) == 0 && p, "out of memory: could not allocate ", n, " bytes");
      base = static_cast<char*>(p);
    }
    std::memcpy(base, &cls, sizeof cls);
    char* data = base + kHeader;
    return {data, data, &Free, cpu};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Free; }
};

std::once_flag installed_once;
bool installed = false;

}  // namespace

#if defined(__SANITIZE_ADDRESS__)
#define GAINRAG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GAINRAG_ASAN 1
#endif
#endif

void InstallTensorMemory() {
#if defined(GAINRAG_ASAN)
  return;  // ASan must see every tensor allocation; its malloc does the work instead
#else
  std::call_once(installed_once, [] {
    // The escape hatch, and the A/B switch for benches: LibTorch's own allocator stays.
    const char* which = std::getenv("GAINRAG_TENSOR_ALLOCATOR");
    if (which && std::strcmp(which, "libtorch") == 0) return;
    // Never destroyed: LibTorch's registry keeps the pointer until the process ends.
    static CachingCpuAllocator* allocator = new CachingCpuAllocator();
    // Priority above LibTorch's default registration (0), so it is not reset later.
    c10::SetCPUAllocator(allocator, /*priority=*/1);
    installed = true;
  });
#endif
}

TensorMemoryStats GetTensorMemoryStats() {
  TensorMemoryStats s = Cache().Stats();
  s.installed = installed;
  return s;
}

void ReleaseCachedTensorMemory() { Cache().Release(); }

}  // namespace gainrag
