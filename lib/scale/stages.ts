// The stages the cluster runner can drive. A job carries the stage's own CLI arguments (as given
// to `gainrag cluster submit ... -- ARGS`); both the submitter (to check them before enqueueing)
// and the worker parse them with the stage command's yargs builder, so a flag means the same
// thing in a cluster as on the command line. Workers keep loaded models across chunks (cache).
import path from 'node:path';
import yargs, { type Argv, type CommandModule } from 'yargs';
import { GainragError } from '../errors.js';
import type { Range, RecordFormat } from '../io/records.js';
import { retrieveCommand } from '../cli/commands/retrieve.js';
import { synthesizeCommand } from '../cli/commands/synthesize.js';
import { pseudoWriter, selectCommand } from '../cli/commands/select.js';
import { generateCommand } from '../cli/commands/generate.js';
import { select } from '../pipeline/select.js';
import { generateAnswers } from '../pipeline/generate.js';
import { CrossEncoder } from '../models/cross-encoder.js';
import { openRetrieveResources, retrieve, type RetrieveResources } from '../retrieval/retrieve.js';
import { synthesize } from '../pipeline/synthesize.js';
import { OpenAIGenerator } from '../pipeline/openai-generate.js';
import { CausalLM } from '../models/causal-lm.js';

export const STAGES = ['retrieve', 'synthesize', 'select', 'generate'] as const;
export type StageName = (typeof STAGES)[number];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ParsedArgs = Record<string, any>;

export interface ChunkTask {
  stage: StageName;
  args: string[];
  data: string;
  range: Range;
  out: string;
  format: RecordFormat;
  /** Overrides the stage's --device (the worker's own GPU). */
  device?: string;
  signal?: AbortSignal;
}

/** Models a worker keeps between chunks, keyed by what loaded them. */
export type ModelCache = Map<string, Promise<unknown>>;

function cached<T>(cache: ModelCache, key: string, load: () => Promise<T>): Promise<T> {
  let p = cache.get(key) as Promise<T> | undefined;
  if (!p) {
    p = load();
    cache.set(key, p);
    p.catch(() => cache.delete(key)); // a failed load is retried by the next chunk
  }
  return p;
}

const commands: Record<StageName, CommandModule> = {
  retrieve: retrieveCommand as unknown as CommandModule,
  synthesize: synthesizeCommand as unknown as CommandModule,
  select: selectCommand as unknown as CommandModule,
  generate: generateCommand as unknown as CommandModule,
};

/** Parses a stage's CLI arguments with its own builder; --data and --out are the runner's. Errors: E_INVALID_ARG. */
export function parseStageArgs(stage: string, args: string[], data: string, out: string): ParsedArgs {
  if (!(STAGES as readonly string[]).includes(stage)) throw new GainragError('E_INVALID_ARG', `cluster: --stage must be one of ${STAGES.join(', ')}, got ${JSON.stringify(stage)}`);
  for (const a of args) {
    if (/^--(data|out|shard)(=|$)/.test(a)) throw new GainragError('E_INVALID_ARG', `cluster: ${a.split('=')[0]} is set by the runner (give --data/--out to submit; chunks replace --shard)`);
  }
  const builder = commands[stage as StageName].builder as (y: Argv) => Argv;
  let failure: string | undefined;
  const parsed = builder(yargs([...args, '--data', data, '--out', out]).option('json', { type: 'boolean', default: false }))
    .strict()
    .exitProcess(false)
    .help(false)
    .version(false)
    .fail((msg, err) => {
      failure = msg ?? err?.message;
    })
    .parseSync() as ParsedArgs;
  if (failure) throw new GainragError('E_INVALID_ARG', `cluster: ${stage} arguments: ${failure}`);
  return parsed;
}

/** Batch size the chunk boundaries must be multiples of (see lib/io/records.ts). */
export function stageAlignment(stage: StageName, a: ParsedArgs): number {
  return stage === 'retrieve' ? a['batch-size'] : a['batch-questions'];
}

