// What the streaming pipeline stages (synthesize, select, generate) share: the options every
// stage takes for cancellation, progress, warnings and the slice of the input it works on, the
// exception that skips one bad record, and the option checks.
import type { Range, RecordFormat, Shard } from '../io/records.js';
import type { DatasetOptions } from '../io/datasets.js';

export interface StageStreamOptions {
  signal?: AbortSignal;
  /** Called after each batch with records done / total; `note` says what ran. */
  onProgress?: (done: number, total: number, note?: string) => void;
  /** Record-level problems (FILE:LINE: ...) that were skipped or repaired; counted in the summary. */
  warn?: (message: string) => void;
  /** Output format (default JSONL). */
  format?: RecordFormat;
  /** Only this shard of the input (lib/io/records.ts; merged shards equal one run byte for byte). */
  shard?: Shard;
  /** Only these input positions (cluster chunks); overrides shard. */
  range?: Range;
  /** The input's dataset format and field names (lib/io/datasets.ts; default: detected). */
  dataset?: DatasetOptions;
  /** The index whose passage store gives the text of a retrieve --no-text input (default: found from the input, lib/io/passage-source.ts). */
  indexDir?: string;
}

/** Thrown while preparing one record: the record is skipped with a warning and counted by `reason`. */
export class Skip extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

export function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}
