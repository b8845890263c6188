// Format-neutral stage I/O: JSONL, Arrow IPC or Parquet (lib/io/formats.ts, arrow-records.ts), and sharding.
//
// A shard is a deterministic partition of the input by record position: shard I of N reads one
// contiguous range, so shard outputs concatenated in shard order are the unsharded output
// (`gainrag merge`). Range boundaries fall on multiples of the stage's batch size: every shard
// then groups records into exactly the batches one unsharded run would, and as the engine's
// padded batches round differently when grouped differently, that is what makes the merged
// output byte-identical rather than merely close. The cluster runner's chunks are the same ranges.
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { GainragError } from '../errors.js';
import { AtomicJsonlWriter, readRecords, type RecordAt } from './jsonl.js';
import { isNestedDataset, mapRecord, readNestedDataset, type DatasetOptions } from './datasets.js';
import { checkRegularFile } from './input-file.js';
import { AtomicArrowWriter, countArrowRows, type ArrowContainer, type ArrowKind } from './arrow-records.js';
import { readArrowRecords } from './arrow-read.js';
import { inputFormat, type RecordFormat } from './formats.js';
import { parquetInfo } from './parquet.js';
import type { Layout } from './columns.js';
import type { ManifestSpec } from './manifest.js';
import { manifestIndexReference, openPassageSource, withPassageText } from './passage-source.js';

export { FORMATS, inputFormat, isColumnar, outputFormat, type RecordFormat } from './formats.js';

export interface Shard {
  /** 0-based. */
  index: number;
  count: number;
}

/**
 * Parses `I/N` (0 <= I < N), or `env`: Slurm job arrays (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN
 * of SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX of
 * GAINRAG_SHARD_COUNT, which the Job spec sets to its `completions`).
 */
export function parseShard(spec: string | undefined, env: NodeJS.ProcessEnv = process.env): Shard | undefined {
  if (spec === undefined || spec === '') return undefined;
  let index: number;
  let count: number;
  if (spec === 'env') {
    if (env.SLURM_ARRAY_TASK_ID !== undefined) {
      index = Number(env.SLURM_ARRAY_TASK_ID) - Number(env.SLURM_ARRAY_TASK_MIN ?? 0);
      count = Number(env.SLURM_ARRAY_TASK_COUNT);
    } else if (env.JOB_COMPLETION_INDEX !== undefined) {
      index = Number(env.JOB_COMPLETION_INDEX);
      count = Number(env.GAINRAG_SHARD_COUNT);
    } else {
      throw new GainragError('E_INVALID_ARG', '--shard env: neither SLURM_ARRAY_TASK_ID (Slurm job array) nor JOB_COMPLETION_INDEX (Kubernetes Indexed Job) is set');
    }
  } else {
    const m = /^(\d+)\/(\d+)$/.exec(spec.trim());
    if (!m) throw new GainragError('E_INVALID_ARG', `--shard must be I/N (0-based I, e.g. 0/4) or env, got ${JSON.stringify(spec)}`);
    index = Number(m[1]);
    count = Number(m[2]);
  }
  if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(index) || index < 0 || index >= count) {
    throw new GainragError('E_INVALID_ARG', `--shard: index ${index} of ${count} shards is out of range (0 <= I < N)`);
  }
  return { index, count };
}

export interface Range {
  /** First record position (0-based), inclusive. */
  start: number;
  /** Exclusive. */
  end: number;
}

/** Shard `shard` of `total` records, boundaries on multiples of `align` (whole batches). */
export function shardRange(total: number, shard: Shard, align = 1): Range {
  const blocks = Math.ceil(total / align);
  const b0 = Math.floor((shard.index * blocks) / shard.count);
  const b1 = Math.floor(((shard.index + 1) * blocks) / shard.count);
  return { start: Math.min(b0 * align, total), end: Math.min(b1 * align, total) };
}

/** Contiguous chunks of `size` records (the cluster runner's work items). */
export function chunkRanges(total: number, size: number): Range[] {
  const out: Range[] = [];
  for (let s = 0; s < total; s += size) out.push({ start: s, end: Math.min(s + size, total) });
  return out;
}

