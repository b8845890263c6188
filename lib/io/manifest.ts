// Output manifests: `<out>.gainrag.json`, written next to a stage output when it is published,
// saying what the output is (stage, the settings it depends on, the identity of the input it
// was computed from, the input positions it covers, its record count). `merge` uses them to
// refuse shards that are missing, overlapping, out of order or of another job; `--resume`
// uses them to tell a finished output of these settings from a stale one.
//
// The manifest is published after the output's rename and removed before it (lib/io/partial-file.ts),
// so a crash in between leaves an output without a manifest (unknown), never one whose
// manifest describes another run.
import { lstatSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';

export const MANIFEST_FORMAT = 'gainrag-output-1';

export interface OutputManifest {
  format: 'gainrag-output-1';
  /** 'retrieve' | 'synthesize' | 'select' | 'generate' | ... (a merged output keeps its shards' stage). */
  stage: string;
  /** What the output depends on (the stage decides). */
  settings: Record<string, unknown>;
  /** The input the output was computed from (absolute path), as it was when the run started. */
  input: { path: string; size: number; mtimeMs: number } | null;
  /** Input positions covered (null: the whole input). */
  range: { start: number; end: number } | null;
  /** Records in the output. */
  records: number;
}

/** What a writer is told to record; input identity and the record count it finds itself. */
export interface ManifestSpec {
  stage: string;
  settings: Record<string, unknown>;
  input?: string;
  range?: { start: number; end: number };
}

export function manifestPath(out: string): string {
  return `${out}.gainrag.json`;
}

/** Path, size and mtime of `file`; null when it does not exist. Errors: E_IO. */
export function inputIdentity(file: string): OutputManifest['input'] {
  const abs = path.resolve(file);
  try {
    const st = statSync(abs);
    return { path: abs, size: st.size, mtimeMs: st.mtimeMs };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw ioError(err, `cannot inspect ${file}`);
  }
}

function isRange(r: unknown): r is { start: number; end: number } {
  const o = r as { start?: unknown; end?: unknown };
  return typeof o === 'object' && o !== null && Number.isSafeInteger(o.start) && Number.isSafeInteger(o.end) && (o.start as number) >= 0 && (o.end as number) >= (o.start as number);
}

function isInput(i: unknown): boolean {
  const o = i as { path?: unknown; size?: unknown; mtimeMs?: unknown };
  return typeof o === 'object' && o !== null && typeof o.path === 'string' && typeof o.size === 'number' && typeof o.mtimeMs === 'number';
}

/** The manifest of `out`; null when there is none. Errors: E_DATA (present but not a gainrag output manifest), E_IO. */
export function readManifest(out: string): OutputManifest | null {
  const file = manifestPath(out);
  let text: string;
  try {
    if (!lstatSync(file).isFile()) throw new GainragError('E_DATA', `${file} is not a regular file`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw ioError(err, `cannot read ${file}`);
  }
  let m: OutputManifest;
  try {
    m = JSON.parse(text) as OutputManifest;
  } catch (err) {
    throw new GainragError('E_DATA', `${file}: not valid JSON (${(err as Error).message})`);
  }
  const ok =
    typeof m === 'object' && m !== null && m.format === MANIFEST_FORMAT && typeof m.stage === 'string' &&
    typeof m.settings === 'object' && m.settings !== null && !Array.isArray(m.settings) &&
    (m.input === null || isInput(m.input)) && (m.range === null || isRange(m.range)) && Number.isSafeInteger(m.records) && m.records >= 0;
  if (!ok) throw new GainragError('E_DATA', `${file} is not a gainrag output manifest (format ${MANIFEST_FORMAT})`);
  return m;
}

/**
 * Removes `out`'s manifest before the output is replaced. Refuses (E_INVALID_ARG) a file at that
 * name that is not one of ours: it is someone's data, not ours to delete or overwrite.
 */
export function removeManifest(out: string): void {
  let ours: boolean;
  try {
    ours = readManifest(out) !== null;
  } catch (err) {
    if ((err as GainragError).code !== 'E_DATA') throw err;
    throw new GainragError('E_INVALID_ARG', `${manifestPath(out)} exists and is not a gainrag output manifest; remove it or choose another output`);
  }
  if (!ours) return;
  try {
    unlinkSync(manifestPath(out));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(err, `cannot remove ${manifestPath(out)}`);
  }
}

/** Canonical JSON (object keys sorted) for comparing settings. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}
