// GainRAG stage 1: embed questions, exact top-k over an index directory, attach passages with
// DPR hasanswer flags, stream the records to the output (JSONL, Arrow, Parquet), and report Recall@k.
import { GainragError } from '../errors.js';
import { checkDatasetOptions, type DatasetOptions } from '../io/datasets.js';
import { isColumnar, openStageOutput, readStageInput, shardOf, type Range, type RecordFormat, type RecordWriter, type Shard } from '../io/records.js';
import { validateOutput } from '../io/output.js';
import { weightsFingerprint } from '../models/fingerprint.js';
import type { ManifestSpec } from '../io/manifest.js';
import { indexIdentity } from '../io/index-identity.js';
import type { Device, EncoderLoadOptions, Pooling } from '../models/encoder.js';
import { openTextEncoder, type EmbedClientOptions, type TextEncoder } from './remote-encoder.js';
import { encoderDifferences, readEncoderRecord } from './encoder-record.js';
import { DenseIndex } from './dense-index.js';
import { AnswerMatcher, DEFAULT_RECALL_KS, RecallAccumulator, dprTokens } from './has-answer.js';
import { PassageStore, type Passage } from '../io/passages.js';
import { TEXT_IN_INDEX, TEXT_KEY } from '../io/passage-source.js';
import path from 'node:path';

/**
 * Encoder settings default to those the index records (its build's), then to the model's own
 * configuration; an encoder that embeds differently from the index's is E_INDEX.
 */
export interface RetrieveOptions extends Pick<EncoderLoadOptions, 'pooling' | 'normalize' | 'queryPrefix' | 'passagePrefix' | 'hub' | 'matmulPrecision'> {
  index: string;
  /** The question encoder's dtype (default float32); part of the output's settings when not float32. */
  encoderDType?: EncoderLoadOptions['dtype'];
  /** Encoder directory or hub id. */
  encoder?: string;
  /** Embed the questions on a TEI-compatible server instead (POST /embed); normalize and the query prefix default to the index's record. */
  embedUrl?: string;
  /** Batching, retries and key of the --embed-url client. */
  embedClient?: EmbedClientOptions;
  /** Use an encoder that differs from the one the index records (weights, pooling, normalize, query prefix). */
  allowEncoderMismatch?: boolean;
  data: string;
  out: string;
  topK?: number;
  /** Questions embedded and searched together (memory stays proportional to this). */
  batchSize?: number;
  /** An index with an IVF FAISS index: lists probed per question (default: the index's ann.json, else FAISS's 1). */
  nprobe?: number;
  /** An index with an HNSW FAISS index: efSearch (default: the index's ann.json, else FAISS's 16). */
  efSearch?: number;
  maxLength?: number;
  device?: Device;
  signal?: AbortSignal;
  onProgress?: (questions: number) => void;
  /** Output format (default JSONL); Arrow and Parquet add the index rows (`ctx_ids`) to the typed columns. */
  format?: RecordFormat;
  /** Only this shard of the input (boundaries on multiples of batchSize, see lib/io/records.ts). */
  shard?: Shard;
  /** Only these input positions (the cluster runner's chunks); overrides shard. */
  range?: Range;
  /** The questions' dataset format and field names (lib/io/datasets.ts; default: detected). */
  dataset?: DatasetOptions;
  /** Index, store and encoder already loaded (a cluster worker keeps them across chunks). */
  resources?: RetrieveResources;
  /** Publish `<out>.gainrag.json` with the output (lib/io/manifest.ts). */
  manifest?: ManifestSpec;
  /**
   * Leave passage title and text out (`--no-text`): ctxs keep id, score and hasanswer plus the
   * index row (Arrow/Parquet: ctx_ids; JSONL: `row`), and the stages after take the text from
   * the index's passage store (lib/io/passage-source.ts).
   */
  noText?: boolean;
}

export interface RetrieveResources {
  index: DenseIndex;
  store: PassageStore;
  encoder: TextEncoder;
}