/** Runs one chunk of a stage into `task.out` (atomically, by the stage's own writer). Returns records written. */
export async function runChunk(task: ChunkTask, cache: ModelCache): Promise<number> {
  const a = parseStageArgs(task.stage, task.args, task.data, task.out);
  const device = task.device ?? a.device;
  if (task.stage === 'retrieve') {
    const key = `retrieve\0${path.resolve(a.index)}\0${path.resolve(a.encoder)}\0${device}\0${a['max-length']}`;
    const resources = await cached<RetrieveResources>(cache, key, () => openRetrieveResources({ index: a.index, encoder: a.encoder, device, maxLength: a['max-length'] }));
    const s = await retrieve({
      index: a.index, encoder: a.encoder, data: task.data, out: task.out, topK: a['top-k'], batchSize: a['batch-size'], maxLength: a['max-length'], device,
      format: task.format, range: task.range, resources, signal: task.signal,
    });
    return s.questions;
  }
  const causalLM = () => cached(cache, `causal-lm\0${path.resolve(a.llm)}\0${device}\0${a.dtype}`, () => CausalLM.load(a.llm, { device, dtype: a.dtype }));
  const common = { data: task.data, out: task.out, format: task.format, range: task.range, signal: task.signal, batchQuestions: a['batch-questions'] };
  if (task.stage === 'select') {
    const selector = await cached(cache, `select\0${path.resolve(a.selector)}\0${device}\0${a.dtype}`, () => CrossEncoder.load(a.selector, { device, dtype: a.dtype }));
    const key = `pseudo\0${a.llm}\0${a['generate-url']}\0${a['generate-model']}\0${device}\0${a.dtype}\0${a['chat-template']}\0${a['system-prompt']}`;
    const writer = a['pseudo-passage'] ? await cached(cache, key, () => pseudoWriter({ ...a, device } as never)) : undefined;
    const s = await select(selector, {
      ...common, kDocs: a['k-docs'], candidates: a.candidates, pseudoPassage: a['pseudo-passage'], pseudoMaxNewTokens: a['pseudo-max-new-tokens'],
      maxLength: a['max-length'], batchTokens: a['batch-tokens'], modelId: path.resolve(a.selector), generator: writer?.generator, wrapPrompt: writer?.wrap,
    });
    return s.written;
  }
  if (task.stage === 'generate') {
    const s = await generateAnswers({
      ...common, lm: a['generate-url'] || !a.llm ? undefined : await causalLM(), llm: a.llm, generateUrl: a['generate-url'], generateModel: a['generate-model'],
      generateTimeoutMs: a['generate-timeout'] * 1000, generateConcurrency: a['generate-concurrency'], kDocs: a['k-docs'], task: a.task, instruction: a.instruction,
      noRetrieval: a['no-retrieval'], maxNewTokens: a['max-new-tokens'], chatTemplate: a['chat-template'], systemPrompt: a['system-prompt'], device, dtype: a.dtype,
    });
    return s.written;
  }
  const lm = await causalLM();
  const generator = a['generate-url']
    ? new OpenAIGenerator({ url: a['generate-url'], model: a['generate-model'], timeoutMs: a['generate-timeout'] * 1000, concurrency: a['generate-concurrency'], systemPrompt: a['system-prompt'] })
    : undefined;
  const s = await synthesize(lm, {
    data: task.data, out: task.out, topK: a['top-k'], alpha: a.alpha, task: a.task, instruction: a.instruction, pseudoPassage: a['pseudo-passage'],
    maxNewTokens: a['max-new-tokens'], pseudoMaxNewTokens: a['pseudo-max-new-tokens'], chatTemplate: a['chat-template'], systemPrompt: a['system-prompt'],
    batchQuestions: a['batch-questions'], modelId: path.resolve(a.llm), generator, format: task.format, range: task.range, signal: task.signal,
  });
  return s.written;
}
