// Tokenisation with Hugging Face `tokenizers` (tokenizer.json), producing flat token batches
// for the native engine: one Int32Array of ids plus Arrow-style offsets (row i is
// ids[offsets[i] .. offsets[i+1])). Pairs are tokenised as two flat batches (each distinct
// query once) and joined with the model's post-processor template, with the same truncation
// rules as `tokenizers` (checked against it in test/tokenizer.test.ts).
//
// Texts are cut before tokenising when a length limit applies (cutForTokens): tokenising a
// 50 MB passage in full only to keep its first 512 tokens took minutes and gigabytes. The cut
// keeps MAX_CHARS_PER_TOKEN characters per allowed token and ends at whitespace, so the tokens
// that survive the exact truncation afterwards are the same as without the cut; texts shorter
// than the bound (every realistic one) are not touched at all.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from 'tokenizers';
import { GainragError } from './errors.js';
import { checkRegularFile } from './io/input-file.js';
import { resolveModelSync } from './models/hub.js';

/** A batch of token sequences laid out flat (zero-copy friendly). */
export interface TokenBatch {
  ids: Int32Array;
  /** length count + 1; row i spans ids[offsets[i]] .. ids[offsets[i + 1] - 1] */
  offsets: Int32Array;
  /** token type ids (segment ids), same layout as ids; present for pair batches */
  typeIds?: Int32Array;
  /** rows whose text was cut to fit maxLength */
  truncated: number;
}

/**
 * Characters one token may cover, as an upper bound for cutting text before tokenising. Large on
 * purpose: WordPiece turns a word of up to 100 characters into pieces (longer ones into one
 * [UNK]) and BPE merges rarely span more than ~20, so a prefix of maxTokens * 128 characters
 * still yields more than maxTokens tokens for anything but pathological input.
 */
export const MAX_CHARS_PER_TOKEN = 128;

/**
 * The prefix of `text` that tokenising needs when at most `maxTokens` tokens are kept: the text
 * itself when it is no longer than maxTokens * MAX_CHARS_PER_TOKEN characters, otherwise about
 * that many, ending at whitespace (never inside a word or a surrogate pair).
 */
