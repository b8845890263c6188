// Bi-encoder embeddings (Contriever-style BERT with mean pooling, or CLS pooling): texts are
// tokenised here, the token batch crosses to the native engine as two Int32Arrays, and the
// embeddings come back as one external Float32Array (n x dim, row-major).
import { DataType, Field, FixedSizeList, Float32, makeData, makeVector, type Vector } from 'apache-arrow';
import { withControls, type CallOptions } from '../controls.js';
import { NativeOwner } from '../lifetime.js';
import { GainragError } from '../errors.js';
import { native, type NativeControls } from '../native.js';
import { Tokenizer } from '../tokenizer.js';
import { weightsFingerprint } from './fingerprint.js';
import { resolveModel, type HubOptions } from './hub.js';
import { promptPrefixes, readSentenceTransformersConfig } from './sentence-transformers.js';

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
export type ModelDType = 'float32' | 'float16' | 'bfloat16';
/** Encoders and cross-encoders also take 'int8': dynamic int8 products on the oneDNN path. */
export type EncoderDType = ModelDType | 'int8';
export type Pooling = 'mean' | 'cls';
/** Who runs the Linear layers on CPU: LibTorch's BLAS, or oneDNN on weights packed at load. */
export type GemmPath = 'torch' | 'dnnl';
/** PyTorch's float32 matmul precisions: 'highest' = float32 products, 'high' = bf16x3. */
export type MatmulPrecision = 'highest' | 'high';

/** One name for a model's product precision, as records and resume fingerprints keep it: the dtype, or 'float32/matmul-high'. */
export function precisionLabel(dtype: string, matmulPrecision?: MatmulPrecision | ''): string {
  return matmulPrecision === 'high' ? `${dtype}/matmul-high` : dtype;
}

/** Texts as JS strings or an Apache Arrow Utf8 / LargeUtf8 vector. */
export type TextInput = readonly string[] | Vector;

export interface ModelLoadOptions {
  device?: Device;
  /**
   * 'int8' (builds with oneDNN, CPU): weights quantised once at load to int8 with one scale
   * per output channel, each product's input rows quantised with a scale and zero code per row over its own range (8 bits where
   * the CPU has VNNI, 7 on AVX2 without it: engineInfo().int8InputBits), int32 accumulation,
   * everything else in float32; accuracy in bench/results/cpu-dnnl.md.
   * Needs gemm 'dnnl' (the default where oneDNN is built in); elsewhere E_UNSUPPORTED.
   */
  dtype?: EncoderDType;
  /** Tokens per input, special tokens included; longer inputs are truncated. Default: min(tokenizer model_max_length, positions). */
  maxLength?: number;
  /** How a hub id is resolved and downloaded (lib/models/hub.ts). */
  hub?: HubOptions;
  /**
   * CPU matrix products (default: GAINRAG_GEMM when set, else 'dnnl' where the build has
   * oneDNN — engineInfo().backends lists 'dnnl' — and 'torch' otherwise). 'dnnl' packs the
   * weights once at load; with dtype 'bfloat16' it keeps activations in float32 and runs bf16
   * products with fp32 accumulation. An explicit 'dnnl' the build or device cannot serve is
   * E_UNSUPPORTED; the default and GAINRAG_GEMM=dnnl fall back to 'torch' there (CUDA,
   * float16). 'torch' (or GAINRAG_GEMM=torch) opts out.
   */
  gemm?: GemmPath;
  /**
   * dtype 'float32' only. 'highest' (default): float32 products. 'high' (PyTorch's
   * set_float32_matmul_precision('high') on CPU, JAX's precision HIGH): each Linear product
   * as bf16x3 — x and W split into bf16 high and low parts, hi·hi + hi·lo + lo·hi accumulated
   * in fp32 on the AVX512-BF16 / AMX units — activations, attention, LayerNorm and the residual
   * stream stay float32. About 2^-16 relative error per product term, against bf16's 2^-8;
   * accuracy and speed in bench/results/cpu-dnnl.md. Needs the oneDNN path; elsewhere
   * E_UNSUPPORTED.
   */
  matmulPrecision?: MatmulPrecision;
}

