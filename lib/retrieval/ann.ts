// Approximate indexes through FAISS (issue #17 item 3). An index directory may carry `ann.faiss`
// (a FAISS index made by index_factory from the directory's own rows, FAISS row i = index row i)
// and `ann.json` (how it was built, and for which manifest). DenseIndex.open attaches it and
// searches through it unless asked for `exact`; the exact rows stay in vectors.bin (mapped, not
// read unless searched), so exact search remains the ground truth (`gainrag index eval`).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { GainragError } from '../errors.js';
import { withControls, type CallOptions } from '../controls.js';
import { writeFileAtomic } from '../io/output.js';
import { native, type NativeControls } from '../native.js';

export const ANN_FILE = 'ann.faiss';
export const ANN_META_FILE = 'ann.json';
const ANN_FORMAT = 'gainrag-faiss-ann';

export interface AnnOptions {
  /** faiss.index_factory description: "PQ64", "IVF4096,PQ64", "HNSW32,Flat", "IVF4096,SQ8", ... */
  factory: string;
  /** Rows sampled (evenly spaced) for training (default min(rows, 262144)). */
  trainSize?: number;
  /** Default IVF lists probed per query (a search's own nprobe wins). */
  nprobe?: number;
  /** Default HNSW efSearch. */
  efSearch?: number;
}

export interface AnnMeta extends AnnOptions {
  format: string;
  version: number;
  count: number;
  /** checksums.manifest of the index the FAISS file was built from. */
  manifest: string;
}

interface AnnAddon {
  faissAvailable: boolean;
  buildFaissAnn(indexDir: string, outFile: string, factory: string, trainSize: number, controls: NativeControls): Promise<number>;
}

/** True when this build links FAISS (engineInfo().backends includes 'faiss'). */
export function faissAvailable(): boolean {
  return (native() as unknown as AnnAddon).faissAvailable === true;
}

function manifestChecksum(dir: string): string {
  try {
    const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { checksums?: { manifest?: unknown } };
    return typeof m.checksums?.manifest === 'string' ? m.checksums.manifest : '';
  } catch {
    return '';
  }
}

/** Checks ANN options (before anything slow runs). */
export function checkAnnOptions(o: AnnOptions): void {
  if (typeof o.factory !== 'string' || o.factory.trim() === '') throw new GainragError('E_INVALID_ARG', '--faiss-factory must be a FAISS index_factory string such as "IVF4096,PQ64"');
  for (const [k, v] of [['trainSize', o.trainSize], ['nprobe', o.nprobe], ['efSearch', o.efSearch]] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw new GainragError('E_INVALID_ARG', `${k} must be a positive integer, got ${String(v)}`);
  }
  if (!faissAvailable()) throw new GainragError('E_UNSUPPORTED', 'approximate (FAISS) indexes need a build of gainrag with FAISS (Debian: apt-get install libfaiss-dev, then npm run build:native)');
}

/** Writes ann.json for an ann.faiss already in `dir` (built here, or kept from an imported FAISS directory). */
export function writeAnnMeta(dir: string, options: AnnOptions, count: number): void {
  const meta: AnnMeta = {
    format: ANN_FORMAT, version: 1, factory: options.factory, count, manifest: manifestChecksum(dir),
    ...(options.trainSize ? { trainSize: options.trainSize } : {}), ...(options.nprobe ? { nprobe: options.nprobe } : {}), ...(options.efSearch ? { efSearch: options.efSearch } : {}),
  };
  writeFileAtomic(path.join(dir, ANN_META_FILE), `${JSON.stringify(meta)}\n`);
}

/** Trains and writes ann.faiss + ann.json into a finished (unpublished) index directory. */
export async function buildAnn(dir: string, options: AnnOptions, call: CallOptions = {}): Promise<number> {
  checkAnnOptions(options);
  const addon = native() as unknown as AnnAddon;
  const count = await withControls(call, (controls) => addon.buildFaissAnn(dir, path.join(dir, ANN_FILE), options.factory, options.trainSize ?? 0, controls));
  writeAnnMeta(dir, options, count);
  return count;
}

/** ann.json of an index directory, or null. E_INDEX when it is malformed or belongs to another build of the index. */
export function readAnnMeta(dir: string): AnnMeta | null {
  const file = path.join(dir, ANN_META_FILE);
  if (!existsSync(file)) return null;
  let meta: AnnMeta;
  try {
    meta = JSON.parse(readFileSync(file, 'utf8')) as AnnMeta;
  } catch (err) {
    throw new GainragError('E_INDEX', `${file}: not valid JSON`, { cause: err });
  }
  if (meta?.format !== ANN_FORMAT || meta.version !== 1 || typeof meta.factory !== 'string') throw new GainragError('E_INDEX', `${file}: not a gainrag FAISS index description`);
  if (meta.manifest !== manifestChecksum(dir)) throw new GainragError('E_INDEX', `${file}: ${ANN_FILE} was built for another version of this index (manifest checksum differs); rebuild it`);
  return meta;
}