export function cutForTokens(text: string, maxTokens: number): string {
  const limit = Math.max(1, Math.ceil(maxTokens)) * MAX_CHARS_PER_TOKEN;
  if (text.length <= limit) return text;
  // The last whitespace in the final stretch before the limit; without one, cut at the limit.
  const window = Math.min(4096, Math.floor(limit / 4));
  const tail = text.slice(limit - window, limit);
  let cut = limit;
  for (let i = tail.length - 1; i >= 0; i--) {
    const c = tail.charCodeAt(i);
    if (c === 32 || c === 10 || c === 9 || c === 13 || c === 0x3000 || c === 0xa0) {
      cut = limit - window + i;
      break;
    }
  }
  const last = text.charCodeAt(cut - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut--; // keep surrogate pairs whole
  return text.slice(0, cut);
}

export type TruncationStrategy = 'only_second' | 'only_first' | 'longest_first';

export interface PairOptions {
  maxLength: number;
  truncation?: TruncationStrategy;
}

interface TemplatePiece {
  kind: 'special' | 'A' | 'B';
  ids: number[];
  typeId: number;
}

interface PostTemplate {
  single: TemplatePiece[];
  pair: TemplatePiece[];
}

export interface TokenizerConfig {
  chatTemplate?: string;
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  modelMaxLength?: number;
  [key: string]: unknown;
}

function tokenString(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

export class Tokenizer {
  readonly dir: string;
  readonly config: TokenizerConfig;
  private readonly hf: HfTokenizer;
  private readonly template: PostTemplate;

  private constructor(dir: string, hf: HfTokenizer, template: PostTemplate, config: TokenizerConfig) {
    this.dir = dir;
    this.hf = hf;
    this.template = template;
    this.config = config;
  }

  /**
   * Loads `tokenizer.json` (and `tokenizer_config.json` when present) from a model directory, or
   * from the cached snapshot of a hub id (no download here: the model loaders download).
   */
  static load(ref: string): Tokenizer {
    const dir = resolveModelSync(ref);
    const file = path.join(dir, 'tokenizer.json');
    if (!existsSync(file)) throw new GainragError('E_TOKENIZER', `no tokenizer.json in ${dir}`);
    checkRegularFile(file, 'E_MODEL_CONFIG'); // a FIFO here would hang every model load
    let raw: { post_processor?: unknown };
    let hf: HfTokenizer;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
      hf = HfTokenizer.fromFile(file);
    } catch (err) {
      throw new GainragError('E_TOKENIZER', `${file}: ${(err as Error).message}`, { cause: err });
    }
    hf.disableTruncation();
    hf.disablePadding();
    const config: TokenizerConfig = {};
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    if (existsSync(cfgFile)) {
      checkRegularFile(cfgFile, 'E_MODEL_CONFIG');
      let c: Record<string, unknown>;
      try {
        c = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
        Object.assign(config, c);
        if (typeof c.chat_template === 'string') config.chatTemplate = c.chat_template;
        config.bosToken = tokenString(c.bos_token);
        config.eosToken = tokenString(c.eos_token);
        config.padToken = tokenString(c.pad_token);
      } catch (err) {
        throw new GainragError('E_TOKENIZER', `${cfgFile}: ${(err as Error).message}`, { cause: err });
      }
      // transformers writes a huge sentinel (1e30) for "no limit"; anything else must be a usable
      // length, or every encode would fail later with a confusing range error.
      const m = c.model_max_length;
      if (m !== undefined && m !== null) {
        if (typeof m !== 'number' || !(m >= 1) || (m < 1e9 && !Number.isInteger(m))) {
          throw new GainragError('E_MODEL_CONFIG', `${cfgFile}: model_max_length must be a positive integer, got ${JSON.stringify(m)}`);
        }
        if (m < 1e9) config.modelMaxLength = m;
      }
    }
    const template = parsePostProcessor(raw.post_processor, (tok) => hf.tokenToId(tok));
    return new Tokenizer(dir, hf, template, config);
  }

  tokenToId(token: string): number | null {
    return this.hf.tokenToId(token);
  }

  get vocabSize(): number {
    return this.hf.getVocabSize(true);
  }

  /** Number of special tokens the post-processor adds to a single sequence / a pair. */
  get specialTokens(): { single: number; pair: number } {
    const count = (t: TemplatePiece[]) => t.filter((p) => p.kind === 'special').reduce((n, p) => n + p.ids.length, 0);
    return { single: count(this.template.single), pair: count(this.template.pair) };
  }

  /**
   * Raw token ids per text, no special tokens. With `maxTokens`, a text longer than
   * cutForTokens' bound for maxTokens + 1 tokens is cut before tokenising, so a row may be
   * shorter than the full text's but is still longer than maxTokens whenever the text is
   * (rows are not clipped: longest_first compares the true lengths of texts under the bound).
   */
  async encodeRaw(texts: string[], options: { maxTokens?: number } = {}): Promise<number[][]> {
    if (!Array.isArray(texts)) throw new TypeError('texts must be an array of strings');
    if (texts.length === 0) return [];
    for (let i = 0; i < texts.length; i++) {
      if (typeof texts[i] !== 'string') throw new TypeError(`texts[${i}] must be a string, got ${typeof texts[i]}`);
    }
    const max = options.maxTokens;
    if (max !== undefined && (!Number.isInteger(max) || max < 0)) throw new RangeError(`maxTokens must be an integer >= 0, got ${String(max)}`);
    const input = max === undefined ? texts : texts.map((t) => cutForTokens(t, max + 1));
    const encodings = await this.hf.encodeBatch(input, { addSpecialTokens: false });
    return encodings.map((e) => e.getIds());
  }

  /**
   * Single sequences with the model's special tokens. Longer rows are cut to `maxLength`
   * tokens (specials included) when `maxLength` is given.
   */
  async encodeBatch(texts: string[], options: { maxLength?: number; addSpecialTokens?: boolean } = {}): Promise<TokenBatch> {
    const add = options.addSpecialTokens ?? true;
    const specials = add ? this.specialTokens.single : 0;
    const budget = options.maxLength === undefined ? Infinity : options.maxLength - specials;
    if (budget < 0) throw new RangeError(`maxLength ${options.maxLength} is shorter than the ${specials} special tokens`);
    const raw = await this.encodeRaw(texts, Number.isFinite(budget) ? { maxTokens: budget } : {});
    const out = new Builder();
    let truncated = 0;
    for (const ids of raw) {
      let a = ids;
      if (a.length > budget) {
        a = a.slice(0, budget);
        truncated++;
      }
      out.row(add ? this.template.single : [{ kind: 'A', ids: [], typeId: 0 }], a, []);
    }
    return out.finish(truncated, false);
  }

  /**
   * Sentence pairs (query, passage) joined by the post-processor's pair template, truncated to
   * `maxLength` with the given strategy (default `only_second`, as rerankers use). Each
   * distinct first text is tokenised once.
   */
  async encodePairs(first: string[], second: string[], options: PairOptions): Promise<TokenBatch> {
    if (first.length !== second.length) {
      throw new RangeError(`pair lists differ in length: ${first.length} first texts, ${second.length} second texts`);
    }
    const strategy = options.truncation ?? 'only_second';
    const budget = options.maxLength - this.specialTokens.pair;
    if (!Number.isInteger(options.maxLength) || budget < 2) {
      throw new RangeError(`maxLength ${options.maxLength} leaves no room for a pair after ${this.specialTokens.pair} special tokens`);
    }
    const uniqueFirst = [...new Set(first)];
    const firstIds = new Map<string, number[]>();
    // Neither side can keep more than `budget` tokens, so neither is tokenised past that.
    const encodedFirst = await this.encodeRaw(uniqueFirst, { maxTokens: budget });
    uniqueFirst.forEach((t, i) => firstIds.set(t, encodedFirst[i]));
    const secondIds = await this.encodeRaw(second, { maxTokens: budget });
    const out = new Builder();
    let truncated = 0;
    for (let i = 0; i < first.length; i++) {
      let a = firstIds.get(first[i])!;
      let b = secondIds[i];
      if (a.length + b.length > budget) {
        truncated++;
        [a, b] = truncatePair(a, b, budget, strategy);
      }
      out.row(this.template.pair, a, b);
    }
    return out.finish(truncated, true);
  }

  async decode(ids: ArrayLike<number>, skipSpecialTokens = true): Promise<string> {
    return this.hf.decode(Array.from(ids), skipSpecialTokens);
  }

  async decodeBatch(rows: ArrayLike<number>[], skipSpecialTokens = true): Promise<string[]> {
    if (rows.length === 0) return [];
    return this.hf.decodeBatch(rows.map((r) => Array.from(r)), skipSpecialTokens);
  }
}

/** Mirrors `tokenizers`' truncation of a pair to `budget` non-special tokens. */
export function truncatePair(a: number[], b: number[], budget: number, strategy: TruncationStrategy): [number[], number[]] {
  const excess = a.length + b.length - budget;
  if (excess <= 0) return [a, b];
  if (strategy === 'only_second') {
    // tokenizers refuses unless at least one token of the truncated side survives
    if (b.length <= excess) {
      throw new RangeError(`first sequence has ${a.length} tokens: with only_second truncation it leaves no room for the second in the pair budget of ${budget}`);
    }
    return [a, b.slice(0, b.length - excess)];
  }
  if (strategy === 'only_first') {
    if (a.length <= excess) {
      throw new RangeError(`second sequence has ${b.length} tokens: with only_first truncation it leaves no room for the first in the pair budget of ${budget}`);
    }
    return [a.slice(0, a.length - excess), b];
  }
  // longest_first, as tokenizers computes it: keep the shorter whole when it fits in half.
  let n1 = a.length;
  let n2 = b.length;
  const swap = n1 > n2;
  if (swap) [n1, n2] = [n2, n1];
  n2 = n1 > budget ? n1 : Math.max(n1, budget - n1);
  if (n1 + n2 > budget) {
    n1 = Math.floor(budget / 2);
    n2 = n1 + (budget % 2);
  }
  if (swap) [n1, n2] = [n2, n1];
  return [a.slice(0, n1), b.slice(0, n2)];
}

/** Appends rows straight into growable Int32Arrays (one bulk copy per template piece). */
class Builder {
  private ids = new Int32Array(1024);
  private types = new Int32Array(1024);
  private offsets: number[] = [0];
  private length = 0;

  row(template: TemplatePiece[], a: number[], b: number[]): void {
    for (const piece of template) {
      const src = piece.kind === 'special' ? piece.ids : piece.kind === 'A' ? a : b;
      this.reserve(this.length + src.length);
      this.ids.set(src, this.length);
      this.types.fill(piece.typeId, this.length, this.length + src.length);
      this.length += src.length;
    }
    this.offsets.push(this.length);
  }

  finish(truncated: number, withTypes: boolean): TokenBatch {
    return {
      ids: this.ids.slice(0, this.length),
      offsets: Int32Array.from(this.offsets),
      typeIds: withTypes ? this.types.slice(0, this.length) : undefined,
      truncated,
    };
  }

  private reserve(size: number): void {
    if (size <= this.ids.length) return;
    const capacity = Math.max(size, this.ids.length * 2);
    const ids = new Int32Array(capacity);
    ids.set(this.ids.subarray(0, this.length));
    const types = new Int32Array(capacity);
    types.set(this.types.subarray(0, this.length));
    this.ids = ids;
    this.types = types;
  }
}

function parsePostProcessor(pp: unknown, idOf: (token: string) => number | null): PostTemplate {
  const plain: PostTemplate = { single: [{ kind: 'A', ids: [], typeId: 0 }], pair: [{ kind: 'A', ids: [], typeId: 0 }, { kind: 'B', ids: [], typeId: 1 }] };
  if (!pp || typeof pp !== 'object') return plain;
  const p = pp as Record<string, unknown>;
  const special = (tok: unknown, typeId: number): TemplatePiece => {
    const pair = tok as [string, number];
    return { kind: 'special', ids: [pair[1]], typeId };
  };
  switch (p.type) {
    case 'Sequence': {
      for (const inner of (p.processors as unknown[]) ?? []) {
        const t = inner as Record<string, unknown>;
        if (t.type === 'TemplateProcessing' || t.type === 'RobertaProcessing' || t.type === 'BertProcessing') {
          return parsePostProcessor(t, idOf);
        }
      }
      return plain;
    }
    case 'ByteLevel':
      return plain;
    case 'RobertaProcessing':
      return {
        single: [special(p.cls, 0), { kind: 'A', ids: [], typeId: 0 }, special(p.sep, 0)],
        pair: [special(p.cls, 0), { kind: 'A', ids: [], typeId: 0 }, special(p.sep, 0), special(p.sep, 0), { kind: 'B', ids: [], typeId: 0 }, special(p.sep, 0)],
      };
    case 'BertProcessing':
      return {
        single: [special(p.cls, 0), { kind: 'A', ids: [], typeId: 0 }, special(p.sep, 0)],
        pair: [special(p.cls, 0), { kind: 'A', ids: [], typeId: 0 }, special(p.sep, 0), { kind: 'B', ids: [], typeId: 1 }, special(p.sep, 1)],
      };
    case 'TemplateProcessing': {
      const specials = (p.special_tokens ?? {}) as Record<string, { ids: number[] }>;
      const convert = (items: unknown[]): TemplatePiece[] =>
        items.map((item) => {
          const it = item as { SpecialToken?: { id: string; type_id: number }; Sequence?: { id: 'A' | 'B'; type_id: number } };
          if (it.SpecialToken) {
            const name = it.SpecialToken.id;
            const ids = specials[name]?.ids ?? [idOf(name) ?? -1];
            if (ids.some((x) => x < 0)) throw new GainragError('E_TOKENIZER', `post-processor names unknown special token ${name}`);
            return { kind: 'special', ids, typeId: it.SpecialToken.type_id };
          }
          return { kind: it.Sequence!.id, ids: [], typeId: it.Sequence!.type_id };
        });
      return { single: convert((p.single as unknown[]) ?? []), pair: convert((p.pair as unknown[]) ?? []) };
    }
    default:
      throw new GainragError('E_TOKENIZER', `unsupported tokenizer post_processor type ${String(p.type)}`);
  }
}
