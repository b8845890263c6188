// The stages the cluster runner can drive: the stage table (lib/stages), so that a job's
// arguments (as given to `gainrag cluster submit ... -- ARGS`) mean exactly what they mean on the
// command line. Both the submitter (to check them before enqueueing) and the worker parse them
// with the stage's own builder; workers keep loaded models across chunks (cache).
import yargs, { type Argv } from 'yargs';
import { GainragError } from '../errors.js';
import type { Range, RecordFormat } from '../io/records.js';
import { refuseRepeatedOptions } from '../stages/flags.js';
import { STAGES, STAGE_TABLE, type ModelCache, type ParsedArgs, type StageName } from '../stages/index.js';

export { STAGES, type StageName, type ModelCache };

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

/** Parses a stage's CLI arguments with its own builder; --data and --out are the runner's. Errors: E_INVALID_ARG. */
export function parseStageArgs(stage: string, args: string[], data: string, out: string): ParsedArgs {
  if (!(STAGES as readonly string[]).includes(stage)) throw new GainragError('E_INVALID_ARG', `cluster: --stage must be one of ${STAGES.join(', ')}, got ${JSON.stringify(stage)}`);
  for (const a of args) {
    if (/^--(data|out|shard)(=|$)/.test(a)) throw new GainragError('E_INVALID_ARG', `cluster: ${a.split('=')[0]} is set by the runner (give --data/--out to submit; chunks replace --shard)`);
  }
  let failure: string | undefined;
  const parsed = STAGE_TABLE[stage as StageName].builder(yargs([...args, '--data', data, '--out', out]).option('json', { type: 'boolean', default: false }) as Argv)
    .strict()
    .middleware(refuseRepeatedOptions as never, true)
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

/** The stage's own checks of parsed arguments (what the CLI checks before loading models). Errors: E_INVALID_ARG. */
export function checkStageArgs(stage: StageName, parsed: ParsedArgs): void {
  const def = STAGE_TABLE[stage];
  try {
    def.check(def.optionsFromArgs(parsed) as never);
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError) throw new GainragError('E_INVALID_ARG', `cluster: ${stage} arguments: ${err.message}`, { cause: err });
    throw err;
  }
}

/** Batch size the chunk boundaries must be multiples of (see lib/io/records.ts), from parseStageArgs' result. */
export function stageAlignment(stage: StageName, parsed: ParsedArgs): number {
  const def = STAGE_TABLE[stage];
  return def.alignment(def.optionsFromArgs(parsed) as never);
}

/** Runs one chunk of a stage into `task.out` (atomically, by the stage's own writer). Returns records written. */
export async function runChunk(task: ChunkTask, cache: ModelCache): Promise<number> {
  const def = STAGE_TABLE[task.stage];
  const base = def.optionsFromArgs(parseStageArgs(task.stage, task.args, task.data, task.out)) as ParsedArgs;
  const options = { ...base, shard: undefined, range: task.range, format: task.format, device: task.device ?? base.device, signal: task.signal } as never;
  def.check(options);
  const models = await def.load(options, cache);
  return def.written(await def.run(models, options));
}
