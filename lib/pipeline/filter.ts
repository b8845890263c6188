// GainRAG step 3a: keep the questions whose best passage (lowest PPL_CD) makes the LLM answer
// correctly (EM_with_retrieval), as the reference's data_filter.py. Ties keep the first passage,
// as Python's stable sort does. Input: synthesize output (JSONL, a JSON array as the reference
// writes, or Arrow); output: JSONL, published when complete.
//
// Bad values are skipped with a FILE:LINE warning rather than read loosely: a perplexity is >= 1
// (the exponential of a mean negative log-probability), so a negative or NaN one is damaged data
// and never the best passage; +Infinity (Python writes it when an answer has no tokens) is a
// valid, worst score. EM_with_retrieval must be a boolean or 0/1: the string "false" is truthy in
// JavaScript and would keep a question the LLM got wrong.
import { openStageOutput, readStageInput } from '../io/records.js';
import { outputFormat, type RecordFormat } from '../io/formats.js';
import { GainragError } from '../errors.js';

export interface SynthPassage {
  title: string;
  text: string;
  PPL_CD: number | null;
  EM_with_retrieval: boolean | number;
  [key: string]: unknown;
}

export interface FilterSummary {
  records: number;
  kept: number;
  skipped: number;
  /** Passages whose PPL_CD was negative, NaN or not a number (never taken as the best). */
  badScores: number;
}

/** Fields that hold a passage's perplexity: the contrastive gain, or the plain perplexity. */
export const SCORE_FIELDS = ['PPL_CD', 'retrieved_ppl'] as const;
export type ScoreField = (typeof SCORE_FIELDS)[number];

/**
 * A passage's perplexity in `field`: `ppl` is the number (+Infinity allowed), or NaN with
 * `problem` saying why it cannot be used ('missing' for absent/null, otherwise bad data).
 */
export function readPerplexity(p: Record<string, unknown>, field: ScoreField = 'PPL_CD'): { ppl: number; problem?: 'missing' | 'not a number' | 'NaN' | 'negative' } {
  const v = p[field];
  if (v === undefined || v === null) return { ppl: NaN, problem: 'missing' };
  if (typeof v !== 'number') return { ppl: NaN, problem: 'not a number' };
  if (Number.isNaN(v)) return { ppl: NaN, problem: 'NaN' };
  if (v < 0) return { ppl: NaN, problem: 'negative' };
  return { ppl: v };
}

/** A passage's PPL_CD as a sortable number; missing or unusable counts as +Infinity. */
export function pplOf(p: { PPL_CD?: unknown }, field: ScoreField = 'PPL_CD'): number {
  const { ppl } = readPerplexity(p as Record<string, unknown>, field);
  return Number.isNaN(ppl) ? Infinity : ppl;
}

/** Index of the first passage with the lowest PPL_CD. */
export function bestPassageIndex(passages: readonly { PPL_CD?: unknown }[], field: ScoreField = 'PPL_CD'): number {
  let best = 0;
  for (let i = 1; i < passages.length; i++) if (pplOf(passages[i], field) < pplOf(passages[best], field)) best = i;
  return best;
}

/** EM_with_retrieval as a boolean, or undefined when it is not a boolean or 0/1. */
export function emFlag(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (v === 0 || v === 1) return v === 1;
  return undefined;
}

/** Records without a non-empty `passages` array are skipped with a warning naming FILE:LINE. */
export async function filterSynthesized(options: { data: string; out: string; signal?: AbortSignal; warn?: (m: string) => void }): Promise<FilterSummary> {
  const summary: FilterSummary = { records: 0, kept: 0, skipped: 0, badScores: 0 };
  const warn = options.warn ?? (() => undefined);
  // The output's format by its extension (.parquet, .arrow, ...); any other name is JSONL, as before.
  let format: RecordFormat;
  try {
    format = outputFormat(options.out);
  } catch {
    format = 'jsonl';
  }
  const writer = openStageOutput(options.out, { format, inputs: [options.data], metadata: { 'gainrag.stage': 'filter' } });
  try {
    for await (const { record, line } of readStageInput(options.data)) {
      if (options.signal?.aborted) throw new GainragError('E_CANCELLED', 'filter was cancelled');
      summary.records++;
      const where = `${options.data}:${line}`;
      const passages = record?.passages;
      if (!Array.isArray(passages) || passages.length === 0 || !passages.every((p) => p && typeof p === 'object')) {
        summary.skipped++;
        warn(`skipped ${where}: record has no "passages" array of objects (E_DATA)`);
        continue;
      }
      const problems = passages.map((p) => readPerplexity(p).problem);
      const bad = problems.filter((x) => x !== undefined && x !== 'missing').length;
      if (bad > 0) {
        summary.badScores += bad;
        warn(`${where}: ${bad} passage(s) with a negative, NaN or non-numeric PPL_CD are not candidates (E_DATA)`);
      }
      if (problems.every((x) => x !== undefined)) {
        summary.skipped++;
        warn(`skipped ${where}: no passage has a usable PPL_CD (E_DATA)`);
        continue;
      }
      const best = passages[bestPassageIndex(passages)];
      const em = emFlag(best.EM_with_retrieval);
      if (em === undefined) {
        summary.skipped++;
        warn(`skipped ${where}: EM_with_retrieval of the best passage must be true/false or 0/1, got ${JSON.stringify(best.EM_with_retrieval) ?? 'nothing'} (E_DATA)`);
        continue;
      }
      if (em) {
        writer.write(record);
        summary.kept++;
        if (summary.kept % 1024 === 0) writer.flush(); // a record batch per 1024 records kept
      }
    }
    await writer.close();
  } catch (err) {
    writer.abort();
    throw err;
  }
  return summary;
}
