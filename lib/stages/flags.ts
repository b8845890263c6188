// Flags and pieces every stage definition shares (lib/stages/*): the sharding options, the
// text-backend flags (--llm, --generate-url, chat template ...), and the model cache through
// which a stage loads its models, so that a cluster worker keeps them across chunks.
import path from 'node:path';
import type { Argv } from 'yargs';
import { parseShard, type RecordFormat, type Shard, outputFormat } from '../io/records.js';
import { DATA_FORMATS, type DataFormat, type DatasetOptions } from '../io/datasets.js';
import { DEFAULT_SYSTEM_PROMPT } from '../pipeline/prompts.js';
import type { TextBackendOptions } from '../pipeline/text-backend.js';
import { backendFlagOptions, withBackendFlags } from './backend-flags.js';
import { CausalLM } from '../models/causal-lm.js';
import { GainragError } from '../errors.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ParsedArgs = Record<string, any>;

export interface ScaleArgs {
  shard?: string;
  format: string;
  'data-format'?: string;
  'question-field'?: string;
  'answers-field'?: string;
  'id-field'?: string;
}

export function withScaleOptions<T>(y: Argv<T>): Argv<T & ScaleArgs> {
  return withInputOptions(y)
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

/** --index for the stages after retrieve: where a --no-text input's passage text is (lib/io/passage-source.ts). */
export function withPassageIndexOption<T>(y: Argv<T>): Argv<T & { index?: string }> {
  return y.option('index', { type: 'string', describe: 'index directory of a retrieve --no-text input (default: the one of its name beside it, else where retrieve found it)' }) as unknown as Argv<T & { index?: string }>;
}

/** How the input is read: datasets as downloaded (lib/io/datasets.ts). */
export function withInputOptions<T>(y: Argv<T>): Argv<T & ScaleArgs> {
  return y
    .option('data-format', { choices: DATA_FORMATS, describe: 'the input as its dataset ships it (default auto: detected by content; see README "Datasets as downloaded")' })
    .option('question-field', { type: 'string', describe: 'input field (dot path) holding the question' })
    .option('answers-field', { type: 'string', describe: 'input field (dot path) holding the answers (a string, strings, or {text} objects)' })
    .option('id-field', { type: 'string', describe: 'input field (dot path) holding the record id' }) as unknown as Argv<T & ScaleArgs>;
}

export function scaleArgs(argv: ScaleArgs & { out: string }): { shard?: Shard; format: RecordFormat; dataset?: DatasetOptions } {
  const dataset: DatasetOptions = {};
  if (argv['data-format'] !== undefined) dataset.dataFormat = argv['data-format'] as DataFormat;
  if (argv['question-field'] !== undefined) dataset.questionField = argv['question-field'];
  if (argv['answers-field'] !== undefined) dataset.answersField = argv['answers-field'];
  if (argv['id-field'] !== undefined) dataset.idField = argv['id-field'];
  return { shard: parseShard(argv.shard), format: outputFormat(argv.out, argv.format), ...(Object.keys(dataset).length > 0 ? { dataset } : {}) };
}

/** What textBackendFlags parses. */
export interface TextBackendArgs {
  llm?: string;
  'generate-url'?: string;
  'generate-model'?: string;
  'generate-timeout': number;
  'generate-concurrency': number;
  'chat-template': 'auto' | 'none';
  'system-prompt': string;
  device?: string;
  dtype?: 'float32' | 'float16' | 'bfloat16' | 'int8';
}

/** The flags of the commands that generate text with an LLM (natively or through a server). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function textBackendFlags(y: any, llmHelp: string, device = 'cpu, cuda, cuda:N'): any {
  const flags = y
    .option('llm', { type: 'string', describe: llmHelp })
    .option('generate-url', { type: 'string', describe: 'generate via an OpenAI-compatible server (base, /v1/completions or /v1/chat/completions)' })
    .option('generate-model', { type: 'string', describe: "model name for --generate-url (default: the server's first model)" })
    .option('generate-timeout', { type: 'number', default: 120, describe: 'seconds per --generate-url request' })
    .option('generate-concurrency', { type: 'number', default: 8, describe: 'requests in flight for --generate-url' })
    .option('chat-template', { choices: ['auto', 'none'] as const, default: 'auto' as const, describe: "auto: wrap prompts in the LLM's chat template when it has one" })
    .option('system-prompt', { type: 'string', default: DEFAULT_SYSTEM_PROMPT, defaultDescription: "the reference's", describe: "system message for chat templates ('' for none)" })
    .option('device', { type: 'string', describe: device })
    .option('dtype', { choices: ['float32', 'float16', 'bfloat16', 'int8'] as const, describe: 'weights/compute dtype (int8: dynamic int8 products, CPU with oneDNN)' });
  return withBackendFlags(flags);
}

/** The text-backend options of parsed text-backend flags (pure). */
export function textBackendArgs(a: ParsedArgs): TextBackendOptions {
  return {
    llm: a.llm, generateUrl: a['generate-url'], generateModel: a['generate-model'], generateTimeoutMs: a['generate-timeout'] * 1000,
    generateConcurrency: a['generate-concurrency'], chatTemplate: a['chat-template'], systemPrompt: a['system-prompt'], device: a.device, dtype: a.dtype,
    ...backendFlagOptions(a),
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

// yargs turns an option given twice into an array of both values, which every command would then
// misread ('1,5'.split on an array, NaN from Number([1, 2])). No option of ours means "give it
// again to add more" except those declared as arrays, so any other repeated option is refused.
export function refuseRepeatedOptions(argv: Record<string, unknown>, y: { getOptions(): { array?: string[] } }): void {
  const arrays = new Set(y.getOptions().array ?? []);
  for (const [key, value] of Object.entries(argv)) {
    // yargs also sets a camelCase copy of every dashed name: the dashed one is reported. `_` and
    // `--` hold the positional words and what follows a bare `--` (cluster submit's stage flags).
    if (key === '_' || key === '--' || key === '$0' || !Array.isArray(value) || arrays.has(key) || /[A-Z]/.test(key)) continue;
    throw new GainragError('E_INVALID_ARG', `--${key} was given ${value.length} times (${value.map((v) => JSON.stringify(v)).join(', ')}); give it once`);
  }
}
