// GainRAG step 5, selection: for each test question, rerank its retrieved passages plus the LLM's
// own pseudo-passage with the trained selector (a cross-encoder) and keep the top K.
//
// Candidates of a question: the first `candidates` ctxs with text, then the pseudo-passage last
// (title ''). A pseudo-passage the record already carries is reused, looked up in this order:
//   1. a string field `pseudo_passage` (select writes it, so its output can be selected again);
//   2. an entry of `ctxs` marked `pseudo: true` (it is taken out of the retrieved list);
//   3. an entry of `passages` marked `pseudo: true` (the layout `synthesize` writes).
// Otherwise it is generated with the background prompt of synthesis (`generator`), batched over
// the questions of a group. Each candidate is scored as (question, title + "\n" + text), raw
// logits; the top K by score (exact ties: the later candidate first, as the reference; see
// rankCandidates) replace `ctxs`, each with
// `selector_score`, `hasanswer` (DPR matching, recomputed) and `pseudo: true` on the pseudo-passage.
// Each record also gets `origin_hit_rank` / `rerank_hit_rank`: the 0-based rank of the first
// candidate holding an answer in the input / reranked order (null: none), which is what the
// summary's recall is made of, so a resumed run can count the records it did not redo.
//
// Work goes to the engine per group of `batchQuestions` input positions (the stage runner's one
// batch rule, lib/pipeline/run-stage.ts): all their pairs (~101 each) in one score call, which
// the engine sorts by length and cuts into batches by a token budget; so an interrupted +
// resumed run, a shard and a cluster chunk write the same bytes as one uninterrupted run.
//
// Bad records are skipped with a FILE:LINE warning and counted by reason: not an object, no
// question, no usable answers, no `ctxs` array, no retrieved passage with text, fewer candidates
// than K ('short-ctxs'), a question that fills the selector's whole pair ('question-too-long').
// Passages with empty text are dropped (counted). Invalid JSON stops the run after the records
// before it are written; finished groups stay in `<out>.partial` for `resume`.
import { positiveInt, type StageStreamOptions, Skip } from './stage.js';
import { runStage, type OutputRecord, type StageSummaryBase } from './run-stage.js';
import { validateOutput } from '../io/output.js';
import { GainragError } from '../errors.js';
import { AnswerMatcher } from '../retrieval/has-answer.js';
import { weightsFingerprint } from '../models/fingerprint.js';
import { precisionLabel, type MatmulPrecision } from '../models/encoder.js';
import { backgroundPrompt } from './prompts.js';
import type { TextGenerator } from './openai-generate.js';
import type { ColumnarBatch } from '../io/columns-read.js';

/** What selection needs from a reranker (lib/models/cross-encoder.ts CrossEncoder satisfies it). */
export interface PairScorer {
  readonly numLabels: number;
  /** Whether `query` leaves room for a passage in a pair of `maxLength` tokens (skips the record when not). */
  queryFits?(query: string, maxLength?: number): Promise<boolean>;
  score(queries: string[], passages: string[], options?: { maxLength?: number; batchTokens?: number; signal?: AbortSignal }): Promise<Float32Array>;
}

export interface SelectOptions extends StageStreamOptions {
  /** The selector's dtype (its precision goes into the resume fingerprint). */
  dtype?: string;
  /** The selector's float32 matmul precision ('high': bf16x3 products; also in the fingerprint). */
  matmulPrecision?: MatmulPrecision;
  data: string;
  out: string;
  /** Passages kept per question (default 1). */
  kDocs?: number;
  /** Retrieved passages reranked per question, from the top of ctxs (default 100). */
  candidates?: number;
  /** Add the pseudo-passage as a candidate (default true). */
  pseudoPassage?: boolean;
  /** Writes missing pseudo-passages; without it every record must carry one. */
  generator?: TextGenerator;
  /** Turns the raw background prompt into what the model sees (chat template); default: as is. */
  wrapPrompt?: (raw: string) => string;
  /** Tokens generated for a pseudo-passage (default 256, as synthesize). */
  pseudoMaxNewTokens?: number;
  /** Questions whose pairs go to the engine in one call (default 32). */
  batchQuestions?: number;
  /** Tokens per pair (default: the selector's). */
  maxLength?: number;
  /** Engine batch budget, rows x longest row (default: the engine's). */
  batchTokens?: number;
  resume?: boolean;
  /** Names the selector in the resume check (the CLI passes the --selector path; a directory also identifies its weights). */
  modelId?: string;
  /** Exact score ties: 'later' candidate first (default, the reference's) or 'earlier'. */
  ties?: TieRule;
}

