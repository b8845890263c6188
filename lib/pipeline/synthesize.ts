// Gain-signal synthesis (GainRAG step 2): for each retrieved question, the contrastive perplexity
// of the gold answers given each passage (the passage's "gain"), plus a greedy answer per passage
// scored with regex EM / token F1. Output records use the reference layout
// {question, answers, prompt_standard, passages: [{title, text, has_answer, retrieval_score,
// prompt_retrieved, PPL_CD, retrieved_ppl, EM_with_retrieval, F1_with_retrieval}]}, one JSON line
// per question, in input order. retrieved_ppl is the plain perplexity of the answers given the
// passage (alpha 0, min over answers), from the same forward passes as PPL_CD.
//
// Work is grouped per `batchQuestions` questions: one native contrastivePerplexity call (each
// prompt prefilled once whatever the number of answers) and one generate call per group.
// The output is written to `<out>.partial` and flushed after every group; `resume` continues
// from it and the final name appears only when the whole input is done.
//
// Bad input policy (each warning names FILE:LINE, counts go to the summary):
// - record without a string `question`, without an `answers` array of strings, with no usable
//   answer, or without a `ctxs` array: the record is skipped (nothing can be scored);
// - a passage with empty text, or one that is not an object: the passage is dropped, the record
//   kept; a record left with no passage (and no pseudo-passage) is skipped;
// - a prompt longer than the model's context: the passage text is cut (tokens from its end) so
//   prompt + longest answer fits; the passage gets `truncated: true` and keeps its full `text`,
//   while `prompt_retrieved` shows what the model saw. A question whose passage-free prompt does
//   not fit is skipped;
// - empty (whitespace-only) gold answers are ignored for scoring, with a warning;
// - the pseudo-passage is kept whatever the model wrote, even nothing (as the reference);
// - invalid JSON stops the run (the file is damaged); everything written so far stays in
//   `<out>.partial` and `--resume` continues after the input is fixed.
//
// Besides the reference fields each passage records `generated` (the answer that EM/F1 scored),
// and `pseudo: true` / `truncated: true` where they apply; records keep the input's `id`.
// A resumed run matches finished records to the input by question text, and groups the remaining
// questions into the same batches as an uninterrupted run: as the partial file always ends at a
// batch boundary (unless a write was torn), the final file is byte-identical to an uninterrupted
// run's (the engine's padded batches round differently when grouped differently, ~1e-7 relative).
// Batches are blocks of `batchQuestions` input positions (less the skipped records), so a shard
// or cluster chunk that starts on a block boundary (lib/io/records.ts) batches as one run does.
import { positiveInt, type StageStreamOptions } from './stage.js';
import { runStage, type StageSummaryBase } from './run-stage.js';
import { validateOutput } from '../io/output.js';
import { weightsFingerprint } from '../models/fingerprint.js';
import { cutForTokens, MAX_CHARS_PER_TOKEN } from '../tokenizer.js';
import { emMaxOverGold, f1MaxOverGold } from '../metrics/index.js';
import { bestPassageIndex } from './filter.js';
import { Skip, validate, validateColumns, type Passage, type Question } from './synthesize-input.js';
import type { StageRow } from '../io/stage-input.js';
import { backgroundPrompt, promptWrapper, retrievedPrompt, standardPrompt, taskInstruction, DEFAULT_SYSTEM_PROMPT, type ChatTemplateMode, type ChatTemplater } from './prompts.js';
import type { GenerationPrompt, TextGenerator } from './openai-generate.js';
import { nativeGenerator } from './text-backend.js';

/** What synthesis needs from a causal LM (lib/models/causal-lm.ts CausalLM satisfies it). */
export interface SynthesisModel extends ChatTemplater {
  readonly contextLength: number;
  /** CausalLM's: its precision goes into the resume fingerprint. */
  readonly info?: { readonly dtype: string };
  readonly tokenizer: {
    encodeRaw(texts: string[]): Promise<number[][]>;
    decode(ids: ArrayLike<number>, skipSpecialTokens?: boolean): Promise<string>;
    readonly config: { chatTemplate?: string };
  };
  contrastivePerplexity(
    items: { standardPrompt: string; contextPrompts: string[]; answers: string[] }[],
    options?: { alpha?: number; signal?: AbortSignal; onProgress?: (done: number, total: number, note: string) => void },
  ): Promise<{ perAnswer: number[][]; min: number[]; plainMin?: number[] }[]>;
  generate(prompts: string[], options: { maxNewTokens: number; temperature?: number; signal?: AbortSignal }): Promise<{ texts: string[] }>;
}

