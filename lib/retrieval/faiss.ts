// FAISS index files in and out, as the GainRAG reference (Contriever's Indexer) keeps them: a
// directory with `index.faiss` (faiss.write_index) and `index_meta.faiss` (a pickled list of the
// passage ids of the FAISS rows). FAISS's own library reads and writes the index files; it is
// linked only when the build found it (engineInfo().backends includes 'faiss').
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';
import { withControls, type CallOptions } from '../controls.js';
import { checkRegularFile } from '../io/input-file.js';
import { acquireOutputLock, validateOutput, writeFileAtomic } from '../io/output.js';
import { PassageStore } from '../io/passages.js';
import { NdArray, pickleStringList, unpickleFile } from '../io/pickle.js';
import { native, type NativeControls } from '../native.js';
import { assembleIndexDir } from './build.js';
import { ANN_FILE, buildAnn, checkAnnOptions, faissAvailable, writeAnnMeta, type AnnOptions } from './ann.js';
import type { IndexDType, IndexMetric } from './dense-index.js';
import type { ImportSummary } from './import-contriever.js';
import { PassageIds, PassageJoin } from './passage-join.js';

export const FAISS_INDEX_FILE = 'index.faiss';
export const FAISS_META_FILE = 'index_meta.faiss';

interface FaissAddon {
  importFaiss(file: string, dir: string, dtype: string, metric: string, ids: BigInt64Array, controls: NativeControls): Promise<{ count: number; dim: number; type: string }>;
  exportFaiss(indexDir: string, file: string, controls: NativeControls): Promise<BigInt64Array>;
}

function addon(): FaissAddon {
  return native() as unknown as FaissAddon;
}

export { faissAvailable };

function requireFaiss(): void {
  if (!faissAvailable()) {
    throw new GainragError('E_UNSUPPORTED', 'this build of gainrag has no FAISS support; install FAISS (Debian: apt-get install libfaiss-dev) and rebuild the addon (npm run build:native)');
  }
}

export interface ImportFaissOptions extends CallOptions {
  /** Directory with index.faiss and index_meta.faiss. */
  dir: string;
  passages: string;
  out: string;
  dtype?: IndexDType;
  metric?: IndexMetric;
  /** Also build an approximate FAISS index over the imported rows. */
  ann?: AnnOptions;
  /**
   * Keep the imported FAISS index itself for searching (ann.faiss): a PQ/IVF/HNSW reference index
   * then searches as FAISS does, in its own memory, with the decoded rows as the exact fallback.
   */
  keepFaiss?: { nprobe?: number; efSearch?: number };
}

export interface FaissImportSummary extends ImportSummary {
  /** The FAISS class that was read ('IndexFlatIP', 'IndexPQ', ...). */
  type: string;
}

/**
 * Imports a FAISS index directory: the vectors as FAISS reconstructs them (exact for flat, the
 * decoded codes for PQ/SQ, whose inner-product ranking is what FAISS's own search computes),
 * joined through index_meta.faiss to the passage file. Errors: E_DATA, E_UNSUPPORTED, E_IO.
 */
export async function importFaiss(options: ImportFaissOptions): Promise<FaissImportSummary> {
  requireFaiss();
  if (options.ann) checkAnnOptions(options.ann);
  if (options.ann && options.keepFaiss) throw new GainragError('E_INVALID_ARG', 'give either a new FAISS factory or keep the imported FAISS index, not both');
  if (options.keepFaiss && options.metric === 'cosine') throw new GainragError('E_INVALID_ARG', 'the imported FAISS index searches by inner product; it cannot be kept for a cosine index');
  const indexFile = path.join(options.dir, FAISS_INDEX_FILE);
  const metaFile = path.join(options.dir, FAISS_META_FILE);
  checkRegularFile(indexFile);
  checkRegularFile(metaFile);
  const meta = unpickleFile(metaFile, { lazyBytes: Infinity });
  const ids = meta instanceof NdArray ? null : Array.isArray(meta) ? meta : null;
  if (!ids) throw new GainragError('E_DATA', `${metaFile}: expected a pickled list of passage ids (the reference's index_id_to_db_id)`);
  const join = new PassageJoin(await PassageIds.read(options.passages), options.passages);
  const fileRows = join.map(ids, metaFile);
  if (join.vectors === 0) throw new GainragError('E_DATA', `${metaFile} lists no ids`);

  return assembleIndexDir(options.out, [indexFile, metaFile, options.passages], async (tmp, store) => {
    await join.writeStore(store);
    store.close();
    const storeIds = join.storeIds(fileRows);
    const r = await withControls({ signal: options.signal, onProgress: options.onProgress }, (controls) =>
      addon().importFaiss(indexFile, tmp, options.dtype ?? 'float32', options.metric ?? 'ip', storeIds, controls),
    );
    if (options.ann) await buildAnn(tmp, options.ann, { signal: options.signal });
    if (options.keepFaiss) {
      try {
        copyFileSync(indexFile, path.join(tmp, ANN_FILE));
      } catch (err) {
        throw ioError(err, `cannot copy ${indexFile}`);
      }
      writeAnnMeta(tmp, { factory: `imported ${r.type}`, ...options.keepFaiss }, r.count);
    }
    return { count: r.count, dim: r.dim, missing: join.missing, type: r.type };
  });
}

export interface ExportFaissOptions extends CallOptions {
  /** A gainrag index directory (with its passage store). */
  index: string;
  /** Directory to write index.faiss + index_meta.faiss into (created; other files are refused). */
  out: string;
}

/**
 * Writes a gainrag index as the reference's FAISS directory: an IndexFlatIP of the stored rows
 * (unit rows for a cosine index) and index_meta.faiss with each row's passage id, so
 * `Indexer.deserialize_from(out)` loads it. Returns the row count.
 */
export async function exportFaiss(options: ExportFaissOptions): Promise<number> {
  requireFaiss();
  validateOutput(options.out, 'dir', { inputs: [options.index], label: 'out' });
  if (existsSync(options.out)) {
    const others = readdirSync(options.out).filter((n) => n !== FAISS_INDEX_FILE && n !== FAISS_META_FILE);
    if (others.length > 0) throw new GainragError('E_INVALID_ARG', `${options.out} holds other files (${others.slice(0, 3).join(', ')}); give a new or FAISS-only directory`);
  }
  const lock = acquireOutputLock(options.out);
  const store = PassageStore.open(options.index);
  try {
    try {
      mkdirSync(options.out, { recursive: true });
    } catch (err) {
      throw ioError(err, `cannot create ${options.out}`);
    }
    const ids = await withControls(options, (controls) => addon().exportFaiss(options.index, path.join(options.out, FAISS_INDEX_FILE), controls));
    const dbIds: string[] = new Array(ids.length);
    for (let i = 0; i < ids.length; i++) dbIds[i] = store.get(Number(ids[i])).id;
    writeFileAtomic(path.join(options.out, FAISS_META_FILE), pickleStringList(dbIds));
    return ids.length;
  } finally {
    store.close();
    lock.release();
  }
}
