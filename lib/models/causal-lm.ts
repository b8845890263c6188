// CausalLM: a Llama-family decoder run by the native engine, with its tokenizer and chat
// template. Texts are tokenised here into flat Int32Arrays (no per-token work crosses the
// boundary); the engine batches, caches and scores. Texts may be JS strings or Arrow Utf8
// vectors (lists: Arrow List<Utf8>), and results can be had as Arrow vectors laid over the
// engine's output buffers.
import { DataType, Field, Float64, Int32, List, Utf8, makeData, makeVector, vectorFromArray, type Data, type Vector } from 'apache-arrow';
import { withControls, type CallOptions } from '../controls.js';
import { NativeOwner } from '../lifetime.js';
import { native, type NativeControls } from '../native.js';
import { Tokenizer, type TokenBatch } from '../tokenizer.js';
import { resolveModel, type HubOptions } from './hub.js';
import { renderChatTemplate, type ChatMessage, type ChatTemplateOptions } from './chat-template.js';
import { toStrings, type TextInput } from './encoder.js';

export type { TextInput } from './encoder.js';
/** Lists of texts: JS string arrays or an Arrow List<Utf8> vector. */
export type TextListInput = readonly (readonly string[])[] | Vector<List<Utf8>>;

/**
 * Largest contrastive weight accepted. The scores are (1 + alpha) * z_ctx - alpha * z_noctx in
 * float32: a finite but huge alpha (1e300) overflows to Inf - Inf = NaN for every passage, and far
 * below that the difference of two large products has no precision left. The CLI bound
 * (synthesize's MAX_ALPHA) is the same.
 */
export const MAX_CONTRASTIVE_ALPHA = 100;

export interface CausalLMOptions {
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /**
   * 'float32' (default), 'bfloat16', 'float16' (float16 needs a device with half GEMMs), or
   * 'int8' (opt-in, CPU with the oneDNN backend): dynamic int8 products (weights quantised once
   * per output channel, activations per row in 8 bits where the CPU has VNNI / AMX-INT8, in 7
   * bits on AVX2 without it (engineInfo().int8InputBits), int32 accumulation) for every
   * projection and the lm_head; the rest float32. Accuracy: bench/results/cpu-llama-int8.md.
   */
  dtype?: 'float32' | 'bfloat16' | 'float16' | 'int8';
  /** Batch limit: rows x longest row (prompt plus answers) per forward; default 8192. */
  tokenBudget?: number;
  /** Most prompts per batch; default 64. */
  maxRows?: number;
  /** How a hub id is resolved and downloaded (lib/models/hub.ts). */
  hub?: HubOptions;
}

export interface ContrastiveItem {
  standardPrompt: string;
  contextPrompts: string[];
  answers: string[];
}

export interface ContrastiveResult {
  /** PPL_CD per [answer][context]. */
  perAnswer: number[][];
  /** Minimum over answers, per context. */
  min: number[];
  /**
   * Plain perplexity per [answer][context]: exp(mean NLL) under the context prompt's logits
   * alone (alpha 0; the reference's `retrieved_ppl`), from the same forward passes.
   */
  plainPerAnswer: number[][];
  /** Minimum plain perplexity over answers, per context. */
  plainMin: number[];
}

/**
 * Contrastive scoring input as columns, one row per item: `contextPrompts[i]` and `answers[i]`
 * are the lists of item i (e.g. columns of an Arrow Table).
 */
export interface ContrastiveColumns {
  standardPrompts: TextInput;
  contextPrompts: TextListInput;
  answers: TextListInput;
}

/** Contrastive perplexities as Arrow vectors over the engine's Float64 output (no copy). */
export interface ContrastiveArrowResult {
  /** Per item: per answer, PPL_CD per context prompt. */
  perAnswer: Vector<List<List<Float64>>>;
  /** Per item: the minimum over answers, per context prompt. */
  min: Vector<List<Float64>>;
  /** As perAnswer and min, for the plain perplexity (context logits alone). */
  plainPerAnswer: Vector<List<List<Float64>>>;
  plainMin: Vector<List<Float64>>;
}

