// Answer generation and scoring (GainRAG's last step, the reference's rag_generation.py): for each
// record, the LLM answers greedily from the reference's evaluation prompt over `ctxs[:K]` (or
// from the question alone with `noRetrieval`), and the answer is scored with regex EM and token
// F1, both max over the gold answers. Output: the input record plus `generated`, `EM` (0/1) and
// `F1`, one JSON line per record, in input order. Summary EM/F1 are means x100 over the records
// written (the reference divides by the record count; records skipped as bad input are not
// among them and are counted apart), plus Recall@1..5 of the input ctxs.
//
// Decoding: records go to the engine `batchQuestions` at a time; inside one call the engine
// runs continuous batching (native/models/llama_generate.cpp), so a long answer never holds the
// others back. Greedy decoding is prefix-stable, which is also how the --max-new-tokens default
// was chosen (bench/max-new-tokens.ts).
//
// Bad input policy (warnings name FILE:LINE; counts go to the summary):
// - not an object, no `question` string, no `answers` array with a non-empty string: skipped;
// - retrieval mode without a `ctxs` array: skipped (no-ctxs); fewer than K ctxs: answered from
//   those there are (shortCtxs); passages with empty or missing text are left out
//   (droppedPassages); none left: skipped (no-passages);
// - a prompt that leaves the model fewer than min(maxNewTokens, 64) new tokens: the evidence
//   is cut from its end (the lowest-ranked passage first) and the record gets `truncated: true`;
//   when even the question alone does not fit, the record is skipped (prompt-too-long);
// - invalid JSON stops the run; what was written stays in OUT.partial for --resume.
import path from 'node:path';
import { positiveInt, type StageStreamOptions, Skip } from './stage.js';
import { runStage, type OutputRecord, type StageSummaryBase } from './run-stage.js';
import { validateOutput } from '../io/output.js';
import { weightsFingerprint } from '../models/fingerprint.js';
import { emMaxOverGold, f1MaxOverGold } from '../metrics/index.js';
import { AnswerMatcher, RecallAccumulator } from '../retrieval/has-answer.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { Tokenizer } from '../tokenizer.js';
import { GainragError } from '../errors.js';
import { openTextBackend, type TextBackend, type TextBackendOptions } from './text-backend.js';
import type { ColumnarBatch } from '../io/columns-read.js';
import type { StageRow } from '../io/stage-input.js';
import { DEFAULT_SYSTEM_PROMPT, evaluationEvidence, evaluationPrompt, taskInstruction, type ChatTemplateMode } from './prompts.js';

/**
 * Default new-token limit. Measured (bench/max-new-tokens.ts, data/demo, models/llama-tiny and
 * stories260K): see DEFAULT_MAX_NEW_TOKENS_NOTE; the CLI prints it in --help.
 */
export const DEFAULT_MAX_NEW_TOKENS = 64;
export const DEFAULT_MAX_NEW_TOKENS_NOTE =
  'measured by bench/max-new-tokens.ts on the demo questions (K=1 and no retrieval): against 2048, 64 changed EM on <=1% of records ' +
  'and F1 on <=2% (llama-tiny, stories260K), 256 on <=1%; tiny models that seldom stop, so re-measure with yours';
/** New tokens always left to the answer: a longer prompt has its evidence cut. */
const MIN_ROOM = 64;

/** The text backend's options (lib/pipeline/text-backend.ts: lm | llm | generateUrl ...) and generate's own. */
export interface GenerateAnswersOptions extends StageStreamOptions, Omit<TextBackendOptions, 'needWeights' | 'loadLM'> {
  data: string;
  out: string;
  /** Passages per prompt, from the top of ctxs (default 1). */
  kDocs?: number;
  task?: string;
  instruction?: string;
  noRetrieval?: boolean;
  maxNewTokens?: number;
  resume?: boolean;
  /** Records per engine call (continuous batching runs inside a call); default 64. */
  batchQuestions?: number;
}

export interface GenerateSummary extends StageSummaryBase {
  /** Records with fewer than kDocs ctxs. */
  shortCtxs: number;
  droppedPassages: number;
  /** Records whose evidence was cut to fit the context. */
  truncated: number;
  /** Means x100 over the records in the output (written + resumed). */
  EM: number;
  F1: number;
  /** Recall@1..5 of the input ctxs (k deeper than the shortest ctxs left out); null without ctxs. */
  recall: Record<string, number> | null;
  kDocs: number;
  maxNewTokens: number;
  /** Answers (this run) that ran to their token limit without EOS. */
  stoppedAtLimit: number | null;
  generatedTokens: number | null;
  /** Whole run, model load included. */
  seconds: number;
  /** Seconds inside the generation calls (what tokensPerSecond divides by). */
  generateSeconds: number;
  tokensPerSecond: number | null;
  recordsPerSecond: number;
}