export type TieRule = 'later' | 'earlier';

export interface SelectSummary extends StageSummaryBase {
  /** Questions in the output (written now + resumed). */
  questions: number;
  droppedPassages: number;
  kDocs: number;
  candidates: number;
  pseudoGenerated: number;
  pseudoReused: number;
  /** Recall@1/3/5 of the input order, over `questions`. */
  originRecall: Record<string, number>;
  /** Recall@1/3/5 of the reranked passages kept (the first min(k, K)), over `questions`: the reference's number. */
  rerankRecall: Record<string, number>;
  /** Recall@1/3/5 of the full reranked candidate list (not only the K kept), over `questions`. */
  rerankRecallFull: Record<string, number>;
  /** Questions whose top-1 is the pseudo-passage (the reference's use_internal). */
  pseudoSelected: number;
  /** Pairs scored by this run (resumed records not included). */
  pairs: number;
  /** Wall time of the whole run, pseudo-passage generation included. */
  seconds: number;
  /** Time spent in the selector's score calls (tokenisation included). */
  scoreSeconds: number;
  /** pairs / scoreSeconds. */
  pairsPerSecond: number;
}

export const RECALL_KS = [1, 3, 5] as const;

interface Candidate {
  /** The ctx as the input holds it (decoded only for the passages kept). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ctx: () => Record<string, any>;
  title: string;
  text: string;
  pseudo: boolean;
}

interface Pending {
  /** The input record, its ctxs left undefined (the output replaces them). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  record: () => Record<string, any>;
  question: string;
  matcher: AnswerMatcher;
  candidates: Candidate[];
  /** Pseudo-passage text; undefined until generated. */
  pseudo: string | undefined;
  originHit: number | null;
}



/** Validates the options (TypeError/RangeError) and fills in defaults; cheap, call it before loading models. */
export function checkSelectOptions(options: SelectOptions) {
  if (typeof options?.data !== 'string' || options.data === '') throw new TypeError('data must be a file path');
  if (typeof options.out !== 'string' || options.out === '') throw new TypeError('out must be a file path');
  validateOutput(options.out, 'file', { inputs: [options.data], label: 'out' });
  if (options.ties !== undefined && options.ties !== 'later' && options.ties !== 'earlier') throw new RangeError(`ties must be 'later' or 'earlier'`);
  if (options.maxLength !== undefined) positiveInt('maxLength', options.maxLength);
  if (options.batchTokens !== undefined) positiveInt('batchTokens', options.batchTokens);
  return {
    kDocs: positiveInt('kDocs', options.kDocs ?? 1),
    candidates: positiveInt('candidates', options.candidates ?? 100),
    batchQuestions: positiveInt('batchQuestions', options.batchQuestions ?? 32),
    pseudoMaxNewTokens: positiveInt('pseudoMaxNewTokens', options.pseudoMaxNewTokens ?? 256),
    usePseudo: options.pseudoPassage ?? true,
    ties: options.ties ?? 'later',
  };
}

