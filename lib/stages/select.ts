// The select stage: rerank retrieved passages + the pseudo-passage with the trained selector
// (lib/pipeline/select.ts).
import path from 'node:path';
import type { Argv } from 'yargs';
import { CrossEncoder } from '../models/cross-encoder.js';
import { checkSelectOptions, select, type PairScorer, type SelectOptions, type SelectSummary } from '../pipeline/select.js';
import { TeiReranker } from '../pipeline/tei-client.js';
import { GainragError } from '../errors.js';
import { openTextBackend, type TextBackend, type TextBackendOptions } from '../pipeline/text-backend.js';
import { cachedCausalLM, cached, scaleArgs, withPassageIndexOption, textBackendArgs, textBackendFlags, withScaleOptions, type ModelCache, type ParsedArgs } from './flags.js';
import type { StageDefinition, StageRunBase } from './definition.js';

export type SelectStageOptions = SelectOptions & StageRunBase & {
  selector?: string;
  /** A TEI-compatible /rerank server instead of a local selector. */
  rerankUrl?: string;
  rerankBatch?: number;
  dtype?: TextBackendOptions['dtype'];
  backend: TextBackendOptions;
};

interface SelectModels {
  selector: PairScorer;
  writer?: TextBackend;
}

/** The pseudo-passage writer the flags ask for, through the cache (undefined: neither --llm nor --generate-url). */
export function pseudoPassageWriter(backend: TextBackendOptions, cache: ModelCache): Promise<TextBackend | undefined> {
  return cached(cache, `text\0${JSON.stringify(backend)}`, () => openTextBackend({ ...backend, loadLM: (dir) => cachedCausalLM(cache, dir, backend.device, backend.dtype) }));
}

