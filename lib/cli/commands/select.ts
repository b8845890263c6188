// `gainrag select`: rerank retrieved passages plus the LLM's pseudo-passage with the trained
// selector and keep the top K (lib/pipeline/select.ts). Ctrl-C stops at the next group and keeps
// `<out>.partial` for `--resume`.
import type { CommandModule } from 'yargs';
import path from 'node:path';
import { CausalLM } from '../../models/causal-lm.js';
import { CrossEncoder } from '../../models/cross-encoder.js';
import { Tokenizer } from '../../tokenizer.js';
import { renderChatTemplate } from '../../models/chat-template.js';
import { checkSelectOptions, select, type SelectSummary } from '../../pipeline/select.js';
import { nativeGenerator } from '../../pipeline/synthesize.js';
import { OpenAIGenerator, type TextGenerator } from '../../pipeline/openai-generate.js';
import { DEFAULT_SYSTEM_PROMPT, promptWrapper, type ChatTemplateMode } from '../../pipeline/prompts.js';
import { progressReporter, runResumable, stageWarner } from '../../retrieval/cli-progress.js';
import { scaleArgs, withScaleOptions, type ScaleArgs } from '../../scale/cli-options.js';

export interface GeneratorArgs {
  llm?: string;
  'generate-url'?: string;
  'generate-model'?: string;
  'generate-timeout': number;
  'generate-concurrency': number;
  'chat-template': ChatTemplateMode;
  'system-prompt': string;
  device?: string;
  dtype?: 'float32' | 'float16' | 'bfloat16';
}

interface Args extends GeneratorArgs, ScaleArgs {
  json: boolean;
  data: string;
  selector: string;
  out: string;
  'k-docs': number;
  candidates: number;
  'pseudo-passage': boolean;
  'pseudo-max-new-tokens': number;
  'batch-questions': number;
  'max-length'?: number;
  'batch-tokens'?: number;
  resume: boolean;
}

/**
 * The pseudo-passage writer the flags ask for: --generate-url sends prompts to a server (with
 * --llm only that directory's chat template is used, its weights are not loaded); --llm alone
 * generates natively. Undefined when neither is given.
 */
export async function pseudoWriter(argv: GeneratorArgs): Promise<{ generator: TextGenerator; wrap: (p: string) => string } | undefined> {
  const mode = argv['chat-template'];
  const system = argv['system-prompt'];
  if (argv['generate-url']) {
    const generator = new OpenAIGenerator({
      url: argv['generate-url'], model: argv['generate-model'], timeoutMs: argv['generate-timeout'] * 1000,
      concurrency: argv['generate-concurrency'], systemPrompt: system,
    });
    let wrap = (p: string) => p;
    if (argv.llm) {
      const tok = Tokenizer.load(argv.llm);
      const c = tok.config;
      const templater = { applyChatTemplate: (m: { role: string; content: string }[], o?: { addGenerationPrompt?: boolean }) => renderChatTemplate(c.chatTemplate, m, { bosToken: c.bosToken, eosToken: c.eosToken }, o, argv.llm) };
      wrap = promptWrapper(templater, mode, Boolean(c.chatTemplate), system);
    }
    return { generator, wrap };
  }
  if (!argv.llm) return undefined;
  const lm = await CausalLM.load(argv.llm, { device: argv.device, dtype: argv.dtype });
  return { generator: nativeGenerator(lm), wrap: promptWrapper(lm, mode, Boolean(lm.tokenizer.config.chatTemplate), system) };
}

