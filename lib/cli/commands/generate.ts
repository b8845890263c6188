// `gainrag generate`: answer each record with the LLM from the reference's evaluation prompt over
// its top-K ctxs (or none), score EM/F1, print EM/F1/Recall. Ctrl-C stops at the next batch
// boundary and keeps `<out>.partial` for `--resume`.
import type { CommandModule } from 'yargs';
import { GainragError } from '../../errors.js';
import { checkGenerateOptions, generateAnswers, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_NEW_TOKENS_NOTE, type GenerateAnswersOptions, type GenerateSummary } from '../../pipeline/generate.js';
import { DEFAULT_SYSTEM_PROMPT, DEFAULT_TASK, TASK_INSTRUCTIONS } from '../../pipeline/prompts.js';
import { progressReporter, runResumable, stageWarner } from '../../retrieval/cli-progress.js';
import { scaleArgs, withScaleOptions, type ScaleArgs } from '../../scale/cli-options.js';

interface Args extends ScaleArgs {
  json: boolean;
  data: string;
  out: string;
  llm?: string;
  'generate-url'?: string;
  'generate-model'?: string;
  'generate-timeout': number;
  'generate-concurrency': number;
  'k-docs': number;
  task: string;
  instruction?: string;
  retrieval: boolean;
  'max-new-tokens': number;
  'chat-template': 'auto' | 'none';
  'system-prompt': string;
  resume: boolean;
  'batch-questions': number;
  device?: string;
  dtype?: 'float32' | 'float16' | 'bfloat16';
}

export const generateCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'generate',
  describe: 'answer each question with the LLM from its top-K passages (continuous batching) and score EM/F1',
  builder: (y) =>
    withScaleOptions(y)
      .option('data', { type: 'string', demandOption: true, describe: 'JSONL or JSON array of {question, answers, ctxs} (select or retrieve output)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL: each record plus generated, EM (0/1), F1 (written as OUT.partial, renamed when complete)' })
      .option('llm', { type: 'string', describe: 'Hugging Face causal LM directory (with --generate-url: its tokenizer and chat template only)' })
      .option('generate-url', { type: 'string', describe: 'generate via an OpenAI-compatible server (base, /v1/completions or /v1/chat/completions)' })
      .option('generate-model', { type: 'string', describe: "model name for --generate-url (default: the server's first model)" })
      .option('generate-timeout', { type: 'number', default: 120, describe: 'seconds per --generate-url request' })
      .option('generate-concurrency', { type: 'number', default: 8, describe: 'requests in flight for --generate-url' })
      .option('k-docs', { type: 'number', default: 1, describe: 'passages in the prompt, from the top of ctxs' })
      .option('task', { type: 'string', default: DEFAULT_TASK, describe: `task instruction by name (${Object.keys(TASK_INSTRUCTIONS).join(', ')})` })
      .option('instruction', { type: 'string', describe: 'task instruction text (overrides --task)' })
      // yargs reads --no-X as X = false, so the flag is declared as `retrieval`.
      .option('retrieval', { type: 'boolean', default: true, describe: '--no-retrieval: answer from the question alone (the no-retrieval baseline)' })
      .option('max-new-tokens', { type: 'number', default: DEFAULT_MAX_NEW_TOKENS, describe: `greedy tokens per answer, stopping at EOS (the reference lets vLLM run to 2048; ${DEFAULT_MAX_NEW_TOKENS_NOTE})` })
      .option('chat-template', { choices: ['auto', 'none'] as const, default: 'auto' as const, describe: "auto: wrap prompts in the model's chat template when it has one" })
      .option('system-prompt', { type: 'string', default: DEFAULT_SYSTEM_PROMPT, defaultDescription: "the reference's", describe: "system message for chat templates ('' for none)" })
      .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted run from OUT.partial' })
      .option('batch-questions', { type: 'number', default: 64, describe: 'records per engine call (continuous batching runs inside each call)' })
      .option('device', { type: 'string', describe: 'cpu, cuda, cuda:N' })
      .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, describe: 'weights/compute dtype' })
      .check((a) => {
        if (!a.llm && !a['generate-url']) throw new GainragError('E_INVALID_ARG', 'give --llm DIR or --generate-url URL');
        return true;
      }) as never,
  handler: async (argv) => {
    const options: GenerateAnswersOptions = {
      data: argv.data,
      out: argv.out,
      llm: argv.llm,
      generateUrl: argv['generate-url'],
      generateModel: argv['generate-model'],
      generateTimeoutMs: argv['generate-timeout'] * 1000,
      generateConcurrency: argv['generate-concurrency'],
      kDocs: argv['k-docs'],
      task: argv.task,
      instruction: argv.instruction,
      noRetrieval: !argv.retrieval,
      maxNewTokens: argv['max-new-tokens'],
      chatTemplate: argv['chat-template'],
      systemPrompt: argv['system-prompt'],
      resume: argv.resume,
      batchQuestions: argv['batch-questions'],
      device: argv.device,
      dtype: argv.dtype,
      ...scaleArgs(argv),
    };
    checkGenerateOptions(options); // before the (slow) model load
    const progress = progressReporter('generate', 'records');
    // Cut evidence is routine with long passages (every record is marked and counted).
    const warn = stageWarner(progress, [{ match: 'evidence cut', more: 'more records had their evidence cut; see truncated in the summary' }]);
    const summary: GenerateSummary = await runResumable(() => progress, `finished records are in ${argv.out}.partial, continue with --resume`, (signal) =>
      generateAnswers({ ...options, signal, warn, onProgress: (done, total) => progress.update(done, total) }),
    );
    if (argv.json) {
      process.stdout.write(`${JSON.stringify(summary)}\n`);
      return;
    }
    const reasons = Object.entries(summary.skippedReasons).map(([k, v]) => `${k}: ${v}`).join(', ');
    const recall = summary.recall ? Object.entries(summary.recall).map(([k, v]) => `@${k} ${(100 * v).toFixed(1)}`).join('  ') : 'n/a (no ctxs)';
    const speed = summary.tokensPerSecond !== null ? `${summary.tokensPerSecond.toFixed(1)} tokens/s while generating (${summary.generateSeconds.toFixed(1)} s), ` : '';
    process.stdout.write(
      [
        `wrote      ${summary.output} (${summary.written} new + ${summary.resumed} resumed records of ${summary.records})`,
        `skipped    ${summary.skipped}${reasons ? ` (${reasons})` : ''}; short ctxs ${summary.shortCtxs}, passages left out ${summary.droppedPassages}, evidence cut ${summary.truncated}`,
        `EM         ${summary.EM.toFixed(2)}`,
        `F1         ${summary.F1.toFixed(2)}`,
        `recall     ${recall}`,
        `answers    k-docs ${summary.kDocs}, max ${summary.maxNewTokens} new tokens${summary.stoppedAtLimit !== null ? `, ${summary.stoppedAtLimit} stopped at the limit` : ''}`,
        `speed      ${speed}${summary.recordsPerSecond.toFixed(2)} records/s (${summary.seconds.toFixed(1)} s)`,
      ].join('\n') + '\n',
    );
  },
};
