// QA answer metrics with the reference (GainRAG / DPR evaluation) semantics: SQuAD answer
// normalisation, regex exact match, token F1, each maxed over the gold answers.
//
// Python's `str` operations and `re` differ from JavaScript's in a few places; the character
// classes below reproduce the Python behaviour rather than JavaScript's defaults:
// - `str.split()` splits on Python's whitespace set (which includes \x1c-\x1f and \x85 but
//   not \ufeff, unlike JS `\s`);
// - `re` with str patterns treats `\w` as Unicode letters, numbers and `_`, so `\b` around
//   articles is Unicode-aware (JS `\b` is ASCII-only even with the `u` flag);
// - `string.punctuation` is the ASCII set only; other punctuation survives normalisation.

const PUNCTUATION = new Set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~');

// Python's str.isspace() set (Py_UNICODE_ISSPACE).
const PY_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/u;

// Python `\b(a|an|the)\b` with Unicode word characters (letters, numbers, underscore). Lookbehind
// and lookahead do not consume, so adjacent articles ("a the") are each removed, as in Python.
const ARTICLES = /(?<![\p{L}\p{N}_])(?:a|an|the)(?![\p{L}\p{N}_])/gu;

function removePunctuation(text: string): string {
  let out = '';
  for (const ch of text) if (!PUNCTUATION.has(ch)) out += ch;
  return out;
}

function splitWhitespace(text: string): string[] {
  return text.split(PY_WHITESPACE).filter((t) => t.length > 0);
}

/** SQuAD normalisation: lowercase, drop ASCII punctuation, drop articles, collapse whitespace. */
export function normalizeAnswer(text: string): string {
  const lowered = text.toLowerCase();
  const noPunct = removePunctuation(lowered);
  const noArticles = noPunct.replace(ARTICLES, ' ');
  return splitWhitespace(noArticles).join(' ');
}

/**
 * The reference's `regex_match(text, pattern)`: the normalised gold answer is compiled as a
 * regular expression (IGNORECASE | UNICODE | MULTILINE) and searched in the normalised
 * prediction. A pattern that does not compile counts as no match.
 *
 * Normalisation strips every ASCII punctuation character, which includes every regex
 * metacharacter of both Python and JavaScript (`\ . ^ $ * + ? ( ) [ ] { } |`), so the compiled
 * pattern is always a literal string in both dialects; escaping it anyway keeps that true even if
 * the normaliser changes. An empty normalised answer (e.g. "the", "(a)") compiles to the empty
 * pattern, which Python's `re.search` finds in any text: it matches, as in the reference.
 */
export function regexMatch(prediction: string, goldPattern: string): boolean {
  const pattern = normalizeAnswer(goldPattern);
  let re: RegExp;
  try {
    re = new RegExp(pattern.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&'), 'imu');
  } catch {
    return false;
  }
  return re.test(normalizeAnswer(prediction));
}

/** Plain SQuAD exact match: normalised strings are equal. */
export function exactMatch(prediction: string, gold: string): boolean {
  return normalizeAnswer(prediction) === normalizeAnswer(gold);
}

/**
 * SQuAD token F1 over normalised whitespace tokens (multiset overlap). As in the reference
 * (GainRAG `f1_score`), no overlap gives 0 — including when both sides normalise to nothing.
 */
export function tokenF1(prediction: string, gold: string): number {
  const predTokens = splitWhitespace(normalizeAnswer(prediction));
  const goldTokens = splitWhitespace(normalizeAnswer(gold));
  const goldCounts = new Map<string, number>();
  for (const t of goldTokens) goldCounts.set(t, (goldCounts.get(t) ?? 0) + 1);
  let same = 0;
  for (const t of predTokens) {
    const left = goldCounts.get(t) ?? 0;
    if (left > 0) {
      same++;
      goldCounts.set(t, left - 1);
    }
  }
  if (same === 0) return 0;
  const precision = same / predTokens.length;
  const recall = same / goldTokens.length;
  return (2 * precision * recall) / (precision + recall);
}

function requireGold(golds: readonly string[]): void {
  if (!Array.isArray(golds) || golds.length === 0) throw new RangeError('at least one gold answer is required');
}

/** EM maxed over gold answers; `regex` (default, as the reference) selects regex EM. */
export function emMaxOverGold(prediction: string, golds: readonly string[], regex = true): boolean {
  requireGold(golds);
  return golds.some((g) => (regex ? regexMatch(prediction, g) : exactMatch(prediction, g)));
}

/** Token F1 maxed over gold answers. */
export function f1MaxOverGold(prediction: string, golds: readonly string[]): number {
  requireGold(golds);
  let best = 0;
  for (const g of golds) best = Math.max(best, tokenF1(prediction, g));
  return best;
}
