// `evaluate`: recomputes answer metrics and retrieval recall from any JSONL, JSON array or Arrow
// stage file whose records hold gold `answers` and a `generated` answer (ours from `generate`, or
// another system's; the field names are options), so numbers from different systems are computed by
// one implementation.
//
// EM is the reference's regex EM and F1 its token F1, both maxed over the non-empty gold answers
// (lib/metrics); means are x100 over the evaluated records. Recall@1..5 is over the records that
// have `ctxs`: a passage counts when DPR matching finds an answer in its text (recomputed; a ctx
// without text falls back to its `hasanswer` flag). Records without a usable answer or without
// a string prediction are skipped with a FILE:LINE warning and counted. When a record carries
// its own `EM` / `F1`, disagreements with the recomputed values are counted (`storedMismatches`).
import { readStageRows } from '../io/stage-input.js';
import type { ColumnarBatch } from '../io/columns-read.js';
import { emMaxOverGold, f1MaxOverGold } from '../metrics/index.js';
import { AnswerMatcher } from '../retrieval/has-answer.js';

export interface EvaluateOptions {
  data: string;
  /** Field holding the prediction (default 'generated'). */
  predictionField?: string;
  /** Field holding the gold answers (default 'answers'). */
  answersField?: string;
  /** Recall depths (default 1..5). */
  recallKs?: number[];
  warn?: (message: string) => void;
}

export interface EvaluateSummary {
  input: string;
  records: number;
  evaluated: number;
  skipped: number;
  skippedReasons: Record<string, number>;
  /** Mean regex EM x100 over evaluated records. */
  EM: number;
  /** Mean token F1 x100 over evaluated records. */
  F1: number;
  /** Evaluated records with a ctxs array (the recall denominator). */
  withCtxs: number;
  recall: Record<string, number>;
  /** Records whose stored EM/F1 differ from the recomputed ones (1e-9 tolerance on F1). */
  storedMismatches: number;
}

export async function evaluate(options: EvaluateOptions): Promise<EvaluateSummary> {
  if (typeof options?.data !== 'string' || options.data === '') throw new TypeError('data must be a file path');
  const pred = options.predictionField ?? 'generated';
  const gold = options.answersField ?? 'answers';
  const ks = options.recallKs ?? [1, 2, 3, 4, 5];
  for (const k of ks) if (!Number.isInteger(k) || k < 1) throw new RangeError(`recall k must be a positive integer, got ${k}`);
  const warn = options.warn ?? (() => undefined);
  const s: EvaluateSummary = {
    input: options.data, records: 0, evaluated: 0, skipped: 0, skippedReasons: {}, EM: 0, F1: 0, withCtxs: 0, recall: {}, storedMismatches: 0,
  };
  const skip = (reason: string, message: string) => {
    s.skipped++;
    s.skippedReasons[reason] = (s.skippedReasons[reason] ?? 0) + 1;
    warn(`skipped ${message}`);
  };
  let em = 0;
  let f1 = 0;
  const found = ks.map(() => 0);
  const deepest = Math.max(...ks);
  for await (const row of readStageRows(options.data)) {
    s.records++;
    const where = `${options.data}:${row.line}`;
    const c = row.columns;
    const fields = (c && gold === 'answers' && columnFields(c.batch, c.row, pred, deepest)) || recordFields(row.record(), gold, pred, deepest);
    if (fields === 'not-an-object') {
      skip('not-an-object', `${where}: record is not a JSON object (E_DATA)`);
      continue;
    }
    const { answers, prediction, storedEM, storedF1, ctxs } = fields;
    if (!Array.isArray(answers) || !answers.every((a: unknown) => typeof a === 'string')) {
      skip('no-answers', `${where}: no "${gold}" array of strings (E_DATA)`);
      continue;
    }
    const golds = (answers as string[]).filter((a) => a.trim() !== '');
    if (golds.length === 0) {
      skip('no-answers', `${where}: no non-empty gold answer (E_DATA)`);
      continue;
    }
    if (typeof prediction !== 'string') {
      skip('no-prediction', `${where}: no "${pred}" string (E_DATA)`);
      continue;
    }
    const e = emMaxOverGold(prediction, golds) ? 1 : 0;
    const f = f1MaxOverGold(prediction, golds);
    s.evaluated++;
    em += e;
    f1 += f;
    if ((storedEM !== undefined && Number(storedEM) !== e) || (typeof storedF1 === 'number' && Math.abs(storedF1 - f) > 1e-9)) s.storedMismatches++;
    if (ctxs) {
      s.withCtxs++;
      const matcher = new AnswerMatcher(golds);
      const first = ctxs.findIndex((x) => (x ? (typeof x.text === 'string' ? matcher.matches(x.text) : x.hasanswer === true) : false));
      ks.forEach((k, i) => {
        if (first >= 0 && first < k) found[i]++;
      });
    }
  }
  const n = Math.max(s.evaluated, 1);
  s.EM = (100 * em) / n;
  s.F1 = (100 * f1) / n;
  ks.forEach((k, i) => (s.recall[k] = found[i] / Math.max(s.withCtxs, 1)));
  return s;
}