/** Opens what retrieval needs and checks that the pieces fit together. */
export async function openRetrieveResources(
  options: Pick<RetrieveOptions, 'index' | 'encoder' | 'embedUrl' | 'embedClient' | 'device' | 'maxLength' | 'pooling' | 'normalize' | 'queryPrefix' | 'passagePrefix' | 'hub' | 'allowEncoderMismatch' | 'signal' | 'encoderDType' | 'matmulPrecision'>,
): Promise<RetrieveResources> {
  const index = await DenseIndex.open(options.index);
  const store = PassageStore.open(options.index);
  if (store.size !== index.size) {
    store.close();
    throw new GainragError('E_INDEX', `${options.index}: the passage store has ${store.size} passages but the index ${index.size} vectors`);
  }
  let encoder: TextEncoder;
  try {
    const built = readEncoderRecord(options.index);
    // A server pools as it does (its pooling is compared below, never asked for).
    const builtPooling = options.embedUrl === undefined && (built?.pooling === 'mean' || built?.pooling === 'cls') ? (built.pooling as Pooling) : undefined;
    encoder = await openTextEncoder({
      encoder: options.encoder,
      embedUrl: options.embedUrl,
      embedClient: options.embedClient,
      device: options.device,
      encoderDType: options.encoderDType,
      matmulPrecision: options.matmulPrecision,
      maxLength: options.maxLength,
      pooling: options.pooling ?? builtPooling,
      normalize: options.normalize ?? built?.normalize,
      queryPrefix: options.queryPrefix ?? built?.queryPrefix,
      passagePrefix: options.passagePrefix ?? built?.passagePrefix,
      hub: options.hub,
      signal: options.signal,
    });
    const differs = built ? encoderDifferences(built, encoder.record()) : [];
    if (differs.length > 0 && !options.allowEncoderMismatch) {
      await encoder.dispose();
      throw new GainragError('E_INDEX', `${options.index} was built with another encoder than ${options.encoder ?? options.embedUrl}: ${differs.join('; ')} (allowEncoderMismatch / --allow-encoder-mismatch to use it anyway)`);
    }
  } catch (err) {
    store.close();
    throw err;
  }
  if (encoder.dim !== index.dim) {
    store.close();
    throw new GainragError('E_SHAPE', `the encoder embeds in ${encoder.dim} dimensions but the index has ${index.dim}`);
  }
  return { index, store, encoder };
}

/** The manifest's record of the encoder: a local model's path and weights, or a server's URL and model id. */
function encoderSettings(options: Pick<RetrieveOptions, 'encoder'>, encoder: TextEncoder): Record<string, string | null> {
  const r = encoder.record();
  if (r.url !== undefined) return { encoder: r.url, encoderWeights: null, encoderModelId: r.modelId ?? null };
  // The precision only when not plain float32, so outputs made before it was recorded keep matching.
  return { encoder: path.resolve(options.encoder!), encoderWeights: weightsFingerprint(options.encoder!), ...(r.precision ? { encoderPrecision: r.precision } : {}) };
}

export interface RetrieveSummary {
  /** Every question read: the recall denominator (the reference's len(data)). */
  questions: number;
  /** Questions with at least one gold answer that has a token to match. */
  withAnswers: number;
  /** Questions without a usable answer (none, or only empty strings): counted as misses in recall. */
  withoutAnswers: number;
  topK: number;
  recall: Record<string, number>;
  out: string;
}

export interface Ctx {
  id: string;
  title: string;
  text: string;
  score: number;
  hasanswer: boolean;
}

/** A ctx of a --no-text output: JSONL keeps the index row (columnar outputs have it in ctx_ids). */
export interface NoTextCtx {
  id: string;
  row?: number;
  score: number;
  hasanswer: boolean;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function checkRecord(record: any, where: string): { question: string; answers: string[] } {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) throw new GainragError('E_DATA', `${where}: record must be an object`);
  if (typeof record.question !== 'string') throw new GainragError('E_DATA', `${where}: record has no string 'question'`);
  // An empty question embeds to the same vector for every record: its passages would be noise
  // that looks like retrieval. The later stages skip such records; here it is refused like any
  // other record without a question.
  if (record.question.trim() === '') throw new GainragError('E_DATA', `${where}: 'question' is empty`);
  const answers = record.answers ?? [];
  if (!Array.isArray(answers) || !answers.every((a: unknown) => typeof a === 'string')) {
    throw new GainragError('E_DATA', `${where}: 'answers' must be an array of strings`);
  }
  return { question: record.question, answers };
}

/** Positive integers (when given), and only for an index whose FAISS index has that parameter. */
export function checkSearchParamValues(o: Pick<RetrieveOptions, 'nprobe' | 'efSearch'>): void {
  for (const [flag, v] of [['--nprobe', o.nprobe], ['--ef-search', o.efSearch]] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw new GainragError('E_INVALID_ARG', `${flag} must be a positive integer, got ${String(v)}`);
  }
}

function checkSearchParams(index: DenseIndex, o: Pick<RetrieveOptions, 'index' | 'nprobe' | 'efSearch'>): void {
  checkSearchParamValues(o);
  const type = index.approximate?.type ?? '';
  // FAISS class names: IndexIVFFlat, IndexIVFPQ, IndexIVFScalarQuantizer, ...; IndexHNSWFlat, IndexHNSWPQ, ...
  if (o.nprobe !== undefined && !type.startsWith('IndexIVF')) {
    throw new GainragError('E_INVALID_ARG', `--nprobe needs an index with an IVF FAISS index; ${o.index} has ${type ? `FAISS ${type}` : 'none (exact search)'}`);
  }
  if (o.efSearch !== undefined && !type.startsWith('IndexHNSW')) {
    throw new GainragError('E_INVALID_ARG', `--ef-search needs an index with an HNSW FAISS index; ${o.index} has ${type ? `FAISS ${type}` : 'none (exact search)'}`);
  }
}

