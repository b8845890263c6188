// The yargs options every sharded stage shares, so that wiring a stage is a few lines:
// `withScaleOptions(y)` in its builder and `...scaleArgs(argv)` into its options.
import type { Argv } from 'yargs';
import { parseShard, type RecordFormat, type Shard, outputFormat } from '../io/records.js';

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
      choices: ['auto', 'jsonl', 'arrow'],
      default: 'auto',
      describe: 'output format (auto: Arrow IPC stream for .arrow/.arrows/.ipc, else JSONL); inputs are detected by content',
    }) as unknown as Argv<T & ScaleArgs>;
}

export function scaleArgs(argv: { shard?: string; format?: string; out: string }): { shard?: Shard; format: RecordFormat } {
  return { shard: parseShard(argv.shard), format: outputFormat(argv.out, argv.format) };
}
