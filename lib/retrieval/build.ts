// Index directories with a passage store: built by embedding a passage file with an encoder,
// or imported from precomputed embeddings (.npy). The directory is assembled under
// `<out>.partial` and renamed into place only when complete.
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { GainragError, ioError, isErrorCode } from '../errors.js';
import { checkRegularFile } from '../io/input-file.js';
import { acquireOutputLock, validateOutput, writeFileAtomic, type OutputLock } from '../io/output.js';
import type { CallOptions } from '../controls.js';
import { Encoder, type Device, type EncoderLoadOptions, type EncoderRecord } from '../models/encoder.js';
import { writeEncoderRecord } from './encoder-record.js';
import { npyInfo, type IndexDType, type IndexMetric } from './dense-index.js';
import { DenseIndexWriter, INDEX_FORMAT } from './index-writer.js';
import { PassageStoreWriter, readPassages, type Passage } from '../io/passages.js';
import { buildAnn, checkAnnOptions, type AnnOptions } from './ann.js';
import { openTextEncoder, type EmbedClientOptions } from './remote-encoder.js';

export interface BuildProgress {
  (done: number, total: number, note: string): void;
}

export interface BuildIndexOptions extends Pick<EncoderLoadOptions, 'pooling' | 'normalize' | 'queryPrefix' | 'passagePrefix' | 'hub' | 'matmulPrecision'> {
  /** The encoder's dtype (default float32; recorded in the index's encoder record when not float32). */
  encoderDType?: EncoderLoadOptions['dtype'];
  passages: string;
  /** Encoder directory or hub id (its sentence-transformers configuration gives the defaults of pooling, normalize and the prefixes). */
  encoder?: string;
  /** Embed on a TEI-compatible server instead (POST /embed); normalize defaults to true, the prefixes to ''. */
  embedUrl?: string;
  /** Batching, retries and key of the --embed-url client. */
  embedClient?: EmbedClientOptions;
  out: string;
  /** Passages embedded per encoder call (default 256). */
  batchSize?: number;
  maxLength?: number;
  device?: Device;
  dtype?: IndexDType;
  metric?: IndexMetric;
  /** Embed "title text" (default, as Contriever does) or the text alone. */
  withTitle?: boolean;
  signal?: AbortSignal;
  onProgress?: BuildProgress;
  /** Also build an approximate FAISS index (ann.faiss) over the rows. */
  ann?: AnnOptions;
}

/** Counts data lines (for progress totals): newlines, minus a TSV header. */
export async function countPassages(file: string): Promise<number> {
  let lines = 0;
  let last = 10;
  checkRegularFile(file);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 }) as AsyncIterable<Buffer>) {
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
    last = chunk[chunk.length - 1];
  }
  if (last !== 10) lines++;
  return /\.tsv$/i.test(file) ? Math.max(0, lines - 1) : lines;
}

// Marker file inside `<out>.partial`: says the directory is a half-built gainrag index, so a
// later run may remove it. A `<out>.partial` without it is someone's data and is left alone.
const PARTIAL_MARKER = '.gainrag-partial';

/** True for a directory holding a gainrag dense index manifest (format, not just the file name). */
export function isGainragIndexDir(dir: string): boolean {
  try {
    const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { format?: unknown };
    return m?.format === INDEX_FORMAT;
  } catch {
    return false;
  }
}

// A Node fs failure (ENOSPC, EIO, EDQUOT ...) of the passage store is E_IO with its errno, not
// an uncoded error that the CLI could only report as E_INTERNAL.
export function writeFailure(err: unknown, out: string): unknown {
  const e = err as NodeJS.ErrnoException;
  return e instanceof Error && typeof e.syscall === 'string' && !isErrorCode(e.code) ? ioError(err, `cannot write the index ${out}`) : err;
}

function isEmptyDir(dir: string): boolean {
  try {
    return readdirSync(dir).length === 0;
  } catch {
    return false;
  }
}

export interface PreparedOut {
  tmp: string;
  lock: OutputLock;
}

/**
 * Validates and locks `out`, then makes a fresh `<out>.partial`. Only a gainrag index (or an
 * empty directory) at `out`, and only our own half-built `<out>.partial`, may be replaced.
 * Errors: E_INVALID_ARG, E_LOCKED, E_IO.
 */
export function prepareOut(out: string, inputs: string[]): PreparedOut {
  validateOutput(out, 'dir', { inputs, label: 'out' });
  if (existsSync(out) && !isGainragIndexDir(out) && !isEmptyDir(out)) {
    throw new GainragError('E_INVALID_ARG', `${out} exists and is not a gainrag index (no manifest.json with format "${INDEX_FORMAT}"); refusing to replace it`);
  }
  const lock = acquireOutputLock(out);
  const tmp = `${out}.partial`;
  try {
    if (existsSync(tmp)) {
      if (!existsSync(path.join(tmp, PARTIAL_MARKER)) && !isEmptyDir(tmp)) {
        throw new GainragError('E_INVALID_ARG', `${tmp} exists and is not a partial gainrag index; remove or rename it first`);
      }
      rmSync(tmp, { recursive: true, force: true });
    }
    mkdirSync(tmp, { recursive: true });
    writeFileAtomic(path.join(tmp, PARTIAL_MARKER), `${process.pid}\n`);
  } catch (err) {
    lock.release();
    throw ioError(err, `cannot prepare ${tmp}`);
  }
  return { tmp, lock };
}

