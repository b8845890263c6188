// What this build and CPU run, for tests whose subject exists only where it does: oneDNN's kernel
// per precision (engineInfo().dnnlKernels, "f32 K, bf16 K, int8 K", "none" where it has none).
// A test of such a feature asserts the E_UNSUPPORTED refusal where it is absent.
import { engineInfo } from '../lib/engine.js';

/** Whether oneDNN runs this precision here: bf16 needs AVX512-BF16 or AMX, int8 runs on AVX2 too (7-bit input codes without VNNI). */
export function dnnlHas(kind: 'f32' | 'bf16' | 'int8'): boolean {
  const m = new RegExp(`\\b${kind} ([^\\s,]+)`).exec(engineInfo().dnnlKernels);
  return !!m && m[1] !== 'none';
}
