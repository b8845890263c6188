// The one place a text backend is built from flags: the native LLM, or an OpenAI-compatible
// server (with the LLM directory, when given, for its tokenizer, context length and chat
// template), plus the chat-template wrapper every prompt goes through. Synthesize (answers and
// pseudo-passages), select (pseudo-passages), generate (answers) and compare use it.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CausalLM } from '../models/causal-lm.js';
import { configTemplater } from '../models/chat-template.js';
import { Tokenizer } from '../tokenizer.js';
import { resolveModel } from '../models/hub.js';
import { GainragError } from '../errors.js';
import { OpenAIGenerator, type GenerationPrompt, type TextGenerator } from './openai-generate.js';
import { DEFAULT_SYSTEM_PROMPT, promptWrapper, type ChatTemplateMode, type ChatTemplater } from './prompts.js';

export interface TextBackendOptions {
  /** A loaded model (reused); else `llm` is loaded when its weights are needed. */
  lm?: CausalLM;
  /** Causal LM directory: generation with it, or (with generateUrl) its tokenizer and chat template. */
  llm?: string;
  generateUrl?: string;
  generateModel?: string;
  generateTimeoutMs?: number;
  generateConcurrency?: number;
  chatTemplate?: ChatTemplateMode;
  systemPrompt?: string;
  device?: string;
  dtype?: 'float32' | 'bfloat16' | 'float16' | 'int8';
  /** Retries of a server request after 429 / 5xx / network errors (OpenAIGenerator). */
  retries?: number;
  /** Environment variable holding the server's bearer token. */
  apiKeyEnv?: string;
  /** Native generation: start templated prompts with two BOS, as vLLM 0.7.3 (the reference) did. */
  doubleBos?: boolean;
  /** Load the LLM's weights even when a server generates (synthesize scores with them). */
  needWeights?: boolean;
  /** How `llm` is loaded (a worker passes its model cache); default CausalLM.load. */
  loadLM?: (dir: string) => Promise<CausalLM>;
}

/** Texts for prompts, with per-prompt new-token limits; the engine also reports tokens and stops. */
export interface LimitedGeneration {
  texts: string[];
  tokens?: number[];
  atLimit?: boolean[];
}

export interface TextBackend {
  /** 'native' or the server's description (in resume settings and summaries). */
  readonly description: string;
  /** The loaded LLM, when its weights were loaded. */
  readonly lm?: CausalLM;
  readonly tokenizer?: Tokenizer;
  /** Tokens the model sees at most (Infinity when a server's model is unknown). */
  readonly contextLength: number;
  /** Turns a raw prompt into what the model sees (chat template, when the model has one and mode is auto). */
  readonly wrap: (raw: string) => string;
  /** The same backend as a TextGenerator (one limit for all prompts, cut to the room left in the context). */
  readonly generator: TextGenerator;
  /** Generation with one limit per prompt; `onDone(k)`: k prompts finished. */
  generateLimited(prompts: GenerationPrompt[], limits: number[], signal?: AbortSignal, onDone?: (done: number) => void): Promise<LimitedGeneration>;
}

/** Builds the backend the options ask for; undefined when they name neither an LLM nor a server. */
export async function openTextBackend(o: TextBackendOptions): Promise<TextBackend | undefined> {
  const mode = o.chatTemplate ?? 'auto';
  const system = o.systemPrompt ?? DEFAULT_SYSTEM_PROMPT;
  const load = o.loadLM ?? ((dir: string) => CausalLM.load(dir, { device: o.device, dtype: o.dtype }));
  const lm = o.lm ?? (o.llm && (o.needWeights || !o.generateUrl) ? await load(o.llm) : undefined);
  if (o.generateUrl) {
    const server = new OpenAIGenerator({
      url: o.generateUrl, model: o.generateModel, timeoutMs: o.generateTimeoutMs, concurrency: o.generateConcurrency, systemPrompt: system, retries: o.retries, apiKeyEnv: o.apiKeyEnv,
    });
    const dir = lm?.dir ?? (o.llm ? await resolveModel(o.llm) : undefined); // a hub id: its snapshot directory
    const tokenizer = lm?.tokenizer ?? (dir ? Tokenizer.load(dir) : undefined);
    const contextLength = lm?.contextLength ?? (dir ? configContextLength(dir) : Infinity);
    // The server's model is named by --llm's directory (for the Mistral rule); a vLLM server adds
    // its own BOS to a templated prompt, so doubleBos is for native generation only.
    const templater: ChatTemplater | undefined = lm ?? (tokenizer && dir ? configTemplater(tokenizer.config, dir) : undefined);
    const wrap = templater ? promptWrapper(templater, mode, Boolean(tokenizer?.config.chatTemplate), system) : (p: string) => p;
    const generateLimited = async (prompts: GenerationPrompt[], limits: number[], signal?: AbortSignal): Promise<LimitedGeneration> => {
      // The server takes one limit per request; group by limit (almost always one group).
      const texts = new Array<string>(prompts.length);
      for (const [limit, rows] of groupBy(limits)) {
        const r = await server.generate(rows.map((i) => prompts[i]), { maxNewTokens: limit, signal });
        rows.forEach((i, k) => (texts[i] = r[k]));
      }
      return { texts };
    };
    return { description: server.description, lm, tokenizer, contextLength, wrap, generator: server, generateLimited };
  }
  if (!lm) return undefined;
  return nativeBackend(lm, promptWrapper(lm, mode, Boolean(lm.tokenizer.config.chatTemplate), system, { doubleBos: o.doubleBos }));
}

