// DPR's answer matching (dpr/data/qa_validation.py, match_type "string") and top-k recall.
//
// Text and answers are NFD-normalised, tokenised with DPR's SimpleTokenizer pattern
// `[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]` (runs of letters/digits/marks, or any other single
// non-space, non-control character) and lower-cased; an answer matches when its token sequence
// occurs contiguously in the text's tokens. Answers are compared as tokens, never as regular
// expressions, so "C++" or "a.b" match literally. An answer with no tokens (empty, whitespace or
// control characters only) matches nothing: DPR's loop would find the empty run in every text and
// mark every passage as holding the answer (`answers: [""]`), which is noise, not a match.

const TOKEN = /[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]/gu;

/** DPR SimpleTokenizer words, uncased, after NFD normalisation. */
export function dprTokens(text: string): string[] {
  const out: string[] = [];
  for (const m of text.normalize('NFD').matchAll(TOKEN)) out.push(m[0].toLowerCase());
  return out;
}

function containsRun(haystack: readonly string[], needle: readonly string[]): boolean {
  const last = haystack.length - needle.length;
  outer: for (let i = 0; i <= last; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** Answer matcher for one question: tokenises the answers once, then tests many passages. */
export class AnswerMatcher {
  private readonly answers: string[][];

  constructor(answers: readonly string[]) {
    if (!Array.isArray(answers)) throw new TypeError('answers must be an array of strings');
    this.answers = answers.map((a, i) => {
      if (typeof a !== 'string') throw new TypeError(`answers[${i}] must be a string`);
      return dprTokens(a);
    }).filter((tokens) => tokens.length > 0);
  }

  /** False when no answer has any token (nothing can match). */
  get usable(): boolean {
    return this.answers.length > 0;
  }

  /** True when some answer's token run occurs in `text`. */
  matches(text: string): boolean {
    if (this.answers.length === 0) return false;
    return this.matchesTokens(dprTokens(text));
  }

  /** Same as matches(), on a text already split by dprTokens (to reuse across questions). */
  matchesTokens(tokens: readonly string[]): boolean {
    return this.answers.some((a) => containsRun(tokens, a));
  }
}

/** DPR `has_answer`: does `text` contain one of `answers` (token-level, see above)? */
export function hasAnswer(text: string, answers: readonly string[]): boolean {
  if (typeof text !== 'string') throw new TypeError('text must be a string');
  return new AnswerMatcher(answers).matches(text);
}

/** Recall depths reported by `retrieve` (25 too, as the reference reports it). */
export const DEFAULT_RECALL_KS: readonly number[] = [1, 5, 10, 20, 25, 50, 100];

/**
 * Recall@k as DPR reports it: the fraction of questions with at least one passage that has the
 * answer among the top k. `hits[q][i]` is the hasanswer flag of question q's i-th passage (best
 * first); a question without answers is an all-false row (a miss), as the reference divides by
 * every question. Ks larger than the passages retrieved for every question are left out.
 */
export function recallAtK(hits: readonly (readonly boolean[])[], ks: readonly number[] = DEFAULT_RECALL_KS): Record<string, number> {
  const acc = new RecallAccumulator(ks);
  for (const h of hits) acc.add(h);
  return acc.result();
}

/** Streaming Recall@k: add one question at a time (memory stays constant). */
export class RecallAccumulator {
  private readonly ks: number[];
  private readonly found: number[];
  private questions = 0;
  private maxDepth = Infinity;

  constructor(ks: readonly number[] = DEFAULT_RECALL_KS) {
    for (const k of ks) if (!Number.isInteger(k) || k < 1) throw new RangeError(`recall k must be a positive integer, got ${String(k)}`);
    this.ks = [...ks].sort((a, b) => a - b);
    this.found = this.ks.map(() => 0);
  }

  /** Records one question's hasanswer flags (best first). */
  add(hits: readonly boolean[]): void {
    const first = hits.indexOf(true);
    this.questions++;
    this.maxDepth = Math.min(this.maxDepth, hits.length);
    if (first < 0) return;
    for (let i = 0; i < this.ks.length; i++) if (first < this.ks[i]) this.found[i]++;
  }

  get count(): number {
    return this.questions;
  }

  /** {"1": r1, "5": r5, ...}; ks deeper than the shortest list added are omitted. */
  result(): Record<string, number> {
    const out: Record<string, number> = {};
    this.ks.forEach((k, i) => {
      if (k <= this.maxDepth || this.questions === 0) out[String(k)] = this.questions === 0 ? 0 : this.found[i] / this.questions;
    });
    return out;
  }
}
