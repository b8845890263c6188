// Index directories with a passage store: built by embedding a passage file with an encoder,
// or imported from precomputed embeddings (.npy). The directory is assembled under
// `<out>.partial` and renamed into place only when complete.
import { createReadStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { GainragError } from '../errors.js';
import type { CallOptions } from '../controls.js';
import { Encoder, type Device } from '../models/encoder.js';
import { npyInfo, type IndexDType, type IndexMetric } from './dense-index.js';
import { DenseIndexWriter } from './index-writer.js';
import { PassageStoreWriter, readPassages, type Passage } from './passages.js';

export interface BuildProgress {
  (done: number, total: number, note: string): void;
}

export interface BuildIndexOptions {
  passages: string;
  encoder: string;
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
}

/** Counts data lines (for progress totals): newlines, minus a TSV header. */
export async function countPassages(file: string): Promise<number> {
  let lines = 0;
  let last = 10;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 }) as AsyncIterable<Buffer>) {
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
    last = chunk[chunk.length - 1];
  }
  if (last !== 10) lines++;
  return /\.tsv$/i.test(file) ? Math.max(0, lines - 1) : lines;
}

function prepareOut(out: string): string {
  if (existsSync(out) && !(statSync(out).isDirectory() && existsSync(path.join(out, 'manifest.json')))) {
    throw new GainragError('E_IO', `${out} exists and is not an index directory; refusing to replace it`);
  }
  const tmp = `${out}.partial`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  return tmp;
}

function publish(tmp: string, out: string): void {
  if (existsSync(out)) {
    const old = `${out}.old-${process.pid}`;
    renameSync(out, old);
    renameSync(tmp, out);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(tmp, out);
  }
}

export function passageText(p: Passage, withTitle: boolean): string {
  return withTitle && p.title ? `${p.title} ${p.text}` : p.text;
}

/** Embeds every passage and writes an index directory with its passage store. Returns the count. */
export async function buildIndex(options: BuildIndexOptions): Promise<number> {
  const batchSize = options.batchSize ?? 256;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError('batchSize must be a positive integer');
  const encoder = await Encoder.load(options.encoder, { device: options.device, maxLength: options.maxLength });
  const total = await countPassages(options.passages);
  const tmp = prepareOut(options.out);
  const store = new PassageStoreWriter(tmp);
  const writer = DenseIndexWriter.create(tmp, encoder.dim, { dtype: options.dtype, metric: options.metric });
  try {
    const call: CallOptions = { signal: options.signal };
    let texts: string[] = [];
    // Memory holds one batch of texts and one of vectors; the matrix goes straight to disk.
    const flush = async () => {
      if (texts.length === 0) return;
      const vectors = await encoder.embed(texts, call);
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
    publish(tmp, options.out);
    return count;
  } catch (err) {
    writer.abort();
    store.abort();
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

export interface ImportIndexOptions extends CallOptions {
  vectors: string;
  passages: string;
  out: string;
  dtype?: IndexDType;
  metric?: IndexMetric;
}

/** Index directory from a float32/float16 .npy (row i = passage i of the passage file). */
export async function importIndex(options: ImportIndexOptions): Promise<number> {
  const info = npyInfo(options.vectors);
  const tmp = prepareOut(options.out);
  const store = new PassageStoreWriter(tmp);
  try {
    for await (const p of readPassages(options.passages)) store.add(p);
    store.close();
    if (store.count !== info.rows) {
      throw new GainragError('E_DATA', `${options.vectors} has ${info.rows} vectors but ${options.passages} has ${store.count} passages`);
    }
    const writer = DenseIndexWriter.create(tmp, info.dim, { dtype: options.dtype, metric: options.metric });
    try {
      await writer.appendNpy(options.vectors, { signal: options.signal, onProgress: options.onProgress });
      await writer.finish();
    } catch (err) {
      writer.abort();
      throw err;
    }
    publish(tmp, options.out);
    return info.rows;
  } catch (err) {
    store.abort();
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}
