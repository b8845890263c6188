// Merging shard outputs: concatenation in shard order. JSONL files are copied byte for byte;
// Arrow files and streams keep the first schema message, every record batch and one end marker
// (plus the file format's footer) (lib/io/arrow-records.ts); Parquet shards' rows are rewritten
// into one Parquet file, batch by batch (lib/io/parquet.ts). The result is written like every output (lib/io/partial-file.ts:
// validated, locked, OUT.partial renamed when complete).
//
// Before a byte is written, the shards must be one job's, complete and in order. Shards with
// manifests (lib/io/manifest.ts) must agree on stage, settings and input identity, and their
// input ranges must tile [0, N) in the order given (N: the input's records, when the input is
// still the one they were computed from); each must hold the records its manifest says. A
// shard without a manifest (written by an older gainrag, or by hand) is merged as given, with a
// warning that none of this could be checked. JSONL shards must be JSONL (not a JSON array) and
// end with a newline: a torn last line would glue two records together.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { GainragError, ioError } from '../errors.js';
import { columnarSchema, schemaStreamBytes } from '../io/arrow-records.js';
import { mergeArrowFiles } from '../io/arrow-merge.js';
import { parquetFilesBatches, writeParquetStream } from '../io/parquet.js';
import { canonicalJson, readManifest, inputIdentity, type OutputManifest } from '../io/manifest.js';
import { validateOutput, type OutputLock } from '../io/output.js';
import { PartialFile } from '../io/partial-file.js';
import { countRecords, inputFormat, jsonlShape, type RecordFormat } from '../io/records.js';
import { outputFormat } from '../io/formats.js';

export interface MergeSummary {
  out: string;
  format: RecordFormat;
  inputs: number;
  records: number;
  bytes: number;
  /** True when every shard had a manifest and they were checked (the output then has one too). */
  checked: boolean;
}

export interface MergeOptions {
  /** A lock the caller already holds on `out` (the cluster submitter holds it for the whole run). */
  lock?: OutputLock;
  /** Where warnings go (shards without manifests, an input that changed). */
  warn?: (message: string) => void;
  /** The output's format was chosen by --format (the cluster's): its extension is not checked against the shards'. */
  formatChosen?: boolean;
}

function checkShardFile(file: string): void {
  let st;
  try {
    st = statSync(file);
  } catch (err) {
    throw ioError(err, `merge: cannot read shard ${file}`);
  }
  if (!st.isFile()) throw new GainragError('E_INVALID_ARG', `merge: shard ${file} is ${st.isDirectory() ? 'a directory, not a regular file' : 'not a regular file'}`);
}

/** The merged output's manifest, or null when the shards carry none. Errors: E_DATA. */
async function checkManifests(inputs: string[], counts: number[], warn: (m: string) => void): Promise<Omit<OutputManifest, 'records'> | null> {
  const manifests = inputs.map((f) => readManifest(f));
  const missing = inputs.filter((_, i) => !manifests[i]);
  const withM = inputs.map((f, i) => ({ file: f, m: manifests[i], records: counts[i] })).filter((x) => x.m) as { file: string; m: OutputManifest; records: number }[];
  for (const { file, m, records } of withM) {
    if (m.records !== records) throw new GainragError('E_DATA', `merge: ${file} holds ${records} records but its manifest says ${m.records} (changed after it was written?)`);
  }
  if (withM.length > 0) {
    const first = withM[0];
    for (const { file, m } of withM.slice(1)) {
      const what =
        m.stage !== first.m.stage ? `a ${m.stage} output, ${first.file} a ${first.m.stage} output`
        : canonicalJson(m.settings) !== canonicalJson(first.m.settings) ? `written with other settings than ${first.file}`
        : canonicalJson(m.input) !== canonicalJson(first.m.input) ? `computed from another input (or another version of it) than ${first.file}`
        : undefined;
      if (what) throw new GainragError('E_DATA', `merge: ${file} is ${what}; shards of one job share stage, settings and input`);
    }
  }
  if (missing.length > 0) {
    const names = missing.length > 3 ? `${missing.slice(0, 3).join(', ')} and ${missing.length - 3} more` : missing.join(', ');
    warn(`merge: ${names} ${missing.length === 1 ? 'has' : 'have'} no manifest (.gainrag.json): cannot check that the shards are one job's, complete and in order`);
  }
  // Ranges: in the order given, each starts where the previous ended. Without every manifest
  // only the order of the known ones is checked (an unknown shard may fill a gap).
  let prev: { file: string; end: number } | undefined;
  for (const { file, m } of withM) {
    const r = m.range ?? { start: 0, end: Infinity };
    if (m.range === null && withM.length > 1) throw new GainragError('E_DATA', `merge: ${file} covers its whole input, so it overlaps every other shard`);
    if (prev && r.start < prev.end) {
      throw new GainragError('E_DATA', `merge: ${file} covers input positions from ${r.start}, which ${prev.file} (up to ${prev.end - 1}) already covers: shards overlap or are out of order (give them shard 0 first)`);
    }
    prev = { file, end: r.end };
  }
  if (missing.length === 0) {
    let end = 0;
    for (const { file, m } of withM) {
      const start = m.range?.start ?? 0;
      if (start > end) throw new GainragError('E_DATA', `merge: input positions ${end}-${start - 1} are in no shard (before ${file}): a shard is missing`);
      end = m.range?.end ?? Infinity;
    }
  }
  if (missing.length > 0 || withM.length === 0) return null;
  const first = withM[0].m;
  const last = withM[withM.length - 1];
  let complete = last.m.range === null;
  if (!complete) {
    // The end of the last shard must be the end of the input: only knowable while it is unchanged.
    const now = first.input ? inputIdentity(first.input.path) : null;
    if (first.input && now && canonicalJson(now) === canonicalJson(first.input)) {
      const total = await countRecords(first.input.path);
      if (last.m.range!.end !== total) {
        throw new GainragError('E_DATA', `merge: the shards cover input positions 0-${last.m.range!.end - 1} of ${total} in ${first.input.path}: the last shard(s) are missing`);
      }
      complete = true;
    } else {
      warn(`merge: ${first.input ? `${first.input.path} changed or is gone since the shards were written` : 'the shards name no input'}; cannot check that the last shard reaches its end`);
    }
  }
  return { format: first.format, stage: first.stage, settings: first.settings, input: first.input, range: complete ? null : { start: 0, end: last.m.range!.end } };
}

