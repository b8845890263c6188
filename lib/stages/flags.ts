// Flags and pieces every stage definition shares (lib/stages/*): the sharding options, the
// text-backend flags (--llm, --generate-url, chat template ...), and the model cache through
// which a stage loads its models, so that a cluster worker keeps them across chunks.
import path from 'node:path';
import type { Argv } from 'yargs';
import { parseShard, type RecordFormat, type Shard, outputFormat } from '../io/records.js';
import { DEFAULT_SYSTEM_PROMPT } from '../pipeline/prompts.js';
import type { TextBackendOptions } from '../pipeline/text-backend.js';
import { CausalLM } from '../models/causal-lm.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ParsedArgs = Record<string, any>;

export interface ScaleArgs {
  shard?: string;
  format: string;
}

export function withScaleOptions<T>(y: Argv<T>): Argv<T & ScaleArgs> {
  return y
    .option('shard', {
      type: 'string',
      describe: 'process shard I/N of the input (0-based, contiguous by position; `gainrag merge` joins the outputs), or env (Slurm array / Kubernetes Indexed Job variables)',
    })
    .option('format', {
      choices: ['auto', 'jsonl', 'arrow', 'arrows', 'parquet'],
      default: 'auto',
      describe: 'output format (auto: by extension: .jsonl/.json JSONL, .arrow/.feather Arrow IPC file, .arrows/.ipc Arrow IPC stream, .parquet Parquet; any other is refused); inputs are detected by content',
    }) as unknown as Argv<T & ScaleArgs>;
}

export function scaleArgs(argv: { shard?: string; format?: string; out: string }): { shard?: Shard; format: RecordFormat } {
  return { shard: parseShard(argv.shard), format: outputFormat(argv.out, argv.format) };
}

/** The flags of the commands that generate text with an LLM (natively or through a server). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function textBackendFlags(y: any, llmHelp: string, device = 'cpu, cuda, cuda:N'): any {
  return y
    .option('llm', { type: 'string', describe: llmHelp })
    .option('generate-url', { type: 'string', describe: 'generate via an OpenAI-compatible server (base, /v1/completions or /v1/chat/completions)' })
    .option('generate-model', { type: 'string', describe: "model name for --generate-url (default: the server's first model)" })
    .option('generate-timeout', { type: 'number', default: 120, describe: 'seconds per --generate-url request' })
    .option('generate-concurrency', { type: 'number', default: 8, describe: 'requests in flight for --generate-url' })
    .option('chat-template', { choices: ['auto', 'none'] as const, default: 'auto' as const, describe: "auto: wrap prompts in the LLM's chat template when it has one" })
    .option('system-prompt', { type: 'string', default: DEFAULT_SYSTEM_PROMPT, defaultDescription: "the reference's", describe: "system message for chat templates ('' for none)" })
    .option('device', { type: 'string', describe: device })
    .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, describe: 'weights/compute dtype' });
}

/** The text-backend options of parsed text-backend flags (pure). */
export function textBackendArgs(a: ParsedArgs): TextBackendOptions {
  return {
    llm: a.llm, generateUrl: a['generate-url'], generateModel: a['generate-model'], generateTimeoutMs: a['generate-timeout'] * 1000,
    generateConcurrency: a['generate-concurrency'], chatTemplate: a['chat-template'], systemPrompt: a['system-prompt'], device: a.device, dtype: a.dtype,
  };
}

/** Models a process keeps between runs (a cluster worker between chunks), keyed by what loaded them. */
export type ModelCache = Map<string, Promise<unknown>>;

export function cached<T>(cache: ModelCache, key: string, load: () => Promise<T>): Promise<T> {
  let p = cache.get(key) as Promise<T> | undefined;
  if (!p) {
    p = load();
    cache.set(key, p);
    p.catch(() => cache.delete(key)); // a failed load is retried by the next chunk
  }
  return p;
}

/** A causal LM through the cache. */
export function cachedCausalLM(cache: ModelCache, dir: string, device?: string, dtype?: TextBackendOptions['dtype']): Promise<CausalLM> {
  return cached(cache, `causal-lm\0${path.resolve(dir)}\0${device}\0${dtype}`, () => CausalLM.load(dir, { device, dtype }));
}