// Walks a JSONL file's lines with Buffer.indexOf, counting records (lines with a non-blank
// character) without parsing them. Stops at record `stop` and returns where it starts.
function scanJsonl(file: string, stop = Infinity): { records: number; byte: number; line: number; array: boolean; torn: boolean } {
  checkRegularFile(file);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw new GainragError('E_IO', `${file}: ${(err as Error).message}`, { cause: err });
  }
  const buf = Buffer.allocUnsafe(1 << 20);
  let records = 0;
  let line = 1;
  let lineStart = 0; // file offset of the current line
  let blank = true; // the current line has only whitespace so far
  let pos = 0;
  let first = true;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      let i = 0;
      while (i < n) {
        if (blank) {
          // Skip whitespace at the line start; the first other byte makes it a record.
          const c = buf[i];
          if (c === 10) {
            line++;
            lineStart = pos + i + 1;
            i++;
            continue;
          }
          if (c === 32 || c === 9 || c === 13) {
            i++;
            continue;
          }
          if (first && c === 0x5b) return { records: 0, byte: 0, line: 1, array: true, torn: false }; // '[': a JSON array file
          first = false;
          if (records === stop) return { records, byte: lineStart, line, array: false, torn: false };
          blank = false;
          records++;
        }
        const nl = buf.indexOf(10, i);
        if (nl < 0 || nl >= n) {
          i = n;
          break;
        }
        line++;
        lineStart = pos + nl + 1;
        blank = true;
        i = nl + 1;
      }
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return { records, byte: pos, line, array: false, torn: !blank };
}

/**
 * The shape of a JSONL file without parsing it: record count, whether it is a JSON array file
 * instead, and whether its last record lacks the final newline (a torn write or copy).
 */
export function jsonlShape(file: string): { records: number; array: boolean; torn: boolean } {
  const { records, array, torn } = scanJsonl(file);
  return { records, array, torn };
}

/** Records in a stage input or output: JSONL lines, JSON array elements, Arrow or Parquet rows. */
export async function countRecords(file: string, dataset?: DatasetOptions): Promise<number> {
  if (isNestedDataset(file, dataset)) {
    let n = 0;
    for await (const _ of readNestedDataset(file, dataset)) n++;
    return n;
  }
  const format = inputFormat(file);
  if (format === 'parquet') return (await parquetInfo(file)).rows;
  if (format !== 'jsonl') return countArrowRows(file);
  const scan = scanJsonl(file);
  if (!scan.array) return scan.records;
  let n = 0;
  for await (const _ of readRecords(file)) n++;
  return n;
}

export interface ReadOptions {
  range?: Range;
  /** For retrieval outputs holding index rows (older Arrow ones, --no-text ones): the index whose passage store resolves them (default: found, lib/io/passage-source.ts). */
  indexDir?: string;
  /** Datasets as downloaded (lib/io/datasets.ts): the format and field names. */
  dataset?: DatasetOptions;
}

export interface PositionedRecord extends RecordAt {
  /** 0-based record position in the whole file. */
  position: number;
}

/**
 * Streams the records of `file` in [range.start, range.end) (all when no range), whatever its
 * format. JSONL seeks to the range's first line; JSON arrays and Arrow files skip records
 * before it (Arrow skips whole batches undecoded, Parquet seeks to the row). `line` is the file line for JSONL and the
 * 1-based record number otherwise.
 */
export async function* readStageInput(file: string, options: ReadOptions = {}): AsyncGenerator<PositionedRecord> {
  const start = options.range?.start ?? 0;
  const end = options.range?.end ?? Infinity;
  if (start >= end) return;
  if (isNestedDataset(file, options.dataset)) {
    let position = 0;
    for await (const r of readNestedDataset(file, options.dataset)) {
      if (position >= end) return;
      if (position >= start) yield { ...r, position };
      position++;
    }
    return;
  }
  for await (const r of readFlatInput(file, options, start, end)) yield { ...r, record: mapRecord(r.record, options.dataset) };
}

