// Selector training data: FlagEmbedding JSONL, one query per line:
//   {"query": str, "pos": [str], "neg": [str, ...], "pos_scores": [num], "neg_scores": [num, ...], "prompt"?: str}
// Distillation needs a teacher score for every passage, so the whole file is validated before
// training starts; problems are reported as E_DATA with FILE:LINE (up to ten at once).
// `prompt` is accepted and kept (FlagEmbedding uses it for LLM rerankers) but a cross-encoder
// ignores it.
//
// Files written by Python may hold NaN / Infinity tokens (json-values.ts reads them). A negative
// may score -Infinity: the reference's data2selector.py writes -log(inf + 1) for a passage whose
// perplexity is infinite, and FlagEmbedding's KL loss gives it teacher probability 0. The native
// loss takes finite scores only, so such a score is loaded as NEG_INF_TEACHER_SCORE, which has
// the same effect (exp underflows to exactly 0 next to any finite score of the group; the
// positive's score must be finite). NaN and +Infinity are rejected.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { GainragError, hasCode } from '../errors.js';
import { parseJson } from '../io/json-values.js';
import { checkDepth } from '../io/jsonl.js';
import { checkRegularFile } from '../io/input-file.js';

export interface TrainRecord {
  query: string;
  pos: string[];
  neg: string[];
  posScores: number[];
  negScores: number[];
  prompt?: string;
  /** 1-based line in the source file (for messages) */
  line: number;
}

const MAX_REPORTED = 10;

/** Stand-in for a -Infinity teacher score: softmax weight exactly 0 in float32, yet finite. */
export const NEG_INF_TEACHER_SCORE = -1e30;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'string' ? 'a string' : typeof value;
}

/** Checks one parsed line; returns the problems found (empty when the record is usable). */
export function checkRecord(value: unknown): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return [`expected a JSON object, got ${describe(value)}`];
  }
  const o = value as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof o.query !== 'string' || o.query.length === 0) problems.push(`"query" must be a non-empty string, got ${describe(o.query)}`);
  const texts = (key: 'pos' | 'neg'): string[] | undefined => {
    const v = o[key];
    if (v === undefined) {
      problems.push(`missing "${key}"`);
      return undefined;
    }
    if (!Array.isArray(v)) {
      problems.push(`"${key}" must be an array of strings, got ${describe(v)}`);
      return undefined;
    }
    if (v.length === 0) {
      problems.push(`"${key}" is empty: every query needs at least one ${key === 'pos' ? 'positive' : 'negative'} passage`);
      return undefined;
    }
    const bad = v.findIndex((x) => typeof x !== 'string');
    if (bad >= 0) {
      problems.push(`"${key}[${bad}]" must be a string, got ${describe(v[bad])}`);
      return undefined;
    }
    return v as string[];
  };
  const scores = (key: 'pos_scores' | 'neg_scores', passages: string[] | undefined): void => {
    const v = o[key];
    if (v === undefined) {
      problems.push(`missing "${key}" (distillation needs a teacher score for every passage)`);
      return;
    }
    if (!Array.isArray(v)) {
      problems.push(`"${key}" must be an array of numbers, got ${describe(v)}`);
      return;
    }
    // Negatives may be -Infinity (zero teacher weight, see above); the positive must count.
    // Teacher scores go to the trainer as float32: a double beyond its range (1e308) would become
    // Infinity there and fail the run mid-way, so "finite" means finite as a float32.
    const ok = (x: unknown) => typeof x === 'number' && (Number.isFinite(Math.fround(x)) || (key === 'neg_scores' && x === -Infinity));
    const bad = v.findIndex((x) => !ok(x));
    if (bad >= 0) {
      const what = key === 'neg_scores' ? 'a finite number or -Infinity' : 'a finite number';
      problems.push(`"${key}[${bad}]" must be ${what}, got ${typeof v[bad] === 'number' ? String(v[bad]) : JSON.stringify(v[bad])}${typeof v[bad] === 'number' && Number.isFinite(v[bad]) ? ' (beyond float32 range, |x| <= 3.4e38, which training computes in)' : ''}`);
      return;
    }
    if (passages && v.length !== passages.length) {
      const which = key === 'pos_scores' ? 'pos' : 'neg';
      problems.push(`"${key}" has ${v.length} scores but "${which}" has ${passages.length} passages`);
    }
  };
  const pos = texts('pos');
  const neg = texts('neg');
  scores('pos_scores', pos);
  scores('neg_scores', neg);
  if (o.prompt !== undefined && typeof o.prompt !== 'string') problems.push(`"prompt" must be a string, got ${describe(o.prompt)}`);
  return problems;
}

function toRecord(o: Record<string, unknown>, line: number): TrainRecord {
  return {
    query: o.query as string,
    pos: o.pos as string[],
    neg: o.neg as string[],
    posScores: o.pos_scores as number[],
    negScores: (o.neg_scores as number[]).map((x) => (x === -Infinity ? NEG_INF_TEACHER_SCORE : x)),
    prompt: o.prompt as string | undefined,
    line,
  };
}

/**
 * Reads and validates a whole FlagEmbedding JSONL file (streamed line by line). Blank lines
 * are skipped. Throws GainragError E_DATA naming FILE:LINE for every bad line (first ten), or
 * E_IO when the file cannot be read.
 */
export async function loadTrainingData(file: string): Promise<TrainRecord[]> {
  const records: TrainRecord[] = [];
  const errors: string[] = [];
  let badLines = 0;
  let lineNo = 0;
  checkRegularFile(file);
  const input = createReadStream(file, { encoding: 'utf8' });
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const raw of lines) {
      lineNo++;
      const text = raw.trim();
      if (text.length === 0) continue;
      let value: unknown;
      try {
        checkDepth(text, lineNo, file); // a 100k-deep record would overflow the stack below
        value = parseJson(text);
      } catch (err) {
        if (hasCode(err, 'E_DATA')) {
          badLines++;
          if (errors.length < MAX_REPORTED) errors.push((err as Error).message);
          continue;
        }
        badLines++;
        if (errors.length < MAX_REPORTED) errors.push(`${file}:${lineNo}: malformed JSON (${(err as Error).message})`);
        continue;
      }
      const problems = checkRecord(value);
      if (problems.length > 0) {
        badLines++;
        if (errors.length < MAX_REPORTED) errors.push(`${file}:${lineNo}: ${problems.join('; ')}`);
        continue;
      }
      records.push(toRecord(value as Record<string, unknown>, lineNo));
    }
  } catch (err) {
    throw new GainragError('E_IO', `cannot read training data ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (badLines > 0) {
    const more = badLines > errors.length ? `\n(${badLines - errors.length} more bad lines)` : '';
    throw new GainragError('E_DATA', `${errors.join('\n')}${more}`);
  }
  if (records.length === 0) throw new GainragError('E_DATA', `${file}: no training records`);
  return records;
}
