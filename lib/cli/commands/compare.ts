// `gainrag compare`: no retrieval vs top-K retrieval vs an off-the-shelf reranker vs the GainRAG
// selector + pseudo-passage, on the same questions, with one table (lib/pipeline/compare.ts).
import type { CommandModule } from 'yargs';
import path from 'node:path';
import { CausalLM } from '../../models/causal-lm.js';
import { CrossEncoder } from '../../models/cross-encoder.js';
import { checkCompareOptions, compare, formatComparison, type CompareOptions } from '../../pipeline/compare.js';
import { DEFAULT_TASK, TASK_INSTRUCTIONS, promptWrapper } from '../../pipeline/prompts.js';
import { nativeGenerator } from '../../pipeline/synthesize.js';
import { DEFAULT_MAX_NEW_TOKENS } from '../../pipeline/generate.js';
import { progressReporter, runResumable, stageWarner, type ProgressReporter } from '../progress.js';
import { bundledModelsNote } from '../../models/bundled.js';
import { openTextBackend } from '../../pipeline/text-backend.js';
import { TeiReranker } from '../../pipeline/tei-client.js';
import { textBackendArgs, textBackendFlags, type TextBackendArgs } from '../../stages/flags.js';

interface Args extends TextBackendArgs {
  json: boolean;
  data: string;
  out: string;
  selector?: string;
  reranker?: string;
  'rerank-url'?: string;
  'k-docs': string;
  candidates: number;
  task: string;
  'max-new-tokens'?: number;
  'pseudo-max-new-tokens': number;
  'batch-questions': number;
  resume: boolean;
}

export function parseKList(text: string): number[] {
  const ks = String(text).split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (ks.length === 0 || ks.some((k) => !Number.isInteger(k) || k < 1)) throw new RangeError(`--k-docs must be a comma-separated list of positive integers, got "${text}"`);
  return ks;
}

export const compareCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'compare',
  describe: 'GainRAG vs no retrieval, top-K retrieval and a reranker on the same questions: answers + one EM/F1 table',
  builder: (y) =>
    textBackendFlags(y, 'causal LM that answers (and writes pseudo-passages for the selector run)')
      .option('data', { type: 'string', demandOption: true, describe: 'retrieval output (JSONL or JSON array of {question, answers, ctxs})' })
      .option('out', { type: 'string', demandOption: true, describe: 'directory for every run (input.jsonl, <run>-k<K>.answers.jsonl, compare.json)' })
      .option('selector', { type: 'string', describe: 'trained GainRAG selector (cross-encoder directory); its run adds the pseudo-passage' })
      .option('reranker', { type: 'string', describe: 'off-the-shelf reranker (cross-encoder directory) for the reranker baseline' })
      .option('rerank-url', { type: 'string', conflicts: 'reranker', describe: 'the reranker baseline from a Text Embeddings Inference server (POST /rerank, raw scores)' })
      .option('k-docs', { type: 'string', default: '1,5', describe: 'passages in the prompt, one table row per run and K' })
      .option('candidates', { type: 'number', default: 100, describe: 'retrieved passages the reranker / selector choose from' })
      .option('task', { type: 'string', default: DEFAULT_TASK, describe: `task instruction by name (${Object.keys(TASK_INSTRUCTIONS).join(', ')})` })
      .option('max-new-tokens', { type: 'number', default: DEFAULT_MAX_NEW_TOKENS, describe: 'tokens per answer (as gainrag generate)' })
      .option('pseudo-max-new-tokens', { type: 'number', default: 256, describe: 'tokens per pseudo-passage' })
      .option('batch-questions', { type: 'number', default: 32, describe: 'questions per selector call' })
      .option('resume', { type: 'boolean', default: false, describe: 'keep finished runs under --out and continue unfinished ones' })
      .epilog(
        "The no-retrieval row is a real run of the reference's no-retrieval prompt: the reference's run_baselines.py produces no number " +
          'for it (it indexes an empty prompt list and raises IndexError). Seconds of the reranker and gainrag rows include their reranking stage.',
      ) as never,
  handler: async (argv) => {
    if (!argv.llm && !argv['generate-url']) throw new TypeError('compare needs --llm DIR or --generate-url URL to answer');
    const options: CompareOptions = {
      data: argv.data, outDir: argv.out, kDocs: parseKList(argv['k-docs']), candidates: argv.candidates, task: argv.task,
      maxNewTokens: argv['max-new-tokens'], pseudoMaxNewTokens: argv['pseudo-max-new-tokens'], batchQuestions: argv['batch-questions'],
      resume: argv.resume, generateUrl: argv['generate-url'], llm: argv.llm,
      generation: {
        chatTemplate: argv['chat-template'], systemPrompt: argv['system-prompt'], generateModel: argv['generate-model'],
        generateTimeoutMs: argv['generate-timeout'] * 1000, generateConcurrency: argv['generate-concurrency'],
      },
      selectorId: argv.selector ? path.resolve(argv.selector) : undefined, rerankerId: argv.reranker ? path.resolve(argv.reranker) : argv['rerank-url'] ? `tei:${argv['rerank-url']}` : undefined,
      llmId: argv['generate-url'] ? `${argv['generate-url']}#${argv['generate-model'] ?? ''}` : path.resolve(argv.llm as string),
    };
    checkCompareOptions(options);
    const load = { device: argv.device as never, dtype: argv.dtype };
    // One text backend (lib/pipeline/text-backend.ts): natively the LLM is loaded once for answers
    // and pseudo-passages; with --generate-url the server answers and --llm (if any) only lends
    // its tokenizer and chat template.
    const backend = await openTextBackend(textBackendArgs(argv));
    if (backend?.lm && !argv['generate-url']) {
      options.lm = backend.lm;
      options.llm = undefined;
    }
    if (backend && (argv.selector || !argv['generate-url'])) {
      options.pseudoGenerator = backend.generator;
      options.wrapPrompt = backend.wrap;
    }
    if (argv.selector) options.selector = await CrossEncoder.load(argv.selector, load);
    if (argv.reranker) options.reranker = await CrossEncoder.load(argv.reranker, load);
    else if (argv['rerank-url']) options.reranker = new TeiReranker({ url: argv['rerank-url'], retries: textBackendArgs(argv).retries, apiKeyEnv: textBackendArgs(argv).apiKeyEnv });
    let progress = progressReporter('compare', 'questions');
    // One warner for the whole comparison, drawing next to whichever run's bar is current: a cut
    // evidence is routine (every run of every K would repeat it per record), and counted per run
    // in the table's truncated column.
    const current: ProgressReporter = {
      get drawing() {
        return progress.drawing;
      },
      update: (done, total) => progress.update(done, total),
      stop: () => progress.stop(),
    };
    const warn = stageWarner(current, [{ match: 'evidence cut', more: 'more records had their evidence cut; see the truncated column' }]);
    const summary = await runResumable(() => progress, `finished runs are under ${argv.out}, continue with --resume`, (signal) =>
      compare({
        ...options, signal,
        onStage: (name) => {
          progress.stop();
          progress = progressReporter(`compare: ${name}`, 'questions');
          process.stderr.write(`compare: ${name}\n`);
        },
        onProgress: (done, total) => progress.update(done, total),
        warn,
      }),
    );
    // With --generate-url the answers come from the server; --llm only lends its tokenizer.
    const note = bundledModelsNote([argv['generate-url'] ? undefined : argv.llm, argv.selector, argv.reranker]);
    if (argv.json) {
      process.stdout.write(`${JSON.stringify(summary)}\n`);
      process.stderr.write(note);
    } else process.stdout.write(formatComparison(summary) + note);
  },
};
