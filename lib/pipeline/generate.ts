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
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readRecords } from '../io/jsonl.js';
import { positiveInt, type StageStreamOptions, Skip } from './stage.js';
import { recordResumeSettings, replayFinishedOutput } from './resume.js';
import { validateOutput } from '../io/output.js';
import { countRecords, openStageOutput, readStageInput, shardOf } from '../io/records.js';
import { GainragError } from '../errors.js';
import { emMaxOverGold, f1MaxOverGold } from '../metrics/index.js';
import { AnswerMatcher, RecallAccumulator } from '../retrieval/has-answer.js';
import { CausalLM } from '../models/causal-lm.js';
import { Tokenizer } from '../tokenizer.js';
import { renderChatTemplate } from '../models/chat-template.js';
import { OpenAIGenerator } from './openai-generate.js';
import { DEFAULT_SYSTEM_PROMPT, evaluationEvidence, evaluationPrompt, promptWrapper, taskInstruction, type ChatTemplateMode, type ChatTemplater } from './prompts.js';

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

export interface GenerateAnswersOptions extends StageStreamOptions {
  data: string;
  out: string;
  /** A loaded model (reused across calls); else `llm` is loaded. */
  lm?: CausalLM;
  /** Model directory: generation with it, or (with generateUrl) its tokenizer and chat template only. */
  llm?: string;
  /** OpenAI-compatible server for generation instead of the native engine. */
  generateUrl?: string;
  generateModel?: string;
  generateTimeoutMs?: number;
  generateConcurrency?: number;
  /** Passages per prompt, from the top of ctxs (default 1). */
  kDocs?: number;
  task?: string;
  instruction?: string;
  noRetrieval?: boolean;
  maxNewTokens?: number;
  chatTemplate?: ChatTemplateMode;
  systemPrompt?: string;
  resume?: boolean;
  /** Records per engine call (continuous batching runs inside a call); default 64. */
  batchQuestions?: number;
  device?: string;
  dtype?: 'float32' | 'bfloat16' | 'float16';
}