export interface SynthesizeOptions extends StageStreamOptions {
  data: string;
  out: string;
  topK?: number;
  alpha?: number;
  /** Task name (prompts.ts TASK_INSTRUCTIONS); ignored when `instruction` is given. */
  task?: string;
  instruction?: string;
  pseudoPassage?: boolean;
  /** Tokens generated per passage answer (default 32; the reference lets vLLM run to 2048). */
  maxNewTokens?: number;
  /** Tokens generated for the pseudo-passage (default 256: "100 words" plus slack). */
  pseudoMaxNewTokens?: number;
  chatTemplate?: ChatTemplateMode;
  systemPrompt?: string;
  resume?: boolean;
  batchQuestions?: number;
  /** Names the model in the resume check (the CLI passes the --llm path). */
  modelId?: string;
  /** Where answers and pseudo-passages are generated; default: the model itself. */
  generator?: TextGenerator;
  /** Templated prompts start with two BOS tokens, as vLLM 0.7.3 (the reference) tokenised them. */
  doubleBos?: boolean;
}

export interface SynthesizeSummary extends StageSummaryBase {
  droppedPassages: number;
  droppedAnswers: number;
  truncatedPassages: number;
  passagesScored: number;
  /** Scored passages whose PPL_CD came out NaN or infinite (written as null / 1e999): a broken model or an answer with no usable tokens. */
  nonFiniteScores: number;
  questionsPerSecond: number;
  /** Share of written questions whose lowest-PPL passage is answered correctly (what `filter` keeps). */
  bestPassageEM: number;
}


/**
 * Largest contrastive weight accepted. (1+a)*z_ctx - a*z_noctx amplifies the logit difference a
 * times: logits carry ~7 significant digits in float32 (~3 in bf16), so far before the float
 * overflow that turns every score into NaN (a = 1e300), a > 100 leaves mostly rounding noise.
 * The paper uses 0.5.
 */
export const MAX_ALPHA = 100;


/** Validates the options (TypeError/RangeError) and fills in the defaults; cheap, call it before loading a model. */
export function checkSynthesizeOptions(options: SynthesizeOptions) {
  if (typeof options?.data !== 'string' || options.data === '') throw new TypeError('data must be a file path');
  if (typeof options.out !== 'string' || options.out === '') throw new TypeError('out must be a file path');
  validateOutput(options.out, 'file', { inputs: [options.data], label: 'out' });
  const alpha = options.alpha ?? 0.5;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0 || alpha > MAX_ALPHA) {
    throw new RangeError(`alpha must be a number in [0, ${MAX_ALPHA}], got ${String(alpha)}`);
  }
  if (options.chatTemplate !== undefined && options.chatTemplate !== 'auto' && options.chatTemplate !== 'none') throw new RangeError(`chatTemplate must be 'auto' or 'none'`);
  return {
    topK: positiveInt('topK', options.topK ?? 20),
    batchQuestions: positiveInt('batchQuestions', options.batchQuestions ?? 8),
    maxNewTokens: positiveInt('maxNewTokens', options.maxNewTokens ?? 32),
    pseudoMaxNewTokens: positiveInt('pseudoMaxNewTokens', options.pseudoMaxNewTokens ?? 256),
    alpha,
    instruction: options.instruction ?? taskInstruction(options.task),
  };
}