/**
 * The defaults of pooling, normalize and the prefixes are the model's own sentence-transformers
 * configuration (modules.json, 1_Pooling/config.json, a Normalize module, the prompts of
 * config_sentence_transformers.json); without one: mean pooling, no normalisation, no prefixes.
 */
export interface EncoderLoadOptions extends ModelLoadOptions {
  pooling?: Pooling;
  /** L2-normalise embeddings (embed's default). */
  normalize?: boolean;
  /** Put before every query (embedQueries), e.g. BGE's instruction or E5's 'query: '. */
  queryPrefix?: string;
  /** Put before every passage (embedPassages), e.g. E5's 'passage: '. */
  passagePrefix?: string;
}

/** What identifies an encoder's embeddings (recorded in an index manifest). */
export interface EncoderRecord {
  /** The reference it was loaded by (directory or hub id). */
  ref: string;
  /** The hub snapshot's commit, when loaded from the hub cache. */
  revision: string | null;
  /** weightsFingerprint of the model directory (null for a server's encoder: its weights are not ours to read). */
  weights: string | null;
  /** 'mean' or 'cls' here; for a server's encoder the pooling its /info reports (e.g. 'last_token'), or 'unknown'. */
  pooling: Pooling | (string & {});
  /** Set when the vectors came from a TEI-compatible server (--embed-url): its base URL and its /info model_id. */
  url?: string;
  modelId?: string | null;
  normalize: boolean;
  queryPrefix: string;
  passagePrefix: string;
  /**
   * Set when the products were not plain float32: 'bfloat16', 'int8', 'float16' or
   * 'float32/matmul-high' (bf16x3). Provenance only; an index and its queries may differ here.
   */
  precision?: string;
}

export interface BatchOptions extends CallOptions {
  /** Upper bound on rows x longest row per forward pass (default: 1024 on CPU, 65536 on CUDA). */
  batchTokens?: number;
  /** Upper bound on rows per forward pass (default 256). */
  maxRows?: number;
}

export interface EmbedOptions extends BatchOptions {
  /** L2-normalise each embedding (default: the encoder's normalize). */
  normalize?: boolean;
}

/** What the native classes expose; shared by Encoder and CrossEncoder. */
export interface NativeEncoderModel {
  readonly dim: number;
  readonly maxTokens: number;
  readonly numLabels: number;
  readonly modelType: string;
  readonly dtype: string;
  readonly device: string;
  readonly gemm: GemmPath;
  /** 'highest' or 'high' for a float32 model, '' otherwise. */
  readonly matmulPrecision: MatmulPrecision | '';
  /** Drops the wrapper's reference to the weights (running calls keep theirs). */
  dispose(): void;
}

export interface NativeRunOptions {
  pooling?: Pooling;
  normalize?: boolean;
  batchTokens?: number;
  maxRows?: number;
}

interface NativeEncoder extends NativeEncoderModel {
  embed(ids: Int32Array, offsets: Int32Array, typeIds: Int32Array | undefined, opts: NativeRunOptions, controls: NativeControls): Promise<Float32Array>;
}

/** What the native loaders take. */
export interface NativeLoadOptions {
  device?: string;
  dtype?: string;
  gemm?: string;
  matmulPrecision?: string;
}

export function nativeLoadOptions(options: ModelLoadOptions): NativeLoadOptions {
  return { device: options.device, dtype: options.dtype, gemm: options.gemm, matmulPrecision: options.matmulPrecision };
}

interface EncoderAddon {
  loadEncoder(dir: string, opts: NativeLoadOptions): Promise<NativeEncoder>;
}

