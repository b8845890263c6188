// GainRAG step 3b: selector training data in FlagEmbedding's reranker JSONL layout
// {query, pos: [text], neg: [text...], pos_scores, neg_scores, prompt}, as the reference's
// data2selector.py: passages sorted by PPL_CD ascending (stable), the first is the positive,
// texts are `title\ntext`, scores (teacher logits for the KL loss) are -log(PPL_CD + 1).
import { readRecords, AtomicJsonlWriter } from '../io/jsonl.js';
import { GainragError } from '../errors.js';
import { pplOf } from './filter.js';

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
}

/** Teacher score of a passage: -log(PPL_CD + 1). */
export function gainScore(ppl: number): number {
  return -Math.log(ppl + 1);
}

/**
 * One synthesized record -> one selector record. Passages without a finite PPL_CD are dropped
 * (their score is undefined); returns the count dropped, and null when fewer than two passages are
 * left (a positive with no negative cannot train a listwise loss).
 */
export function selectorRecord(record: { question: string; passages: { title?: unknown; text?: unknown; PPL_CD?: unknown }[] }, prompt = SELECTOR_PROMPT): { record: SelectorRecord | null; dropped: number } {
  const usable = record.passages
    .map((p, i) => ({ p, i, ppl: pplOf(p) }))
    .filter((x) => Number.isFinite(x.ppl) && typeof x.p.text === 'string');
  const dropped = record.passages.length - usable.length;
  if (usable.length < 2) return { record: null, dropped };
  usable.sort((a, b) => a.ppl - b.ppl || a.i - b.i);
  const texts = usable.map((x) => `${typeof x.p.title === 'string' ? x.p.title : ''}\n${x.p.text as string}`);
  const scores = usable.map((x) => gainScore(x.ppl));
  return {
    record: { query: record.question, pos: texts.slice(0, 1), neg: texts.slice(1), pos_scores: scores.slice(0, 1), neg_scores: scores.slice(1), prompt },
    dropped,
  };
}

export async function toSelector(options: { data: string; out: string; prompt?: string; signal?: AbortSignal; warn?: (m: string) => void }): Promise<ToSelectorSummary> {
  const summary: ToSelectorSummary = { records: 0, written: 0, skipped: 0, droppedPassages: 0 };
  const writer = AtomicJsonlWriter.open(options.out);
  try {
    for await (const { record, line } of readRecords(options.data)) {
      if (options.signal?.aborted) throw new GainragError('E_CANCELLED', 'to-selector was cancelled');
      summary.records++;
      const where = `${options.data}:${line}`;
      if (typeof record?.question !== 'string' || !Array.isArray(record.passages) || !record.passages.every((p: unknown) => p && typeof p === 'object')) {
        summary.skipped++;
        options.warn?.(`skipped ${where}: record needs a "question" string and a "passages" array of objects (E_DATA)`);
        continue;
      }
      const { record: out, dropped } = selectorRecord(record, options.prompt ?? SELECTOR_PROMPT);
      summary.droppedPassages += dropped;
      if (dropped > 0) options.warn?.(`${where}: ${dropped} passage(s) without a finite PPL_CD or text dropped (E_DATA)`);
      if (out === null) {
        summary.skipped++;
        options.warn?.(`skipped ${where}: fewer than two scored passages (no negative to train against) (E_DATA)`);
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
