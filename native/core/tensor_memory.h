// The engine's CPU tensor allocator: LibTorch's default hands every large tensor to malloc, which
// on glibc maps it fresh and unmaps it on free, so each forward pays a page fault (and a page
// clear) per 4 KiB of every activation it allocates. A 16 x 512 prefill of a 155M Llama spent
// 11% of its time in those faults. This allocator keeps freed large blocks by size class, up to
// a cap; small blocks go to malloc as before. (It does not ask for transparent huge pages: on this
// VM, madvise(MADV_HUGEPAGE) on the weights made single-sequence fp32 decode 15-25% slower.)
#pragma once

#include <cstdint>

namespace gainrag {

struct TensorMemoryStats {
  bool installed = false;     // false in sanitizer builds (ASan must see every allocation) and with
                              // GAINRAG_TENSOR_ALLOCATOR=libtorch
  int64_t cap_bytes = 0;      // most freed bytes kept for reuse (GAINRAG_TENSOR_CACHE_MB)
  int64_t cached_bytes = 0;   // freed large blocks held now
  int64_t live_bytes = 0;     // large blocks in use now
  int64_t reused = 0;         // large allocations served from the cache
  int64_t mapped = 0;         // large allocations that mapped new memory
};

// Makes this allocator LibTorch's CPU allocator. Idempotent; tensors allocated before keep their
// own deleters. The cap is read once from GAINRAG_TENSOR_CACHE_MB (default 1024; 0 keeps nothing).
// GAINRAG_TENSOR_ALLOCATOR=libtorch leaves LibTorch's allocator in place (stats say not installed).
void InstallTensorMemory();

TensorMemoryStats GetTensorMemoryStats();

// Returns every cached block to the system (live tensors are untouched).
void ReleaseCachedTensorMemory();

}  // namespace gainrag
