// Passage text for retrieval outputs written without it (`retrieve --no-text`). Such an output
// holds index rows (Arrow/Parquet: ctx_ids; JSONL: each ctx's `row`) and names its index by
// directory name and identity (schema metadata gainrag.index_name / gainrag.index_id; JSONL:
// the output manifest's settings.index / indexId), never by an absolute path alone, so that the
// output and its index can move together. The index is looked for, in this order:
//   1. the directory the reader is given (--index DIR);
//   2. a directory of that name beside the output;
//   3. the path the manifest recorded.
// The first one whose identity is the output's is used. None found: E_INDEX (pass --index); an
// index there but of another build, or of another size: E_DATA / E_INDEX, since its rows would
// resolve to other passages.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { GainragError } from '../errors.js';
import { indexIdentity } from './index-identity.js';
import { readManifest } from './manifest.js';
import { PassageStore, type Passage } from './passages.js';
import type { PassageSource } from './columns-read.js';

/** Schema metadata key (and its value) of a retrieval output without passage text. */
export const TEXT_KEY = 'gainrag.text';
export const TEXT_IN_INDEX = 'index';

/** How an output names its index. */
export interface IndexReference {
  name?: string;
  id?: string;
  passages?: number;
}

/** The index reference of a JSONL --no-text output, from its manifest (undefined: not such an output). */
export function manifestIndexReference(file: string): (IndexReference & { recorded?: string }) | undefined {
  const m = readManifest(file);
  if (!m || m.stage !== 'retrieve' || m.settings.noText !== true) return undefined;
  const recorded = typeof m.settings.index === 'string' ? m.settings.index : undefined;
  return { name: recorded ? path.basename(recorded) : undefined, id: typeof m.settings.indexId === 'string' ? m.settings.indexId : undefined, recorded };
}

// Where retrieve found the index (the output manifest's settings.index), if it says.
function recordedIndex(file: string): string | undefined {
  try {
    const index = readManifest(file)?.settings.index;
    return typeof index === 'string' ? index : undefined;
  } catch {
    return undefined; // a damaged manifest names nothing
  }
}

const isDir = (d: string) => existsSync(d) && statSync(d).isDirectory();

/** An open passage store (close it) for the output `file`; see the top of this file. */
export function openPassageSource(file: string, ref: IndexReference & { recorded?: string }, indexDir?: string): PassageSource & { close(): void } {
  const name = path.basename(file);
  const recorded = ref.recorded ?? recordedIndex(file);
  const candidates = indexDir !== undefined ? [indexDir] : [...new Set([...(ref.name ? [path.join(path.dirname(path.resolve(file)), ref.name)] : []), ...(recorded ? [recorded] : [])])];
  const found = candidates.filter(isDir);
  if (found.length === 0) {
    const looked = candidates.length > 0 ? ` (looked in ${candidates.join(', ')})` : '';
    throw new GainragError('E_INDEX', `${name} holds no passage text (retrieve --no-text) and its index${ref.name ? ` ${ref.name}` : ''} was not found${looked}; pass --index DIR`);
  }
  const dir = found.find((d) => ref.id === undefined || indexIdentity(d) === ref.id);
  if (!dir) {
    throw new GainragError('E_DATA', `${name} was retrieved from another build of the index than the one in ${found.join(', ')} (rebuilt since?): its passage rows would resolve to other passages; retrieve again or pass the right --index`);
  }
  const store = PassageStore.open(dir);
  if (ref.passages !== undefined && ref.passages !== store.size) {
    store.close();
    throw new GainragError('E_INDEX', `${name} was retrieved from an index of ${ref.passages} passages, but ${dir} holds ${store.size}`);
  }
  return { get: (row: number): Passage => store.get(row), where: dir, close: () => store.close() };
}

/**
 * A JSONL --no-text record with its ctxs' text back: each ctx's `row` is replaced by the
 * passage's title and text (after its id, where retrieve writes them). Errors: E_DATA for a row
 * the store does not hold or whose passage id is not the ctx's.
 */
export function withPassageText(record: unknown, source: PassageSource, where: string): unknown {
  const r = record as { ctxs?: unknown };
  if (typeof r !== 'object' || r === null || !Array.isArray(r.ctxs)) return record;
  const ctxs = r.ctxs.map((c) => {
    if (typeof c !== 'object' || c === null || typeof (c as { row?: unknown }).row !== 'number') return c;
    const row = (c as { row: number }).row;
    let p: Passage;
    try {
      p = source.get(row);
    } catch (err) {
      throw new GainragError('E_DATA', `${where}: ctx row ${row} is not in the passage store of ${source.where} (another index?): ${(err as Error).message}`);
    }
    const id = (c as { id?: unknown }).id;
    if (typeof id === 'string' && id !== p.id) throw new GainragError('E_DATA', `${where}: ctx row ${row} is passage "${id}" but ${source.where} holds "${p.id}" there: not the index this output was retrieved from`);
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(c)) {
      if (k === 'row') {
        out.title = p.title;
        out.text = p.text;
      } else out[k] = v;
    }
    return out;
  });
  return { ...r, ctxs };
}
