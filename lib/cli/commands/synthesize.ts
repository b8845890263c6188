// `gainrag synthesize`: gain signals (contrastive perplexity per passage) + per-passage answers
// for retrieval output. Ctrl-C stops at the next batch boundary and keeps `<out>.partial` for
// `--resume`.
import type { CommandModule } from 'yargs';
import path from 'node:path';
import { CausalLM } from '../../models/causal-lm.js';
import { checkSynthesizeOptions, synthesize, type SynthesizeOptions, type SynthesizeSummary } from '../../pipeline/synthesize.js';
import { OpenAIGenerator } from '../../pipeline/openai-generate.js';
import { DEFAULT_SYSTEM_PROMPT, DEFAULT_TASK, TASK_INSTRUCTIONS } from '../../pipeline/prompts.js';
import { scaleArgs, withScaleOptions, type ScaleArgs } from '../../scale/cli-options.js';
import { progressReporter, runResumable, stageWarner } from '../../retrieval/cli-progress.js';

interface Args extends ScaleArgs {
  json: boolean;
  data: string;
  llm: string;
  out: string;
  'top-k': number;
  alpha: number;
  task: string;
  instruction?: string;
  'pseudo-passage': boolean;
  'max-new-tokens': number;
  'pseudo-max-new-tokens': number;
  'chat-template': 'auto' | 'none';
  'system-prompt': string;
  resume: boolean;
  'generate-url'?: string;
  'generate-model'?: string;
  'generate-timeout': number;
  'generate-concurrency': number;
  'batch-questions': number;
  device?: string;
  dtype?: 'float32' | 'float16' | 'bfloat16';
}

export const synthesizeCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'synthesize',
  describe: 'score retrieved passages by the gain they give the LLM (contrastive perplexity) and answer with each',
  builder: (y) =>
    withScaleOptions(y)
      .option('data', { type: 'string', demandOption: true, describe: 'retrieval output (JSONL or JSON array of {question, answers, ctxs})' })
      .option('llm', { type: 'string', demandOption: true, describe: 'Hugging Face causal LM directory' })
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
      .option('chat-template', { choices: ['auto', 'none'] as const, default: 'auto' as const, describe: "auto: wrap prompts in the model's chat template when it has one" })
      .option('system-prompt', { type: 'string', default: DEFAULT_SYSTEM_PROMPT, defaultDescription: "the reference's", describe: "system message for chat templates ('' for none)" })
      .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted run from OUT.partial' })
      .option('generate-url', { type: 'string', describe: 'generate answers via an OpenAI-compatible server (base, /v1/completions or /v1/chat/completions)' })
      .option('generate-model', { type: 'string', describe: "model name for --generate-url (default: the server's first model)" })
      .option('generate-timeout', { type: 'number', default: 120, describe: 'seconds per --generate-url request' })
      .option('generate-concurrency', { type: 'number', default: 8, describe: 'requests in flight for --generate-url' })
      .option('batch-questions', { type: 'number', default: 8, describe: 'questions per native call' })
      .option('device', { type: 'string', describe: 'cpu, cuda, cuda:N' })
      .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, describe: 'weights/compute dtype' }) as never,
  handler: async (argv) => {
    const generator = argv['generate-url']
      ? new OpenAIGenerator({
          url: argv['generate-url'],
          model: argv['generate-model'],
          timeoutMs: argv['generate-timeout'] * 1000,
          concurrency: argv['generate-concurrency'],
          systemPrompt: argv['system-prompt'],
        })
      : undefined;
    const options: SynthesizeOptions = {
      data: argv.data,
      out: argv.out,
      topK: argv['top-k'],
      alpha: argv.alpha,
      task: argv.task,
      instruction: argv.instruction,
      pseudoPassage: argv['pseudo-passage'],
      maxNewTokens: argv['max-new-tokens'],
      pseudoMaxNewTokens: argv['pseudo-max-new-tokens'],
      chatTemplate: argv['chat-template'],
      systemPrompt: argv['system-prompt'],
      resume: argv.resume,
      batchQuestions: argv['batch-questions'],
      modelId: path.resolve(argv.llm),
      ...scaleArgs(argv),
      generator,
    };
    checkSynthesizeOptions(options); // before the (slow) model load
    const lm = await CausalLM.load(argv.llm, { device: argv.device as never, dtype: argv.dtype });
    const progress = progressReporter('synthesize', 'questions');
    // Long passages are routine (every one is marked `truncated: true` and counted in the
    // summary); say so a few times, not once per passage. The same for non-finite scores.
    const warn = stageWarner(progress, [
      { match: ' cut to ', more: 'more passages were cut to fit the context; see truncatedPassages in the summary' },
      { match: 'are not finite numbers', more: 'more questions have non-finite scores; see nonFiniteScores in the summary' },
    ]);
    const summary: SynthesizeSummary = await runResumable(() => progress, `finished questions are in ${argv.out}.partial, continue with --resume`, (signal) =>
      synthesize(lm, { ...options, signal, warn, onProgress: (done, total) => progress.update(done, total) }),
    );
    // Every score NaN/Infinity means the model (or --alpha) is broken: the file is written, but
    // the run is not a success.
    const allBroken = summary.passagesScored > 0 && summary.nonFiniteScores === summary.passagesScored;
    if (allBroken) {
      process.stderr.write(`gainrag: error: all ${summary.passagesScored} passage scores are NaN/Infinity; the model's outputs are not usable (check its config and weights)\n`);
      process.exitCode = 1;
    }
    if (argv.json) {
      process.stdout.write(`${JSON.stringify(summary)}\n`);
      return;
    }
    const reasons = Object.entries(summary.skippedReasons).map(([k, v]) => `${k}: ${v}`).join(', ');
    process.stdout.write(
      [
        `wrote        ${summary.output} (${summary.written} new + ${summary.resumed} resumed questions of ${summary.records})`,
        `skipped      ${summary.skipped}${reasons ? ` (${reasons})` : ''}`,
        `passages     ${summary.passagesScored - summary.nonFiniteScores} scored, ${summary.nonFiniteScores} with non-finite scores, ${summary.truncatedPassages} truncated, ${summary.droppedPassages} dropped`,
        `best-PPL EM  ${(100 * summary.bestPassageEM).toFixed(1)}% (questions that filter keeps)`,
        `speed        ${summary.questionsPerSecond.toFixed(2)} questions/s (${summary.seconds.toFixed(1)} s)`,
      ].join('\n') + '\n',
    );
  },
};