/** Flags shared by the commands that write pseudo-passages or answers with an LLM. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function generatorOptions(y: any, llmHelp: string): any {
  return y
    .option('llm', { type: 'string', describe: llmHelp })
    .option('generate-url', { type: 'string', describe: 'generate via an OpenAI-compatible server (base, /v1/completions or /v1/chat/completions)' })
    .option('generate-model', { type: 'string', describe: "model name for --generate-url (default: the server's first model)" })
    .option('generate-timeout', { type: 'number', default: 120, describe: 'seconds per --generate-url request' })
    .option('generate-concurrency', { type: 'number', default: 8, describe: 'requests in flight for --generate-url' })
    .option('chat-template', { choices: ['auto', 'none'] as const, default: 'auto' as const, describe: "auto: wrap prompts in the LLM's chat template when it has one" })
    .option('system-prompt', { type: 'string', default: DEFAULT_SYSTEM_PROMPT, defaultDescription: "the reference's", describe: "system message for chat templates ('' for none)" })
    .option('device', { type: 'string', describe: 'cpu, cuda, cuda:N (both models)' })
    .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, describe: 'weights/compute dtype (both models)' });
}

export function formatSelectSummary(s: SelectSummary): string {
  const pct = (r: Record<string, number>) => Object.entries(r).map(([k, v]) => `@${k} ${(100 * v).toFixed(1)}%`).join('  ');
  const reasons = Object.entries(s.skippedReasons).map(([k, v]) => `${k}: ${v}`).join(', ');
  return [
    `wrote           ${s.output} (top-${s.kDocs} of up to ${s.candidates} retrieved${s.pseudoGenerated + s.pseudoReused > 0 ? ' + pseudo-passage' : ''}; ${s.written} new + ${s.resumed} resumed questions of ${s.records} records)`,
    `skipped         ${s.skipped}${reasons ? ` (${reasons})` : ''}; ${s.droppedPassages} empty passages dropped`,
    `origin recall   ${pct(s.originRecall)}`,
    `rerank recall   ${pct(s.rerankRecall)}`,
    `pseudo top-1    ${s.pseudoSelected} of ${s.questions} questions (${s.pseudoGenerated} pseudo-passages generated, ${s.pseudoReused} reused)`,
    `speed           ${s.pairsPerSecond.toFixed(0)} pairs/s scored (${s.pairs} pairs in ${s.scoreSeconds.toFixed(1)} s; ${s.seconds.toFixed(1)} s in all)`,
  ].join('\n') + '\n';
}

export const selectCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'select',
  describe: "rerank retrieved passages + the LLM's pseudo-passage with the trained selector; keep the top K",
  builder: (y) =>
    withScaleOptions(generatorOptions(y, 'causal LM that writes missing pseudo-passages (background prompt of synthesize)'))
      .option('data', { type: 'string', demandOption: true, describe: 'retrieval output (JSONL or JSON array of {question, answers, ctxs})' })
      .option('selector', { type: 'string', demandOption: true, describe: 'trained selector (cross-encoder directory; gainrag train)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL (written as OUT.partial, renamed when complete)' })
      .option('k-docs', { type: 'number', default: 1, describe: 'passages kept per question' })
      .option('candidates', { type: 'number', default: 100, describe: 'retrieved passages reranked per question (top of ctxs)' })
      .option('pseudo-passage', { type: 'boolean', default: true, describe: 'add the pseudo-passage as a candidate (reused when the record has one: pseudo_passage, or a ctxs/passages entry with pseudo: true)' })
      .option('pseudo-max-new-tokens', { type: 'number', default: 256, describe: 'tokens generated per pseudo-passage' })
      .option('batch-questions', { type: 'number', default: 32, describe: "questions whose pairs go to the engine in one call" })
      .option('max-length', { type: 'number', describe: "tokens per (question, passage) pair (default: the selector's maximum)" })
      .option('batch-tokens', { type: 'number', describe: 'engine batch budget, rows x longest row (default 1024 CPU, 65536 CUDA)' })
      .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted run from OUT.partial' }) as never,
  handler: async (argv) => {
    const options = {
      data: argv.data, out: argv.out, kDocs: argv['k-docs'], candidates: argv.candidates, pseudoPassage: argv['pseudo-passage'],
      pseudoMaxNewTokens: argv['pseudo-max-new-tokens'], batchQuestions: argv['batch-questions'], maxLength: argv['max-length'],
      batchTokens: argv['batch-tokens'], resume: argv.resume, modelId: path.resolve(argv.selector),
      ...scaleArgs(argv),
    };
    checkSelectOptions(options); // before the (slow) model loads
    const selector = await CrossEncoder.load(argv.selector, { device: argv.device as never, dtype: argv.dtype });
    const writer = argv['pseudo-passage'] ? await pseudoWriter(argv) : undefined;
    const progress = progressReporter('select', 'questions');
    const summary: SelectSummary = await runResumable(() => progress, `finished questions are in ${argv.out}.partial, continue with --resume`, (signal) =>
      select(selector, {
        ...options, generator: writer?.generator, wrapPrompt: writer?.wrap, signal,
        onProgress: (done, total) => progress.update(done, total),
        warn: stageWarner(progress),
      }),
    );
    process.stdout.write(argv.json ? `${JSON.stringify(summary)}\n` : formatSelectSummary(summary));
  },
};