export async function synthesize(lm: SynthesisModel, options: SynthesizeOptions): Promise<SynthesizeSummary> {
  const { topK, batchQuestions, maxNewTokens, pseudoMaxNewTokens, alpha, instruction } = checkSynthesizeOptions(options);
  const usePseudo = options.pseudoPassage ?? true;
  const systemPrompt = options.systemPrompt ?? DEFAULT_SYSTEM_PROMPT;
  const wrap = promptWrapper(lm, options.chatTemplate ?? 'auto', Boolean(lm.tokenizer.config.chatTemplate), systemPrompt, { doubleBos: options.doubleBos });
  const generator: TextGenerator = options.generator ?? nativeGenerator(lm);
  const warn = options.warn ?? (() => undefined);
  const signal = options.signal;
  const summary: SynthesizeSummary = {
    input: options.data, output: options.out, records: 0, written: 0, resumed: 0, skipped: 0, skippedReasons: {},
    droppedPassages: 0, droppedAnswers: 0, truncatedPassages: 0, passagesScored: 0, nonFiniteScores: 0, seconds: 0, questionsPerSecond: 0, bestPassageEM: 0,
  };
  let bestCorrect = 0;

  const scoreBatch = async (qs: Question[]): Promise<object[]> => {
    if (usePseudo) {
      const prompts = qs.map((q) => ({ raw: backgroundPrompt(q.question), wrapped: wrap(backgroundPrompt(q.question)) }));
      const texts = await generator.generate(prompts, { maxNewTokens: pseudoMaxNewTokens, signal });
      qs.forEach((q, i) => q.passages.push({ title: '', text: texts[i], promptText: texts[i], has_answer: null, retrieval_score: null, pseudo: true }));
      for (const q of qs) await fitPassages(q, q.passages.length - 1);
    }
    const contexts = qs.map((q) => q.passages.map((p) => wrap(retrievedPrompt(instruction, q.question, p.title, p.promptText))));
    const ppl = await lm.contrastivePerplexity(
      qs.map((q, i) => ({ standardPrompt: wrap(q.standard), contextPrompts: contexts[i], answers: q.scoring })),
      { alpha, signal },
    );
    const flat: GenerationPrompt[] = [];
    qs.forEach((q, i) => q.passages.forEach((p, j) => flat.push({ raw: retrievedPrompt(instruction, q.question, p.title, p.promptText), wrapped: contexts[i][j] })));
    const answers = await generator.generate(flat, { maxNewTokens, signal });
    let k = 0;
    return qs.map((q, i) => {
      const passages = q.passages.map((p, j) => {
        const prediction = answers[k++];
        return {
          title: p.title,
          text: p.text,
          has_answer: p.has_answer,
          retrieval_score: p.retrieval_score,
          prompt_retrieved: retrievedPrompt(instruction, q.question, p.title, p.promptText),
          PPL_CD: ppl[i].min[j],
          // Plain perplexity given the passage (the reference's data2selector sort key).
          retrieved_ppl: ppl[i].plainMin?.[j] ?? null,
          EM_with_retrieval: emMaxOverGold(prediction, q.golds),
          F1_with_retrieval: f1MaxOverGold(prediction, q.golds),
          generated: prediction,
          ...(p.pseudo ? { pseudo: true } : {}),
          ...(p.truncated ? { truncated: true } : {}),
        };
      });
      summary.passagesScored += passages.length;
      const broken = passages.filter((p) => !Number.isFinite(p.PPL_CD)).length;
      if (broken > 0) {
        summary.nonFiniteScores += broken;
        warn(`${q.where}: ${broken} of ${passages.length} passage scores are not finite numbers (NaN/Infinity) (E_DATA)`);
      }
      return { ...(q.id !== undefined ? { id: q.id } : {}), question: q.question, answers: q.answers, prompt_standard: q.standard, passages };
    });
  };

  // Cuts passage texts (from index `from`) until prompt + longest answer fits the context;
  // drops a passage whose prompt does not fit even with no text (a huge title).
  const fitPassages = async (q: Question, from: number) => {
    const ps = q.passages.slice(from);
    // A passage never keeps more tokens than the context holds: cut huge texts before tokenising.
    const prompts = ps.map((p) => wrap(retrievedPrompt(instruction, q.question, p.title, cutForTokens(p.text, lm.contextLength))));
    const lengths = (await lm.tokenizer.encodeRaw(prompts)).map((t) => t.length);
    const unfit = new Set<Passage>();
    for (let i = 0; i < ps.length; i++) {
      if (lengths[i] <= q.budget) continue;
      const p = ps[i];
      const [ids] = await lm.tokenizer.encodeRaw([cutForTokens(p.text, lm.contextLength)]);
      let keep = ids.length - (lengths[i] - q.budget);
      for (let attempt = 0; ; attempt++) {
        // Re-tokenising the joined prompt can merge differently at the cut: measure again.
        p.promptText = keep > 0 ? await lm.tokenizer.decode(ids.slice(0, keep), true) : '';
        const [t] = await lm.tokenizer.encodeRaw([wrap(retrievedPrompt(instruction, q.question, p.title, p.promptText))]);
        if (t.length <= q.budget) break;
        if (keep <= 0) {
          unfit.add(p);
          break;
        }
        keep = attempt >= 8 ? 0 : keep - Math.max(1, t.length - q.budget);
      }
      const name = p.title || (p.pseudo ? '(pseudo-passage)' : '(untitled)');
      if (unfit.has(p)) {
        summary.droppedPassages++;
        warn(`${q.where}: passage "${name}" dropped: its prompt does not fit the model's context (${lm.contextLength} tokens) even without text (E_DATA)`);
        continue;
      }
      p.truncated = true;
      summary.truncatedPassages++;
      warn(`${q.where}: passage "${name}" cut to ${Math.max(keep, 0)} of ${ids.length} tokens to fit the model's context (${lm.contextLength})`);
    }
    if (unfit.size > 0) q.passages = q.passages.filter((p) => !unfit.has(p));
  };

  const prepare = async (row: StageRow, where: string): Promise<Question> => {
    const c = row.columns;
    const q = (c && validateColumns(c.batch, c.row, where, topK, usePseudo, warn, summary)) || validate(row.record(), where, topK, usePseudo, warn, summary);
    if (q.question.length > lm.contextLength * MAX_CHARS_PER_TOKEN) {
      throw new Skip('prompt-too-long', `${where}: the question (${q.question.length} characters) cannot fit the model's context (${lm.contextLength} tokens) (E_DATA)`);
    }
    const answerIds = await lm.tokenizer.encodeRaw(q.scoring);
    const usable = q.scoring.filter((_, i) => answerIds[i].length > 0);
    if (usable.length < q.scoring.length) {
      summary.droppedAnswers += q.scoring.length - usable.length;
      warn(`${where}: answers that tokenize to nothing are not scored`);
    }
    if (usable.length === 0) throw new Skip('no-answers', `${where}: no gold answer with any tokens (E_DATA)`);
    q.scoring = usable;
    q.budget = lm.contextLength - Math.max(...answerIds.map((t) => t.length));
    q.standard = standardPrompt(instruction, q.question);
    // The passage-free prompts must fit: the standard one, and the pseudo-passage's (cut to nothing if need be).
    const floor = [wrap(q.standard), ...(usePseudo ? [wrap(retrievedPrompt(instruction, q.question, '', ''))] : [])];
    const longest = Math.max(...(await lm.tokenizer.encodeRaw(floor)).map((t) => t.length));
    if (longest > q.budget) throw new Skip('prompt-too-long', `${where}: the question prompt alone (${longest} tokens) leaves no room for the answer in the model's context (${lm.contextLength}) (E_DATA)`);
    await fitPassages(q, 0);
    if (q.passages.length === 0 && !usePseudo) throw new Skip('no-passages', `${where}: no passage fits the model's context (E_DATA)`);
    return q;
  };

  await runStage<Question, SynthesizeSummary>({
    stage: 'synthesize',
    io: options,
    batchQuestions,
    // What the output depends on: resuming with other settings would mix two kinds of records.
    settings: {
      model: options.modelId ?? null, weights: weightsFingerprint(options.modelId), contextLength: lm.contextLength, topK, alpha, instruction,
      pseudoPassage: usePseudo, maxNewTokens, pseudoMaxNewTokens, chatTemplate: options.chatTemplate ?? 'auto', systemPrompt, doubleBos: options.doubleBos ?? false, generator: generator.description,
      // The scoring model's precision (float32, bfloat16, int8, ...), when it says.
      precision: lm.info?.dtype ?? null,
    },
    finished: SYNTHESIZE_OUTPUT,
    account: (record) => {
      if (isBestCorrect(record)) bestCorrect++;
    },
    prepare,
    process: scoreBatch,
  }, summary);
  summary.questionsPerSecond = summary.written / Math.max(summary.seconds, 1e-9);
  const all = summary.written + summary.resumed;
  summary.bestPassageEM = all > 0 ? bestCorrect / all : 0;
  return summary;
}

// Kept here too: synthesize's native generator is part of the public API since round 1.
export { nativeGenerator } from './text-backend.js';

function isBestCorrect(record: { passages?: { PPL_CD: number | null; EM_with_retrieval: boolean }[] }): boolean {
  const ps = record?.passages;
  if (!Array.isArray(ps) || ps.length === 0) return false;
  return Boolean(ps[bestPassageIndex(ps)].EM_with_retrieval);
}

// The shape every record synthesize writes has (and other stages' outputs do not).
const SYNTHESIZE_OUTPUT = { stage: 'synthesize', needs: 'question and passages[].PPL_CD', isStageRecord: isSynthesizeRecord };

function isSynthesizeRecord(record: unknown): record is { question: string; passages: { PPL_CD: number | null; EM_with_retrieval: boolean }[] } {
  const r = record as { question?: unknown; passages?: unknown };
  return (
    typeof r === 'object' && r !== null && typeof r.question === 'string' && Array.isArray(r.passages) &&
    r.passages.every((p) => typeof p === 'object' && p !== null && 'PPL_CD' in p)
  );
}