function ctxText(c: unknown): string | undefined {
  return c && typeof c === 'object' && typeof (c as { text?: unknown }).text === 'string' ? (c as { text: string }).text : undefined;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function findPseudo(r: Record<string, any>): string | undefined {
  if (typeof r.pseudo_passage === 'string') return r.pseudo_passage;
  for (const list of [r.ctxs, r.passages]) {
    if (!Array.isArray(list)) continue;
    const p = list.find((c) => c && typeof c === 'object' && c.pseudo === true && typeof c.text === 'string');
    if (p) return p.text;
  }
  return undefined;
}

/** Reranks retrieved passages (+ pseudo-passage) of every record with `selector`; see the top of this file. */
export async function select(selector: PairScorer, options: SelectOptions): Promise<SelectSummary> {
  const { kDocs, candidates, batchQuestions, pseudoMaxNewTokens, usePseudo, ties } = checkSelectOptions(options);
  if (selector.numLabels !== 1) throw new GainragError('E_MODEL_CONFIG', `the selector has ${selector.numLabels} output labels; a reranker with one relevance logit is needed`);
  const warn = options.warn ?? (() => undefined);
  const wrap = options.wrapPrompt ?? ((p: string) => p);
  const signal = options.signal;
  const summary: SelectSummary = {
    input: options.data, output: options.out, records: 0, questions: 0, written: 0, resumed: 0, skipped: 0, skippedReasons: {},
    droppedPassages: 0, kDocs, candidates, pseudoGenerated: 0, pseudoReused: 0, originRecall: {}, rerankRecall: {}, rerankRecallFull: {},
    pseudoSelected: 0, pairs: 0, seconds: 0, scoreSeconds: 0, pairsPerSecond: 0,
  };
  // Recall@k of the reranked list as the reference computes it: over the K passages kept
  // (a hit ranked below K is not in the output); and over the whole reranked list.
  const hits = { origin: RECALL_KS.map(() => 0), rerank: RECALL_KS.map(() => 0), rerankFull: RECALL_KS.map(() => 0) };
  const account = (rec: OutputRecord) => {
    RECALL_KS.forEach((k, i) => {
      if (typeof rec.origin_hit_rank === 'number' && rec.origin_hit_rank < k) hits.origin[i]++;
      if (typeof rec.rerank_hit_rank === 'number' && rec.rerank_hit_rank < Math.min(k, kDocs)) hits.rerank[i]++;
      if (typeof rec.rerank_hit_rank === 'number' && rec.rerank_hit_rank < k) hits.rerankFull[i]++;
    });
    if (rec.ctxs?.[0]?.pseudo === true) summary.pseudoSelected++;
  };

  const processBatch = async (batch: Pending[]): Promise<OutputRecord[]> => {
    const missing = batch.filter((q) => q.pseudo === undefined);
    if (missing.length > 0) {
      if (!options.generator) throw new GainragError('E_INVALID_ARG', `"${missing[0].question}" has no pseudo-passage; pass an LLM (--llm / --generate-url) to write one, or turn the pseudo-passage off`);
      const prompts = missing.map((q) => ({ raw: backgroundPrompt(q.question), wrapped: wrap(backgroundPrompt(q.question)) }));
      const texts = await options.generator.generate(prompts, { maxNewTokens: pseudoMaxNewTokens, signal });
      missing.forEach((q, i) => (q.pseudo = texts[i]));
      summary.pseudoGenerated += missing.length;
    }
    for (const q of batch) if (usePseudo) q.candidates.push({ ctx: () => ({}), title: '', text: q.pseudo as string, pseudo: true });
    const queries: string[] = [];
    const passages: string[] = [];
    for (const q of batch) {
      for (const c of q.candidates) {
        queries.push(q.question);
        passages.push(`${c.title}\n${c.text}`);
      }
    }
    const t0 = performance.now();
    const scores = await selector.score(queries, passages, { maxLength: options.maxLength, batchTokens: options.batchTokens, signal });
    summary.scoreSeconds += (performance.now() - t0) / 1000;
    summary.pairs += queries.length;
    let at = 0;
    return batch.map((q) => {
      const n = q.candidates.length;
      const order = rankCandidates(scores.subarray(at, at + n), ties);
      const flags = q.candidates.map((c) => q.matcher.matches(c.text));
      const rerankHit = order.findIndex((j) => flags[j]);
      const kept = order.slice(0, kDocs).map((j) => {
        const c = q.candidates[j];
        const base = c.pseudo ? { title: '', text: c.text } : c.ctx();
        return { ...base, hasanswer: flags[j], selector_score: scores[at + j], ...(c.pseudo ? { pseudo: true } : {}) };
      });
      at += n;
      return {
        ...q.record(),
        ...(usePseudo ? { pseudo_passage: q.pseudo } : {}),
        ctxs: kept,
        origin_hit_rank: q.originHit,
        rerank_hit_rank: rerankHit < 0 ? null : rerankHit,
      };
    });
  };

  await runStage<Pending, SelectSummary>({
    stage: 'select',
    io: options,
    batchQuestions,
    settings: {
      selector: options.modelId ?? null, weights: weightsFingerprint(options.modelId), kDocs, candidates, pseudoPassage: usePseudo, pseudoMaxNewTokens,
      batchQuestions, maxLength: options.maxLength ?? null, batchTokens: options.batchTokens ?? null, ties, generator: options.generator?.description ?? null,
      precision: options.matmulPrecision === 'high' ? precisionLabel(options.dtype ?? 'float32', 'high') : options.dtype ?? null,
    },
    finished: SELECT_OUTPUT,
    account,
    prepare: async (row, where) => {
      const c = row.columns;
      const q = (c && prepareColumns(c.batch, c.row, where, candidates, kDocs, usePseudo, summary, warn)) || prepare(row.record(), where, candidates, kDocs, usePseudo, summary, warn);
      // A question that fills the selector's whole pair budget cannot be scored against any
      // passage; only that record is skipped.
      if (selector.queryFits && !(await selector.queryFits(q.question, options.maxLength))) {
        throw new Skip('question-too-long', `${where}: the question leaves no room for a passage in the selector's ${options.maxLength ?? 'default'}-token pairs (E_DATA)`);
      }
      if (usePseudo && q.pseudo !== undefined) summary.pseudoReused++;
      return q;
    },
    process: processBatch,
  }, summary);

  summary.questions = summary.written + summary.resumed;
  const n = Math.max(summary.questions, 1);
  RECALL_KS.forEach((k, i) => {
    summary.originRecall[k] = hits.origin[i] / n;
    summary.rerankRecall[k] = hits.rerank[i] / n;
    summary.rerankRecallFull[k] = hits.rerankFull[i] / n;
  });
  summary.pairsPerSecond = summary.pairs / Math.max(summary.scoreSeconds, 1e-9);
  return summary;
}

/**
 * Candidate indices by score, highest first, NaN last. Equal scores: `later` (the default) puts
 * the later candidate first, as the reference's `np.argsort(s)[-K:][::-1]` does (a stable
 * ascending sort reversed), so an exact tie between a retrieved passage and the pseudo-passage
 * (always last) keeps the pseudo-passage; `earlier` keeps candidate order.
 */
export function rankCandidates(scores: ArrayLike<number>, ties: TieRule = 'later'): number[] {
  const key = (i: number) => (Number.isNaN(scores[i]) ? -Infinity : scores[i]);
  const order = ties === 'later' ? (a: number, b: number) => b - a : (a: number, b: number) => a - b;
  return Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => key(b) - key(a) || order(a, b));
}

