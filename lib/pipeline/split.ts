// `split`: the train/test split of a question set, by a hash of each record's id (or question
// when it has none), so the split is stable under reordering and resizing of the file and
// reproducible anywhere: the demo's split, as a command. A seed other than 0 draws another split.
import { openStageOutput, readStageInput, type RecordFormat } from '../io/records.js';
import { checkDatasetOptions, type DatasetOptions } from '../io/datasets.js';
import { validateOutput } from '../io/output.js';
import { GainragError } from '../errors.js';

/** FNV-1a of a string. */
export function splitHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** True for a held-out test record: the hash of its id (or question), with the seed, falls in the test share. */
export function isTestQuestion(record: { id?: unknown; question?: unknown }, share: number, seed = 0): boolean {
  const key = String(record.id ?? record.question);
  return splitHash(seed === 0 ? key : `${seed}\0${key}`) % 1000 < Math.round(share * 1000);
}

export interface SplitOptions {
  data: string;
  outTrain: string;
  outTest: string;
  /** Share of records held out as test, in [0, 1] (resolution 0.001). */
  testFraction: number;
  seed?: number;
  dataset?: DatasetOptions;
  format?: RecordFormat;
  signal?: AbortSignal;
}

export interface SplitSummary {
  input: string;
  train: number;
  test: number;
  records: number;
  testFraction: number;
  seed: number;
}

export async function splitQuestions(o: SplitOptions): Promise<SplitSummary> {
  if (typeof o.testFraction !== 'number' || !(o.testFraction >= 0 && o.testFraction <= 1)) throw new RangeError(`testFraction must be in [0, 1], got ${o.testFraction}`);
  const seed = o.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  checkDatasetOptions(o.dataset);
  const train = validateOutput(o.outTrain, 'file', { inputs: [o.data], label: '--out-train' });
  const test = validateOutput(o.outTest, 'file', { inputs: [o.data], label: '--out-test' });
  if (train === test) throw new GainragError('E_INVALID_ARG', '--out-train and --out-test name the same file');
  const format = o.format ?? 'jsonl';
  const wTrain = openStageOutput(o.outTrain, { format, inputs: [o.data], manifest: { stage: 'split', settings: { part: 'train', testFraction: o.testFraction, seed }, input: o.data } });
  let wTest;
  try {
    wTest = openStageOutput(o.outTest, { format, inputs: [o.data], manifest: { stage: 'split', settings: { part: 'test', testFraction: o.testFraction, seed }, input: o.data } });
  } catch (err) {
    wTrain.abort();
    throw err;
  }
  const summary: SplitSummary = { input: o.data, train: 0, test: 0, records: 0, testFraction: o.testFraction, seed };
  try {
    for await (const { record, line } of readStageInput(o.data, { dataset: o.dataset })) {
      if (o.signal?.aborted) throw new GainragError('E_CANCELLED', 'split was cancelled');
      if (record === null || typeof record !== 'object' || Array.isArray(record)) throw new GainragError('E_DATA', `${o.data}:${line}: record is not a JSON object`);
      const r = record as { id?: unknown; question?: unknown };
      if (r.id === undefined && typeof r.question !== 'string') throw new GainragError('E_DATA', `${o.data}:${line}: record has neither an id nor a question to split by`);
      summary.records++;
      if (isTestQuestion(r, o.testFraction, seed)) {
        wTest.write(record);
        summary.test++;
      } else {
        wTrain.write(record);
        summary.train++;
      }
    }
    wTrain.close();
    wTest.close();
  } catch (err) {
    wTrain.abort();
    wTest.abort();
    throw err;
  }
  return summary;
}
