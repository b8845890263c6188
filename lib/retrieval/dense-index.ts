// Exact dense retrieval (inner product or cosine) over a matrix of embeddings held by the native
// engine. Vectors and queries cross the boundary as borrowed Float32Arrays; results come back as
// external typed arrays. See native/index/dense_index.h for the on-disk format.
import { Type, type Vector } from 'apache-arrow';
import { checkNotShared } from '../errors.js';
import { withControls, type CallOptions } from '../controls.js';
import { GainragError } from '../errors.js';
import { native, type NativeControls } from '../native.js';
import path from 'node:path';
import { ANN_FILE, faissAvailable, readAnnMeta, type AnnMeta } from './ann.js';

export type IndexDType = 'float32' | 'float16' | 'bfloat16';
export type IndexMetric = 'ip' | 'cosine';

/**
 * How much of an index directory `DenseIndex.open` checks. Both check file sizes, the manifest
 * checksum (an edited metric/dtype/count is E_INDEX) and ids.bin (checksum; ids non-negative
 * and unique). 'full' (default) also reads vectors.bin once: its checksum and no NaN/Inf rows,
 * about one second per few GB. 'header' skips that pass for huge indexes on trusted storage.
 */
export type IndexVerify = 'full' | 'header';

export interface DenseIndexOptions {
  /** Storage type of the rows (default float32). 16-bit rows are upcast per block when searching. */
  dtype?: IndexDType;
  /** 'ip' (default) or 'cosine' (rows and queries are L2-normalised). */
  metric?: IndexMetric;
}

export interface FromVectorsOptions extends DenseIndexOptions, CallOptions {
  ids?: BigInt64Array | readonly number[];
}

export interface SearchOptions extends CallOptions {
  /** Corpus rows per matrix product (default tuned for CPU; tests use small blocks). */
  corpusBlock?: number;
  /** Queries per matrix product. */
  queryBlock?: number;
  /** Queries served by one pass over the corpus (default: as many as ~256 MiB of top-k buffers hold). */
  queryGroup?: number;
  /** An index with a FAISS approximate index (`approximate`): search the exact rows instead. */
  exact?: boolean;
  /** Approximate search: IVF lists probed (default: the index's own, see `approximate`). */
  nprobe?: number;
  /** Approximate search: HNSW efSearch. */
  efSearch?: number;
}

/** The FAISS index an index directory carries (ann.json), and the FAISS class read. */
export interface ApproximateInfo extends AnnMeta {
  type: string;
}

/**
 * Q x k results, row-major, best first. Ties in score are ordered by insertion (the row added
 * first wins) on CPU. A slot holds id -1 / score -Infinity only when a query scored fewer than k
 * rows finitely (possible only when float32 products overflow).
 */
export interface SearchResult {
  ids: BigInt64Array;
  scores: Float32Array;
}

/** Queries: a row-major Float32Array (Q x dim), or an Arrow FixedSizeList<Float32> vector. */
export type QueryInput = Float32Array | Vector;

interface NativeDenseIndex {
  readonly size: number;
  readonly dim: number;
  readonly dtype: IndexDType;
  readonly metric: IndexMetric;
  readonly device: string;
  add(vectors: Float32Array, ids: BigInt64Array | undefined, controls: NativeControls): Promise<void>;
  addNpy(path: string, controls: NativeControls): Promise<number>;
  search(queries: Float32Array, k: number, options: { corpusBlock?: number; queryBlock?: number; queryGroup?: number }, controls: NativeControls): Promise<SearchResult>;
  save(dir: string, controls: NativeControls): Promise<void>;
  saveFiles(dir: string, controls: NativeControls): Promise<void>;
  setDevice(device: string): void;
  attachAnn(file: string): Promise<string>;
  searchAnn(queries: Float32Array, k: number, options: { nprobe?: number; efSearch?: number }, controls: NativeControls): Promise<SearchResult>;
  row(i: number): Float32Array;
  dispose(): void;
}

interface IndexAddon {
  createDenseIndex(dim: number, dtype: string, metric: string): NativeDenseIndex;
  openDenseIndex(dir: string, verify: IndexVerify): Promise<NativeDenseIndex>;
  npyInfo(path: string): { rows: number; dim: number; dtype: 'float32' | 'float16' };
}

function addon(): IndexAddon {
  return native() as unknown as IndexAddon;
}

/** Header of a .npy matrix (shape and element type), without reading its data. */
export function npyInfo(path: string): { rows: number; dim: number; dtype: 'float32' | 'float16' } {
  if (typeof path !== 'string') throw new TypeError('path must be a string');
  return addon().npyInfo(path);
}