interface Fields {
  question: string;
  golds: string[];
  /** The first kDocs ctxs' title and text as the input holds them; null without retrieval. */
  top: { title: unknown; text: unknown }[] | null;
}

interface Item {
  /** The input record (decoded when the output is built). */
  record: () => Record<string, unknown>;
  where: string;
  golds: string[];
  /** The evaluation prompt, and as the model sees it (chat template applied). */
  raw: string;
  prompt: string;
  truncated: boolean;
}



/** Checks the options (TypeError/RangeError) and fills in defaults; cheap, before any model load. */
export function checkGenerateOptions(o: GenerateAnswersOptions) {
  if (typeof o?.data !== 'string' || o.data === '') throw new TypeError('data must be a file path');
  if (typeof o.out !== 'string' || o.out === '') throw new TypeError('out must be a file path');
  validateOutput(o.out, 'file', { inputs: [o.data], label: 'out' });
  if (!o.lm && !o.llm && !o.generateUrl) throw new TypeError('one of lm, llm or generateUrl is required');
  if (o.chatTemplate !== undefined && o.chatTemplate !== 'auto' && o.chatTemplate !== 'none') throw new RangeError(`chatTemplate must be 'auto' or 'none'`);
  return {
    kDocs: positiveInt('kDocs', o.kDocs ?? 1),
    maxNewTokens: positiveInt('maxNewTokens', o.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS),
    batchQuestions: positiveInt('batchQuestions', o.batchQuestions ?? 64),
    instruction: o.instruction ?? taskInstruction(o.task),
  };
}

/** Recall flags of a record's first 5 ctxs: `hasanswer`/`has_answer` when given, else DPR matching. */
function hitFlags(record: Record<string, unknown>, golds: string[]): boolean[] | null {
  if (!Array.isArray(record.ctxs)) return null;
  let matcher: AnswerMatcher | undefined;
  return record.ctxs.slice(0, 5).map((c) => {
    const ctx = (c && typeof c === 'object' ? c : {}) as Record<string, unknown>;
    const flag = typeof ctx.hasanswer === 'boolean' ? ctx.hasanswer : ctx.has_answer;
    if (typeof flag === 'boolean') return flag;
    matcher ??= new AnswerMatcher(golds);
    return typeof ctx.text === 'string' && matcher.matches(ctx.text);
  });
}

function goldAnswers(record: Record<string, unknown>): string[] {
  return Array.isArray(record.answers) ? record.answers.filter((a): a is string => typeof a === 'string' && a.trim() !== '') : [];
}

