// Input side of synthesis: structural checks of one retrieval record and the in-memory shapes of a
// question being scored (policy: see the top of synthesize.ts).
import { Skip } from './stage.js';
import type { ColumnarBatch } from '../io/columns-read.js';

export interface Passage {
  title: string;
  text: string;
  has_answer: boolean | null;
  retrieval_score: number | null;
  pseudo?: boolean;
  /** text as put in the prompt (cut when too long) */
  promptText: string;
  truncated?: boolean;
}

export interface Question {
  line: number;
  where: string;
  id?: unknown;
  question: string;
  answers: string[];
  golds: string[]; // non-empty answers, for EM/F1 (an empty one would match any prediction)
  scoring: string[]; // distinct answers with tokens, for perplexities
  budget: number; // max prompt tokens: context length - longest answer
  standard: string;
  passages: Passage[];
}

export { Skip };

// Structural checks of one input record (see the policy at the top of synthesize.ts).
export function validate(record: unknown, where: string, topK: number, usePseudo: boolean, warn: (m: string) => void, summary: { droppedPassages: number; droppedAnswers: number }): Question {
  if (record === null || typeof record !== 'object' || Array.isArray(record)) throw new Skip('not-an-object', `${where}: record is not a JSON object (E_DATA)`);
  const r = record as Record<string, unknown>;
  if (typeof r.question !== 'string' || r.question.trim() === '') throw new Skip('no-question', `${where}: record has no "question" string (E_DATA)`);
  if (!Array.isArray(r.answers)) throw new Skip('no-answers', `${where}: record has no "answers" array (E_DATA)`);
  if (r.answers.length === 0) throw new Skip('no-answers', `${where}: "answers" is empty (E_DATA)`);
  if (!r.answers.every((a) => typeof a === 'string')) throw new Skip('no-answers', `${where}: "answers" must hold strings (E_DATA)`);
  if (!Array.isArray(r.ctxs)) throw new Skip('no-ctxs', `${where}: record has no "ctxs" array (retrieval output expected) (E_DATA)`);
  const passages: Passage[] = [];
  let dropped = 0;
  for (const c of r.ctxs.slice(0, topK)) {
    const text = c && typeof c === 'object' ? (c as Record<string, unknown>).text : undefined;
    if (typeof text !== 'string' || text.trim() === '') {
      dropped++;
      continue;
    }
    const ctx = c as Record<string, unknown>;
    passages.push({
      title: typeof ctx.title === 'string' ? ctx.title : '',
      text,
      promptText: text,
      has_answer: typeof ctx.hasanswer === 'boolean' ? ctx.hasanswer : typeof ctx.has_answer === 'boolean' ? ctx.has_answer : null,
      retrieval_score: typeof ctx.score === 'number' ? ctx.score : typeof ctx.score === 'string' && ctx.score.trim() !== '' && Number.isFinite(Number(ctx.score)) ? Number(ctx.score) : null,
    });
  }
  return question(where, r.id, r.question, r.answers as string[], passages, dropped, topK, usePseudo, warn, summary);
}

/**
 * validate() over typed columns (lib/io/stage-input.ts): the same Question from the row's
 * question, answers and first `topK` ctxs, read from their columns (scores through a view of
 * the Float32/Float64 buffer), without building the record. undefined when the ctx columns are
 * not of the types this reads (strings for title/text, booleans for hasanswer, numbers for
 * score): the record path then decides.
 */
export function validateColumns(b: ColumnarBatch, row: number, where: string, topK: number, usePseudo: boolean, warn: (m: string) => void, summary: { droppedPassages: number; droppedAnswers: number }): Question | undefined {
  const ctxs = b.group('ctxs');
  const text = ctxs?.item('text');
  const title = ctxs?.item('title');
  const flags = [ctxs?.item('hasanswer'), ctxs?.item('has_answer')];
  const score = ctxs?.item('score');
  const scores = score?.column ? b.numericList(score.column) : undefined;
  if (!ctxs || text?.type !== 'utf8' || (title && title.type !== 'utf8') || flags.some((f) => f && f.type !== 'bool')) return undefined;
  if (score && !((score.type === 'float32' || score.type === 'float64') && scores)) return undefined;
  const span = ctxs.span(row);
  if (!span) return undefined; // no ctxs: the record path says why
  const q = b.leaf('question')!.read(row) as string;
  if (q.trim() === '') throw new Skip('no-question', `${where}: record has no "question" string (E_DATA)`);
  const answers = b.leaf('answers')!.read(row) as string[];
  if (answers.length === 0) throw new Skip('no-answers', `${where}: "answers" is empty (E_DATA)`);
  const idLeaf = b.leaf('id');
  const idCell = idLeaf?.read(row) ?? null;
  const id = idCell !== null ? idCell : idLeaf?.nulls === 'null' ? null : undefined;
  const passages: Passage[] = [];
  let dropped = 0;
  const values = scores?.values;
  for (let k = span[0]; k < Math.min(span[1], span[0] + topK); k++) {
    const t = text.read(k) as string | null;
    if (t === null || t.trim() === '') {
      dropped++;
      continue;
    }
    const flag = (flags[0]?.read(k) ?? flags[1]?.read(k) ?? null) as boolean | null;
    passages.push({
      title: (title?.read(k) as string | null) ?? '',
      text: t,
      promptText: t,
      has_answer: flag,
      retrieval_score: values && scores!.valid(k) ? Number(values[k]) + 0 : null,
    });
  }
  return question(where, id, q, answers, passages, dropped, topK, usePseudo, warn, summary);
}

function question(
  where: string, id: unknown, q: string, answers: string[], passages: Passage[], dropped: number, topK: number, usePseudo: boolean,
  warn: (m: string) => void, summary: { droppedPassages: number; droppedAnswers: number },
): Question {
  const line = Number(where.slice(where.lastIndexOf(':') + 1));
  const golds = answers.filter((a) => a.trim() !== '');
  const scoring = [...new Set(golds)];
  if (golds.length < answers.length) {
    summary.droppedAnswers += answers.length - golds.length;
    warn(`${where}: ${answers.length - golds.length} empty gold answer(s) ignored (E_DATA)`);
  }
  if (scoring.length === 0) throw new Skip('no-answers', `${where}: every gold answer is empty (E_DATA)`);
  if (dropped > 0) {
    summary.droppedPassages += dropped;
    warn(`${where}: ${dropped} passage(s) with empty or missing text dropped (E_DATA)`);
  }
  if (passages.length === 0 && !usePseudo) throw new Skip('no-passages', `${where}: no passage with text among the first ${topK} ctxs (E_DATA)`);
  return { line, where, id, question: q, answers, golds, scoring, budget: 0, standard: '', passages };
}
