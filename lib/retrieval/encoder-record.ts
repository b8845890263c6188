// The encoder an index was built with, recorded in its manifest.json under "encoder" (the
// native reader ignores keys it does not know, and the manifest checksum covers only its own
// fields). Retrieval with an encoder that embeds differently (other weights, pooling,
// normalisation or query prefix) would rank quietly worse with the same dimension, so retrieve
// compares the two and refuses a difference unless told otherwise. Indexes built before the
// record existed, and imported ones, have none and are accepted as before.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { GainragError } from '../errors.js';
import { writeFileAtomic } from '../io/output.js';
import type { EncoderRecord } from '../models/encoder.js';

function manifestPath(dir: string): string {
  return path.join(dir, 'manifest.json');
}

/** Adds `record` to the manifest of the index in `dir` (called on the unpublished directory). */
export function writeEncoderRecord(dir: string, record: EncoderRecord): void {
  const file = manifestPath(dir);
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  manifest.encoder = record;
  writeFileAtomic(file, `${JSON.stringify(manifest)}\n`);
}

/** The encoder recorded in the index's manifest; null when there is none (an older or imported index). */
export function readEncoderRecord(dir: string): EncoderRecord | null {
  let manifest: { encoder?: unknown };
  try {
    manifest = JSON.parse(readFileSync(manifestPath(dir), 'utf8')) as { encoder?: unknown };
  } catch {
    return null; // DenseIndex.open reports an unreadable manifest
  }
  const e = manifest.encoder as Partial<EncoderRecord> | undefined;
  if (e === undefined || e === null) return null;
  // A server's encoder (url set) may pool otherwise than the engine can (TEI's last_token, splade).
  const remote = typeof e === 'object' && e.url !== undefined;
  const ok = typeof e === 'object' && typeof e.ref === 'string' && (e.pooling === 'mean' || e.pooling === 'cls' || (remote && typeof e.pooling === 'string')) && typeof e.normalize === 'boolean'
    && typeof e.queryPrefix === 'string' && typeof e.passagePrefix === 'string' && (e.weights === null || typeof e.weights === 'string')
    && (e.precision === undefined || typeof e.precision === 'string')
    && (!remote || (typeof e.url === 'string' && (e.modelId === null || e.modelId === undefined || typeof e.modelId === 'string')));
  if (!ok) throw new GainragError('E_INDEX', `${manifestPath(dir)}: 'encoder' is malformed`);
  return e as EncoderRecord;
}

const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v) : String(v));

/**
 * The model name a record goes by, for comparing a server's encoder with a local one: the last
 * segment of the server's model id or of the local reference (TEI reports a hub id such as
 * 'BAAI/bge-base-en-v1.5', gainrag serve its model directory's name), lowercased.
 */
function modelName(r: EncoderRecord): string {
  const name = (r.url !== undefined ? r.modelId ?? '' : r.ref).replace(/[/\\]+$/, '');
  return (name.split(/[/\\]/).pop() ?? '').toLowerCase();
}

/** What makes `used` embed queries differently from the index's encoder (empty when nothing). */
export function encoderDifferences(index: EncoderRecord, used: EncoderRecord): string[] {
  const out: string[] = [];
  if (index.weights !== null && used.weights !== null && index.weights !== used.weights) {
    out.push(`weights (index: ${index.ref}${index.revision ? `@${index.revision}` : ''} ${index.weights}; given: ${used.ref}${used.revision ? `@${used.revision}` : ''} ${used.weights})`);
  }
  // A server's weights cannot be fingerprinted: its model id stands for them (when it reports one).
  if (index.url !== undefined || used.url !== undefined) {
    const [a, b] = [modelName(index), modelName(used)];
    if (a !== '' && b !== '' && a !== b) out.push(`model (index: ${show(index.url !== undefined ? index.modelId : index.ref)}; given: ${show(used.url !== undefined ? used.modelId : used.ref)})`);
  }
  for (const key of ['pooling', 'normalize', 'queryPrefix'] as const) {
    if (key === 'pooling' && (index.pooling === 'unknown' || used.pooling === 'unknown')) continue;
    if (index[key] !== used[key]) out.push(`${key} (index: ${show(index[key])}; given: ${show(used[key])})`);
  }
  return out;
}