export async function mergeOutputs(inputs: string[], out: string, options: MergeOptions = {}): Promise<MergeSummary> {
  const warn = options.warn ?? (() => undefined);
  if (inputs.length === 0) throw new GainragError('E_INVALID_ARG', 'merge: no input files');
  // --out first: no link, FIFO or directory there, and not (a hard link to) one of the shards.
  validateOutput(out, 'file', { inputs, label: 'merge: --out' });
  for (const f of inputs) checkShardFile(f);
  const formats = inputs.map((f) => inputFormat(f));
  const format = formats[0];
  const odd = inputs.findIndex((_, i) => formats[i] !== format);
  if (odd >= 0) throw new GainragError('E_DATA', `merge: ${inputs[odd]} is ${formats[odd]} but ${inputs[0]} is ${format}; shards of one job share a format`);
  let named: RecordFormat | undefined;
  try {
    named = options.formatChosen ? undefined : outputFormat(out);
  } catch {
    named = undefined; // an extension of no format: the shards' format, whatever the name
  }
  if (named !== undefined && named !== format) throw new GainragError('E_INVALID_ARG', `merge: the shards are ${format} but --out ${out} names ${named}; name the output for the shards' format`);
  const counts: number[] = [];
  for (const f of inputs) {
    if (format !== 'jsonl') {
      counts.push(await countRecords(f)); // checks the framing: a truncated stream is E_DATA
      continue;
    }
    const shape = jsonlShape(f);
    if (shape.array) throw new GainragError('E_DATA', `merge: ${f} is a JSON array file, not a JSONL stage output`);
    if (shape.torn) throw new GainragError('E_DATA', `merge: ${f} does not end with a newline: its last line is torn (a shard cut short?)`);
    counts.push(shape.records);
  }
  const base = await checkManifests(inputs, counts, warn);
  const file = PartialFile.open(out, {
    inputs,
    lock: options.lock,
    label: 'merge: --out',
    manifest: base ? { stage: base.stage, settings: base.settings, inputIdentity: base.input, range: base.range ?? undefined } : undefined,
  });
  const records = counts.reduce((a, b) => a + b, 0);
  try {
    if (format === 'arrow' || format === 'arrows') {
      mergeArrowFiles(inputs, (bytes) => file.write(bytes), format === 'arrow' ? 'file' : 'stream');
    } else if (format === 'parquet') {
      // Shards with rows must share one schema (an empty shard's says nothing: lib/io/columns.ts).
      const withRows = inputs.filter((_, i) => counts[i] > 0);
      const schemas = await Promise.all((withRows.length > 0 ? withRows : inputs.slice(0, 1)).map(async (f) => Buffer.from(schemaStreamBytes(await columnarSchema(f)))));
      const odd = schemas.findIndex((s) => !s.equals(schemas[0]));
      if (odd >= 0) throw new GainragError('E_DATA', `merge: ${withRows[odd]}: its Arrow schema differs from ${withRows[0]}'s (outputs of different stages or settings?)`);
      await writeParquetStream(parquetFilesBatches(withRows), schemas[0], (bytes) => file.write(bytes));
    } else {
      const buf = Buffer.allocUnsafe(1 << 20);
      for (const f of inputs) {
        const src = openSync(f, 'r');
        try {
          for (let pos = 0; ; ) {
            const n = readSync(src, buf, 0, buf.length, pos);
            if (n === 0) break;
            file.write(buf.subarray(0, n));
            pos += n;
          }
        } finally {
          closeSync(src);
        }
      }
    }
    const bytes = file.position;
    file.publish(records);
    return { out, format, inputs: inputs.length, records, bytes, checked: base !== null };
  } catch (err) {
    file.discard();
    if (err instanceof GainragError) throw err;
    throw ioError(err, `merge into ${out}`);
  }
}