export async function generateAnswers(options: GenerateAnswersOptions): Promise<GenerateSummary> {
  const { kDocs, maxNewTokens, batchQuestions, instruction } = checkGenerateOptions(options);
  const noRetrieval = options.noRetrieval ?? false;
  const systemPrompt = options.systemPrompt ?? DEFAULT_SYSTEM_PROMPT;
  const warn = options.warn ?? (() => undefined);
  const signal = options.signal;
  const summary: GenerateSummary = {
    input: options.data, output: options.out, records: 0, written: 0, resumed: 0, skipped: 0, skippedReasons: {}, shortCtxs: 0, droppedPassages: 0,
    truncated: 0, EM: 0, F1: 0, recall: null, kDocs, maxNewTokens, stoppedAtLimit: null, generatedTokens: null, seconds: 0, generateSeconds: 0, tokensPerSecond: null, recordsPerSecond: 0,
  };
  let emSum = 0;
  let f1Sum = 0;
  const recall = new RecallAccumulator([1, 2, 3, 4, 5]);
  const account = (r: Record<string, unknown>) => {
    emSum += Number(r.EM) || 0;
    f1Sum += Number(r.F1) || 0;
    const flags = hitFlags(r, goldAnswers(r));
    if (flags) recall.add(flags);
  };
  // A finished output is replayed without loading a model, so the backend opens on first use.
  let backend: TextBackend | undefined;
  let wrap: (p: string) => string = (p) => p;
  let tokenizer: Tokenizer | undefined;
  const open = async () => {
    backend = await openTextBackend({ ...options, systemPrompt });
    if (!backend) throw new GainragError('E_INVALID_ARG', 'generate needs an LLM: give --llm DIR or --generate-url URL');
    ({ wrap, tokenizer } = backend);
    if (backend.description === 'native') {
      summary.generatedTokens = 0;
      summary.stoppedAtLimit = 0;
    }
  };
  const modelDir = options.lm?.dir ?? options.llm;
  const settings: Record<string, unknown> = {
    model: modelDir ? path.resolve(modelDir) : null, weights: weightsFingerprint(modelDir), generator: options.generateUrl ? `openai:${options.generateUrl}` : 'native',
    kDocs, noRetrieval, instruction, maxNewTokens, chatTemplate: options.chatTemplate ?? 'auto', systemPrompt, doubleBos: options.doubleBos ?? false,
    // The products' precision (float32, bfloat16, int8, ...): answers of two precisions must not mix.
    precision: options.generateUrl ? null : options.lm?.info.dtype ?? options.dtype ?? 'float32',
  };
  const room = Math.min(maxNewTokens, MIN_ROOM);

  // Token count of each text (lengths only: the ids stay in the tokenizer's typed arrays).
  const lengths = async (texts: string[]): Promise<number[]> => {
    if (!tokenizer) return texts.map(() => 0);
    const b = await tokenizer.encodeBatch(texts, { addSpecialTokens: false });
    return texts.map((_, i) => b.offsets[i + 1] - b.offsets[i]);
  };

  // The question, gold answers and first kDocs ctxs (title, text) of a record, or why it is skipped.
  const recordFields = (input: unknown, where: string): Fields => {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new Skip('not-an-object', `${where}: record is not a JSON object (E_DATA)`);
    const record = input as Record<string, unknown>;
    if (typeof record.question !== 'string' || record.question.trim() === '') throw new Skip('no-question', `${where}: record has no "question" string (E_DATA)`);
    const golds = goldAnswers(record);
    if (golds.length === 0) throw new Skip('no-answers', `${where}: record has no "answers" with a non-empty string (E_DATA)`);
    if (noRetrieval) return { question: record.question, golds, top: null };
    if (!Array.isArray(record.ctxs)) throw new Skip('no-ctxs', `${where}: record has no "ctxs" array (retrieval or select output expected; or use --no-retrieval) (E_DATA)`);
    const top = record.ctxs.slice(0, kDocs).map((c) => {
      const ctx = (c && typeof c === 'object' ? c : {}) as Record<string, unknown>;
      return { title: ctx.title, text: ctx.text };
    });
    return { question: record.question, golds, top };
  };
  // The same from typed columns (lib/io/stage-input.ts); undefined: the record path decides.
  const columnFields = (b: ColumnarBatch, row: number, where: string): Fields | undefined => {
    const ctxs = b.group('ctxs');
    const span = ctxs?.span(row);
    if (!noRetrieval && (!ctxs || !span)) return undefined;
    const question = b.leaf('question')!.read(row) as string;
    if (question.trim() === '') throw new Skip('no-question', `${where}: record has no "question" string (E_DATA)`);
    const golds = (b.leaf('answers')!.read(row) as string[]).filter((a) => a.trim() !== '');
    if (golds.length === 0) throw new Skip('no-answers', `${where}: record has no "answers" with a non-empty string (E_DATA)`);
    if (noRetrieval) return { question, golds, top: null };
    const title = ctxs!.item('title');
    const text = ctxs!.item('text');
    const top = [];
    for (let k = span![0]; k < Math.min(span![1], span![0] + kDocs); k++) top.push({ title: title?.read(k) ?? undefined, text: text?.read(k) ?? undefined });
    return { question, golds, top };
  };

  // Builds the prompt; cuts the evidence from its end until `room` new tokens fit.
  const prepare = async (row: StageRow, where: string): Promise<Item> => {
    const c = row.columns;
    const { question, golds, top } = (c && columnFields(c.batch, c.row, where)) || recordFields(row.record(), where);
    const record = row.record as () => Record<string, unknown>;
    let passages: { title: string; text: string }[] | null = null;
    if (top) {
      if (top.length < kDocs) {
        summary.shortCtxs++;
        warn(`${where}: ${top.length} ctxs, fewer than --k-docs ${kDocs}; answering from those (E_DATA)`);
      }
      passages = [];
      for (const ctx of top) {
        if (typeof ctx.text !== 'string' || ctx.text.trim() === '') continue;
        passages.push({ title: typeof ctx.title === 'string' ? ctx.title : '', text: ctx.text });
      }
      if (passages.length < top.length) {
        summary.droppedPassages += top.length - passages.length;
        warn(`${where}: ${top.length - passages.length} passage(s) with empty or missing text left out (E_DATA)`);
      }
      if (passages.length === 0) throw new Skip('no-passages', `${where}: no passage with text among the first ${kDocs} ctxs (E_DATA)`);
    }
    let raw = evaluationPrompt(instruction, question, passages);
    let prompt = wrap(raw);
    let truncated = false;
    const budget = backend!.contextLength - room;
    let [n] = await lengths([prompt]);
    if (tokenizer && n > budget) {
      const bare = (await lengths([wrap(evaluationPrompt(instruction, question, passages && []))]))[0];
      if (bare > budget) throw new Skip('prompt-too-long', `${where}: the prompt without evidence (${bare} tokens) leaves fewer than ${room} new tokens in the model's context (${backend!.contextLength}) (E_DATA)`);
      const evidence = evaluationEvidence(passages!);
      const [ids] = await tokenizer.encodeRaw([evidence]);
      let keep = ids.length - (n - budget);
      for (let attempt = 0; n > budget; attempt++) {
        // Re-tokenising at the cut can merge differently: measure again.
        keep = attempt >= 8 ? 0 : Math.max(0, keep);
        const cut = keep > 0 ? await tokenizer.decode(ids.slice(0, keep), true) : '';
        raw = cut + evaluationPrompt(instruction, question, []);
        prompt = wrap(raw);
        [n] = await lengths([prompt]);
        keep -= Math.max(1, n - budget);
      }
      truncated = true;
      summary.truncated++;
      warn(`${where}: evidence cut to fit the model's context (${backend!.contextLength} tokens, ${room} left for the answer)`);
    }
    return { record, where, golds, raw, prompt, truncated };
  };

  const processBatch = async (batch: Item[], report: (k: number) => void): Promise<OutputRecord[]> => {
    const prompts = batch.map((b) => ({ raw: b.raw, wrapped: b.prompt }));
    const ns = await lengths(prompts.map((p) => p.wrapped));
    const limits = ns.map((n) => (tokenizer ? Math.max(1, Math.min(maxNewTokens, backend!.contextLength - n)) : maxNewTokens));
    const t0 = performance.now();
    const r = await backend!.generateLimited(prompts, limits, signal, report);
    summary.generateSeconds += (performance.now() - t0) / 1000;
    return batch.map((b, i) => {
      const generated = r.texts[i];
      const out: Record<string, unknown> = { ...b.record(), generated, EM: emMaxOverGold(generated, b.golds) ? 1 : 0, F1: f1MaxOverGold(generated, b.golds) };
      if (b.truncated) out.truncated = true;
      if (r.tokens) summary.generatedTokens! += r.tokens[i];
      if (r.atLimit?.[i]) summary.stoppedAtLimit!++;
      return out;
    });
  };

  await runStage<Item, GenerateSummary>({
    stage: 'generate',
    io: options,
    batchQuestions,
    settings,
    finished: GENERATE_OUTPUT,
    account,
    prepare: async (row, where) => {
      if (!backend) await open();
      return prepare(row, where);
    },
    process: processBatch,
  }, summary);

  const n = summary.written + summary.resumed;
  summary.EM = n > 0 ? (100 * emSum) / n : 0;
  summary.F1 = n > 0 ? (100 * f1Sum) / n : 0;
  summary.recall = recall.count > 0 ? recall.result() : null;
  summary.recordsPerSecond = summary.written / Math.max(summary.seconds, 1e-9);
  if (summary.generatedTokens !== null) summary.tokensPerSecond = summary.generatedTokens / Math.max(summary.generateSeconds, 1e-9);
  return summary;
}

/** What `generate --resume` accepts as a finished output: records with a question and a generated answer. */
const GENERATE_OUTPUT = {
  stage: 'generate',
  needs: 'question and generated',
  isStageRecord: (r: unknown): r is Record<string, unknown> & { question: string } =>
    typeof r === 'object' && r !== null && typeof (r as { question?: unknown }).question === 'string' && typeof (r as { generated?: unknown }).generated === 'string',
};
