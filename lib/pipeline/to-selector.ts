// GainRAG step 3b: selector training data in FlagEmbedding's reranker JSONL layout
// {query, pos: [text], neg: [text...], pos_scores, neg_scores, prompt}, as the reference's
// data2selector.py: passages sorted by their perplexity ascending (stable), the first is the
// positive, texts are `title\ntext`, scores (teacher logits for the KL loss) are -log(PPL + 1).
//
// The perplexity is PPL_CD by default (the contrastive gain the paper trains on); `scoreField:
// 'retrieved_ppl'` uses the plain perplexity with the passage, which is what data2selector.py
// actually sorts by. A +Infinity perplexity is kept as the worst passage with score -Infinity
// (written as -1e999; `train` gives it teacher weight 0, as FlagEmbedding does). Negative, NaN,
// non-numeric or missing perplexities are dropped with a FILE:LINE warning (filter.ts explains
// why they are damaged data), and so is a record with an empty question: an empty query trains
// the selector on nothing.
import { AtomicJsonlWriter } from '../io/jsonl.js';
import { readStageInput } from '../io/records.js';
import { GainragError } from '../errors.js';
import { readPerplexity, SCORE_FIELDS, type ScoreField } from './filter.js';

/**
 * The instruction GainRAG's data2selector.py writes into `prompt` (FlagEmbedding's LLM-reranker
 * field; the bge-reranker cross-encoder used as the selector ignores it). FlagEmbedding's own
 * default omits "directly or indirectly"; the reference's text is kept for compatibility.
 */
export const SELECTOR_PROMPT =
  "Given a query A and a passage B, determine whether the passage directly or indirectly contains an answer to the query by providing a prediction of either 'Yes' or 'No'.";

export interface SelectorRecord {
  query: string;
  pos: string[];
  neg: string[];
  pos_scores: number[];
  neg_scores: number[];
  prompt: string;
}

export interface ToSelectorSummary {
  records: number;
  written: number;
  skipped: number;
  droppedPassages: number;
  /** Dropped passages whose score was negative, NaN or not a number (the rest had none). */
  badScores: number;
  scoreField: ScoreField;
}

/** Teacher score of a passage: -log(PPL + 1); -Infinity for an infinite perplexity. */
export function gainScore(ppl: number): number {
  return -Math.log(ppl + 1);
}

/**
 * One synthesized record -> one selector record. Passages without a usable perplexity (or
 * without text) are dropped; returns the counts dropped, and null when fewer than two passages
 * are left (a positive with no negative cannot train a listwise loss) or when even the best
 * perplexity is infinite (no passage helps: nothing to prefer).
 */
export function selectorRecord(
  record: { question: string; passages: Record<string, unknown>[] },
  prompt = SELECTOR_PROMPT,
  scoreField: ScoreField = 'PPL_CD',
): { record: SelectorRecord | null; dropped: number; bad: number; reason?: string } {
  let bad = 0;
  const usable: { p: Record<string, unknown>; i: number; ppl: number }[] = [];
  record.passages.forEach((p, i) => {
    const { ppl, problem } = readPerplexity(p, scoreField);
    if (problem !== undefined && problem !== 'missing') bad++;
    if (problem === undefined && typeof p.text === 'string') usable.push({ p, i, ppl });
  });
  const dropped = record.passages.length - usable.length;
  if (usable.length < 2) return { record: null, dropped, bad, reason: 'fewer than two scored passages (no negative to train against)' };
  usable.sort((a, b) => (a.ppl === b.ppl ? a.i - b.i : a.ppl < b.ppl ? -1 : 1));
  if (usable[0].ppl === Infinity) return { record: null, dropped, bad, reason: `every ${scoreField} is infinite (no passage to prefer)` };
  const texts = usable.map((x) => `${typeof x.p.title === 'string' ? x.p.title : ''}\n${x.p.text as string}`);
  const scores = usable.map((x) => gainScore(x.ppl));
  return {
    record: { query: record.question, pos: texts.slice(0, 1), neg: texts.slice(1), pos_scores: scores.slice(0, 1), neg_scores: scores.slice(1), prompt },
    dropped,
    bad,
  };
}

export interface ToSelectorOptions {
  data: string;
  out: string;
  prompt?: string;
  /** Which perplexity ranks the passages and makes the teacher scores (default PPL_CD). */
  scoreField?: ScoreField;
  signal?: AbortSignal;
  warn?: (m: string) => void;
}

export async function toSelector(options: ToSelectorOptions): Promise<ToSelectorSummary> {
  const scoreField = options.scoreField ?? 'PPL_CD';
  if (!SCORE_FIELDS.includes(scoreField)) throw new RangeError(`scoreField must be one of ${SCORE_FIELDS.join(', ')}, got ${String(scoreField)}`);
  const warn = options.warn ?? (() => undefined);
  const summary: ToSelectorSummary = { records: 0, written: 0, skipped: 0, droppedPassages: 0, badScores: 0, scoreField };
  const writer = AtomicJsonlWriter.open(options.out, { inputs: [options.data] });
  try {
    for await (const { record, line } of readStageInput(options.data)) {
      if (options.signal?.aborted) throw new GainragError('E_CANCELLED', 'to-selector was cancelled');
      summary.records++;
      const where = `${options.data}:${line}`;
      if (typeof record?.question !== 'string' || !Array.isArray(record.passages) || !record.passages.every((p: unknown) => p && typeof p === 'object')) {
        summary.skipped++;
        warn(`skipped ${where}: record needs a "question" string and a "passages" array of objects (E_DATA)`);
        continue;
      }
      if (record.question.trim() === '') {
        summary.skipped++;
        warn(`skipped ${where}: empty "question" (E_DATA)`);
        continue;
      }
      const { record: out, dropped, bad, reason } = selectorRecord(record, options.prompt ?? SELECTOR_PROMPT, scoreField);
      summary.droppedPassages += dropped;
      summary.badScores += bad;
      if (dropped > 0) {
        const why = bad > 0 ? `${bad} with a negative, NaN or non-numeric ${scoreField}, ${dropped - bad} without a ${scoreField} or text` : `without a ${scoreField} or text`;
        warn(`${where}: ${dropped} passage(s) dropped (${why}) (E_DATA)`);
      }
      if (out === null) {
        summary.skipped++;
        warn(`skipped ${where}: ${reason} (E_DATA)`);
        continue;
      }
      writer.write(out);
      summary.written++;
    }
    writer.close();
  } catch (err) {
    writer.abort();
    throw err;
  }
  return summary;
}