export interface GenerateSummary {
  input: string;
  output: string;
  /** Input records seen. */
  records: number;
  written: number;
  resumed: number;
  skipped: number;
  skippedReasons: Record<string, number>;
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

interface Item {
  record: Record<string, unknown>;
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

/** What produces the answers: the engine (token ids known) or a server (texts only). */
interface Backend {
  description: string;
  tokenizer?: Tokenizer;
  contextLength: number;
  templater?: ChatTemplater;
  hasTemplate: boolean;
  /** Texts, and for the engine the new-token count and whether each stopped at its limit. */
  generate(prompts: { raw: string; wrapped: string }[], limits: number[], signal?: AbortSignal, onDone?: (done: number) => void): Promise<{ texts: string[]; tokens?: number[]; atLimit?: boolean[] }>;
}

async function openBackend(o: GenerateAnswersOptions, systemPrompt: string): Promise<Backend> {
  if (o.generateUrl) {
    const server = new OpenAIGenerator({ url: o.generateUrl, model: o.generateModel, timeoutMs: o.generateTimeoutMs, concurrency: o.generateConcurrency, systemPrompt });
    const dir = o.lm?.dir ?? o.llm;
    const tokenizer = o.lm?.tokenizer ?? (dir ? Tokenizer.load(dir) : undefined);
    let contextLength = o.lm?.contextLength ?? Infinity;
    if (!o.lm && dir) {
      const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as { max_position_embeddings?: number };
      if (typeof config.max_position_embeddings === 'number') contextLength = config.max_position_embeddings;
    }
    const templater: ChatTemplater | undefined = tokenizer && {
      applyChatTemplate: (messages, opts) => renderChatTemplate(tokenizer.config.chatTemplate, messages, { bosToken: tokenizer.config.bosToken, eosToken: tokenizer.config.eosToken }, opts, dir),
    };
    return {
      description: server.description, tokenizer, contextLength, templater, hasTemplate: Boolean(tokenizer?.config.chatTemplate),
      async generate(prompts, limits, signal) {
        // The server gets one limit per request; group by limit (almost always one group).
        const texts = new Array<string>(prompts.length);
        for (const [limit, rows] of groupBy(limits)) {
          const r = await server.generate(rows.map((i) => prompts[i]), { maxNewTokens: limit, signal });
          rows.forEach((i, k) => (texts[i] = r[k]));
        }
        return { texts };
      },
    };
  }
  const lm = o.lm ?? (await CausalLM.load(o.llm!, { device: o.device, dtype: o.dtype }));
  const eos = new Set(lm.info.eosTokenIds);
  return {
    description: 'native', tokenizer: lm.tokenizer, contextLength: lm.contextLength, templater: lm, hasTemplate: Boolean(lm.tokenizer.config.chatTemplate),
    async generate(prompts, limits, signal, onDone) {
      const texts = new Array<string>(prompts.length), tokens = new Array<number>(prompts.length), atLimit = new Array<boolean>(prompts.length);
      let before = 0;
      for (const [limit, rows] of groupBy(limits)) {
        const r = await lm.generate(rows.map((i) => prompts[i].wrapped), { maxNewTokens: limit, signal, onProgress: (done) => onDone?.(before + done) });
        before += rows.length;
        rows.forEach((i, k) => {
          const ids = r.tokenIds[k];
          texts[i] = r.texts[k];
          tokens[i] = ids.length;
          atLimit[i] = ids.length >= limit && !eos.has(ids[ids.length - 1]);
        });
      }
      return { texts, tokens, atLimit };
    },
  };
}

function groupBy(values: number[]): Map<number, number[]> {
  const m = new Map<number, number[]>();
  values.forEach((v, i) => (m.get(v) ?? m.set(v, []).get(v)!).push(i));
  return m;
}

export async function generateAnswers(options: GenerateAnswersOptions): Promise<GenerateSummary> {
  const { kDocs, maxNewTokens, batchQuestions, instruction } = checkGenerateOptions(options);
  const noRetrieval = options.noRetrieval ?? false;
  const systemPrompt = options.systemPrompt ?? DEFAULT_SYSTEM_PROMPT;
  const warn = options.warn ?? (() => undefined);
  const signal = options.signal;
  const started = Date.now();
  if (options.resume && options.format === 'arrow') throw new GainragError('E_INVALID_ARG', '--resume is supported for JSONL outputs only; rerun without --resume or write JSONL');
  const range = options.range ?? (await shardOf(options.data, options.shard, batchQuestions));
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
  const finish = () => {
    const n = summary.written + summary.resumed;
    summary.EM = n > 0 ? (100 * emSum) / n : 0;
    summary.F1 = n > 0 ? (100 * f1Sum) / n : 0;
    summary.recall = recall.count > 0 ? recall.result() : null;
    summary.seconds = (Date.now() - started) / 1000;
    summary.recordsPerSecond = summary.written / Math.max(summary.seconds, 1e-9);
    if (summary.generatedTokens !== null) summary.tokensPerSecond = summary.generatedTokens / Math.max(summary.generateSeconds, 1e-9);
    return summary;
  };

  if (options.resume && !existsSync(`${options.out}.partial`) && existsSync(options.out)) {
    summary.resumed = await replayFinishedOutput(options.out, options.data, GENERATE_OUTPUT, account);
    warn(`${options.out} is already complete; nothing to resume`);
    summary.records = summary.resumed;
    return finish();
  }
  let total = 0;
  try {
    const all = await countRecords(options.data);
    total = range ? Math.max(0, Math.min(range.end, all) - range.start) : all;
  } catch (err) {
    if ((err as { code?: string }).code !== 'E_DATA') throw err;
  }
  const backend = await openBackend(options, systemPrompt);
  const wrap = backend.templater ? promptWrapper(backend.templater, options.chatTemplate ?? 'auto', backend.hasTemplate, systemPrompt) : (p: string) => p;
  const tokenizer = backend.tokenizer;
  const room = Math.min(maxNewTokens, MIN_ROOM);
  if (backend.description === 'native') {
    summary.generatedTokens = 0;
    summary.stoppedAtLimit = 0;
  }

  const settings: Record<string, unknown> = {
    model: options.lm?.dir ? path.resolve(options.lm.dir) : options.llm ? path.resolve(options.llm) : null, generator: backend.description,
    kDocs, noRetrieval, instruction, maxNewTokens, chatTemplate: options.chatTemplate ?? 'auto', systemPrompt,
  };
  const settingsPath = `${options.out}.partial.settings.json`; // removed when the run completes
  const writer = openStageOutput(options.out, { format: options.format ?? 'jsonl', kind: 'json', append: options.resume ?? false });
  try {
    recordResumeSettings(options.out, settings, writer.resumedRecords > 0);
    const done: string[] = [];
    if (writer.resumedRecords > 0) {
      for await (const { record } of readRecords(writer.partialPath)) {
        if (done.length === writer.resumedRecords) break;
        done.push(String(record?.question));
        account(record);
      }
    }
    summary.resumed = done.length;
    if (options.resume && writer.resumedRecords === 0) warn(`nothing to resume in ${writer.partialPath}; starting from the first record`);

    let seen = 0;
    let batch: Item[] = [];
    const report = (note: string, extra = 0) => options.onProgress?.(seen - batch.length + extra, total, note);

    // Token count of each text (lengths only: the ids stay in the tokenizer's typed arrays).
    const lengths = async (texts: string[]): Promise<number[]> => {
      if (!tokenizer) return texts.map(() => 0);
      const b = await tokenizer.encodeBatch(texts, { addSpecialTokens: false });
      return texts.map((_, i) => b.offsets[i + 1] - b.offsets[i]);
    };

    // Builds the prompt; cuts the evidence from its end until `room` new tokens fit.
    const prepare = async (input: unknown, line: number): Promise<Item> => {
      const where = `${options.data}:${line}`;
      if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new Skip('not-an-object', `${where}: record is not a JSON object (E_DATA)`);
      const record = input as Record<string, unknown>;
      if (typeof record.question !== 'string' || record.question.trim() === '') throw new Skip('no-question', `${where}: record has no "question" string (E_DATA)`);
      const golds = goldAnswers(record);
      if (golds.length === 0) throw new Skip('no-answers', `${where}: record has no "answers" with a non-empty string (E_DATA)`);
      let passages: { title: string; text: string }[] | null = null;
      if (!noRetrieval) {
        if (!Array.isArray(record.ctxs)) throw new Skip('no-ctxs', `${where}: record has no "ctxs" array (retrieval or select output expected; or use --no-retrieval) (E_DATA)`);
        const top = record.ctxs.slice(0, kDocs);
        if (top.length < kDocs) {
          summary.shortCtxs++;
          warn(`${where}: ${top.length} ctxs, fewer than --k-docs ${kDocs}; answering from those (E_DATA)`);
        }
        passages = [];
        for (const c of top) {
          const ctx = (c && typeof c === 'object' ? c : {}) as Record<string, unknown>;
          if (typeof ctx.text !== 'string' || ctx.text.trim() === '') continue;
          passages.push({ title: typeof ctx.title === 'string' ? ctx.title : '', text: ctx.text });
        }
        if (passages.length < top.length) {
          summary.droppedPassages += top.length - passages.length;
          warn(`${where}: ${top.length - passages.length} passage(s) with empty or missing text left out (E_DATA)`);
        }
        if (passages.length === 0) throw new Skip('no-passages', `${where}: no passage with text among the first ${kDocs} ctxs (E_DATA)`);
      }
      const question = record.question;
      let raw = evaluationPrompt(instruction, question, passages);
      let prompt = wrap(raw);
      let truncated = false;
      const budget = backend.contextLength - room;
      let [n] = await lengths([prompt]);
      if (tokenizer && n > budget) {
        const bare = (await lengths([wrap(evaluationPrompt(instruction, question, passages && []))]))[0];
        if (bare > budget) throw new Skip('prompt-too-long', `${where}: the prompt without evidence (${bare} tokens) leaves fewer than ${room} new tokens in the model's context (${backend.contextLength}) (E_DATA)`);
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
        warn(`${where}: evidence cut to fit the model's context (${backend.contextLength} tokens, ${room} left for the answer)`);
      }
      return { record, where, golds, raw, prompt, truncated };
    };

    const flushBatch = async () => {
      if (batch.length === 0) return;
      const prompts = batch.map((b) => ({ raw: b.raw, wrapped: b.prompt }));
      const ns = await lengths(prompts.map((p) => p.wrapped));
      const limits = ns.map((n) => (tokenizer ? Math.max(1, Math.min(maxNewTokens, backend.contextLength - n)) : maxNewTokens));
      const t0 = performance.now();
      const r = await backend.generate(prompts, limits, signal, (k) => report('generating', k));
      summary.generateSeconds += (performance.now() - t0) / 1000;
      batch.forEach((b, i) => {
        const generated = r.texts[i];
        const out: Record<string, unknown> = { ...b.record, generated, EM: emMaxOverGold(generated, b.golds) ? 1 : 0, F1: f1MaxOverGold(generated, b.golds) };
        if (b.truncated) out.truncated = true;
        writer.write(out);
        account(out);
        if (r.tokens) summary.generatedTokens! += r.tokens[i];
        if (r.atLimit?.[i]) summary.stoppedAtLimit!++;
      });
      writer.flush();
      summary.written += batch.length;
      batch = [];
      report('written');
    };

    let matched = 0;
    const input = readStageInput(options.data, { range })[Symbol.asyncIterator]();
    report('start');
    for (;;) {
      let next: IteratorResult<{ record: unknown; line: number }>;
      try {
        next = await input.next();
      } catch (err) {
        if (!signal?.aborted) await flushBatch();
        throw err;
      }
      if (next.done) break;
      const { record, line } = next.value;
      summary.records++;
      if (signal?.aborted) throw new GainragError('E_CANCELLED', 'generation was cancelled');
      seen++;
      const q = (record as { question?: unknown } | null)?.question;
      if (matched < done.length) {
        if (typeof q === 'string' && q === done[matched]) {
          matched++;
          continue;
        }
        try {
          await prepare(record, line);
        } catch (err) {
          if (err instanceof Skip) {
            summary.skipped++;
            summary.skippedReasons[err.reason] = (summary.skippedReasons[err.reason] ?? 0) + 1;
            continue;
          }
          throw err;
        }
        throw new GainragError('E_DATA', `${options.data}:${line}: ${writer.partialPath} does not match this input (record ${matched + 1} there is "${done[matched]}"); start without --resume`);
      }
      try {
        batch.push(await prepare(record, line));
      } catch (err) {
        if (!(err instanceof Skip)) throw err;
        summary.skipped++;
        summary.skippedReasons[err.reason] = (summary.skippedReasons[err.reason] ?? 0) + 1;
        warn(`skipped ${err.message}`);
      }
      // Batches line up with absolute output positions: a resumed run groups as an uninterrupted one.
      if (batch.length >= batchQuestions - ((summary.resumed + summary.written) % batchQuestions)) await flushBatch();
    }
    if (matched < done.length) throw new GainragError('E_DATA', `${writer.partialPath} has ${done.length} records but the input only matches ${matched}; start without --resume`);
    await flushBatch();
    writer.close();
    rmSync(settingsPath, { force: true });
  } catch (err) {
    writer.abort({ keepPartial: true });
    throw err;
  }
  return finish();
}

/** What `generate --resume` accepts as a finished output: records with a question and a generated answer. */
const GENERATE_OUTPUT = {
  stage: 'generate',
  needs: 'question and generated',
  isStageRecord: (r: unknown): r is Record<string, unknown> & { question: string } =>
    typeof r === 'object' && r !== null && typeof (r as { question?: unknown }).question === 'string' && typeof (r as { generated?: unknown }).generated === 'string',
};
