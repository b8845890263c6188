// CausalLM: a Llama-family decoder run by the native engine, with its tokenizer and chat
// template. Texts are tokenised here into flat Int32Arrays (no per-token work crosses the
// boundary); the engine batches, caches and scores.
import { withControls, type CallOptions } from '../controls.js';
import { native, type NativeControls } from '../native.js';
import { Tokenizer, type TokenBatch } from '../tokenizer.js';
import { renderChatTemplate, type ChatMessage, type ChatTemplateOptions } from './chat-template.js';

export interface CausalLMOptions {
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /** 'float32' (default), 'bfloat16' or 'float16' (float16 needs a device with half GEMMs). */
  dtype?: 'float32' | 'bfloat16' | 'float16';
  /** Batch limit: rows x longest row (prompt plus answers) per forward; default 8192. */
  tokenBudget?: number;
  /** Most prompts per batch; default 64. */
  maxRows?: number;
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
}

export interface GenerateOptions extends CallOptions {
  maxNewTokens: number;
  /** Only greedy decoding (0) is implemented. */
  temperature?: number;
}

export interface GenerateResult {
  texts: string[];
  /** New tokens per prompt; ends with the EOS id when the model stopped by itself. */
  tokenIds: number[][];
}

/** Work counters of the engine (see LlamaStats in native/models/llama.h). */
export interface CausalLMStats {
  promptPrefills: number;
  prefillTokens: number;
  answerTokens: number;
  lmHeadRows: number;
  forwardCalls: number;
  generatedTokens: number;
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
    alpha: number, reference: boolean, controls: NativeControls): Promise<Float64Array>;
  lastLogits(ids: Int32Array, offsets: Int32Array, lastN: number, controls: NativeControls): Promise<Float32Array>;
  generate(ids: Int32Array, offsets: Int32Array, maxNewTokens: number, controls: NativeControls): Promise<{ ids: Int32Array; offsets: Int32Array }>;
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

export class CausalLM {
  readonly dir: string;
  readonly tokenizer: Tokenizer;
  readonly info: CausalLMInfo;
  /** Counters of the most recent call on this instance (concurrent calls mix their counts). */
  lastStats: CausalLMStats | undefined;
  private readonly model: NativeCausalLM;

  private constructor(dir: string, model: NativeCausalLM, tokenizer: Tokenizer) {
    this.dir = dir;
    this.model = model;
    this.tokenizer = tokenizer;
    this.info = model.info;
  }