export interface ContrastiveOptions extends CallOptions {
  /** Contrast weight a in (1+a) z_ctx - a z_noctx; default 0.5. */
  alpha?: number;
  /**
   * 'cached' (default): each prompt prefilled once, all answers scored from its KV cache,
   * logits only at answer positions. 'reference': one full forward per prompt per answer
   * with logits at every position, batch size 1 (the reference method; for benchmarks).
   */
  method?: 'cached' | 'reference';
  /**
   * Shared-prefix prefill (default: true on CPU, false on CUDA where it is not yet measured):
   * leading tokens common to the prompts of a batch (chat
   * header, system prompt, passage label; a title several passages share) are run once and
   * their keys/values reused. Same results within float rounding; false runs every prompt in
   * full (for comparisons).
   */
  sharePrefix?: boolean;
}

export interface GenerateOptions extends CallOptions {
  maxNewTokens: number;
  /**
   * Shared-prefix prefill (default: true on CPU, false on CUDA where it is not yet measured):
   * the tokens every prompt begins with (chat header, system prompt, instruction) are run once
   * for the call, and the prompts of each prefill batch share what more they have in common.
   * Same tokens up to float rounding of the products; false prefills every prompt in full.
   */
  sharePrefix?: boolean;
  /** Only greedy decoding (0) is implemented. */
  temperature?: number;
}

export interface GenerateResult {
  texts: string[];
  /** New tokens per prompt; ends with the EOS id when the model stopped by itself. */
  tokenIds: number[][];
}

/** generate() with {asArrow: true}: token ids as a List<Int32> over the engine's buffers. */
export interface GenerateArrowResult {
  texts: Vector<Utf8>;
  tokenIds: Vector<List<Int32>>;
}

/** Work counters of the engine (see LlamaStats in native/models/llama.h). */
export interface CausalLMStats {
  promptPrefills: number;
  prefillTokens: number;
  answerTokens: number;
  lmHeadRows: number;
  forwardCalls: number;
  generatedTokens: number;
  /** Batched one-token decode forwards (continuous batching: one per step over all active slots). */
  decodeSteps: number;
  /** Generations stopped early through GenerateStreamOptions.rowSignals. */
  stoppedRows: number;
}

/** Token streaming and per-prompt stopping for generateIds (serve's stream: true and stop strings). */
export interface GenerateStreamOptions extends CallOptions {
  /**
   * Called on the JS thread as the engine makes tokens: the prompts (batch rows) that got a token
   * in one decoding step and those tokens. A row's tokens come in order, and every token of every
   * row has been delivered before the call resolves.
   */
  onTokens?: (rows: Int32Array, tokens: Int32Array) => void;
  /** Per prompt: aborting one stops that prompt alone before the engine's next step (its tokens so far are its answer). */
  rowSignals?: (AbortSignal | undefined)[];
  /** As GenerateOptions.sharePrefix. */
  sharePrefix?: boolean;
}

export interface CausalLMInfo {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  contextLength: number;
  bosTokenId: number;
  eosTokenIds: number[];
  dtype: string;
  device: string;
}

interface NativeCausalLM {
  readonly info: CausalLMInfo;
  stats(): CausalLMStats;
  resetStats(): void;
  contrastive(pIds: Int32Array, pOff: Int32Array, aIds: Int32Array, aOff: Int32Array, pBegin: Int32Array, aBegin: Int32Array,
    alpha: number, reference: boolean, sharePrefix: boolean, controls: NativeControls): Promise<ContrastiveFlat>;
  lastLogits(ids: Int32Array, offsets: Int32Array, lastN: number, controls: NativeControls): Promise<Float32Array>;
  generate(ids: Int32Array, offsets: Int32Array, maxNewTokens: number, controls: NativeControls,
    stream?: { onTokens?: (rows: Int32Array, tokens: Int32Array) => void; rowCancel?: (NativeControls['cancel'] | undefined)[] },
    sharePrefix?: boolean): Promise<{ ids: Int32Array; offsets: Int32Array }>;
  /** Drops the wrapper's reference to the weights (running calls keep theirs). */
  dispose(): void;
}