function checkOptions(options: DenseIndexOptions): { dtype: IndexDType; metric: IndexMetric } {
  const dtype = options.dtype ?? 'float32';
  const metric = options.metric ?? 'ip';
  if (!['float32', 'float16', 'bfloat16'].includes(dtype)) throw new TypeError(`dtype must be float32, float16 or bfloat16, got ${String(dtype)}`);
  if (metric !== 'ip' && metric !== 'cosine') throw new TypeError(`metric must be 'ip' or 'cosine', got ${String(metric)}`);
  return { dtype, metric };
}

function toIds(ids: BigInt64Array | readonly number[] | undefined, n: number): BigInt64Array | undefined {
  if (ids === undefined) return undefined;
  if (ids instanceof BigInt64Array) {
    if (ids.length !== n) throw new RangeError(`ids has ${ids.length} entries for ${n} vectors`);
    return ids;
  }
  if (!Array.isArray(ids)) throw new TypeError('ids must be a BigInt64Array or an array of integers');
  if (ids.length !== n) throw new RangeError(`ids has ${ids.length} entries for ${n} vectors`);
  const out = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    const v = ids[i];
    if (!Number.isSafeInteger(v)) throw new TypeError(`ids[${i}] must be a safe integer, got ${String(v)}`);
    // -1 is the "no result" slot in search output; any negative id is ambiguous.
    if (v < 0) throw new RangeError(`ids[${i}] must be >= 0, got ${v}`);
    out[i] = BigInt(v);
  }
  return out;
}

