// Input side of synthesis: structural checks of one retrieval record and the in-memory shapes of a
// question being scored (policy: see the top of synthesize.ts).
import { Skip } from './stage.js';

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
  const line = Number(where.slice(where.lastIndexOf(':') + 1));
  if (record === null || typeof record !== 'object' || Array.isArray(record)) throw new Skip('not-an-object', `${where}: record is not a JSON object (E_DATA)`);
  const r = record as Record<string, unknown>;
  if (typeof r.question !== 'string' || r.question.trim() === '') throw new Skip('no-question', `${where}: record has no "question" string (E_DATA)`);
  if (!Array.isArray(r.answers)) throw new Skip('no-answers', `${where}: record has no "answers" array (E_DATA)`);
  if (r.answers.length === 0) throw new Skip('no-answers', `${where}: "answers" is empty (E_DATA)`);
  if (!r.answers.every((a) => typeof a === 'string')) throw new Skip('no-answers', `${where}: "answers" must hold strings (E_DATA)`);
  if (!Array.isArray(r.ctxs)) throw new Skip('no-ctxs', `${where}: record has no "ctxs" array (retrieval output expected) (E_DATA)`);
  const answers = r.answers as string[];
  const golds = answers.filter((a) => a.trim() !== '');
  const scoring = [...new Set(golds)];
  if (golds.length < answers.length) {
    summary.droppedAnswers += answers.length - golds.length;
    warn(`${where}: ${answers.length - golds.length} empty gold answer(s) ignored (E_DATA)`);
  }
  if (scoring.length === 0) throw new Skip('no-answers', `${where}: every gold answer is empty (E_DATA)`);
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
  if (dropped > 0) {
    summary.droppedPassages += dropped;
    warn(`${where}: ${dropped} passage(s) with empty or missing text dropped (E_DATA)`);
  }
  if (passages.length === 0 && !usePseudo) throw new Skip('no-passages', `${where}: no passage with text among the first ${topK} ctxs (E_DATA)`);
  return { line, where, id: r.id, question: r.question, answers, golds, scoring, budget: 0, standard: '', passages };
}