async function* readFlatInput(file: string, options: ReadOptions, start: number, end: number): AsyncGenerator<PositionedRecord> {
  if (inputFormat(file) !== 'jsonl') {
    let position = start;
    for await (const record of readArrowRecords(file, { indexDir: options.indexDir }, start)) {
      if (position >= end) return;
      yield { record, line: position + 1, position };
      position++;
    }
    return;
  }
  const at = start > 0 ? scanJsonl(file, start) : undefined;
  if (at && !at.array && at.records < start) return; // the range starts past the end
  let position = at && !at.array ? start : 0;
  // A retrieve --no-text output: passage text from its index's store (lib/io/passage-source.ts).
  const ref = manifestIndexReference(file);
  let passages = ref ? openPassageSource(file, ref, options.indexDir) : undefined;
  const name = path.basename(file);
  try {
    for await (const r of readRecords(file, at && !at.array ? { byte: at.byte, line: at.line } : undefined)) {
      if (position >= end) return;
      if (position >= start) {
        // Index rows without text but no manifest naming the index (a copied file): only --index says where.
        if (!passages && holdsRowsOnly(r.record)) {
          if (options.indexDir === undefined) throw new GainragError('E_INDEX', `${name}:${r.line}: the ctxs hold index rows without passage text (retrieve --no-text) and no manifest (${name}.gainrag.json) names their index; pass --index DIR`);
          passages = openPassageSource(file, {}, options.indexDir);
        }
        yield { ...r, record: passages ? withPassageText(r.record, passages, `${name}:${r.line}`) : r.record, position };
      }
      position++;
    }
  } finally {
    passages?.close();
  }
}

// A JSONL --no-text record: a ctx with an index `row` and no text.
function holdsRowsOnly(record: unknown): boolean {
  const ctxs = (record as { ctxs?: unknown } | null)?.ctxs;
  if (!Array.isArray(ctxs)) return false;
  const c = ctxs[0] as { row?: unknown; text?: unknown } | null;
  return typeof c === 'object' && c !== null && typeof c.row === 'number' && c.text === undefined;
}

/** What stages write to: AtomicJsonlWriter or AtomicArrowWriter. */
export interface RecordWriter {
  readonly path: string;
  readonly partialPath: string;
  readonly resumedRecords: number;
  /** Queues one record; `extra`: values of the writer's extra columns (columnar outputs only). */
  write(record: unknown, extra?: Record<string, unknown>): void;
  /** Ends a stage batch (an Arrow record batch; JSONL: writes what is queued). */
  flush(): void;
  /** Publishes the output; a Parquet output is converted first, hence the promise (await it). */
  close(): void | Promise<void>;
  abort(options?: { keepPartial?: boolean }): void;
}

export interface WriterOptions {
  format: RecordFormat;
  /** Accepted for older callers; columnar outputs are always typed columns (lib/io/columns.ts). */
  kind?: ArrowKind | 'retrieval';
  /** Columns written beside the records' (columnar outputs; e.g. retrieve's index rows). */
  extra?: Layout['extra'];
  /** Arrow schema metadata (identical for every shard of one job). */
  metadata?: Record<string, string>;
  append?: boolean;
  inputs?: string[];
  /**
   * Publish `<file>.gainrag.json` (lib/io/manifest.ts) when the writer closes: stage, settings,
   * the identity of `input` (as it is when the writer opens), the input range covered, and the
   * records in the output (resumed ones included).
   */
  manifest?: ManifestSpec;
}

const CONTAINER: Record<Exclude<RecordFormat, 'jsonl'>, ArrowContainer> = { arrow: 'file', arrows: 'stream', parquet: 'parquet' };

export function openStageOutput(file: string, options: WriterOptions): RecordWriter {
  if (options.format === 'jsonl') return AtomicJsonlWriter.open(file, { append: options.append, inputs: options.inputs, manifest: options.manifest });
  const metadata = { ...options.metadata, ...(options.manifest ? { 'gainrag.stage': options.manifest.stage } : {}) };
  return new AtomicArrowWriter(file, 'columns', { append: options.append, container: CONTAINER[options.format], metadata, extra: options.extra, inputs: options.inputs, manifest: options.manifest });
}

/** The records already in a resumed writer's partial output, in order (JSONL, Arrow or Parquet). */
export async function* readResumed(writer: RecordWriter): AsyncGenerator<unknown> {
  if (writer instanceof AtomicArrowWriter) {
    yield* writer.readResumed();
    return;
  }
  for await (const { record } of readRecords(writer.partialPath)) yield record;
}

/** Resolves --shard into a range of `file` (undefined: the whole input). */
export async function shardOf(file: string, shard: Shard | undefined, align: number, dataset?: DatasetOptions): Promise<Range | undefined> {
  if (!shard) return undefined;
  return shardRange(await countRecords(file, dataset), shard, align);
}