  /** Loads a Hugging Face Llama directory (config.json, safetensors, tokenizer.json). */
  static async load(dir: string, options: CausalLMOptions = {}): Promise<CausalLM> {
    if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir must be a non-empty string');
    const { device, dtype, tokenBudget, maxRows } = options;
    if (device !== undefined && (typeof device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(device))) {
      throw new RangeError(`device must be 'cpu', 'cuda' or 'cuda:N', got ${String(device)}`);
    }
    if (dtype !== undefined && !['float32', 'bfloat16', 'float16'].includes(dtype)) {
      throw new RangeError(`dtype must be 'float32', 'bfloat16' or 'float16', got ${String(dtype)}`);
    }
    for (const [k, v] of Object.entries({ tokenBudget, maxRows })) {
      if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new RangeError(`${k} must be a positive integer`);
    }
    const load = native().loadCausalLM as LoadFn;
    const model = await load(dir, options);
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
   * tokens and concatenated.
   */
  async contrastivePerplexity(items: ContrastiveItem[], options: ContrastiveOptions = {}): Promise<ContrastiveResult[]> {
    if (!Array.isArray(items)) throw new TypeError('items must be an array');
    const alpha = options.alpha ?? 0.5;
    if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new RangeError('alpha must be a finite number');
    const method = options.method ?? 'cached';
    if (method !== 'cached' && method !== 'reference') throw new RangeError(`method must be 'cached' or 'reference'`);
    if (items.length === 0) return [];
    const prompts: string[] = [];
    const answers: string[] = [];
    const pBegin = new Int32Array(items.length + 1);
    const aBegin = new Int32Array(items.length + 1);
    items.forEach((item, i) => {
      if (!item || typeof item.standardPrompt !== 'string' || !Array.isArray(item.contextPrompts) || !Array.isArray(item.answers)) {
        throw new TypeError(`items[${i}] must be {standardPrompt: string, contextPrompts: string[], answers: string[]}`);
      }
      if (item.answers.length === 0) throw new RangeError(`items[${i}] has no answers`);
      item.answers.forEach((a, j) => {
        if (typeof a !== 'string') throw new TypeError(`items[${i}].answers[${j}] must be a string`);
        if (a.length === 0) throw new RangeError(`items[${i}].answers[${j}] is empty`);
      });
      [item.standardPrompt, ...item.contextPrompts].forEach((p, j) => {
        if (typeof p !== 'string') throw new TypeError(`items[${i}].contextPrompts[${j - 1}] must be a string`);
        if (p.length === 0) throw new RangeError(`items[${i}] has an empty prompt`);
      });
      prompts.push(item.standardPrompt, ...item.contextPrompts);
      answers.push(...item.answers);
      pBegin[i + 1] = prompts.length;
      aBegin[i + 1] = answers.length;
    });
    const [p, a] = await Promise.all([
      this.tokenizer.encodeBatch(prompts, { addSpecialTokens: false }),
      this.tokenizer.encodeBatch(answers, { addSpecialTokens: false }),
    ]);
    const limit = this.contextLength;
    for (let i = 0; i < items.length; i++) {
      let longest = 0;
      for (let j = aBegin[i]; j < aBegin[i + 1]; j++) {
        const n = rowLength(a, j);
        if (n === 0) throw new RangeError(`items[${i}].answers[${j - aBegin[i]}] has no tokens`);
        longest = Math.max(longest, n);
      }
      for (let j = pBegin[i]; j < pBegin[i + 1]; j++) {
        const n = rowLength(p, j);
        if (n === 0) throw new RangeError(`items[${i}] has a prompt with no tokens`);
        if (n + longest > limit) {
          const which = j === pBegin[i] ? 'standardPrompt' : `contextPrompts[${j - pBegin[i] - 1}]`;
          throw new RangeError(`items[${i}].${which} has ${n} tokens; with its ${longest}-token answer that exceeds the model's ${limit} positions`);
        }
      }
    }
    const before = this.model.stats();
    const flat = await withControls(options, (controls) =>
      this.model.contrastive(p.ids, p.offsets, a.ids, a.offsets, pBegin, aBegin, alpha, method === 'reference', controls),
    );
    this.lastStats = diffStats(this.model.stats(), before);
    const out: ContrastiveResult[] = [];
    let at = 0;
    for (let i = 0; i < items.length; i++) {
      const nCtx = pBegin[i + 1] - pBegin[i] - 1;
      const nAns = aBegin[i + 1] - aBegin[i];
      const perAnswer: number[][] = [];
      for (let j = 0; j < nAns; j++, at += nCtx) perAnswer.push(Array.from(flat.subarray(at, at + nCtx)));
      const min = perAnswer[0].slice();
      for (const row of perAnswer) for (let c = 0; c < nCtx; c++) min[c] = Math.min(min[c], row[c]);
      out.push({ perAnswer, min });
    }
    return out;
  }

  /**
   * Greedy generation. Prompts are tokenised WITHOUT adding special tokens: a chat-templated
   * prompt already carries its BOS. Stops at the model's EOS ids (config.json and
   * generation_config.json) or after maxNewTokens.
   */
  async generate(prompts: string[], options: GenerateOptions): Promise<GenerateResult> {
    if (!Array.isArray(prompts)) throw new TypeError('prompts must be an array of strings');
    const max = options?.maxNewTokens;
    if (!Number.isInteger(max) || max < 1) throw new RangeError('maxNewTokens must be a positive integer');
    if ((options.temperature ?? 0) !== 0) throw new RangeError('only greedy decoding (temperature 0) is implemented');
    if (prompts.length === 0) return { texts: [], tokenIds: [] };
    prompts.forEach((p, i) => {
      if (typeof p !== 'string') throw new TypeError(`prompts[${i}] must be a string`);
    });
    const batch = await this.tokenizer.encodeBatch(prompts, { addSpecialTokens: false });
    for (let i = 0; i < prompts.length; i++) {
      const n = rowLength(batch, i);
      if (n === 0) throw new RangeError(`prompts[${i}] has no tokens`);
      if (n + max > this.contextLength) {
        throw new RangeError(`prompts[${i}] has ${n} tokens; with ${max} new tokens that exceeds the model's ${this.contextLength} positions`);
      }
    }
    const tokenIds = await this.generateIds(batch, max, options);
    return { texts: await this.tokenizer.decodeBatch(tokenIds, true), tokenIds };
  }

  /** Greedy generation from token ids (flat batch), e.g. a BOS-only prompt. */
  async generateIds(batch: Pick<TokenBatch, 'ids' | 'offsets'>, maxNewTokens: number, options: CallOptions = {}): Promise<number[][]> {
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new RangeError('maxNewTokens must be a positive integer');
    const before = this.model.stats();
    const out = await withControls(options, (controls) => this.model.generate(batch.ids, batch.offsets, maxNewTokens, controls));
    this.lastStats = diffStats(this.model.stats(), before);
    const rows: number[][] = [];
    for (let i = 0; i + 1 < out.offsets.length; i++) rows.push(Array.from(out.ids.subarray(out.offsets[i], out.offsets[i + 1])));
    return rows;
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
