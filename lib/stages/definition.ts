// What a stage is to the CLI and to the cluster runner: one definition per stage, so that a flag
// means the same in `gainrag select ...` and in `gainrag cluster submit --stage select -- ...`.
// The definition owns the flags (yargs builder), the pure mapping from parsed flags to library
// options, the cheap checks, the model loads (through a cache a worker keeps) and the run.
import type { Argv } from 'yargs';
import type { Range, RecordFormat } from '../io/records.js';
import type { ModelCache, ParsedArgs } from './flags.js';

/** What every stage's options carry besides its own. */
export interface StageRunBase {
  data: string;
  out: string;
  format?: RecordFormat;
  range?: Range;
  device?: string;
  signal?: AbortSignal;
  warn?: (message: string) => void;
  onProgress?: (done: number, total?: number, note?: string) => void;
}

export interface StageDefinition<Options extends StageRunBase = StageRunBase, Models = unknown, Summary = unknown> {
  name: string;
  describe: string;
  /** What progress counts ('questions', 'records'). */
  unit: string;
  /** The stage's flags (--data and --out included). */
  builder(y: Argv): Argv;
  /** Parsed flags -> library options; pure (no file or model is touched). */
  optionsFromArgs(argv: ParsedArgs): Options;
  /** Cheap checks before any model loads (throws the library's errors). */
  check(options: Options): void;
  /** Input positions a shard or chunk boundary must be a multiple of (the stage's batch). */
  alignment(options: Options): number;
  /** Loads the stage's models, through `cache`. */
  load(options: Options, cache: ModelCache): Promise<Models>;
  run(models: Models, options: Options): Promise<Summary>;
  /** Records the run wrote (a chunk's count). */
  written(summary: Summary): number;
  /** The human summary (stdout without --json). */
  format(summary: Summary): string;
  /** For a resumable stage: where an interrupted run's work is and how to continue. */
  resumeHint?(options: Options): string;
  /** The model directories the run uses (for the random-weights note of the bundled models). */
  models?(options: Options): (string | undefined)[];
  /** A stage's verdict on a finished run (synthesize: every score non-finite is a failure). */
  verdict?(summary: Summary): string | undefined;
}