export function checkLoadOptions(dir: unknown, options: ModelLoadOptions): void {
  if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir must be a non-empty string');
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  if (options.device !== undefined && typeof options.device !== 'string') throw new TypeError('device must be a string');
  if (options.dtype !== undefined && !['float32', 'float16', 'bfloat16', 'int8'].includes(options.dtype)) {
    throw new TypeError(`dtype must be 'float32', 'float16', 'bfloat16' or 'int8', got ${String(options.dtype)}`);
  }
  if (options.gemm !== undefined && options.gemm !== 'torch' && options.gemm !== 'dnnl') {
    throw new TypeError(`gemm must be 'torch' or 'dnnl', got ${String(options.gemm)}`);
  }
  if (options.matmulPrecision !== undefined && options.matmulPrecision !== 'highest' && options.matmulPrecision !== 'high') {
    throw new TypeError(`matmulPrecision must be 'highest' or 'high', got ${String(options.matmulPrecision)}`);
  }
  if (options.matmulPrecision === 'high' && options.dtype !== undefined && options.dtype !== 'float32') {
    throw new TypeError(`matmulPrecision 'high' is a float32 mode, not for dtype '${options.dtype}'`);
  }
  if (options.maxLength !== undefined && (!Number.isInteger(options.maxLength) || options.maxLength < 1)) {
    throw new RangeError(`maxLength must be a positive integer, got ${String(options.maxLength)}`);
  }
}

/** Default and bound of maxLength: the tokenizer's model_max_length and the position table. */
export function resolveMaxLength(requested: number | undefined, tokenizer: Tokenizer, positions: number): number {
  if (requested !== undefined) {
    if (requested > positions) throw new RangeError(`maxLength ${requested} exceeds the model's ${positions} positions`);
    return requested;
  }
  return Math.min(tokenizer.config.modelMaxLength ?? positions, positions);
}

export function checkBatchOptions(options: BatchOptions): void {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  if (options.batchTokens !== undefined && (!Number.isInteger(options.batchTokens) || options.batchTokens < 1)) {
    throw new RangeError(`batchTokens must be a positive integer, got ${String(options.batchTokens)}`);
  }
  if (options.maxRows !== undefined && (!Number.isInteger(options.maxRows) || options.maxRows < 1)) {
    throw new RangeError(`maxRows must be a positive integer, got ${String(options.maxRows)}`);
  }
}

/**
 * JS strings from either input form. Arrow vectors are materialised with the vector's own
 * toArray(): tokenisation needs JS strings anyway, so there is nothing to gain by staying in
 * Arrow memory here. Nulls are rejected rather than guessed at.
 */
export function toStrings(texts: TextInput, what: string): string[] {
  let out: unknown[];
  if (Array.isArray(texts)) {
    out = texts;
  } else if (isArrowVector(texts)) {
    if (!DataType.isUtf8(texts.type) && !isLargeUtf8(texts.type)) {
      throw new TypeError(`${what} must be an Arrow Utf8 vector, got ${String(texts.type)}`);
    }
    if (texts.nullCount > 0) throw new TypeError(`${what} has ${texts.nullCount} null entries`);
    out = Array.from(texts.toArray() as Iterable<unknown>);
  } else {
    throw new TypeError(`${what} must be an array of strings or an Arrow Utf8 vector`);
  }
  // A type check, not a hot loop: the tokenizer walks every string anyway.
  const bad = out.findIndex((t) => typeof t !== 'string');
  if (bad >= 0) throw new TypeError(`${what}[${bad}] must be a string, got ${out[bad] === null ? 'null' : typeof out[bad]}`);
  return out as string[];
}

function isArrowVector(x: unknown): x is Vector {
  return typeof x === 'object' && x !== null && 'type' in x && typeof (x as Vector).toArray === 'function' && 'nullCount' in x;
}

function isLargeUtf8(type: DataType): boolean {
  const check = (DataType as unknown as { isLargeUtf8?: (t: DataType) => boolean }).isLargeUtf8;
  return typeof check === 'function' && check(type);
}

