// `compare`: GainRAG against its baselines on the same questions, as in the paper's tables:
//   no-retrieval   the LLM alone (the reference's run_baselines.py produces no number for it: it
//                  indexes an empty prompt list and raises IndexError; here it is a real run);
//   retrieval      the top-K retrieved passages, in retrieval order;
//   reranker       the top-K of an off-the-shelf cross-encoder over the candidates;
//   gainrag        the top-K of the trained selector over the candidates + the pseudo-passage.
// Every run reads `input.jsonl` under the output directory: the records of --data that all four
// runs can use (select's validation with K = the largest --k-docs; passages without text and
// pseudo entries taken out of ctxs), so every row of the table is over the same questions.
// Answers come from generateAnswers (lib/pipeline/generate.ts), K passages each; EM/F1 are recomputed from each
// answers file by evaluate(), Recall@K from the ctxs each run answered with (DPR matching).
// Each stage writes its file atomically plus `<file>.summary.json`, and records what the file
// depends on in `<file>.settings.json` (its input's identity and settings, the model, K, token
// limit...) before it starts. With `resume` a stage is reused, or its partial file continued, only
// when the recorded settings are the current ones; with other --data or --max-new-tokens it runs
// again, so a table never mixes runs of different settings.
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { claimCompareDir } from './compare-dir.js';
import path from 'node:path';
import { GainragError } from '../errors.js';
import { AtomicJsonlWriter, readRecords } from '../io/jsonl.js';
import { validateOutput, writeFileAtomic } from '../io/output.js';
import { readStageInput } from '../io/records.js';
import { checkRegularFile } from '../io/input-file.js';
import { AnswerMatcher } from '../retrieval/has-answer.js';
import { evaluate } from './evaluate.js';
import { prepareSelectRecord, select, type PairScorer, type SelectSummary } from './select.js';
import type { TextGenerator } from './openai-generate.js';
import { generateAnswers as defaultGenerateAnswers, type GenerateAnswersOptions } from './generate.js';
import type { CausalLM } from '../models/causal-lm.js';

/** Writes answers for one run (generateAnswers; tests may stand in their own). */
export type GenerateAnswers = (options: GenerateAnswersOptions) => Promise<{ seconds?: number }>;

/** Settings of one stage's file; compared as JSON text, so keys are always built in one order. */
type Settings = Record<string, unknown>;

/** generateAnswers settings passed through to every run. */
export type GenerationSettings = Pick<GenerateAnswersOptions,
  'instruction' | 'chatTemplate' | 'systemPrompt' | 'generateModel' | 'generateTimeoutMs' | 'generateConcurrency' | 'device' | 'dtype'>;

export interface CompareOptions {
  data: string;
  outDir: string;
  /** How answers are generated: a loaded CausalLM (lm), a model directory, or a server URL. */
  lm?: CausalLM;
  llm?: string;
  generateUrl?: string;
  selector?: PairScorer;
  reranker?: PairScorer;
  /** Writes pseudo-passages for the selector run. */
  pseudoGenerator?: TextGenerator;
  wrapPrompt?: (raw: string) => string;
  pseudoMaxNewTokens?: number;
  kDocs?: number[];
  candidates?: number;
  task?: string;
  maxNewTokens?: number;
  batchQuestions?: number;
  resume?: boolean;
  /** Identify the models in select's resume check (and in the settings of every run). */
  selectorId?: string;
  rerankerId?: string;
  /** Identifies the answering LLM when `lm` is given (default: its directory). */
  llmId?: string;
  /** Passed to every generateAnswers call. */
  generation?: GenerationSettings;
  /** Default: generateAnswers of lib/pipeline/generate.ts. */
  generateAnswers?: GenerateAnswers;
  signal?: AbortSignal;
  onStage?: (name: string) => void;
  onProgress?: (done: number, total: number) => void;
  warn?: (message: string) => void;
}

export interface CompareRow {
  run: 'no-retrieval' | 'retrieval' | 'reranker' | 'gainrag';
  /** Passages in the prompt (0 for no retrieval). */
  k: number;
  questions: number;
  EM: number;
  F1: number;
  /** Share of questions with an answer in the K passages given to the LLM; null without retrieval. */
  recall: number | null;
  /** Answers whose evidence was cut to fit the LLM's context (records marked `truncated`). */
  truncated: number;
  /** Generation plus, for reranker/gainrag, the whole reranking stage (shared by every K). */
  seconds: number;
  questionsPerSecond: number;
  answers: string;
}

export interface CompareSummary {
  outDir: string;
  records: number;
  questions: number;
  skipped: number;
  kDocs: number[];
  rows: CompareRow[];
  /** select summaries of the reranking runs. */
  reranker?: SelectSummary;
  gainrag?: SelectSummary;
}

function parseKs(ks: number[] | undefined): number[] {
  const out = ks ?? [1, 5];
  if (!Array.isArray(out) || out.length === 0) throw new RangeError('kDocs must be a non-empty list');
  for (const k of out) if (!Number.isInteger(k) || k < 1) throw new RangeError(`kDocs entries must be positive integers, got ${k}`);
  return [...new Set(out)].sort((a, b) => a - b);
}