/** What nativeGenerator needs of a model (CausalLM satisfies it; tests may stand in their own). */
export interface GeneratingModel {
  readonly contextLength: number;
  readonly tokenizer: { encodeRaw(texts: string[]): Promise<number[][]> };
  generate(prompts: string[], options: { maxNewTokens: number; temperature?: number; signal?: AbortSignal }): Promise<{ texts: string[] }>;
}

/**
 * Greedy generation with the model itself. A prompt near the end of the context gets fewer new
 * tokens (what is left of the context) rather than a shorter passage, so the prompt that is
 * answered is the one that was scored; prompts are grouped by that limit, one call per group.
 */
export function nativeGenerator(lm: GeneratingModel): TextGenerator {
  return {
    description: 'native',
    async generate(prompts, options) {
      const wrapped = prompts.map((p) => p.wrapped);
      const lengths = (await lm.tokenizer.encodeRaw(wrapped)).map((t) => t.length);
      const out = new Array<string>(prompts.length).fill('');
      // No room to answer: the empty answer (scores 0).
      const limits = lengths.map((n) => Math.min(options.maxNewTokens, lm.contextLength - n));
      for (const [room, rows] of groupBy(limits)) {
        if (room < 1) continue;
        const r = await lm.generate(rows.map((i) => wrapped[i]), { maxNewTokens: room, temperature: 0, signal: options.signal });
        rows.forEach((i, k) => (out[i] = r.texts[k]));
      }
      return out;
    },
  };
}

function nativeBackend(lm: CausalLM, wrap: (p: string) => string): TextBackend {
  const eos = new Set(lm.info.eosTokenIds);
  return {
    description: 'native', lm, tokenizer: lm.tokenizer, contextLength: lm.contextLength, wrap, generator: nativeGenerator(lm),
    async generateLimited(prompts, limits, signal, onDone) {
      const texts = new Array<string>(prompts.length), tokens = new Array<number>(prompts.length), atLimit = new Array<boolean>(prompts.length);
      let before = 0;
      for (const [limit, rows] of groupBy(limits)) {
        const r = await lm.generate(rows.map((i) => prompts[i].wrapped), { maxNewTokens: limit, signal, onProgress: (done) => onDone?.(before + done) });
        before += rows.length;
        rows.forEach((i, k) => {
          const ids = r.tokenIds[k];
          texts[i] = r.texts[k];
          tokens[i] = ids.length;
          atLimit[i] = ids.length >= limit && !eos.has(ids[ids.length - 1]);
        });
      }
      return { texts, tokens, atLimit };
    },
  };
}

/** The model's context length from its config.json (a server's model, weights not loaded). */
function configContextLength(dir: string): number {
  let config: { max_position_embeddings?: unknown };
  try {
    config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  } catch (err) {
    throw new GainragError('E_MODEL_CONFIG', `${path.join(dir, 'config.json')}: ${(err as Error).message}`, { cause: err });
  }
  return typeof config.max_position_embeddings === 'number' && config.max_position_embeddings > 0 ? config.max_position_embeddings : Infinity;
}

function groupBy(values: number[]): Map<number, number[]> {
  const m = new Map<number, number[]>();
  values.forEach((v, i) => (m.get(v) ?? m.set(v, []).get(v)!).push(i));
  return m;
}