export class Encoder extends NativeOwner<NativeEncoder> {
  /** Embedding width (hidden size). */
  readonly dim: number;
  /** Tokens per input (special tokens included); longer texts are truncated. */
  readonly maxLength: number;
  readonly pooling: Pooling;
  /** Default of embed's normalize. */
  readonly normalize: boolean;
  readonly queryPrefix: string;
  readonly passagePrefix: string;
  /** The reference given to load (directory or hub id) and the directory it resolved to. */
  readonly ref: string;
  readonly dir: string;
  readonly tokenizer: Tokenizer;
  private fingerprint?: string | null;

  private constructor(model: NativeEncoder, tokenizer: Tokenizer, settings: Required<Pick<EncoderLoadOptions, 'pooling' | 'normalize' | 'queryPrefix' | 'passagePrefix'>>, maxLength: number, ref: string, dir: string) {
    super(model, 'Encoder', (m) => m.dispose());
    this.embed = this.life.guard(this.embed);
    this.tokenizer = tokenizer;
    this.pooling = settings.pooling;
    this.normalize = settings.normalize;
    this.queryPrefix = settings.queryPrefix;
    this.passagePrefix = settings.passagePrefix;
    this.ref = ref;
    this.dir = dir;
    this.maxLength = maxLength;
    this.dim = model.dim;
  }

  /** The native model, or E_DISPOSED after dispose(). */
  private get model(): NativeEncoder {
    return this.life.get();
  }

  /** Loads a BERT / XLM-R checkpoint (config.json, safetensors, tokenizer.json): a directory or a hub id. */
  static async load(ref: string, options: EncoderLoadOptions = {}): Promise<Encoder> {
    checkLoadOptions(ref, options);
    if (options.pooling !== undefined && options.pooling !== 'mean' && options.pooling !== 'cls') throw new TypeError(`pooling must be 'mean' or 'cls', got ${String(options.pooling)}`);
    if (options.normalize !== undefined && typeof options.normalize !== 'boolean') throw new TypeError('normalize must be a boolean');
    for (const key of ['queryPrefix', 'passagePrefix'] as const) {
      if (options[key] !== undefined && typeof options[key] !== 'string') throw new TypeError(`${key} must be a string`);
    }
    const dir = await resolveModel(ref, options.hub);
    const settings = encoderSettings(dir, options);
    const tokenizer = Tokenizer.load(dir);
    const addon = native() as unknown as EncoderAddon;
    const model = await addon.loadEncoder(dir, nativeLoadOptions(options));
    return new Encoder(model, tokenizer, settings, resolveMaxLength(options.maxLength, tokenizer, model.maxTokens), ref, dir);
  }

  /** Identity and settings of these embeddings (what an index manifest records). */
  record(): EncoderRecord {
    // The network and its tokenizer only: pooling, normalisation and prompts are compared as settings.
    if (this.fingerprint === undefined) this.fingerprint = weightsFingerprint(this.dir, /(\.safetensors|^config\.json|^tokenizer\.json)$/);
    const snapshot = /[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]?$/.exec(this.dir);
    const precision = precisionLabel(this.model.dtype, this.model.matmulPrecision);
    return {
      ref: this.ref, revision: snapshot ? snapshot[1] : null, weights: this.fingerprint, pooling: this.pooling, normalize: this.normalize,
      queryPrefix: this.queryPrefix, passagePrefix: this.passagePrefix, ...(precision !== 'float32' ? { precision } : {}),
    };
  }

  get modelType(): string {
    return this.model.modelType;
  }

  /** Who runs the Linear layers: 'torch' or 'dnnl' (see ModelLoadOptions.gemm). */
  get gemm(): GemmPath {
    return this.model.gemm;
  }

  /** 'highest' or 'high' for a float32 model (see ModelLoadOptions.matmulPrecision), '' otherwise. */
  get matmulPrecision(): MatmulPrecision | '' {
    return this.model.matmulPrecision;
  }