/** Engine output of a contrastive call: (item, answer, context) and (item, context) layouts. */
interface ContrastiveFlat {
  perAnswer: Float64Array;
  min: Float64Array;
  plainPerAnswer: Float64Array;
  plainMin: Float64Array;
}

type LoadFn = (dir: string, options: CausalLMOptions) => Promise<NativeCausalLM>;

function rowLength(batch: TokenBatch, i: number): number {
  return batch.offsets[i + 1] - batch.offsets[i];
}

function diffStats(after: CausalLMStats, before: CausalLMStats): CausalLMStats {
  const out = { ...after };
  for (const k of Object.keys(out) as (keyof CausalLMStats)[]) out[k] = after[k] - before[k];
  return out;
}

/** Flat strings of a list column and where each row starts (rows + 1 entries). */
function flattenLists(lists: TextListInput, what: string): { strings: string[]; begin: Int32Array } {
  if (Array.isArray(lists)) {
    const begin = new Int32Array(lists.length + 1);
    lists.forEach((row, i) => {
      if (!Array.isArray(row)) throw new TypeError(`${what}[${i}] must be an array of strings`);
      begin[i + 1] = begin[i] + row.length;
    });
    return { strings: toStrings(lists.flat(), what), begin };
  }
  const vec = lists as Vector;
  if (typeof vec !== 'object' || vec === null || !('data' in vec) || !DataType.isList(vec.type)) {
    throw new TypeError(`${what} must be an array of string arrays or an Arrow List<Utf8> vector`);
  }
  if (vec.nullCount > 0) throw new TypeError(`${what} has ${vec.nullCount} null lists`);
  const begin = new Int32Array(vec.length + 1);
  const strings: string[] = [];
  let row = 0;
  for (const chunk of vec.data as Data<List<Utf8>>[]) {
    // valueOffsets[0..length] index this chunk's rows into its (possibly shared) child.
    const offs = chunk.valueOffsets;
    const texts = toStrings(makeVector(chunk.children[0]).slice(offs[0], offs[chunk.length]), what);
    for (let k = 0; k < chunk.length; k++, row++) begin[row + 1] = begin[row] + offs[k + 1] - offs[k];
    for (const t of texts) strings.push(t);
  }
  return { strings, begin };
}

/** Arrow List<Float64> (or List<List<Float64>>) over `values`, given the list offsets. */
function float64Lists(values: Float64Array, offsets: Int32Array[]): Vector {
  let data: Data = makeData({ type: new Float64(), data: values });
  for (let i = offsets.length - 1; i >= 0; i--) {
    const type = new List(new Field('item', data.type, false));
    data = makeData({ type, length: offsets[i].length - 1, nullCount: 0, valueOffsets: offsets[i], child: data });
  }
  return makeVector(data);
}

/** What a flat contrastive call needs: prompts (standard first per item), answers, item bounds. */
interface ContrastiveBatch {
  prompts: string[];
  answers: string[];
  pBegin: Int32Array;
  aBegin: Int32Array;
  /** Names item i, its prompt j (0: the standard prompt) and its answer j in error messages. */
  itemName(i: number): string;
  promptName(i: number, j: number): string;
  answerName(i: number, j: number): string;
}

export class CausalLM extends NativeOwner<NativeCausalLM> {
  readonly dir: string;
  readonly tokenizer: Tokenizer;
  readonly info: CausalLMInfo;
  /** Counters of the most recent call on this instance (concurrent calls mix their counts). */
  lastStats: CausalLMStats | undefined;

