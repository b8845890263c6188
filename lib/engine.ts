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

export function engineInfo(): EngineInfo & { blas: string; dnnlKernels: string } {
  return native().engineInfo();
}

/** Sets LibTorch's process-wide intra-op thread count; returns the count in force. */
export function setThreads(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`threads must be a positive integer, got ${n}`);
  return native().setThreads(n);
}