/** Runs retrieval for every record of `data`; writes `out` atomically; returns the recall summary. */
export async function retrieve(options: RetrieveOptions): Promise<RetrieveSummary> {
  const topK = options.topK ?? 100;
  const batchSize = options.batchSize ?? 512;
  if (!Number.isInteger(topK) || topK < 1) throw new RangeError('topK must be a positive integer');
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError('batchSize must be a positive integer');
  validateOutput(options.out, 'file', { inputs: [options.data], label: 'out' }); // before loading anything
  checkDatasetOptions(options.dataset);
  const range = options.range ?? (await shardOf(options.data, options.shard, batchSize, options.dataset));
  const { index, store, encoder } = options.resources ?? (await openRetrieveResources(options));
  const ownStore = !options.resources;
  if (topK > index.size) {
    if (ownStore) store.close();
    throw new RangeError(`top-k ${topK} exceeds the index size ${index.size}`);
  }
  try {
    checkSearchParams(index, options);
  } catch (err) {
    if (ownStore) store.close();
    throw err;
  }
  const nprobe = options.nprobe ?? index.approximate?.nprobe;
  const efSearch = options.efSearch ?? index.approximate?.efSearch;
  const columnar = isColumnar(options.format ?? 'jsonl');
  const noText = options.noText ?? false;
  const recall = new RecallAccumulator(DEFAULT_RECALL_KS.filter((k) => k <= topK));
  const identity = columnar ? indexIdentity(options.index) : undefined;
  let writer: RecordWriter;
  try {
    writer = openStageOutput(options.out, {
      format: options.format ?? 'jsonl',
      extra: [{ column: 'ctx_ids', type: 'list<int64>' }],
      // Same for every shard of one job (merge insists on identical schemas), wherever it is written.
      metadata: {
        'gainrag.stage': 'retrieve', 'gainrag.index_name': path.basename(path.resolve(options.index)), 'gainrag.passages': String(store.size),
        // Which build of the index the ctx_ids refer to.
        ...(identity ? { 'gainrag.index_id': identity } : {}),
        ...(options.noText ? { [TEXT_KEY]: TEXT_IN_INDEX } : {}),
      },
      inputs: [options.data],
      // What the output depends on (not the device: cluster chunks run on different ones).
      manifest: options.manifest ?? {
        stage: 'retrieve', input: options.data, range,
        settings: { index: path.resolve(options.index), indexId: indexIdentity(options.index), ...encoderSettings(options, encoder), topK, maxLength: options.maxLength ?? null, dataset: options.dataset ?? null,
          // Approximate results depend on the FAISS index and the search settings in effect (absent for exact search).
          ...(index.approximate ? { approximate: { factory: index.approximate.factory, nprobe: nprobe ?? null, efSearch: efSearch ?? null } } : {}),
          ...(options.noText ? { noText: true } : {}) },
      },
    });
  } catch (err) {
    if (ownStore) store.close();
    throw err;
  }
  const name = path.basename(options.data);
  let questions = 0;
  let withAnswers = 0;
  try {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    let batch: { record: any; question: string; answers: string[] }[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      const call = { signal: options.signal };
      const emb = await encoder.embedQueries(batch.map((b) => b.question), call);
      const { ids, scores } = await index.search(emb, topK, { ...call, nprobe, efSearch });
      // Passages retrieved by several questions of the batch are read and tokenised once.
      const cache = new Map<number, { p: Passage; tokens?: string[] }>();
      batch.forEach((b, q) => {
        const matcher = new AnswerMatcher(b.answers);
        if (matcher.usable) withAnswers++;
        const ctxs: (Ctx | NoTextCtx)[] = [];
        const hits: boolean[] = [];
        for (let j = 0; j < topK; j++) {
          const row = Number(ids[q * topK + j]);
          if (row < 0) break; // padded slot (overflowing scores): fewer than k results
          let entry = cache.get(row);
          if (!entry) cache.set(row, (entry = { p: store.get(row) }));
          const p = entry.p;
          let hasanswer = false;
          if (matcher.usable) hasanswer = matcher.matchesTokens((entry.tokens ??= dprTokens(p.text)));
          hits.push(hasanswer);
          const score = scores[q * topK + j];
          if (!noText) ctxs.push({ id: p.id, title: p.title, text: p.text, score, hasanswer });
          else ctxs.push(columnar ? { id: p.id, score, hasanswer } : { id: p.id, row, score, hasanswer });
        }
        recall.add(hits); // all false without answers: a miss, as the reference counts it
        // Columnar outputs also keep the index rows (ctx_ids), beside the record's own columns.
        writer.write({ ...b.record, ctxs }, columnar ? { ctx_ids: Array.from(ids.subarray(q * topK, q * topK + hits.length)) } : undefined);
      });
      writer.flush(); // one record batch per search batch
      questions += batch.length;
      batch = [];
      options.onProgress?.(questions);
    };
    for await (const { record, line } of readStageInput(options.data, { range, dataset: options.dataset })) {
      const { question, answers } = checkRecord(record, `${name}:${line}`);
      batch.push({ record, question, answers });
      if (batch.length >= batchSize) await flush();
    }
    await flush();
    await writer.close();
  } catch (err) {
    writer.abort();
    throw err;
  } finally {
    if (ownStore) store.close();
  }
  return { questions, withAnswers, withoutAnswers: questions - withAnswers, topK, recall: recall.result(), out: options.out };
}
