// `index import --contriever`: Contriever's pre-computed passage embeddings, the shards that the
// reference loads with `ids, embeddings = pickle.load(f)`, joined to their passage file
// (psgs_w100.tsv). Every shard is parsed (structure only, with the restricted unpickler) and its
// ids joined before anything is created, so a bad or hostile shard leaves nothing behind; the
// vectors are then streamed from each file into the index a chunk at a time.
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';
import type { CallOptions } from '../controls.js';
import { FileBytes, NdArray, PyTuple, unpickleFile, type PickleValue } from '../io/pickle.js';
import { assembleIndexDir } from './build.js';
import type { IndexDType, IndexMetric } from './dense-index.js';
import { DenseIndexWriter } from './index-writer.js';
import { buildAnn, checkAnnOptions, type AnnOptions } from './ann.js';
import { PassageIds, PassageJoin } from './passage-join.js';

export interface ImportContrieverOptions extends CallOptions {
  /** Shard files, or glob patterns ('DIR/passages_*': `*` and `?` in the last path part). */
  shards: string[];
  passages: string;
  out: string;
  dtype?: IndexDType;
  metric?: IndexMetric;
  /** Also build an approximate FAISS index over the imported rows. */
  ann?: AnnOptions;
}

export interface ImportSummary {
  /** Vectors (= passages in the store). */
  count: number;
  dim: number;
  /** Passages of the passage file without a vector (left out). */
  missing: number;
}

/** Expands `*` / `?` in the file name part (sorted, as the reference sorts glob.glob). A plain path stays as is. */
export function expandShards(patterns: string[]): string[] {
  const out: string[] = [];
  for (const p of patterns) {
    const base = path.basename(p);
    if (!/[*?]/.test(base)) {
      out.push(p);
      continue;
    }
    const dir = path.dirname(p);
    if (/[*?]/.test(dir)) throw new GainragError('E_INVALID_ARG', `${p}: wildcards are allowed only in the file name`);
    const re = new RegExp(`^${base.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      throw ioError(err, `cannot list ${dir}`);
    }
    const hits = names.filter((n) => re.test(n)).sort();
    if (hits.length === 0) throw new GainragError('E_INVALID_ARG', `${p} matches no file`);
    out.push(...hits.map((n) => path.join(dir, n)));
  }
  return out;
}

interface Shard {
  file: string;
  array: NdArray;
  fileRows: Int32Array;
}

function readFileRange(file: string, at: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const fd = openSync(file, 'r');
  try {
    for (let got = 0; got < length; ) {
      const n = readSync(fd, buf, got, length - got, at + got);
      if (n === 0) throw new GainragError('E_DATA', `${file} ended early (changed while being read?)`);
      got += n;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}

function arrayBytes(file: string, a: NdArray): Buffer {
  return a.data instanceof FileBytes ? readFileRange(file, a.data.offset, a.data.length) : a.data;
}

// Ids as pickled: a list of str/int, or a 1-D integer numpy array.
function idList(file: string, v: PickleValue): unknown[] {
  if (Array.isArray(v)) return v;
  if (v instanceof NdArray && v.shape.length === 1 && (v.dtype === 'int64' || v.dtype === 'int32')) {
    const b = arrayBytes(file, v);
    const out: unknown[] = [];
    for (let i = 0; i < v.shape[0]; i++) out.push(v.dtype === 'int64' ? b.readBigInt64LE(i * 8) : b.readInt32LE(i * 4));
    return out;
  }
  throw new GainragError('E_DATA', `${file}: the ids must be a list of str/int (Contriever's shards), not ${v instanceof NdArray ? `a ${v.dtype} array` : typeof v}`);
}

function parseShard(file: string): { ids: unknown[]; array: NdArray } {
  const v = unpickleFile(file, { lazyBytes: 256 });
  const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : null;
  if (!items || items.length !== 2) throw new GainragError('E_DATA', `${file}: expected the pickled pair (ids, embeddings) that Contriever writes`);
  const array = items[1];
  if (!(array instanceof NdArray)) throw new GainragError('E_DATA', `${file}: the second item must be a numpy array of embeddings`);
  if (array.shape.length !== 2) throw new GainragError('E_DATA', `${file}: embeddings must be 2-D, shape is (${array.shape.join(', ')})`);
  if (array.dtype !== 'float16' && array.dtype !== 'float32') throw new GainragError('E_DATA', `${file}: embeddings are ${array.dtype}; float16 or float32 are supported`);
  if (array.fortran && array.shape[1] > 1 && array.shape[0] > 1) throw new GainragError('E_DATA', `${file}: embeddings are in Fortran order; save them in C order`);
  const ids = idList(file, items[0]);
  if (ids.length !== array.shape[0]) throw new GainragError('E_DATA', `${file}: ${ids.length} ids for ${array.shape[0]} embeddings`);
  return { ids, array };
}

const HALF_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

// In-memory data (only protocol 2 pickles bytes through _codecs.encode) as float32.
function toFloat32(b: Buffer, dtype: 'float16' | 'float32'): Float32Array {
  if (dtype === 'float32') {
    const out = new Float32Array(b.length / 4);
    new Uint8Array(out.buffer).set(b);
    return out;
  }
  const out = new Float32Array(b.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = HALF_TABLE[b.readUInt16LE(i * 2)];
  return out;
}

/** Imports Contriever shards + their passage file into an index directory. Errors: E_DATA, E_IO, E_INVALID_ARG. */
export async function importContriever(options: ImportContrieverOptions): Promise<ImportSummary> {
  if (options.ann) checkAnnOptions(options.ann);
  const files = expandShards(options.shards);
  if (files.length === 0) throw new GainragError('E_INVALID_ARG', 'no shard files given');
  const passageIds = await PassageIds.read(options.passages);
  const join = new PassageJoin(passageIds, options.passages);
  const shards: Shard[] = [];
  let dim = 0;
  for (const file of files) {
    const { ids, array } = parseShard(file);
    if (dim === 0) dim = array.shape[1];
    else if (array.shape[1] !== dim) throw new GainragError('E_DATA', `${file}: embeddings have dimension ${array.shape[1]}, earlier shards ${dim}`);
    shards.push({ file, array, fileRows: join.map(ids, file) });
  }
  if (join.vectors === 0) throw new GainragError('E_DATA', `the shards hold no embeddings`);
  if (dim < 1) throw new GainragError('E_DATA', `the embeddings have dimension 0`);

  return assembleIndexDir(options.out, [...files, options.passages], async (tmp, store) => {
    await join.writeStore(store);
    store.close();
    const writer = DenseIndexWriter.create(tmp, dim, { dtype: options.dtype, metric: options.metric });
    try {
      let done = 0;
      for (const s of shards) {
        const ids = join.storeIds(s.fileRows);
        const call = { signal: options.signal };
        const dtype = s.array.dtype as 'float16' | 'float32';
        if (s.array.data instanceof FileBytes) await writer.appendFile(s.file, s.array.data.offset, s.array.shape[0], dtype, ids, call);
        else await writer.append(toFloat32(s.array.data, dtype), call, ids);
        done += s.array.shape[0];
        options.onProgress?.(done, join.vectors, 'import');
      }
      await writer.finish();
    } catch (err) {
      writer.abort();
      throw err;
    }
    if (options.ann) await buildAnn(tmp, options.ann, { signal: options.signal });
    return { count: join.vectors, dim, missing: join.missing };
  });
}
