// Streams embeddings into an index directory without holding the corpus in memory: each append
// is validated, converted to the storage type and written; finish() publishes the files
// (manifest last). Rows get ids 0..count-1 in append order.
import { withControls, type CallOptions } from '../controls.js';
import { native, type NativeControls } from '../native.js';
import { validateOutput } from '../io/output.js';
import type { DenseIndexOptions } from './dense-index.js';

interface NativeDenseIndexWriter {
  readonly count: number;
  append(vectors: Float32Array, controls: NativeControls, ids?: BigInt64Array): Promise<void>;
  appendFile(path: string, offset: number, rows: number, dtype: string, ids: BigInt64Array | undefined, controls: NativeControls): Promise<void>;
  appendNpy(path: string, controls: NativeControls): Promise<number>;
  finish(): Promise<number>;
  abort(): void;
}

/** The `format` in every index manifest.json (native/index/index_files.cpp writes it). */
export const INDEX_FORMAT = 'gainrag-dense-index';

type WriterCtor = new (dir: string, dim: number, dtype: string, metric: string) => NativeDenseIndexWriter;

function checkIds(ids: BigInt64Array | undefined, n: number): void {
  if (ids === undefined) return;
  if (!(ids instanceof BigInt64Array)) throw new TypeError('ids must be a BigInt64Array');
  if (ids.length !== n) throw new RangeError(`ids has ${ids.length} entries for ${n} vectors`);
}

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

  /**
   * Appends rows (n x dim, row-major). NaN/Inf: E_DATA, and nothing of this call is written.
   * ids (default: the next row numbers) are the rows' index ids; the caller keeps them unique
   * (DenseIndex.open refuses duplicates).
   */
  async append(vectors: Float32Array, options: CallOptions = {}, ids?: BigInt64Array): Promise<void> {
    if (!(vectors instanceof Float32Array)) throw new TypeError('vectors must be a Float32Array');
    if (vectors.length % this.dim !== 0) throw new RangeError(`vectors length ${vectors.length} is not a multiple of dim ${this.dim}`);
    checkIds(ids, vectors.length / this.dim);
    await withControls(options, (controls) => this.raw.append(vectors, controls, ids));
  }

  /**
   * Appends `rows` little-endian float16/float32 rows stored at byte `offset` of `file` (a matrix
   * inside another container, such as a pickled numpy array), read a chunk at a time.
   * E_DATA when the file is too short.
   */
  async appendFile(file: string, offset: number, rows: number, dtype: 'float16' | 'float32', ids?: BigInt64Array, options: CallOptions = {}): Promise<void> {
    if (typeof file !== 'string') throw new TypeError('file must be a string');
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError('offset must be a non-negative integer');
    if (!Number.isSafeInteger(rows) || rows < 0) throw new RangeError('rows must be a non-negative integer');
    if (dtype !== 'float16' && dtype !== 'float32') throw new TypeError(`dtype must be float16 or float32, got ${String(dtype)}`);
    checkIds(ids, rows);
    await withControls(options, (controls) => this.raw.appendFile(file, offset, rows, dtype, ids, controls));
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