/** Row-major queries from a Float32Array or an Arrow FixedSizeList<Float32> (copy only when chunked or sliced oddly). */
export function queryMatrix(queries: QueryInput, dim: number): Float32Array {
  if (queries instanceof Float32Array) {
    checkNotShared(queries, 'queries');
    return queries;
  }
  const v = queries as Vector;
  if (v === null || typeof v !== 'object' || !('type' in v) || !Array.isArray((v as { data?: unknown }).data)) {
    throw new TypeError('queries must be a Float32Array or an Arrow FixedSizeList<Float32> vector');
  }
  const type = v.type as { typeId: Type; listSize?: number; children?: { type: { typeId: Type; precision?: number } }[] };
  const child = type.children?.[0]?.type;
  // Precision.SINGLE is 1 (HALF 0, DOUBLE 2).
  const isFloat32 = child !== undefined && (child.typeId === Type.Float32 || (child.typeId === Type.Float && child.precision === 1));
  if (type.typeId !== Type.FixedSizeList || !isFloat32) {
    throw new TypeError('queries must be an Arrow FixedSizeList<Float32> vector');
  }
  if (type.listSize !== dim) throw new RangeError(`query vectors have ${type.listSize} values, the index has dimension ${dim}`);
  if (v.nullCount > 0) throw new TypeError('queries contain null vectors');
  // Arrow JS slices child buffers when it slices a vector: values.values already starts at this
  // chunk's first list (its own element 0; `offset` only records where that was), which is how
  // Arrow's own element access reads it. Adding d.offset/values.offset again read other rows.
  const parts: Float32Array[] = v.data.map((d) => {
    const flat = d.children[0].values as Float32Array;
    if (flat.length < d.length * dim) throw new RangeError('Arrow queries: child values are shorter than length x dim');
    return flat.subarray(0, d.length * dim);
  });
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(v.length * dim);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

let warnedNoFaiss = false;

export class DenseIndex {
  private handle: NativeDenseIndex | null;
  private ann: ApproximateInfo | null = null;

  private constructor(raw: NativeDenseIndex) {
    this.handle = raw;
  }

  /** The native index, or E_DISPOSED after dispose(). */
  private get raw(): NativeDenseIndex {
    if (this.handle === null) throw new GainragError('E_DISPOSED', 'this DenseIndex was disposed');
    return this.handle;
  }

  /**
   * Releases the index (its memory and mapped files). Idempotent. Calls already running keep
   * their own reference and finish normally; the memory goes when the last of them settles.
   * Any later call fails with E_DISPOSED.
   */
  async dispose(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    h?.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  get disposed(): boolean {
    return this.handle === null;
  }

  /** An empty index of the given dimension. */
  static create(dim: number, options: DenseIndexOptions = {}): DenseIndex {
    if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dim must be a positive integer, got ${String(dim)}`);
    const { dtype, metric } = checkOptions(options);
    return new DenseIndex(addon().createDenseIndex(dim, dtype, metric));
  }

  /** An index over `vectors` (n x dim, row-major). ids default to 0..n-1. */
  static async fromVectors(vectors: Float32Array, dim: number, options: FromVectorsOptions = {}): Promise<DenseIndex> {
    const index = DenseIndex.create(dim, options);
    await index.add(vectors, options.ids, options);
    return index;
  }

  /** An index over the rows of a float32/float16 .npy matrix (C order), ids 0..n-1. */
  static async fromNpy(path: string, options: DenseIndexOptions & CallOptions = {}): Promise<DenseIndex> {
    const info = npyInfo(path);
    const index = DenseIndex.create(info.dim, options);
    await withControls(options, (controls) => index.raw.addNpy(path, controls));
    return index;
  }

  /**
   * Opens an index directory; the vectors are memory-mapped. Corrupt or edited contents are
   * E_INDEX (see IndexVerify for what is checked). A vectors.bin rewritten in place after open
   * makes later searches fail with E_INDEX (it is checked before each search).
   */
  static async open(dir: string, options: { verify?: IndexVerify } = {}): Promise<DenseIndex> {
    if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir must be a non-empty string');
    const verify = options.verify ?? 'full';
    if (verify !== 'full' && verify !== 'header') throw new RangeError(`verify must be 'full' or 'header', got ${String(verify)}`);
    const index = new DenseIndex(await addon().openDenseIndex(dir, verify));
    const meta = readAnnMeta(dir);
    if (meta && !faissAvailable()) {
      // The exact rows are all there: searches stay correct, only slower.
      if (!warnedNoFaiss) process.emitWarning(`${dir} has a FAISS index (${meta.factory}) but this build has no FAISS; searching exactly`);
      warnedNoFaiss = true;
    } else if (meta) {
      try {
        index.ann = { ...meta, type: await index.raw.attachAnn(path.join(dir, ANN_FILE)) };
      } catch (err) {
        await index.dispose();
        throw err;
      }
    }
    return index;
  }

  /** The attached FAISS index (searches go through it unless `exact`), or null. */
  get approximate(): ApproximateInfo | null {
    return this.ann;
  }

  get size(): number {
    return this.raw.size;
  }
  get dim(): number {
    return this.raw.dim;
  }
  get dtype(): IndexDType {
    return this.raw.dtype;
  }
  get metric(): IndexMetric {
    return this.raw.metric;
  }
  get device(): string {
    return this.raw.device;
  }

  /** Appends rows; ids default to consecutive integers after the largest id so far. Duplicate ids: E_INDEX. */
  async add(vectors: Float32Array, ids?: BigInt64Array | readonly number[], options: CallOptions = {}): Promise<void> {
    if (!(vectors instanceof Float32Array)) throw new TypeError('vectors must be a Float32Array');
    checkNotShared(vectors, 'vectors');
    if (vectors.length % this.dim !== 0) throw new RangeError(`vectors length ${vectors.length} is not a multiple of dim ${this.dim}`);
    const idArray = toIds(ids, vectors.length / this.dim);
    await withControls(options, (controls) => this.raw.add(vectors, idArray, controls));
    this.ann = null; // the FAISS index does not cover the new rows: search exactly from now on
  }

  /** Exact top-k for each query. k must be in [1, size] (RangeError otherwise). */
  async search(queries: QueryInput, k: number, options: SearchOptions = {}): Promise<SearchResult> {
    const q = queryMatrix(queries, this.dim);
    if (q.length % this.dim !== 0) throw new RangeError(`queries length ${q.length} is not a multiple of dim ${this.dim}`);
    if (!Number.isInteger(k)) throw new TypeError(`k must be an integer, got ${String(k)}`);
    if (this.size > 0 && (k < 1 || k > this.size)) throw new RangeError(`k must be in [1, ${this.size}] (the index size), got ${k}`);
    for (const key of ['corpusBlock', 'queryBlock', 'queryGroup', 'nprobe', 'efSearch'] as const) {
      const v = options[key];
      if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new RangeError(`${key} must be a positive integer`);
    }
    const ann = this.ann;
    if (ann && options.exact !== true) {
      const params = { nprobe: options.nprobe ?? ann.nprobe, efSearch: options.efSearch ?? ann.efSearch };
      return withControls(options, (controls) => this.raw.searchAnn(q, k, params, controls));
    }
    return withControls(options, (controls) =>
      this.raw.search(q, k, { corpusBlock: options.corpusBlock, queryBlock: options.queryBlock, queryGroup: options.queryGroup }, controls),
    );
  }

  /** Writes the index to `dir` atomically (a new directory renamed into place; replaces an existing index). */
  async save(dir: string, options: CallOptions = {}): Promise<void> {
    if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir must be a non-empty string');
    await withControls(options, (controls) => this.raw.save(dir, controls));
  }

  /** Writes manifest/vectors/ids into an existing directory (each file atomically, manifest last). */
  async saveFiles(dir: string, options: CallOptions = {}): Promise<void> {
    if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir must be a non-empty string');
    await withControls(options, (controls) => this.raw.saveFiles(dir, controls));
  }

  /** 'cpu' or 'cuda[:N]' (CUDA builds): later searches run there. */
  setDevice(device: string): void {
    this.raw.setDevice(device);
  }

  /** Stored row i as float32 (normalised for cosine indexes). */
  row(i: number): Float32Array {
    return this.raw.row(i);
  }
}
