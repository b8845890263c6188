import { native } from './native.js';

export interface EngineInfo {
  /** gainrag version */
  version: string;
  /** LibTorch version the addon was built against */
  torch: string;
  /** backends compiled in: 'cpu'; 'cuda' when built against a CUDA LibTorch; 'dnnl' when built with oneDNN (libdnnl-dev); 'faiss' when FAISS index files are supported */
  backends: string[];
  /** CUDA devices visible at run time (0 without CUDA) */
  cudaDevices: number;
  /** LibTorch intra-op threads (GAINRAG_THREADS, default: all cores) */
  threads: number;
}

/**
 * The engine's CPU tensor allocator (native/core/tensor_memory.h): freed tensors of 1 MiB or more
 * are kept for reuse, up to `capBytes` (GAINRAG_TENSOR_CACHE_MB, default 1024), instead of being
 * unmapped and faulted in again on the next call. Counts are since the addon loaded.
 */
export interface TensorMemoryInfo {
  /** false in sanitizer builds, where every tensor goes to malloc */
  installed: boolean;
  capBytes: number;
  /** freed blocks held for reuse now (resident memory beyond live tensors) */
  cachedBytes: number;
  /** large tensor blocks in use now */
  liveBytes: number;
  /** large allocations served from the cache */
  reused: number;
  /** large allocations that mapped new memory */
  mapped: number;
}

/**
 * Beyond EngineInfo: `blas` (LibTorch's BLAS), `dnnlKernels` (oneDNN's kernel per precision,
 * "f32 K, bf16 K, int8 K", "none" where it has none), `int8InputBits` (how `dtype: 'int8'`
 * products code each input row: 8 bits where the CPU has VNNI, 7 on CPUs without it, whose
 * u8 x s8 instruction would saturate on 8-bit codes; 0 where int8 does not run) and `tensorMemory`.
 */
export function engineInfo(): EngineInfo & { blas: string; dnnlKernels: string; int8InputBits: number; tensorMemory: TensorMemoryInfo } {
  return native().engineInfo();
}

/** Sets LibTorch's process-wide intra-op thread count; returns the count in force. */
export function setThreads(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`threads must be a positive integer, got ${n}`);
  return native().setThreads(n);
}

/**
 * Returns the allocator's cached free blocks to the system (live tensors are untouched), e.g.
 * after disposing models in a long-lived process; returns the bytes released.
 */
export function releaseTensorMemory(): number {
  return native().releaseTensorMemory();
}
