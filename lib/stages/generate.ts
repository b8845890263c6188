// The generate stage: answers from the top-K passages (or none), scored with EM/F1
// (lib/pipeline/generate.ts).
import type { Argv } from 'yargs';
import { checkGenerateOptions, generateAnswers, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_NEW_TOKENS_NOTE, type GenerateAnswersOptions, type GenerateSummary } from '../pipeline/generate.js';
import { DEFAULT_TASK, TASK_INSTRUCTIONS } from '../pipeline/prompts.js';
import type { CausalLM } from '../models/causal-lm.js';
import { GainragError } from '../errors.js';
import { cachedCausalLM, scaleArgs, withPassageIndexOption, textBackendArgs, textBackendFlags, withScaleOptions, type ParsedArgs } from './flags.js';
import type { StageDefinition, StageRunBase } from './definition.js';

export type GenerateStageOptions = GenerateAnswersOptions & StageRunBase;

export const generateStage: StageDefinition<GenerateStageOptions, CausalLM | undefined, GenerateSummary> = {
  name: 'generate',
  describe: 'answer each question with the LLM from its top-K passages (continuous batching) and score EM/F1',
  unit: 'records',
  builder: (y: Argv) =>
    textBackendFlags(withPassageIndexOption(withScaleOptions(y)), 'Hugging Face causal LM directory (with --generate-url: its tokenizer and chat template only)')
      .option('data', { type: 'string', demandOption: true, describe: 'JSONL or JSON array of {question, answers, ctxs} (select or retrieve output)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL: each record plus generated, EM (0/1), F1 (written as OUT.partial, renamed when complete)' })
      .option('k-docs', { type: 'number', default: 1, describe: 'passages in the prompt, from the top of ctxs' })
      .option('task', { type: 'string', default: DEFAULT_TASK, describe: `task instruction by name (${Object.keys(TASK_INSTRUCTIONS).join(', ')})` })
      .option('instruction', { type: 'string', describe: 'task instruction text (overrides --task)' })
      // yargs reads --no-X as X = false, so the flag is declared as `retrieval`.
      .option('retrieval', { type: 'boolean', default: true, describe: '--no-retrieval: answer from the question alone (the no-retrieval baseline)' })
      .option('max-new-tokens', { type: 'number', default: DEFAULT_MAX_NEW_TOKENS, describe: `greedy tokens per answer, stopping at EOS (the reference lets vLLM run to 2048; ${DEFAULT_MAX_NEW_TOKENS_NOTE})` })
      .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted run from OUT.partial' })
      .option('batch-questions', { type: 'number', default: 64, describe: 'records per engine call (continuous batching runs inside each call)' })
      .check((a: ParsedArgs) => {
        if (!a.llm && !a['generate-url']) throw new GainragError('E_INVALID_ARG', 'give --llm DIR or --generate-url URL');
        return true;
      }) as Argv,
  optionsFromArgs: (a: ParsedArgs) => ({
    ...textBackendArgs(a),
    data: a.data, out: a.out, kDocs: a['k-docs'], task: a.task, instruction: a.instruction, noRetrieval: !a.retrieval, maxNewTokens: a['max-new-tokens'],
    resume: a.resume, batchQuestions: a['batch-questions'],
    ...scaleArgs(a as never),
    ...(a.index !== undefined ? { indexDir: a.index } : {}),
  }),
  check: (o) => void checkGenerateOptions(o),
  alignment: (o) => o.batchQuestions ?? 64,
  // The LLM's weights only when it generates (a server needs its tokenizer alone).
  load: async (o, cache) => (o.llm && !o.generateUrl ? cachedCausalLM(cache, o.llm, o.device, o.dtype) : undefined),
  run: (lm, o) => generateAnswers({ ...o, lm }),
  models: (o) => [o.generateUrl ? undefined : o.llm],
  written: (s) => s.written,
  resumeHint: (o) => `finished records are in ${o.out}.partial, continue with --resume`,
  format: (s) => {
    const reasons = Object.entries(s.skippedReasons).map(([k, v]) => `${k}: ${v}`).join(', ');
    const recall = s.recall ? Object.entries(s.recall).map(([k, v]) => `@${k} ${(100 * v).toFixed(1)}`).join('  ') : 'n/a (no ctxs)';
    const speed = s.tokensPerSecond !== null ? `${s.tokensPerSecond.toFixed(1)} tokens/s while generating (${s.generateSeconds.toFixed(1)} s), ` : '';
    return [
      `wrote      ${s.output} (${s.written} new + ${s.resumed} resumed records of ${s.records})`,
      `skipped    ${s.skipped}${reasons ? ` (${reasons})` : ''}; short ctxs ${s.shortCtxs}, passages left out ${s.droppedPassages}, evidence cut ${s.truncated}`,
      `EM         ${s.EM.toFixed(2)}`,
      `F1         ${s.F1.toFixed(2)}`,
      `recall     ${recall}`,
      `answers    k-docs ${s.kDocs}, max ${s.maxNewTokens} new tokens${s.stoppedAtLimit !== null ? `, ${s.stoppedAtLimit} stopped at the limit` : ''}`,
      `speed      ${speed}${s.recordsPerSecond.toFixed(2)} records/s (${s.seconds.toFixed(1)} s)`,
    ].join('\n') + '\n';
  },
};