/**
 * Select's checks of one record, for stages that must use the same questions (compare): the
 * usable retrieved ctxs (pseudo entries and passages without text taken out, at most
 * `candidates`) and the pseudo-passage the record carries, or why select would skip it.
 */
export function prepareSelectRecord(
  record: unknown, where: string, opts: { candidates: number; kDocs: number; pseudoPassage: boolean }, warn: (m: string) => void = () => undefined,
): { ctxs: object[]; pseudo: string | undefined } | { skip: string; reason: string } {
  try {
    const q = prepare(record, where, opts.candidates, opts.kDocs, true, { droppedPassages: 0 }, warn);
    if (!opts.pseudoPassage && q.candidates.length < opts.kDocs) throw new Skip('short-ctxs', `${where}: ${q.candidates.length} retrieved passage(s) with text, fewer than --k-docs ${opts.kDocs} (E_DATA)`);
    return { ctxs: q.candidates.map((c) => c.ctx()), pseudo: q.pseudo };
  } catch (err) {
    if (err instanceof Skip) return { skip: err.message, reason: err.reason };
    throw err;
  }
}

function prepare(
  record: unknown, where: string, candidates: number, kDocs: number, usePseudo: boolean,
  summary: { droppedPassages: number }, warn: (m: string) => void,
): Pending {
  if (record === null || typeof record !== 'object' || Array.isArray(record)) throw new Skip('not-an-object', `${where}: record is not a JSON object (E_DATA)`);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const r = record as Record<string, any>;
  if (typeof r.question !== 'string' || r.question.trim() === '') throw new Skip('no-question', `${where}: record has no "question" string (E_DATA)`);
  if (!Array.isArray(r.answers) || !r.answers.every((a: unknown) => typeof a === 'string')) throw new Skip('no-answers', `${where}: record has no "answers" array of strings (E_DATA)`);
  // An empty answer would match every passage (DPR semantics), which says nothing.
  const answers = (r.answers as string[]).filter((a) => a.trim() !== '');
  if (answers.length === 0) throw new Skip('no-answers', `${where}: record has no non-empty answer (E_DATA)`);
  if (!Array.isArray(r.ctxs)) throw new Skip('no-ctxs', `${where}: record has no "ctxs" array (retrieval output expected) (E_DATA)`);
  const retrieved = r.ctxs.filter((c: { pseudo?: unknown } | null) => !(c && typeof c === 'object' && c.pseudo === true)).slice(0, candidates);
  const usable = retrieved.filter((c: unknown) => (ctxText(c) ?? '').trim() !== '');
  if (usable.length < retrieved.length) {
    summary.droppedPassages += retrieved.length - usable.length;
    warn(`${where}: ${retrieved.length - usable.length} passage(s) with empty or missing text dropped (E_DATA)`);
  }
  if (usable.length === 0) throw new Skip('no-passages', `${where}: no retrieved passage with text (E_DATA)`);
  const n = usable.length + (usePseudo ? 1 : 0);
  if (n < kDocs) throw new Skip('short-ctxs', `${where}: ${n} candidate(s) (retrieved passages with text${usePseudo ? ' + pseudo-passage' : ''}), fewer than --k-docs ${kDocs} (E_DATA)`);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const cands: Candidate[] = usable.map((c: Record<string, any>) => ({ ctx: () => c, title: typeof c.title === 'string' ? c.title : '', text: c.text as string, pseudo: false }));
  return pending(() => r, r.question, answers, cands, usePseudo ? findPseudo(r) : '');
}

