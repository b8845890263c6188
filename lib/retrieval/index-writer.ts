// Streams embeddings into an index directory without holding the corpus in memory: each append
// is validated, converted to the storage type and written; finish() publishes the files
// (manifest last). Rows get ids 0..count-1 in append order.
import { withControls, type CallOptions } from '../controls.js';
import { native, type NativeControls } from '../native.js';
import { validateOutput } from '../io/output.js';
import type { DenseIndexOptions } from './dense-index.js';

interface NativeDenseIndexWriter {
  readonly count: number;
  append(vectors: Float32Array, controls: NativeControls): Promise<void>;
  appendNpy(path: string, controls: NativeControls): Promise<number>;
  finish(): Promise<number>;
  abort(): void;
}

/** The `format` in every index manifest.json (native/index/index_files.cpp writes it). */
export const INDEX_FORMAT = 'gainrag-dense-index';

type WriterCtor = new (dir: string, dim: number, dtype: string, metric: string) => NativeDenseIndexWriter;

export class DenseIndexWriter {
  readonly dim: number;
  private readonly raw: NativeDenseIndexWriter;

  private constructor(raw: NativeDenseIndexWriter, dim: number) {
    this.raw = raw;
    this.dim = dim;
  }

  /** Starts writing an index into `dir` (created if needed; existing index files are replaced on finish). */
  static create(dir: string, dim: number, options: DenseIndexOptions = {}): DenseIndexWriter {
    if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir must be a non-empty string');
    if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dim must be a positive integer, got ${String(dim)}`);
    const dtype = options.dtype ?? 'float32';
    const metric = options.metric ?? 'ip';
    if (!['float32', 'float16', 'bfloat16'].includes(dtype)) throw new TypeError(`dtype must be float32, float16 or bfloat16, got ${String(dtype)}`);
    if (metric !== 'ip' && metric !== 'cosine') throw new TypeError(`metric must be 'ip' or 'cosine', got ${String(metric)}`);
    validateOutput(dir, 'dir', { label: 'dir' }); // not a file, link or FIFO; parent writable
    const Ctor = (native() as unknown as { DenseIndexWriter: WriterCtor }).DenseIndexWriter;
    return new DenseIndexWriter(new Ctor(dir, dim, dtype, metric), dim);
  }

  /** Rows written so far. */
  get count(): number {
    return this.raw.count;
  }

  /** Appends rows (n x dim, row-major). NaN/Inf: E_DATA, and nothing of this call is written. */
  async append(vectors: Float32Array, options: CallOptions = {}): Promise<void> {
    if (!(vectors instanceof Float32Array)) throw new TypeError('vectors must be a Float32Array');
    if (vectors.length % this.dim !== 0) throw new RangeError(`vectors length ${vectors.length} is not a multiple of dim ${this.dim}`);
    await withControls(options, (controls) => this.raw.append(vectors, controls));
  }

  /** Appends the rows of a float32/float16 .npy matrix (read through a memory map). Returns the rows added. */
  async appendNpy(path: string, options: CallOptions = {}): Promise<number> {
    if (typeof path !== 'string') throw new TypeError('path must be a string');
    return withControls(options, (controls) => this.raw.appendNpy(path, controls));
  }

  /** Publishes vectors.bin, ids.bin and manifest.json; returns the row count. */
  async finish(): Promise<number> {
    return this.raw.finish();
  }

  /** Stops and removes the temporary files. */
  abort(): void {
    this.raw.abort();
  }
}