/** Validates the options (TypeError/RangeError); cheap, call it before loading models. */
export function checkCompareOptions(options: CompareOptions): { kDocs: number[]; candidates: number } {
  if (typeof options?.data !== 'string' || options.data === '') throw new TypeError('data must be a file path');
  if (typeof options.outDir !== 'string' || options.outDir === '') throw new TypeError('outDir must be a directory path');
  validateOutput(options.outDir, 'dir', { label: 'outDir', inputs: [options.data] }); // an existing file is E_INVALID_ARG
  if (options.lm === undefined && !options.llm && !options.generateUrl) throw new TypeError('compare needs an LLM: lm, llm or generateUrl');
  const kDocs = parseKs(options.kDocs);
  const candidates = options.candidates ?? 100;
  if (!Number.isInteger(candidates) || candidates < kDocs[kDocs.length - 1]) throw new RangeError(`candidates must be an integer >= the largest kDocs (${kDocs[kDocs.length - 1]}), got ${candidates}`);
  return { kDocs, candidates };
}

export async function compare(options: CompareOptions): Promise<CompareSummary> {
  const { kDocs, candidates } = checkCompareOptions(options);
  const maxK = kDocs[kDocs.length - 1];
  const generateAnswers = options.generateAnswers ?? defaultGenerateAnswers;
  const warn = options.warn ?? (() => undefined);
  const dir = options.outDir;
  claimCompareDir(dir); // never over files of compare's names that compare did not write
  const file = (name: string) => path.join(dir, name);
  const resume = options.resume ?? false;
  const settingsFile = (out: string) => `${out}.settings.json`;
  const sameSettings = (out: string, settings: Settings) =>
    resume && existsSync(settingsFile(out)) && readFileSync(settingsFile(out), 'utf8') === JSON.stringify(settings);
  const finished = (out: string, settings: Settings) => sameSettings(out, settings) && existsSync(out) && existsSync(`${out}.summary.json`);
  // Before a stage runs: true when its partial file may be continued (same settings); otherwise
  // the old summary goes first, so an interrupted rerun can never pass the old file off as done.
  const begin = (out: string, settings: Settings): boolean => {
    const same = sameSettings(out, settings);
    if (!same) {
      rmSync(`${out}.summary.json`, { force: true });
      writeFileAtomic(settingsFile(out), JSON.stringify(settings));
    }
    return same;
  };
  const saveSummary = (out: string, value: unknown) => writeFileAtomic(`${out}.summary.json`, JSON.stringify(value));
  const loadSummary = <T>(out: string): T => JSON.parse(readFileSync(`${out}.summary.json`, 'utf8')) as T;
  const llmId = options.llmId ?? (options.generateUrl ? `${options.generateUrl}#${options.generation?.generateModel ?? ''}` : path.resolve(options.llm ?? options.lm?.dir ?? ''));
  const g = options.generation ?? {};
  // Timeout and concurrency change how answers are fetched, not what they are.
  const generation = { instruction: g.instruction, chatTemplate: g.chatTemplate, systemPrompt: g.systemPrompt, generateModel: g.generateModel, device: g.device, dtype: g.dtype };

  // 1. The common question set.
  const input = file('input.jsonl');
  const inputSettings: Settings = { stage: 'input', data: fileIdentity(options.data), candidates, kDocs: maxK };
  let prep: { records: number; questions: number; skipped: number };
  if (finished(input, inputSettings)) prep = loadSummary(input);
  else {
    options.onStage?.('input');
    begin(input, inputSettings);
    prep = { records: 0, questions: 0, skipped: 0 };
    const writer = AtomicJsonlWriter.open(input, { inputs: [options.data] });
    try {
      for await (const { record, line } of readStageInput(options.data)) {
        prep.records++;
        const ok = prepareSelectRecord(record, `${options.data}:${line}`, { candidates, kDocs: maxK, pseudoPassage: false });
        if ('skip' in ok) {
          prep.skipped++;
          warn(`skipped ${ok.skip}`);
          continue;
        }
        writer.write({ ...record, ...(ok.pseudo !== undefined ? { pseudo_passage: ok.pseudo } : {}), ctxs: ok.ctxs });
        prep.questions++;
      }
      writer.close();
    } catch (err) {
      writer.abort();
      throw err;
    }
    saveSummary(input, prep);
  }
  if (prep.questions === 0) throw new GainragError('E_DATA', `${options.data}: no record usable by every run (see the warnings)`);

  const rows: CompareRow[] = [];
  const summary: CompareSummary = { outDir: dir, records: prep.records, questions: prep.questions, skipped: prep.skipped, kDocs, rows };
  const llm = { lm: options.lm, llm: options.llm, generateUrl: options.generateUrl };
  const common = { ...options.generation, task: options.task, maxNewTokens: options.maxNewTokens, signal: options.signal, onProgress: options.onProgress, warn };

  const answer = async (run: CompareRow['run'], data: string, dataSettings: Settings, k: number, extraSeconds: number) => {
    const out = file(k === 0 ? 'no-retrieval.answers.jsonl' : `${run}-k${k}.answers.jsonl`);
    const settings: Settings = { stage: 'answers', input: dataSettings, run, k, llm: llmId, task: options.task, maxNewTokens: options.maxNewTokens, generation };
    let seconds: number;
    if (finished(out, settings)) seconds = loadSummary<{ seconds: number }>(out).seconds;
    else {
      options.onStage?.(`${run}${k > 0 ? ` k=${k}` : ''}`);
      const continued = begin(out, settings);
      const t0 = performance.now();
      const g = await generateAnswers({ ...llm, ...common, data, out, kDocs: Math.max(k, 1), noRetrieval: k === 0, resume: continued });
      seconds = (performance.now() - t0) / 1000;
      saveSummary(out, { ...g, seconds });
    }
    const ev = await evaluate({ data: out });
    if (ev.evaluated !== prep.questions) warn(`${out}: ${ev.evaluated} answers for ${prep.questions} questions`);
    const total = seconds + extraSeconds;
    rows.push({
      run, k, questions: ev.evaluated, EM: ev.EM, F1: ev.F1, recall: k === 0 ? null : await recallAt(data, k), truncated: await countTruncated(out), seconds: total,
      questionsPerSecond: ev.evaluated / Math.max(total, 1e-9), answers: out,
    });
  };

  const rerank = async (name: 'reranker' | 'gainrag', scorer: PairScorer, pseudo: boolean, modelId?: string): Promise<{ out: string; s: SelectSummary; settings: Settings }> => {
    const out = file(name === 'gainrag' ? 'selected.jsonl' : 'reranked.jsonl');
    const settings: Settings = {
      stage: name, input: inputSettings, model: modelId ?? null, kDocs: maxK, candidates, batchQuestions: options.batchQuestions,
      pseudo: pseudo ? { llm: llmId, maxNewTokens: options.pseudoMaxNewTokens } : null,
    };
    if (finished(out, settings)) return { out, s: loadSummary<SelectSummary>(out), settings };
    options.onStage?.(`${name} select`);
    const continued = begin(out, settings);
    const s = await select(scorer, {
      data: input, out, kDocs: maxK, candidates, pseudoPassage: pseudo, generator: pseudo ? options.pseudoGenerator : undefined,
      wrapPrompt: options.wrapPrompt, pseudoMaxNewTokens: options.pseudoMaxNewTokens, batchQuestions: options.batchQuestions, resume: continued, modelId,
      signal: options.signal, onProgress: options.onProgress, warn,
    });
    if (s.questions !== prep.questions) warn(`${out}: ${s.questions} questions selected of ${prep.questions}`);
    saveSummary(out, s);
    return { out, s, settings };
  };

  // 2. The runs, cheapest first.
  await answer('no-retrieval', input, inputSettings, 0, 0);
  for (const k of kDocs) await answer('retrieval', input, inputSettings, k, 0);
  if (options.reranker) {
    const { out, s, settings } = await rerank('reranker', options.reranker, false, options.rerankerId);
    summary.reranker = s;
    for (const k of kDocs) await answer('reranker', out, settings, k, s.seconds);
  }
  if (options.selector) {
    const { out, s, settings } = await rerank('gainrag', options.selector, true, options.selectorId);
    summary.gainrag = s;
    for (const k of kDocs) await answer('gainrag', out, settings, k, s.seconds);
  }
  writeFileAtomic(file('compare.json'), JSON.stringify(summary, null, 1));
  return summary;
}