function pending(record: Pending['record'], question: string, answers: string[], candidates: Candidate[], pseudo: string | undefined): Pending {
  const matcher = new AnswerMatcher(answers);
  const originHit = candidates.findIndex((c) => matcher.matches(c.text));
  return { record, question, matcher, candidates, pseudo, originHit: originHit < 0 ? null : originHit };
}

/**
 * prepare() over typed columns (lib/io/stage-input.ts): candidates from the title and text
 * columns of the first `candidates` ctxs; the ctxs kept and the rest of the record are decoded
 * when the output is built. undefined when the columns are not of the types this reads (the
 * record path then decides).
 */
function prepareColumns(
  b: ColumnarBatch, row: number, where: string, candidates: number, kDocs: number, usePseudo: boolean,
  summary: { droppedPassages: number }, warn: (m: string) => void,
): Pending | undefined {
  const ctxs = b.group('ctxs');
  const text = ctxs?.item('text');
  const title = ctxs?.item('title');
  const mark = ctxs?.item('pseudo');
  if (!ctxs || text?.type !== 'utf8' || (title && title.type !== 'utf8') || (mark && mark.type !== 'bool')) return undefined;
  const span = ctxs.span(row);
  if (!span) return undefined; // no ctxs: the record path says why
  const question = b.leaf('question')!.read(row) as string;
  if (question.trim() === '') throw new Skip('no-question', `${where}: record has no "question" string (E_DATA)`);
  const answers = (b.leaf('answers')!.read(row) as string[]).filter((a) => a.trim() !== '');
  if (answers.length === 0) throw new Skip('no-answers', `${where}: record has no non-empty answer (E_DATA)`);
  const cands: Candidate[] = [];
  let retrieved = 0;
  for (let k = span[0]; k < span[1] && retrieved < candidates; k++) {
    if (mark?.read(k) === true) continue;
    retrieved++;
    const t = text.read(k) as string | null;
    if (t === null || t.trim() === '') continue;
    cands.push({ ctx: () => ctxs.element(k), title: (title?.read(k) as string | null) ?? '', text: t, pseudo: false });
  }
  if (cands.length < retrieved) {
    summary.droppedPassages += retrieved - cands.length;
    warn(`${where}: ${retrieved - cands.length} passage(s) with empty or missing text dropped (E_DATA)`);
  }
  if (cands.length === 0) throw new Skip('no-passages', `${where}: no retrieved passage with text (E_DATA)`);
  const n = cands.length + (usePseudo ? 1 : 0);
  if (n < kDocs) throw new Skip('short-ctxs', `${where}: ${n} candidate(s) (retrieved passages with text${usePseudo ? ' + pseudo-passage' : ''}), fewer than --k-docs ${kDocs} (E_DATA)`);
  let rest: Record<string, unknown> | undefined;
  const record = () => (rest ??= b.record(row, CTXS) as Record<string, unknown>);
  let pseudo: string | undefined = '';
  if (usePseudo) {
    // findPseudo's order: pseudo_passage, a ctx marked pseudo, a passage marked pseudo.
    const pp = b.leaf('pseudo_passage')?.read(row);
    pseudo = typeof pp === 'string' ? pp : undefined;
    for (let k = span[0]; pseudo === undefined && mark && k < span[1]; k++) {
      const t = text.read(k);
      if (mark.read(k) === true && typeof t === 'string') pseudo = t;
    }
    if (pseudo === undefined) pseudo = findPseudo({ passages: record().passages });
  }
  return pending(record, question, answers, cands, pseudo);
}

const CTXS: ReadonlySet<string> = new Set(['ctxs']);

/** What `select --resume` accepts as a finished output: records whose ctxs carry selector scores. */
const SELECT_OUTPUT = {
  stage: 'select',
  needs: 'question and ctxs[].selector_score',
  isStageRecord: (r: unknown): r is { question: string; origin_hit_rank?: unknown; rerank_hit_rank?: unknown; ctxs: { pseudo?: boolean }[] } => {
    const rec = r as { question?: unknown; ctxs?: unknown };
    return typeof rec === 'object' && rec !== null && typeof rec.question === 'string' && Array.isArray(rec.ctxs) &&
      rec.ctxs.every((c) => typeof c === 'object' && c !== null && typeof (c as { selector_score?: unknown }).selector_score === 'number');
  },
};