// What evaluate reads of a record: the answers, the prediction, stored EM/F1, the first
// `deepest` ctxs' text and hasanswer (null: a ctx that is not an object; no array: null).
interface Fields {
  answers: unknown;
  prediction: unknown;
  storedEM: unknown;
  storedF1: unknown;
  ctxs: ({ text?: unknown; hasanswer?: unknown } | null)[] | null;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function recordFields(r: any, gold: string, pred: string, deepest: number): Fields | 'not-an-object' {
  if (r === null || typeof r !== 'object' || Array.isArray(r)) return 'not-an-object';
  const ctxs = Array.isArray(r.ctxs) ? r.ctxs.slice(0, deepest).map((c: unknown) => (c && typeof c === 'object' ? c : null)) : null;
  return { answers: r[gold], prediction: r[pred], storedEM: r.EM, storedF1: r.F1, ctxs };
}

// The same from typed columns (lib/io/stage-input.ts): nothing else of the row is decoded.
function columnFields(b: ColumnarBatch, row: number, pred: string, deepest: number): Fields | undefined {
  const prediction = b.leaf(pred);
  if (!prediction || b.leaf('ctxs')) return undefined; // ctxs as a JSON column: the record path
  const cell = (key: string) => b.leaf(key)?.read(row) ?? undefined;
  const group = b.group('ctxs');
  const span = group?.span(row);
  let ctxs: Fields['ctxs'] = null;
  if (span) {
    const text = group!.item('text');
    const hasanswer = group!.item('hasanswer');
    ctxs = [];
    for (let k = span[0]; k < Math.min(span[1], span[0] + deepest); k++) ctxs.push({ text: text?.read(k) ?? undefined, hasanswer: hasanswer?.read(k) ?? undefined });
  }
  return { answers: cell('answers'), prediction: prediction.read(row) ?? undefined, storedEM: cell('EM'), storedF1: cell('F1'), ctxs };
}

/** The summary as a small text table. */
export function formatEvaluation(s: EvaluateSummary): string {
  const lines = [
    `evaluated  ${s.evaluated} of ${s.records} records${s.skipped ? ` (${s.skipped} skipped: ${Object.entries(s.skippedReasons).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}`,
    `EM         ${s.EM.toFixed(2)}`,
    `F1         ${s.F1.toFixed(2)}`,
  ];
  if (s.withCtxs > 0) lines.push(`recall     ${Object.entries(s.recall).map(([k, v]) => `@${k} ${(100 * v).toFixed(1)}%`).join('  ')} (over ${s.withCtxs} records with ctxs)`);
  if (s.storedMismatches > 0) lines.push(`note       ${s.storedMismatches} records carry EM/F1 values that differ from the recomputed ones`);
  return `${lines.join('\n')}\n`;
}