// What identifies an input file without reading it: a rewrite changes its size or mtime.
function fileIdentity(file: string): Settings {
  checkRegularFile(file); // E_IO when missing, E_INVALID_ARG for a directory or FIFO
  const st = statSync(file);
  return { path: path.resolve(file), size: st.size, mtimeMs: st.mtimeMs };
}

async function countTruncated(file: string): Promise<number> {
  let n = 0;
  for await (const { record } of readRecords(file)) if (record?.truncated === true) n++;
  return n;
}

/** Share of records with a DPR answer match among the first k ctxs. */
async function recallAt(file: string, k: number): Promise<number> {
  let n = 0;
  let hit = 0;
  for await (const { record } of readRecords(file)) {
    n++;
    const m = new AnswerMatcher((record.answers as string[]).filter((a) => a.trim() !== ''));
    if ((record.ctxs as { text: string }[]).slice(0, k).some((c) => m.matches(c.text))) hit++;
  }
  return n === 0 ? 0 : hit / n;
}

/** One text table: a row per run and K. */
export function formatComparison(s: CompareSummary): string {
  const head = ['run', 'K', 'EM', 'F1', 'Recall@K', 'truncated', 'seconds', 'q/s'];
  const body = s.rows.map((r) => [
    r.run, String(r.k), r.EM.toFixed(2), r.F1.toFixed(2), r.recall === null ? '-' : `${(100 * r.recall).toFixed(1)}%`, String(r.truncated ?? '-'),
    r.seconds.toFixed(1), r.questionsPerSecond.toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [
    `compare on ${s.questions} questions (${s.skipped} of ${s.records} records skipped); answers under ${s.outDir}`,
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
  ].join('\n') + '\n';
}
