// `gainrag index eval`: how well an approximate (FAISS) index finds what exact search finds.
// Recall@k = |approximate top-k ∩ exact top-k| / k, averaged over the queries, with exact search
// (gainrag's own kernels) as the ground truth; also queries per second of both and memory.
import { statSync } from 'node:fs';
import path from 'node:path';
import { GainragError } from '../errors.js';
import type { CallOptions } from '../controls.js';
import { readRecords } from '../io/jsonl.js';
import { type Device, type Pooling } from '../models/encoder.js';
import { ANN_FILE } from './ann.js';
import { DenseIndex } from './dense-index.js';
import { readNpyFloat32 } from './npy.js';
import { openTextEncoder, type EmbedClientOptions } from './remote-encoder.js';
import { readEncoderRecord } from './encoder-record.js';

export interface EvalIndexOptions extends CallOptions {
  index: string;
  /** Exact index over the same rows (default: `index` itself, searched exactly). */
  against?: string;
  /** Queries: a float32 .npy [Q, dim], or JSONL with `question` (then `encoder` embeds them). */
  data: string;
  encoder?: string;
  /** Or embed them on a TEI-compatible server (POST /embed), with the index's recorded normalize and query prefix. */
  embedUrl?: string;
  embedClient?: EmbedClientOptions;
  device?: Device;
  /** Largest k (default 100, at most the index size); recall at 1, 10, 100 up to it. */
  k?: number;
  nprobe?: number;
  efSearch?: number;
}

export interface EvalIndexSummary {
  queries: number;
  k: number;
  factory: string | null;
  type: string | null;
  recall: Record<string, number>;
  approximate: { seconds: number; queriesPerSecond: number };
  exact: { seconds: number; queriesPerSecond: number };
  /** Bytes of ann.faiss (what the approximate index holds in memory) and of vectors.bin. */
  annBytes: number | null;
  vectorsBytes: number;
  peakRssMiB: number;
}

/** The eval's query matrix: `data` as a .npy, or its questions embedded as retrieve embeds them. */
export async function evalQueryVectors(options: EvalIndexOptions, dim: number): Promise<Float32Array> {
  if (/\.npy$/i.test(options.data)) {
    const m = readNpyFloat32(options.data);
    if (m.cols !== dim) throw new GainragError('E_SHAPE', `${options.data} has ${m.cols}-dimensional queries, the index ${dim}`);
    return m.data;
  }
  if (!options.encoder && !options.embedUrl) throw new GainragError('E_INVALID_ARG', `${options.data} is not a .npy matrix: give --encoder or --embed-url to embed its questions`);
  if (options.encoder && options.embedUrl) throw new GainragError('E_INVALID_ARG', 'give one of --encoder (a local model) or --embed-url URL (a TEI-compatible server)');
  const questions: string[] = [];
  for await (const { record, line } of readRecords(options.data)) {
    const q = (record as { question?: unknown })?.question;
    if (typeof q !== 'string') throw new GainragError('E_DATA', `${path.basename(options.data)}:${line}: record has no string 'question'`);
    questions.push(q);
  }
  // Queries are embedded as retrieve embeds them: the index's recorded encoder settings (pooling
  // for a local model, normalize, the query prefix, through embedQueries). A server pools as it
  // does; TEI's own default (normalize) would silently differ from an index built without it.
  const built = readEncoderRecord(options.index);
  const builtPooling = options.embedUrl === undefined && (built?.pooling === 'mean' || built?.pooling === 'cls') ? (built.pooling as Pooling) : undefined;
  const encoder = await openTextEncoder({
    encoder: options.encoder,
    embedUrl: options.embedUrl,
    embedClient: options.embedClient,
    device: options.device,
    pooling: builtPooling,
    normalize: built?.normalize,
    queryPrefix: built?.queryPrefix,
    passagePrefix: built?.passagePrefix,
    signal: options.signal,
  });
  try {
    const source = options.embedUrl !== undefined ? 'the server embeds' : 'the encoder embeds';
    if (encoder.dim !== dim) throw new GainragError('E_SHAPE', `${source} in ${encoder.dim} dimensions but the index has ${dim}`);
    return await encoder.embedQueries(questions, { signal: options.signal });
  } finally {
    await encoder.dispose();
  }
}

function fileSize(file: string): number | null {
  try {
    return statSync(file).size;
  } catch {
    return null;
  }
}

export async function evalIndex(options: EvalIndexOptions): Promise<EvalIndexSummary> {
  const approx = await DenseIndex.open(options.index);
  const exact = options.against ? await DenseIndex.open(options.against) : approx;
  try {
    if (!approx.approximate) throw new GainragError('E_INVALID_ARG', `${options.index} has no FAISS index (build it with --faiss-factory), or this build has no FAISS`);
    if (exact.size !== approx.size || exact.dim !== approx.dim) throw new GainragError('E_INVALID_ARG', `${options.against} (${exact.size} x ${exact.dim}) is not over the same rows as ${options.index} (${approx.size} x ${approx.dim})`);
    const k = Math.min(options.k ?? 100, approx.size);
    if (!Number.isInteger(k) || k < 1) throw new GainragError('E_INVALID_ARG', `k must be a positive integer`);
    const q = await evalQueryVectors(options, approx.dim);
    const nq = q.length / approx.dim;
    if (nq === 0) throw new GainragError('E_DATA', `${options.data} has no queries`);
    const call = { signal: options.signal };
    let t = performance.now();
    const a = await approx.search(q, k, { ...call, nprobe: options.nprobe, efSearch: options.efSearch });
    const approxSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    const e = await exact.search(q, k, { ...call, exact: true });
    const exactSeconds = (performance.now() - t) / 1000;
    const recall: Record<string, number> = {};
    for (const at of [1, 10, 100].filter((x) => x <= k)) {
      let hits = 0;
      for (let i = 0; i < nq; i++) {
        const truth = new Set(e.ids.subarray(i * k, i * k + at));
        for (const id of a.ids.subarray(i * k, i * k + at)) if (id >= 0n && truth.has(id)) hits++;
      }
      recall[String(at)] = hits / (nq * at);
    }
    return {
      queries: nq, k, factory: approx.approximate.factory, type: approx.approximate.type, recall,
      approximate: { seconds: approxSeconds, queriesPerSecond: nq / approxSeconds },
      exact: { seconds: exactSeconds, queriesPerSecond: nq / exactSeconds },
      annBytes: fileSize(path.join(options.index, ANN_FILE)),
      vectorsBytes: fileSize(path.join(options.against ?? options.index, 'vectors.bin')) ?? 0,
      peakRssMiB: process.resourceUsage().maxRSS / 1024,
    };
  } finally {
    if (exact !== approx) await exact.dispose();
    await approx.dispose();
  }
}