export function publish(tmp: string, out: string): void {
  try {
    rmSync(path.join(tmp, PARTIAL_MARKER), { force: true });
    if (existsSync(out)) {
      const old = `${out}.old-${process.pid}`;
      renameSync(out, old);
      renameSync(tmp, out);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, out);
    }
  } catch (err) {
    throw ioError(err, `cannot publish ${out}`);
  }
}

/**
 * Builds an index directory the one way every writer of one does: `OUT.partial` under the output
 * lock, a passage store in it, `fill` writing the rest (vectors, manifest, encoder record, ANN),
 * then publish. On failure everything under `OUT.partial` is removed and the error says where.
 */
export async function assembleIndexDir<T>(out: string, inputs: string[], fill: (tmp: string, store: PassageStoreWriter) => Promise<T>): Promise<T> {
  const { tmp, lock } = prepareOut(out, inputs);
  const store = new PassageStoreWriter(tmp);
  try {
    const result = await fill(tmp, store);
    publish(tmp, out);
    return result;
  } catch (err) {
    store.abort();
    rmSync(tmp, { recursive: true, force: true });
    throw writeFailure(err, out);
  } finally {
    lock.release();
  }
}

export function passageText(p: Passage, withTitle: boolean): string {
  return withTitle && p.title ? `${p.title} ${p.text}` : p.text;
}

/** Embeds every passage and writes an index directory with its passage store. Returns the count. */
export async function buildIndex(options: BuildIndexOptions): Promise<number> {
  const batchSize = options.batchSize ?? 256;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError('batchSize must be a positive integer');
  validateOutput(options.out, 'dir', { inputs: [options.passages], label: 'out' }); // before the model load
  if (options.ann) checkAnnOptions(options.ann);
  const encoder = await openTextEncoder(options);
  const total = await countPassages(options.passages);
  return assembleIndexDir(options.out, [options.passages], async (tmp, store) => {
    const writer = DenseIndexWriter.create(tmp, encoder.dim, { dtype: options.dtype, metric: options.metric });
    try {
      const call: CallOptions = { signal: options.signal };
      let texts: string[] = [];
      // Memory holds one batch of texts and one of vectors; the matrix goes straight to disk.
      const flush = async () => {
        if (texts.length === 0) return;
        const vectors = await encoder.embedPassages(texts, call);
        await writer.append(vectors, call);
        texts = [];
        options.onProgress?.(writer.count, Math.max(total, writer.count), 'embed');
      };
      for await (const p of readPassages(options.passages)) {
        store.add(p);
        texts.push(passageText(p, options.withTitle ?? true));
        if (texts.length >= batchSize) await flush();
      }
      await flush();
      if (writer.count === 0) throw new GainragError('E_DATA', `${options.passages} has no passages`);
      store.close();
      const count = await writer.finish();
      writeEncoderRecord(tmp, encoder.record()); // what retrieve checks its encoder against
      if (options.ann) await buildAnn(tmp, options.ann, { signal: options.signal });
      return count;
    } catch (err) {
      writer.abort();
      throw err;
    }
  });
}

export interface ImportIndexOptions extends CallOptions, Pick<EncoderLoadOptions, 'pooling' | 'normalize' | 'queryPrefix' | 'passagePrefix' | 'hub'> {
  vectors: string;
  passages: string;
  out: string;
  /** The encoder that made the vectors, when known: recorded in the manifest (as by build) for retrieve to check. */
  encoder?: string;
  dtype?: IndexDType;
  metric?: IndexMetric;
  ann?: AnnOptions;
}

/** Index directory from a float32/float16 .npy (row i = passage i of the passage file). */
export async function importIndex(options: ImportIndexOptions): Promise<number> {
  const info = npyInfo(options.vectors);
  if (options.ann) checkAnnOptions(options.ann);
  let record: EncoderRecord | undefined;
  if (options.encoder !== undefined) {
    // Loaded only for its identity and settings; nothing is embedded.
    const { pooling, normalize, queryPrefix, passagePrefix, hub } = options;
    const encoder = await Encoder.load(options.encoder, { pooling, normalize, queryPrefix, passagePrefix, hub });
    try {
      if (encoder.dim !== info.dim) throw new GainragError('E_SHAPE', `${options.encoder} embeds in ${encoder.dim} dimensions but ${options.vectors} has ${info.dim}`);
      record = encoder.record();
    } finally {
      await encoder.dispose();
    }
  }
  return assembleIndexDir(options.out, [options.vectors, options.passages], async (tmp, store) => {
    for await (const p of readPassages(options.passages)) store.add(p);
    store.close();
    if (store.count !== info.rows) {
      throw new GainragError('E_DATA', `${options.vectors} has ${info.rows} vectors but ${options.passages} has ${store.count} passages`);
    }
    const writer = DenseIndexWriter.create(tmp, info.dim, { dtype: options.dtype, metric: options.metric });
    try {
      await writer.appendNpy(options.vectors, { signal: options.signal, onProgress: options.onProgress });
      await writer.finish();
      if (record) writeEncoderRecord(tmp, record);
    } catch (err) {
      writer.abort();
      throw err;
    }
    if (options.ann) await buildAnn(tmp, options.ann, { signal: options.signal });
    return info.rows;
  });
}
