// Read-only access to .safetensors files: header metadata, and each tensor as a typed array
// over the memory-mapped file (no copy).
import { native, type NativeSafetensorsFile } from './native.js';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface TensorMeta {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** absolute byte offset of the data in the file */
  byteOffset: number;
  byteLength: number;
}

/** F16 and BF16 tensors come back as Uint16Array holding the raw bits. */
export type TensorData = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array | Int16Array | Int8Array | Uint8Array;

export class SafetensorsFile {
  private constructor(private readonly file: NativeSafetensorsFile) {}

  /** Maps the file and validates its header (E_SAFETENSORS on any inconsistency). */
  static async open(path: string): Promise<SafetensorsFile> {
    if (typeof path !== 'string' || path.length === 0) throw new TypeError('path must be a non-empty string');
    return new SafetensorsFile(await native().openSafetensors(path));
  }

  get path(): string {
    return this.file.path;
  }

  tensors(): TensorMeta[] {
    return this.file.tensors() as TensorMeta[];
  }

  metadata(): Record<string, string> {
    return this.file.metadata();
  }

  /** A typed array viewing the tensor's bytes in the mapped file (row-major). */
  tensor(name: string): TensorData {
    if (typeof name !== 'string') throw new TypeError('name must be a string');
    return this.file.tensor(name);
  }
}

/** Opens a safetensors file; same as SafetensorsFile.open. */
export function readSafetensors(path: string): Promise<SafetensorsFile> {
  return SafetensorsFile.open(path);
}

/** Decodes IEEE half or bfloat16 bits to float32 (for inspection; engines read them natively). */
export function decode16(bits: Uint16Array, dtype: 'F16' | 'BF16'): Float32Array {
  const out = new Float32Array(bits.length);
  if (dtype === 'BF16') {
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < bits.length; i++) u32[i] = bits[i] << 16;
    return out;
  }
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    out[i] = exp === 0 ? sign * 2 ** -14 * (frac / 1024) : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return out;
}
