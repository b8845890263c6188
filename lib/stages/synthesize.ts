// The synthesize stage: gain signals per retrieved passage (lib/pipeline/synthesize.ts).
import path from 'node:path';
import type { Argv } from 'yargs';
import { checkSynthesizeOptions, synthesize, type SynthesizeOptions, type SynthesizeSummary } from '../pipeline/synthesize.js';
import { openTextBackend, type TextBackend, type TextBackendOptions } from '../pipeline/text-backend.js';
import { DEFAULT_TASK, TASK_INSTRUCTIONS } from '../pipeline/prompts.js';
import { GainragError } from '../errors.js';
import { cachedCausalLM, cached, scaleArgs, withPassageIndexOption, textBackendArgs, textBackendFlags, withScaleOptions, type ParsedArgs } from './flags.js';
import type { StageDefinition, StageRunBase } from './definition.js';

export type SynthesizeStageOptions = SynthesizeOptions & StageRunBase & { backend: TextBackendOptions };

export const synthesizeStage: StageDefinition<SynthesizeStageOptions, TextBackend, SynthesizeSummary> = {
  name: 'synthesize',
  describe: 'score retrieved passages by the gain they give the LLM (contrastive perplexity) and answer with each',
  unit: 'questions',
  builder: (y: Argv) =>
    textBackendFlags(withPassageIndexOption(withScaleOptions(y)), 'Hugging Face causal LM directory (scores the passages; answers too unless --generate-url)')
      .demandOption('llm')
      .option('data', { type: 'string', demandOption: true, describe: 'retrieval output (JSONL or JSON array of {question, answers, ctxs})' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL (written as OUT.partial, renamed when complete)' })
      .option('top-k', { type: 'number', default: 20, describe: 'passages per question (from the top of ctxs)' })
      .option('alpha', { type: 'number', default: 0.5, describe: 'contrastive weight: (1+a)*z_ctx - a*z_noctx' })
      .option('task', { type: 'string', default: DEFAULT_TASK, describe: `task instruction by name (${Object.keys(TASK_INSTRUCTIONS).join(', ')})` })
      .option('instruction', { type: 'string', describe: 'task instruction text (overrides --task)' })
      .option('pseudo-passage', { type: 'boolean', default: true, describe: "add the LLM's own background text as an extra passage" })
      .option('max-new-tokens', {
        type: 'number',
        default: 32,
        describe:
          'tokens generated per passage answer (the reference lets vLLM run to 2048). Measured by bench/max-new-tokens.ts on the demo ' +
          'questions: against 2048, EM changed on 0% of answers at 32 (llama-tiny, stories260K) and F1 on 0-3%, the same as at 64',
      })
      .option('pseudo-max-new-tokens', { type: 'number', default: 256, describe: 'tokens generated for the pseudo-passage' })
      .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted run from OUT.partial' })
      .option('batch-questions', { type: 'number', default: 8, describe: 'questions per native call' }) as Argv,
  optionsFromArgs: (a: ParsedArgs) => ({
    data: a.data, out: a.out, topK: a['top-k'], alpha: a.alpha, task: a.task, instruction: a.instruction, pseudoPassage: a['pseudo-passage'],
    maxNewTokens: a['max-new-tokens'], pseudoMaxNewTokens: a['pseudo-max-new-tokens'], chatTemplate: a['chat-template'], systemPrompt: a['system-prompt'],
    resume: a.resume, batchQuestions: a['batch-questions'], modelId: path.resolve(a.llm), device: a.device, doubleBos: a['double-bos'],
    backend: { ...textBackendArgs(a), needWeights: true },
    ...scaleArgs(a as never),
    ...(a.index !== undefined ? { indexDir: a.index } : {}),
  }),
  check: (o) => void checkSynthesizeOptions(o),
  alignment: (o) => o.batchQuestions ?? 8,
  load: async (o, cache) => {
    const b = { ...o.backend, device: o.device };
    const key = `text\0${JSON.stringify(b)}`;
    const backend = await cached(cache, key, () => openTextBackend({ ...b, loadLM: (dir) => cachedCausalLM(cache, dir, b.device, b.dtype) }));
    if (!backend?.lm) throw new GainragError('E_INVALID_ARG', 'synthesize needs --llm (its perplexities are computed natively)');
    return backend;
  },
  run: (backend, o) => synthesize(backend.lm!, { ...o, generator: o.backend.generateUrl ? backend.generator : undefined }),
  models: (o) => [o.backend.llm],
  written: (s) => s.written,
  resumeHint: (o) => `finished questions are in ${o.out}.partial, continue with --resume`,
  // Every score NaN/Infinity means the model (or --alpha) is broken: the file is written, but the run is not a success.
  verdict: (s) =>
    s.passagesScored > 0 && s.nonFiniteScores === s.passagesScored
      ? `all ${s.passagesScored} passage scores are NaN/Infinity; the model's outputs are not usable (check its config and weights)`
      : undefined,
  format: (s) => {
    const reasons = Object.entries(s.skippedReasons).map(([k, v]) => `${k}: ${v}`).join(', ');
    return [
      `wrote        ${s.output} (${s.written} new + ${s.resumed} resumed questions of ${s.records})`,
      `skipped      ${s.skipped}${reasons ? ` (${reasons})` : ''}`,
      `passages     ${s.passagesScored - s.nonFiniteScores} scored, ${s.nonFiniteScores} with non-finite scores, ${s.truncatedPassages} truncated, ${s.droppedPassages} dropped`,
      `best-PPL EM  ${(100 * s.bestPassageEM).toFixed(1)}% (questions that filter keeps)`,
      `speed        ${s.questionsPerSecond.toFixed(2)} questions/s (${s.seconds.toFixed(1)} s)`,
    ].join('\n') + '\n';
  },
};
