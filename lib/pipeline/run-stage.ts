// The one skeleton of every streaming stage (synthesize, select, generate). A stage supplies
// what is its own: how one record is prepared (or skipped), how a batch is processed, how an
// output record is accounted in its summary, and the settings its output depends on. The runner
// owns the rest, with one rule for each of these:
//
// - input range: --shard or a cluster chunk's range, boundaries on multiples of the batch size;
// - batches: blocks of `batchQuestions` absolute input positions (skipped records leave holes),
//   so that a resumed run, a shard and a cluster chunk group -- and round -- their records
//   exactly as one uninterrupted run does (the engine's padded batches round differently when
//   grouped differently);
// - `--resume` onto a finished output: nothing to redo, but only when the file is this stage's
//   output for this input and, when it carries a manifest, was made with the same settings;
//   its records are replayed into the summary;
// - `--resume` from OUT.partial: the settings must equal the interrupted run's
//   (OUT.partial.settings.json), finished records are matched to the input by question, and a
//   record skipped before is skipped again (the same decision, counted again);
// - cancellation: checked before every record; E_CANCELLED leaves OUT.partial for --resume;
// - damaged input (invalid JSON): the records read before it are processed and written first,
//   so that --resume starts right after them;
// - input rows: lib/io/stage-input.ts (a columnar input's rows are read from its typed columns);
// - output: OUT.partial, flushed after every batch, renamed when the input is done, with a
//   manifest (stage, settings, input identity, range, count) beside it.
import { existsSync, rmSync } from 'node:fs';
import { countRecords, openStageOutput, readResumed, shardOf } from '../io/records.js';
import { readStageRows, type StageRow } from '../io/stage-input.js';
import { readManifest } from '../io/manifest.js';
import { checkDatasetOptions } from '../io/datasets.js';
import { validateOutput } from '../io/output.js';
import { GainragError } from '../errors.js';
import { recordResumeSettings, replayFinishedOutput, type FinishedOutputCheck } from './resume.js';
import { Skip, type StageStreamOptions } from './stage.js';

/** Where a stage reads and writes, and how it is run. */
export interface StageIO extends StageStreamOptions {
  data: string;
  out: string;
  resume?: boolean;
}