  private constructor(dir: string, model: NativeCausalLM, tokenizer: Tokenizer) {
    super(model, 'CausalLM', (m) => m.dispose());
    this.dir = dir;
    this.tokenizer = tokenizer;
    this.info = model.info;
    // Every public async call counts as running until it settles (see lib/lifetime.ts).
    this.contrastivePerplexity = this.life.guard(this.contrastivePerplexity) as typeof this.contrastivePerplexity;
    this.contrastivePerplexityColumns = this.life.guard(this.contrastivePerplexityColumns);
    this.generate = this.life.guard(this.generate) as typeof this.generate;
    this.generateIds = this.life.guard(this.generateIds);
    this.lastLogitsIds = this.life.guard(this.lastLogitsIds);
    this.lastLogits = this.life.guard(this.lastLogits);
  }

  /** The native model, or E_DISPOSED after dispose(). */
  private get model(): NativeCausalLM {
    return this.life.get();
  }

  /** Loads a Hugging Face Llama checkpoint (config.json, safetensors, tokenizer.json): a directory or a hub id. */
  static async load(ref: string, options: CausalLMOptions = {}): Promise<CausalLM> {
    if (typeof ref !== 'string' || ref.length === 0) throw new TypeError('dir must be a non-empty string');
    const { device, dtype, tokenBudget, maxRows } = options;
    if (device !== undefined && (typeof device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(device))) {
      throw new RangeError(`device must be 'cpu', 'cuda' or 'cuda:N', got ${String(device)}`);
    }
    if (dtype !== undefined && !['float32', 'bfloat16', 'float16', 'int8'].includes(dtype)) {
      throw new RangeError(`dtype must be 'float32', 'bfloat16', 'float16' or 'int8', got ${String(dtype)}`);
    }
    for (const [k, v] of Object.entries({ tokenBudget, maxRows })) {
      if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new RangeError(`${k} must be a positive integer`);
    }
    const dir = await resolveModel(ref, options.hub);
    const load = native().loadCausalLM as LoadFn;
    const model = await load(dir, { device, dtype, tokenBudget, maxRows });
    return new CausalLM(dir, model, Tokenizer.load(dir));
  }

  /** max_position_embeddings: prompt plus answer (or new tokens) must fit in it. */
  get contextLength(): number {
    return this.info.contextLength;
  }

  /** Cumulative counters since load. */
  stats(): CausalLMStats {
    return this.model.stats();
  }

