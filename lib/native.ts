// Loads the native addon (node-gyp-build: build/Release, then prebuilds/). GAINRAG_ADDON may
// name a .node file explicitly (another build directory, a GPU build).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
// dist/lib/native.js -> package root
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface NativeCancelToken {
  cancel(): void;
  readonly cancelled: boolean;
}

export interface NativeControls {
  cancel?: NativeCancelToken;
  onProgress?: (done: number, total: number, note: string) => void;
}

export interface NativeTensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  byteOffset: number;
  byteLength: number;
}

export interface NativeSafetensorsFile {
  readonly path: string;
  tensors(): NativeTensorInfo[];
  metadata(): Record<string, string>;
  tensor(name: string): Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array | Int16Array | Int8Array | Uint8Array;
}

/** The raw addon surface. Only lib/ uses it; users import the typed classes. */
export interface NativeAddon {
  CancelToken: new () => NativeCancelToken;
  engineInfo(): { version: string; torch: string; backends: string[]; cudaDevices: number; threads: number; blas: string; dnnlKernels: string; int8InputBits: number;
    tensorMemory: { installed: boolean; capBytes: number; cachedBytes: number; liveBytes: number; reused: number; mapped: number } };
  setThreads(n: number): number;
  releaseTensorMemory(): number;
  openSafetensors(path: string): Promise<NativeSafetensorsFile>;
  testing: {
    roundTrip(x: Float32Array): Promise<{ out: Float32Array; inAddress: bigint; outAddress: bigint }>;
    addressOf(x: ArrayBufferView): bigint;
    sleepSteps(steps: number, msPerStep: number, controls?: NativeControls): Promise<number>;
    gemmSeconds(path: string, m: number, k: number, n: number, gelu: boolean, reps: number): Promise<{ seconds: number[]; flops: number; kernel: string }>;
  };
  // Later classes attach here (Encoder, CausalLM, DenseIndex, SelectorTrainer).
  [name: string]: unknown;
}

let cached: NativeAddon | undefined;

export function native(): NativeAddon {
  if (cached) return cached;
  const explicit = process.env.GAINRAG_ADDON;
  try {
    cached = explicit
      ? (require(path.resolve(explicit)) as NativeAddon)
      : (require('node-gyp-build')(packageRoot) as NativeAddon);
  } catch (err) {
    const e = new Error(
      `gainrag: the native addon could not be loaded (${(err as Error).message}). ` +
        'Build it with `npm rebuild gainrag` (needs LibTorch: see README "Building").',
    ) as Error & { code: string };
    e.code = 'E_NO_ADDON';
    throw e;
  }
  return cached;
}