  /** Embeddings of `texts` as one Float32Array, row i at [i * dim, (i + 1) * dim). */
  async embed(texts: TextInput, options: EmbedOptions = {}): Promise<Float32Array> {
    checkBatchOptions(options);
    const strings = toStrings(texts, 'texts');
    if (strings.length === 0) return new Float32Array(0);
    const run: NativeRunOptions = { pooling: this.pooling, normalize: options.normalize ?? this.normalize, batchTokens: options.batchTokens, maxRows: options.maxRows };
    // Tokenising inside withControls: an abort during tokenisation stops the native run before its first batch.
    return withControls(options, async (controls) => {
      const batch = await this.tokenizer.encodeBatch(strings, { maxLength: this.maxLength });
      return this.model.embed(batch.ids, batch.offsets, undefined, run, controls);
    });
  }

  /** embed() of queries, each with the encoder's queryPrefix in front. */
  async embedQueries(texts: TextInput, options: EmbedOptions = {}): Promise<Float32Array> {
    const strings = toStrings(texts, 'texts');
    return this.embed(this.queryPrefix ? strings.map((t) => this.queryPrefix + t) : strings, options);
  }

  /** embed() of passages, each with the encoder's passagePrefix in front. */
  async embedPassages(texts: TextInput, options: EmbedOptions = {}): Promise<Float32Array> {
    const strings = toStrings(texts, 'texts');
    return this.embed(this.passagePrefix ? strings.map((t) => this.passagePrefix + t) : strings, options);
  }
}

/**
 * Explicit options over the model's sentence-transformers configuration. A configuration the
 * engine cannot reproduce (max / last-token pooling, a Dense module, prompts excluded from mean
 * pooling) is E_UNSUPPORTED rather than embeddings that quietly differ from the model's.
 */
function encoderSettings(dir: string, o: EncoderLoadOptions): Required<Pick<EncoderLoadOptions, 'pooling' | 'normalize' | 'queryPrefix' | 'passagePrefix'>> {
  const st = readSentenceTransformersConfig(dir);
  if (st && st.unsupported.length > 0) {
    throw new GainragError('E_UNSUPPORTED', `${dir}: modules.json has ${st.unsupported.join(', ')}, which gainrag does not run (its embeddings would differ from the model's)`);
  }
  const model = st?.pooling;
  if (o.pooling === undefined && model !== undefined && model !== 'mean' && model !== 'cls') {
    throw new GainragError('E_UNSUPPORTED', `${dir}: the model pools by '${model}' (its Pooling config); the engine pools by 'mean' or 'cls' only (pass pooling to override)`);
  }
  const prefixes = promptPrefixes(st);
  const settings = {
    pooling: o.pooling ?? (model as Pooling | undefined) ?? 'mean',
    normalize: o.normalize ?? st?.normalize ?? false,
    queryPrefix: o.queryPrefix ?? prefixes.query,
    passagePrefix: o.passagePrefix ?? prefixes.passage,
  };
  if (st && !st.includePrompt && settings.pooling === 'mean' && (settings.queryPrefix || settings.passagePrefix)) {
    throw new GainragError('E_UNSUPPORTED', `${dir}: the Pooling config excludes prompt tokens from mean pooling (include_prompt: false), which the engine cannot do; pass empty prefixes or another pooling`);
  }
  return settings;
}

/**
 * An n x dim row-major matrix (as embed() returns) as an Arrow FixedSizeList<Float32> vector
 * over the same memory (no copy), e.g. for writing a Parquet/Arrow file of embeddings.
 */
export function embeddingsToArrow(values: Float32Array, dim: number): Vector<FixedSizeList<Float32>> {
  if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dim must be a positive integer, got ${String(dim)}`);
  if (values.length % dim !== 0) throw new RangeError(`${values.length} values do not form rows of ${dim}`);
  const type = new FixedSizeList(dim, new Field('item', new Float32(), false));
  const child = makeData({ type: new Float32(), data: values });
  return makeVector(makeData({ type, length: values.length / dim, nullCount: 0, child }));
}