  /** Renders the model's chat template (tokenizer_config.json `chat_template`). */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    const c = this.tokenizer.config;
    return renderChatTemplate(c.chatTemplate, messages, { bosToken: c.bosToken, eosToken: c.eosToken }, options, this.dir);
  }

  /**
   * Contrastive perplexity (GainRAG): PPL_CD = exp(mean_t -log softmax((1+a) z_ctx - a z_noctx)[answer_t])
   * per answer and context prompt. Prompt and answer are tokenised separately without special
   * tokens and concatenated. With {asArrow: true} the result is Arrow vectors (as
   * contrastivePerplexityColumns returns).
   */
  async contrastivePerplexity(items: ContrastiveItem[], options?: ContrastiveOptions & { asArrow?: false }): Promise<ContrastiveResult[]>;
  async contrastivePerplexity(items: ContrastiveItem[], options: ContrastiveOptions & { asArrow: true }): Promise<ContrastiveArrowResult>;
  async contrastivePerplexity(items: ContrastiveItem[], options: ContrastiveOptions & { asArrow?: boolean } = {}): Promise<ContrastiveResult[] | ContrastiveArrowResult> {
    if (!Array.isArray(items)) throw new TypeError('items must be an array');
    const prompts: string[] = [];
    const answers: string[] = [];
    const pBegin = new Int32Array(items.length + 1);
    const aBegin = new Int32Array(items.length + 1);
    items.forEach((item, i) => {
      if (!item || typeof item.standardPrompt !== 'string' || !Array.isArray(item.contextPrompts) || !Array.isArray(item.answers)) {
        throw new TypeError(`items[${i}] must be {standardPrompt: string, contextPrompts: string[], answers: string[]}`);
      }
      prompts.push(item.standardPrompt, ...item.contextPrompts);
      answers.push(...item.answers);
      pBegin[i + 1] = prompts.length;
      aBegin[i + 1] = answers.length;
    });
    const batch: ContrastiveBatch = {
      prompts, answers, pBegin, aBegin,
      itemName: (i) => `items[${i}]`,
      promptName: (i, j) => `items[${i}].${j === 0 ? 'standardPrompt' : `contextPrompts[${j - 1}]`}`,
      answerName: (i, j) => `items[${i}].answers[${j}]`,
    };
    const out = await this.score(batch, options);
    if (options.asArrow) return this.toArrow(batch, out);
    const results: ContrastiveResult[] = [];
    let at = 0;
    let atMin = 0;
    for (let i = 0; i < items.length; i++) {
      const nCtx = pBegin[i + 1] - pBegin[i] - 1;
      const perAnswer: number[][] = [];
      const plainPerAnswer: number[][] = [];
      for (let j = aBegin[i]; j < aBegin[i + 1]; j++, at += nCtx) {
        perAnswer.push(Array.from(out.perAnswer.subarray(at, at + nCtx)));
        plainPerAnswer.push(Array.from(out.plainPerAnswer.subarray(at, at + nCtx)));
      }
      const min = Array.from(out.min.subarray(atMin, atMin + nCtx));
      const plainMin = Array.from(out.plainMin.subarray(atMin, (atMin += nCtx)));
      results.push({ perAnswer, min, plainPerAnswer, plainMin });
    }
    return results;
  }

  /**
   * Contrastive perplexity over columns (row i: standardPrompts[i], its context prompts and its
   * answers), e.g. straight from an Arrow Table with Utf8 and List<Utf8> columns. Results are
   * Arrow vectors over the engine's output: perAnswer List<List<Float64>> (item -> answer ->
   * context) and min List<Float64> (item -> context), and plainPerAnswer / plainMin likewise;
   * same numbers as contrastivePerplexity.
   */
  async contrastivePerplexityColumns(columns: ContrastiveColumns, options: ContrastiveOptions = {}): Promise<ContrastiveArrowResult> {
    if (typeof columns !== 'object' || columns === null) throw new TypeError('columns must be {standardPrompts, contextPrompts, answers}');
    const standard = toStrings(columns.standardPrompts, 'standardPrompts');
    const ctx = flattenLists(columns.contextPrompts, 'contextPrompts');
    const ans = flattenLists(columns.answers, 'answers');
    const n = standard.length;
    if (ctx.begin.length !== n + 1 || ans.begin.length !== n + 1) {
      throw new RangeError(`standardPrompts, contextPrompts and answers must have the same length (${n}, ${ctx.begin.length - 1}, ${ans.begin.length - 1})`);
    }
    // Standard prompt first, then the item's context prompts: the engine's layout.
    const prompts = new Array<string>(n + ctx.strings.length);
    const pBegin = new Int32Array(n + 1);
    for (let i = 0, at = 0; i < n; i++) {
      prompts[at++] = standard[i];
      for (let j = ctx.begin[i]; j < ctx.begin[i + 1]; j++) prompts[at++] = ctx.strings[j];
      pBegin[i + 1] = at;
    }
    const batch: ContrastiveBatch = {
      prompts, answers: ans.strings, pBegin, aBegin: ans.begin,
      itemName: (i) => `row ${i}`,
      promptName: (i, j) => (j === 0 ? `standardPrompts[${i}]` : `contextPrompts[${i}][${j - 1}]`),
      answerName: (i, j) => `answers[${i}][${j}]`,
    };
    return this.toArrow(batch, await this.score(batch, options));
  }

  private toArrow(batch: ContrastiveBatch, out: ContrastiveFlat): ContrastiveArrowResult {
    const { pBegin, aBegin } = batch;
    const items = pBegin.length - 1;
    const itemAnswers = aBegin.slice();
    const itemContexts = new Int32Array(items + 1);
    const answerRows = new Int32Array(aBegin[items] + 1);
    for (let i = 0; i < items; i++) {
      const nCtx = pBegin[i + 1] - pBegin[i] - 1;
      itemContexts[i + 1] = itemContexts[i] + nCtx;
      for (let j = aBegin[i]; j < aBegin[i + 1]; j++) answerRows[j + 1] = answerRows[j] + nCtx;
    }
    return {
      perAnswer: float64Lists(out.perAnswer, [itemAnswers, answerRows]) as Vector<List<List<Float64>>>,
      min: float64Lists(out.min, [itemContexts]) as Vector<List<Float64>>,
      plainPerAnswer: float64Lists(out.plainPerAnswer, [itemAnswers, answerRows]) as Vector<List<List<Float64>>>,
      plainMin: float64Lists(out.plainMin, [itemContexts]) as Vector<List<Float64>>,
    };
  }

  /** Checks, tokenises and runs one flat contrastive batch. */
  private async score(batch: ContrastiveBatch, options: ContrastiveOptions): Promise<ContrastiveFlat> {
    const alpha = options.alpha ?? 0.5;
    if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0 || alpha > MAX_CONTRASTIVE_ALPHA) {
      throw new RangeError(`alpha must be a number in [0, ${MAX_CONTRASTIVE_ALPHA}], got ${String(alpha)}`);
    }
    const method = options.method ?? 'cached';
    if (method !== 'cached' && method !== 'reference') throw new RangeError(`method must be 'cached' or 'reference'`);
    // On by default on CPU, where it is measured (bench/synthesis.ts); on CUDA it is unproven
    // and opt-in.
    const sharePrefix = options.sharePrefix ?? this.info.device === 'cpu';
    if (typeof sharePrefix !== 'boolean') throw new TypeError('sharePrefix must be a boolean');
    const { prompts, answers, pBegin, aBegin } = batch;
    const items = pBegin.length - 1;
    for (let i = 0; i < items; i++) {
      if (aBegin[i + 1] === aBegin[i]) throw new RangeError(`${batch.itemName(i)} has no answers`);
      for (let j = aBegin[i]; j < aBegin[i + 1]; j++) {
        if (typeof answers[j] !== 'string') throw new TypeError(`${batch.answerName(i, j - aBegin[i])} must be a string`);
        if (answers[j].length === 0) throw new RangeError(`${batch.answerName(i, j - aBegin[i])} is empty`);
      }
      for (let j = pBegin[i]; j < pBegin[i + 1]; j++) {
        if (typeof prompts[j] !== 'string') throw new TypeError(`${batch.promptName(i, j - pBegin[i])} must be a string`);
        if (prompts[j].length === 0) throw new RangeError(`${batch.promptName(i, j - pBegin[i])} is empty`);
      }
    }
    if (items === 0) {
      const none = new Float64Array(0);
      return { perAnswer: none, min: none, plainPerAnswer: none, plainMin: none };
    }
    const [p, a] = await Promise.all([
      this.tokenizer.encodeBatch(prompts, { addSpecialTokens: false }),
      this.tokenizer.encodeBatch(answers, { addSpecialTokens: false }),
    ]);
    const limit = this.contextLength;
    for (let i = 0; i < items; i++) {
      let longest = 0;
      for (let j = aBegin[i]; j < aBegin[i + 1]; j++) {
        const n = rowLength(a, j);
        if (n === 0) throw new RangeError(`${batch.answerName(i, j - aBegin[i])} has no tokens`);
        longest = Math.max(longest, n);
      }
      for (let j = pBegin[i]; j < pBegin[i + 1]; j++) {
        const n = rowLength(p, j);
        if (n === 0) throw new RangeError(`${batch.promptName(i, j - pBegin[i])} has no tokens`);
        if (n + longest > limit) {
          throw new RangeError(`${batch.promptName(i, j - pBegin[i])} has ${n} tokens; with its ${longest}-token answer that exceeds the model's ${limit} positions`);
        }
      }
    }
    const before = this.model.stats();
    const out = await withControls(options, (controls) =>
      this.model.contrastive(p.ids, p.offsets, a.ids, a.offsets, pBegin, aBegin, alpha, method === 'reference', sharePrefix, controls),
    );
    this.lastStats = diffStats(this.model.stats(), before);
    return out;
  }

  /**
   * Greedy generation. Prompts are tokenised WITHOUT adding special tokens: a chat-templated
   * prompt already carries its BOS. Stops at the model's EOS ids (config.json and
   * generation_config.json) or after maxNewTokens. Prompts may be an Arrow Utf8 vector; with
   * {asArrow: true} texts come back as Utf8 and token ids as List<Int32> over the engine's buffers.
   */
  async generate(prompts: TextInput, options: GenerateOptions & { asArrow?: false }): Promise<GenerateResult>;
  async generate(prompts: TextInput, options: GenerateOptions & { asArrow: true }): Promise<GenerateArrowResult>;
  async generate(prompts: TextInput, options: GenerateOptions & { asArrow?: boolean }): Promise<GenerateResult | GenerateArrowResult> {
    const texts = toStrings(prompts, 'prompts');
    const max = options?.maxNewTokens;
    if (!Number.isInteger(max) || max < 1) throw new RangeError('maxNewTokens must be a positive integer');
    if ((options.temperature ?? 0) !== 0) throw new RangeError('only greedy decoding (temperature 0) is implemented');
    const batch = await this.tokenizer.encodeBatch(texts, { addSpecialTokens: false });
    for (let i = 0; i < texts.length; i++) {
      const n = rowLength(batch, i);
      if (n === 0) throw new RangeError(`prompts[${i}] has no tokens`);
      if (n + max > this.contextLength) {
        throw new RangeError(`prompts[${i}] has ${n} tokens; with ${max} new tokens that exceeds the model's ${this.contextLength} positions`);
      }
    }
    const out = texts.length === 0 ? { ids: new Int32Array(0), offsets: new Int32Array(1) } : await this.generateFlat(batch, max, options);
    const rows: Int32Array[] = [];
    for (let i = 0; i + 1 < out.offsets.length; i++) rows.push(out.ids.subarray(out.offsets[i], out.offsets[i + 1]));
    const decoded = await this.tokenizer.decodeBatch(rows, true);
    if (!options.asArrow) return { texts: decoded, tokenIds: rows.map((r) => Array.from(r)) };
    const child = makeData({ type: new Int32(), data: out.ids });
    const type = new List(new Field('item', new Int32(), false));
    return {
      texts: vectorFromArray(decoded, new Utf8()),
      tokenIds: makeVector(makeData({ type, length: rows.length, nullCount: 0, valueOffsets: out.offsets, child })),
    };
  }

  /** Greedy generation from token ids (flat batch), e.g. a BOS-only prompt; tokens streamed with `onTokens`. */
  async generateIds(batch: Pick<TokenBatch, 'ids' | 'offsets'>, maxNewTokens: number, options: GenerateStreamOptions = {}): Promise<number[][]> {
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new RangeError('maxNewTokens must be a positive integer');
    const out = await this.generateFlat(batch, maxNewTokens, options);
    const rows: number[][] = [];
    for (let i = 0; i + 1 < out.offsets.length; i++) rows.push(Array.from(out.ids.subarray(out.offsets[i], out.offsets[i + 1])));
    return rows;
  }

  private async generateFlat(batch: Pick<TokenBatch, 'ids' | 'offsets'>, maxNewTokens: number, options: GenerateStreamOptions): Promise<{ ids: Int32Array; offsets: Int32Array }> {
    const { onTokens, rowSignals } = options;
    if (onTokens !== undefined && typeof onTokens !== 'function') throw new TypeError(`onTokens must be a function, got ${typeof onTokens}`);
    // On by default on CPU, where it is measured (bench/generate.ts --share-prefix); opt-in on CUDA.
    const sharePrefix = options.sharePrefix ?? this.info.device === 'cpu';
    if (typeof sharePrefix !== 'boolean') throw new TypeError(`sharePrefix must be a boolean, got ${typeof sharePrefix}`);
    const count = batch.offsets.length - 1;
    if (rowSignals !== undefined && (!Array.isArray(rowSignals) || rowSignals.length > count || rowSignals.some((r) => r !== undefined && !(r instanceof AbortSignal)))) {
      throw new TypeError(`rowSignals must be an array of at most ${count} AbortSignals (or undefined)`);
    }
    // One CancelToken per stoppable row, cancelled when its signal aborts.
    const unhook: (() => void)[] = [];
    const rowCancel = rowSignals?.map((sig) => {
      if (sig === undefined) return undefined;
      const token = new (native().CancelToken)();
      if (sig.aborted) token.cancel();
      const onAbort = () => token.cancel();
      sig.addEventListener('abort', onAbort, { once: true });
      unhook.push(() => sig.removeEventListener('abort', onAbort));
      return token;
    });
    // The engine's calls may still be queued when the call resolves: what they have not yet
    // delivered is delivered here from the result, and later calls are ignored.
    const delivered = onTokens ? new Int32Array(count) : undefined;
    let settled = false;
    const stream = onTokens || rowCancel
      ? {
          rowCancel,
          onTokens: onTokens && ((rows: Int32Array, tokens: Int32Array) => {
            if (settled) return;
            for (const r of rows) delivered![r]++;
            onTokens(rows, tokens);
          }),
        }
      : undefined;
    const before = this.model.stats();
    try {
      const out = await withControls(options, (controls) => this.model.generate(batch.ids, batch.offsets, maxNewTokens, controls, stream, sharePrefix));
      this.lastStats = diffStats(this.model.stats(), before);
      if (onTokens) {
        settled = true;
        const rows: number[] = [];
        const tokens: number[] = [];
        for (let step = 0; ; step++) {
          rows.length = tokens.length = 0;
          for (let r = 0; r < count; r++) {
            const at = out.offsets[r] + delivered![r] + step;
            if (at < out.offsets[r + 1]) rows.push(r), tokens.push(out.ids[at]);
          }
          if (rows.length === 0) break;
          onTokens(Int32Array.from(rows), Int32Array.from(tokens));
        }
      }
      return out;
    } finally {
      settled = true;
      for (const u of unhook) u();
    }
  }

  /**
   * lastLogits over token ids (flat batch: ids + offsets), e.g. a prompt and an answer tokenised
   * separately and joined, as contrastive scoring sees them.
   */
  async lastLogitsIds(batch: Pick<TokenBatch, 'ids' | 'offsets'>, lastN = 1, options: CallOptions = {}): Promise<Float32Array> {
    if (!(batch?.ids instanceof Int32Array) || !(batch.offsets instanceof Int32Array) || batch.offsets.length < 2) {
      throw new TypeError('batch must be {ids: Int32Array, offsets: Int32Array} with at least one row');
    }
    if (!Number.isInteger(lastN) || lastN < 1) throw new RangeError('lastN must be a positive integer');
    const before = this.model.stats();
    const out = await withControls(options, (controls) => this.model.lastLogits(batch.ids, batch.offsets, lastN, controls));
    this.lastStats = diffStats(this.model.stats(), before);
    return out;
  }

  /** Float32 logits [prompts, lastN, vocab] of the last lastN positions of each prompt. */
  async lastLogits(prompts: string[], lastN = 1, options: CallOptions = {}): Promise<Float32Array> {
    if (!Array.isArray(prompts) || prompts.length === 0) throw new RangeError('prompts must be a non-empty array of strings');
    if (!Number.isInteger(lastN) || lastN < 1) throw new RangeError('lastN must be a positive integer');
    const batch = await this.tokenizer.encodeBatch(prompts, { addSpecialTokens: false });
    for (let i = 0; i < prompts.length; i++) {
      const n = rowLength(batch, i);
      if (n < lastN) throw new RangeError(`prompts[${i}] has ${n} tokens, fewer than lastN ${lastN}`);
      if (n > this.contextLength) throw new RangeError(`prompts[${i}] has ${n} tokens, more than the model's ${this.contextLength} positions`);
    }
    const before = this.model.stats();
    const out = await withControls(options, (controls) => this.model.lastLogits(batch.ids, batch.offsets, lastN, controls));
    this.lastStats = diffStats(this.model.stats(), before);
    return out;
  }
}
