// Cross-encoder (reranker) scores for (query, passage) pairs: XLM-R (bge-reranker style) or
// BERT sequence-classification checkpoints. Pairs are joined by the tokenizer's own pair
// template and truncated like `tokenizers` does (only_second by default, as rerankers use).
import { withControls } from '../controls.js';
import { GainragError } from '../errors.js';
import { resolveModel } from './hub.js';
import { NativeOwner } from '../lifetime.js';
import { native, type NativeControls } from '../native.js';
import { Tokenizer, type TruncationStrategy } from '../tokenizer.js';
import {
  checkBatchOptions,
  checkLoadOptions,
  nativeLoadOptions,
  resolveMaxLength,
  toStrings,
  type BatchOptions,
  type GemmPath,
  type MatmulPrecision,
  type ModelLoadOptions,
  type NativeLoadOptions,
  type NativeEncoderModel,
  type NativeRunOptions,
  type TextInput,
} from './encoder.js';

export interface ScoreOptions extends BatchOptions {
  /** Tokens per pair for this call (special tokens included); default: the model's maxLength. */
  maxLength?: number;
  /** How an over-long pair is cut (default 'only_second': the passage gives way). */
  truncation?: TruncationStrategy;
  /** Map each logit through a sigmoid into (0, 1), as FlagReranker's normalize=True (default false: raw logits). */
  normalize?: boolean;
}

export interface RankOptions extends ScoreOptions {
  /** Keep the best topK passages (default: all). */
  topK?: number;
}

export interface Ranked {
  /** Position of the passage in the input. */
  index: number;
  score: number;
}

interface NativeCrossEncoder extends NativeEncoderModel {
  score(ids: Int32Array, offsets: Int32Array, typeIds: Int32Array | undefined, opts: NativeRunOptions, controls: NativeControls): Promise<Float32Array>;
}

interface CrossEncoderAddon {
  loadCrossEncoder(dir: string, opts: NativeLoadOptions): Promise<NativeCrossEncoder>;
}

const STRATEGIES: readonly TruncationStrategy[] = ['only_second', 'only_first', 'longest_first'];

export class CrossEncoder extends NativeOwner<NativeCrossEncoder> {
  /** Hidden size of the backbone. */
  readonly dim: number;
  /** Logits per pair: score() returns n x numLabels values (n when numLabels is 1). */
  readonly numLabels: number;
  /** Default tokens per pair (special tokens included). */
  readonly maxLength: number;
  readonly tokenizer: Tokenizer;
  private readonly positions: number;

  private constructor(model: NativeCrossEncoder, tokenizer: Tokenizer, maxLength: number) {
    super(model, 'CrossEncoder', (m) => m.dispose());
    this.score = this.life.guard(this.score);
    this.tokenizer = tokenizer;
    this.maxLength = maxLength;
    this.dim = model.dim;
    this.numLabels = model.numLabels;
    this.positions = model.maxTokens;
  }

  /**
   * Whether `query` leaves at least one token for a passage in a pair of `maxLength` tokens
   * (default: the model's), which only_second truncation needs: a longer query cannot be scored.
   */
  async queryFits(query: string, maxLength = this.maxLength): Promise<boolean> {
    const budget = maxLength - this.tokenizer.specialTokens.pair;
    // No tokenizer puts more than two tokens on a UTF-8 byte: a short query fits without tokenising.
    if (2 * Buffer.byteLength(query) + 2 < budget) return true;
    const [ids] = await this.tokenizer.encodeRaw([query], { maxTokens: budget });
    return ids.length < budget;
  }

  /** The native model, or E_DISPOSED after dispose(). */
  private get model(): NativeCrossEncoder {
    return this.life.get();
  }

  /** Loads a sequence-classification checkpoint, a directory or a hub id (E_MODEL_CONFIG when it has no classifier head). */
  static async load(ref: string, options: ModelLoadOptions = {}): Promise<CrossEncoder> {
    checkLoadOptions(ref, options);
    const dir = await resolveModel(ref, options.hub);
    const tokenizer = Tokenizer.load(dir);
    const addon = native() as unknown as CrossEncoderAddon;
    const model = await addon.loadCrossEncoder(dir, nativeLoadOptions(options));
    return new CrossEncoder(model, tokenizer, resolveMaxLength(options.maxLength, tokenizer, model.maxTokens));
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

  /** Relevance logits of each (queries[i], passages[i]) pair. */
  async score(queries: TextInput, passages: TextInput, options: ScoreOptions = {}): Promise<Float32Array> {
    checkBatchOptions(options);
    const maxLength = options.maxLength ?? this.maxLength;
    if (!Number.isInteger(maxLength) || maxLength < 1) throw new RangeError(`maxLength must be a positive integer, got ${String(maxLength)}`);
    if (maxLength > this.positions) throw new RangeError(`maxLength ${maxLength} exceeds the model's ${this.positions} positions`);
    const truncation = options.truncation ?? 'only_second';
    if (!STRATEGIES.includes(truncation)) throw new TypeError(`truncation must be one of ${STRATEGIES.join(', ')}`);
    if (options.normalize !== undefined && typeof options.normalize !== 'boolean') throw new TypeError('normalize must be a boolean');
    const q = toStrings(queries, 'queries');
    const p = toStrings(passages, 'passages');
    if (q.length !== p.length) throw new RangeError(`queries and passages differ in length: ${q.length} vs ${p.length}`);
    if (q.length === 0) return new Float32Array(0);
    const run: NativeRunOptions = { batchTokens: options.batchTokens, maxRows: options.maxRows };
    return withControls(options, async (controls) => {
      const batch = await this.tokenizer.encodePairs(q, p, { maxLength, truncation });
      const logits = await this.model.score(batch.ids, batch.offsets, batch.typeIds, run, controls);
      if (options.normalize) for (let i = 0; i < logits.length; i++) logits[i] = 1 / (1 + Math.exp(-logits[i]));
      return logits;
    });
  }

  /** The passages ordered by their score with `query`, best first (ties: input order); topK keeps the best ones. */
  async rank(query: string, passages: TextInput, options: RankOptions = {}): Promise<Ranked[]> {
    if (typeof query !== 'string') throw new TypeError('query must be a string');
    const { topK, ...scoreOptions } = options;
    if (topK !== undefined && (!Number.isInteger(topK) || topK < 1)) throw new RangeError(`topK must be a positive integer, got ${String(topK)}`);
    if (this.numLabels !== 1) throw new GainragError('E_UNSUPPORTED', `rank needs one logit per pair; this model has ${this.numLabels} labels (use score())`);
    const p = toStrings(passages, 'passages');
    const scores = await this.score(p.map(() => query), p, scoreOptions);
    const order = Array.from(scores, (score, index) => ({ index, score }));
    order.sort((a, b) => b.score - a.score || a.index - b.index);
    return topK === undefined ? order : order.slice(0, topK);
  }
}