export const selectStage: StageDefinition<SelectStageOptions, SelectModels, SelectSummary> = {
  name: 'select',
  describe: "rerank retrieved passages + the LLM's pseudo-passage with the trained selector; keep the top K",
  unit: 'questions',
  builder: (y: Argv) =>
    textBackendFlags(withPassageIndexOption(withScaleOptions(y)), 'causal LM that writes missing pseudo-passages (background prompt of synthesize)', 'cpu, cuda, cuda:N (both models)')
      .option('data', { type: 'string', demandOption: true, describe: 'retrieval output (JSONL or JSON array of {question, answers, ctxs})' })
      .option('selector', { type: 'string', describe: 'trained selector (cross-encoder directory or hub id; gainrag train)' })
      .option('rerank-url', { type: 'string', describe: 'score with a Text Embeddings Inference server instead (TEI or gainrag serve: POST /rerank, raw scores)' })
      .option('rerank-batch', { type: 'number', default: 32, describe: 'texts per --rerank-url request' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL (written as OUT.partial, renamed when complete)' })
      .option('k-docs', { type: 'number', default: 1, describe: 'passages kept per question' })
      .option('candidates', { type: 'number', default: 100, describe: 'retrieved passages reranked per question (top of ctxs)' })
      .option('pseudo-passage', { type: 'boolean', default: true, describe: 'add the pseudo-passage as a candidate (reused when the record has one: pseudo_passage, or a ctxs/passages entry with pseudo: true)' })
      .option('pseudo-max-new-tokens', { type: 'number', default: 256, describe: 'tokens generated per pseudo-passage' })
      .option('batch-questions', { type: 'number', default: 32, describe: 'questions whose pairs go to the engine in one call' })
      .option('max-length', { type: 'number', describe: "tokens per (question, passage) pair (default: the selector's maximum)" })
      .option('batch-tokens', { type: 'number', describe: 'engine batch budget, rows x longest row (default 1024 CPU, 65536 CUDA)' })
      .option('ties', { choices: ['later', 'earlier'] as const, default: 'later' as const, describe: "exact score ties: later candidate first (the reference's argsort; the pseudo-passage wins) or earlier" })
      .option('matmul-precision', { choices: ['highest', 'high'] as const, describe: "the selector's float32 products: highest (default) or high (bf16x3 on the bf16 units, CPU with oneDNN)" })
      .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted run from OUT.partial' })
      .check((a: ParsedArgs) => {
        if (Boolean(a.selector) === Boolean(a['rerank-url'])) throw new GainragError('E_INVALID_ARG', 'give one of --selector DIR or --rerank-url URL');
        return true;
      }) as Argv,
  optionsFromArgs: (a: ParsedArgs) => ({
    data: a.data, out: a.out, selector: a.selector, rerankUrl: a['rerank-url'], rerankBatch: a['rerank-batch'], kDocs: a['k-docs'], candidates: a.candidates, pseudoPassage: a['pseudo-passage'],
    pseudoMaxNewTokens: a['pseudo-max-new-tokens'], batchQuestions: a['batch-questions'], maxLength: a['max-length'], batchTokens: a['batch-tokens'],
    ties: a.ties, resume: a.resume, modelId: a.selector ? path.resolve(a.selector) : `tei:${a['rerank-url']}`, device: a.device, dtype: a.dtype, matmulPrecision: a['matmul-precision'], backend: textBackendArgs(a),
    ...scaleArgs(a as never),
    ...(a.index !== undefined ? { indexDir: a.index } : {}),
  }),
  check: (o) => void checkSelectOptions(o),
  alignment: (o) => o.batchQuestions ?? 32,
  load: async (o, cache) => {
    const selector: PairScorer = o.rerankUrl
      ? new TeiReranker({ url: o.rerankUrl, batchSize: o.rerankBatch, retries: o.backend.retries, apiKeyEnv: o.backend.apiKeyEnv, timeoutMs: o.backend.generateTimeoutMs })
      : await cached(cache, `select\0${path.resolve(o.selector!)}\0${o.device}\0${o.dtype}\0${o.matmulPrecision}`,
        () => CrossEncoder.load(o.selector!, { device: o.device as never, dtype: o.dtype, matmulPrecision: o.matmulPrecision }));
    const writer = o.pseudoPassage === false ? undefined : await pseudoPassageWriter({ ...o.backend, device: o.device }, cache);
    return { selector, writer };
  },
  run: ({ selector, writer }, o) => select(selector, { ...o, generator: writer?.generator, wrapPrompt: writer?.wrap }),
  models: (o) => [o.selector, o.backend.generateUrl ? undefined : o.backend.llm],
  written: (s) => s.written,
  resumeHint: (o) => `finished questions are in ${o.out}.partial, continue with --resume`,
  format: (s) => {
    const pct = (r: Record<string, number>) => Object.entries(r).map(([k, v]) => `@${k} ${(100 * v).toFixed(1)}%`).join('  ');
    const reasons = Object.entries(s.skippedReasons).map(([k, v]) => `${k}: ${v}`).join(', ');
    return [
      `wrote           ${s.output} (top-${s.kDocs} of up to ${s.candidates} retrieved${s.pseudoGenerated + s.pseudoReused > 0 ? ' + pseudo-passage' : ''}; ${s.written} new + ${s.resumed} resumed questions of ${s.records} records)`,
      `skipped         ${s.skipped}${reasons ? ` (${reasons})` : ''}; ${s.droppedPassages} empty passages dropped`,
      `origin recall   ${pct(s.originRecall)}`,
      `rerank recall   ${pct(s.rerankRecall)} (of the ${s.kDocs} kept, as the reference)`,
      `full list       ${pct(s.rerankRecallFull)} (whole reranked list)`,
      `pseudo top-1    ${s.pseudoSelected} of ${s.questions} questions (${s.pseudoGenerated} pseudo-passages generated, ${s.pseudoReused} reused)`,
      `speed           ${s.pairsPerSecond.toFixed(0)} pairs/s scored (${s.pairs} pairs in ${s.scoreSeconds.toFixed(1)} s; ${s.seconds.toFixed(1)} s in all)`,
    ].join('\n') + '\n';
  },
};