/** The counts every stage summary starts with. */
export interface StageSummaryBase {
  input: string;
  output: string;
  /** Input records seen (in the range). */
  records: number;
  written: number;
  resumed: number;
  skipped: number;
  skippedReasons: Record<string, number>;
  /** Whole run. */
  seconds: number;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type OutputRecord = Record<string, any>;

export interface StageSpec<Item> {
  /** 'synthesize', 'select', 'generate': messages, the manifest, the cancellation error. */
  stage: string;
  io: StageIO;
  batchQuestions: number;
  /** What the output depends on (checked on --resume, recorded in the manifest). */
  settings: Record<string, unknown>;
  /** What a finished output of this stage looks like (for --resume onto it). */
  finished: FinishedOutputCheck<OutputRecord & { question: unknown }>;
  /**
   * Checks one input row and builds the work item; throws Skip for a bad record. A row of a
   * columnar input carries its typed columns (lib/io/stage-input.ts): a stage reads what it
   * needs from them; `row.record()` decodes the whole record.
   */
  prepare(row: StageRow, where: string): Item | Promise<Item>;
  /** Processes one batch; returns one output record per item, in order. `report(k)`: k items of the batch done. */
  process(items: Item[], report: (k: number) => void): Promise<OutputRecord[]>;
  /** Adds one output record (written now, resumed, or replayed) to the stage's own summary fields. */
  account(record: OutputRecord): void;
}

/**
 * Runs a stage over `spec.io.data` into `spec.io.out` (see the top of this file), filling the
 * base counts of `summary`. Errors: E_INVALID_ARG (options, a foreign or differently made
 * output), E_DATA (damaged input, an OUT.partial of another input), E_CANCELLED, E_IO, E_LOCKED.
 */
export async function runStage<Item, S extends StageSummaryBase>(spec: StageSpec<Item>, summary: S): Promise<S> {
  const { io, batchQuestions, stage } = spec;
  const started = performance.now();
  const warn = io.warn ?? (() => undefined);
  const signal = io.signal;
  const finish = () => {
    summary.seconds = (performance.now() - started) / 1000;
    return summary;
  };
  validateOutput(io.out, 'file', { inputs: [io.data], label: 'out' });
  checkDatasetOptions(io.dataset);
  const range = io.range ?? (await shardOf(io.data, io.shard, batchQuestions, io.dataset));
  const partial = `${io.out}.partial`;

  if (io.resume && !existsSync(partial) && existsSync(io.out)) {
    checkFinishedSettings(io.out, stage, spec.settings);
    summary.resumed = await replayFinishedOutput(io.out, io.data, spec.finished, spec.account);
    summary.records = summary.resumed;
    warn(`${io.out} is already complete; nothing to resume`);
    return finish();
  }

  // The total is for progress only; a damaged record is reported by the main pass, after the
  // work before it is written.
  let total = 0;
  try {
    const all = await countRecords(io.data, io.dataset);
    total = range ? Math.max(0, Math.min(range.end, all) - range.start) : all;
  } catch (err) {
    if ((err as { code?: string }).code !== 'E_DATA') throw err;
  }

  const writer = openStageOutput(io.out, {
    format: io.format ?? 'jsonl', kind: 'json', append: io.resume ?? false, inputs: [io.data],
    manifest: { stage, settings: spec.settings, input: io.data, range },
  });
  let settingsPath: string | undefined;
  try {
    settingsPath = recordResumeSettings(io.out, spec.settings, writer.resumedRecords > 0);
    // Questions of the records already in the partial file, to match them against the input.
    const done: unknown[] = [];
    if (writer.resumedRecords > 0) {
      for await (const record of readResumed(writer) as AsyncIterable<OutputRecord>) {
        if (done.length === writer.resumedRecords) break;
        done.push(record?.question);
        spec.account(record);
      }
    }
    summary.resumed = done.length;
    if (io.resume && writer.resumedRecords === 0 && existsSync(partial)) warn(`nothing to resume in ${writer.partialPath}; starting from the first record`);

    let seen = 0;
    let matched = 0;
    let batch: Item[] = [];
    const skip = (s: Skip) => {
      summary.skipped++;
      summary.skippedReasons[s.reason] = (summary.skippedReasons[s.reason] ?? 0) + 1;
      warn(`skipped ${s.message}`);
    };
    const flush = async () => {
      if (batch.length === 0) return;
      const items = batch;
      const records = await spec.process(items, (k) => io.onProgress?.(seen - items.length + k, total, 'working'));
      for (const r of records) {
        writer.write(r);
        spec.account(r);
      }
      writer.flush();
      summary.written += records.length;
      batch = [];
      io.onProgress?.(seen, total, 'written');
    };

    io.onProgress?.(0, total, 'start');
    const input = readStageRows(io.data, { range, dataset: io.dataset, indexDir: io.indexDir })[Symbol.asyncIterator]();
    for (;;) {
      let next: Awaited<ReturnType<typeof input.next>>;
      try {
        next = await input.next();
      } catch (err) {
        // Damaged input: finish the records already read so that --resume starts after them.
        if (!signal?.aborted) await flush();
        throw err;
      }
      if (next.done) break;
      const row = next.value;
      const { line, position } = row;
      summary.records++;
      if (signal?.aborted) throw new GainragError('E_CANCELLED', `${stage} was cancelled`);
      seen++;
      const where = `${io.data}:${line}`;
      if (matched < done.length) {
        // Already in the partial file, or skipped before it was written (the same decision again).
        const question = row.question();
        if (typeof question === 'string' && question === done[matched]) {
          matched++;
          io.onProgress?.(seen, total, 'resumed');
          continue;
        }
        try {
          await spec.prepare(row, where);
        } catch (err) {
          if (!(err instanceof Skip)) throw err;
          skip(err);
          continue;
        }
        throw new GainragError('E_DATA', `${where}: ${writer.partialPath} does not match this input (record ${matched + 1} there is "${String(done[matched]).slice(0, 80)}"); was the input or were the options changed? Start without --resume`);
      }
      try {
        batch.push(await spec.prepare(row, where));
      } catch (err) {
        if (!(err instanceof Skip)) throw err;
        skip(err);
      }
      if ((position + 1) % batchQuestions === 0) await flush();
    }
    if (matched < done.length) throw new GainragError('E_DATA', `${writer.partialPath} has ${done.length} records but the input only matches ${matched}; start without --resume`);
    await flush();
    await writer.close();
    rmSync(settingsPath, { force: true });
  } catch (err) {
    writer.abort({ keepPartial: true });
    throw err;
  }
  return finish();
}

/**
 * `--resume` onto a finished output says "already complete" only for an output made with the
 * same settings; one made with others (or by another stage) is refused, so that changed flags
 * never report an old result as new. An output without a manifest (older gainrag) is accepted.
 */
function checkFinishedSettings(out: string, stage: string, settings: Record<string, unknown>): void {
  const manifest = readManifest(out);
  if (!manifest) return;
  if (manifest.stage !== stage) {
    throw new GainragError('E_INVALID_ARG', `${out} is a finished ${manifest.stage} output, not ${stage}'s; refusing --resume onto it`);
  }
  const changed = Object.keys({ ...manifest.settings, ...settings }).filter((k) => JSON.stringify(manifest.settings[k]) !== JSON.stringify(settings[k]));
  if (changed.length > 0) {
    const diff = changed.map((k) => `${k}: ${JSON.stringify(manifest.settings[k])} -> ${JSON.stringify(settings[k])}`).join('; ');
    throw new GainragError('E_INVALID_ARG', `${out} is complete but was made with other settings (${diff}); start without --resume to recompute it`);
  }
}
