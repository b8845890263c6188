// The main job: the whole GainRAG pipeline on the bundled data, stage by stage through the same
// CLI commands a user would run: index -> retrieve -> split -> synthesize -> filter -> to-selector
// -> train -> select -> generate -> evaluate -> compare. The questions are split into train and
// test by a hash of their id (stable under reordering and resizing); the selector is trained on
// train questions and judged on the held-out test questions only. Every stage writes its output
// atomically and records its summary, wall time and settings under stages/: a finished stage is
// skipped when the demo runs again with the same settings (and the final table still shows what it
// took), and run again, with everything after it, when a flag it depends on changed.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandModule } from 'yargs';
import { formatComparison, type CompareSummary } from '../../pipeline/compare.js';
import { writeFileAtomic } from '../../io/output.js';
import { isBundledModel } from '../../models/bundled.js';
import { chainKey, checkDemoFlags, fileIdentity, runGainrag, type DemoFlags } from '../demo-support.js';

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const mainJs = path.join(packageRoot, 'dist', 'lib', 'cli', 'main.js');

interface DemoArgs extends DemoFlags {
  json: boolean;
}

interface Stage {
  name: string;
  /** Its presence means the stage is done (every command publishes its output atomically). */
  output: string;
  args?: string[];
  /** In-process work instead of a command (returns the summary). */
  run?: () => Record<string, unknown>;
  /** Runs before the command (e.g. writes the stage's input subset). */
  prepare?: () => void;
  /** What the stage depends on besides its command line (flags used by prepare, input files). */
  settings?: unknown;
  /** Left by an earlier run with other settings, removed before the stage runs again (default: output and its partial files). */
  stale?: string[];
  /** What the throughput column counts, from the summary. */
  rate?: (s: Record<string, unknown>, seconds: number) => string;
}

interface StageResult {
  name: string;
  seconds: number;
  rate: string;
  resumed: boolean;
  summary: Record<string, unknown>;
  /** chainKey of the settings the output was made with. */
  settings?: string;
}

const writeAtomic = writeFileAtomic;

function nonEmptyLines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim().length > 0);
}

// The train/test split is `gainrag split`'s (lib/pipeline/split.ts), kept importable from here.
export { splitHash, isTestQuestion } from '../../pipeline/split.js';
import { isTestQuestion } from '../../pipeline/split.js';

const perSecond = (n: unknown, unit: string, seconds: number) => (typeof n === 'number' && seconds > 0 ? `${(n / seconds).toFixed(1)} ${unit}/s` : '-');

export const demoCommand: CommandModule<{ json: boolean }, DemoArgs> = {
  command: 'demo',
  describe: 'run the whole GainRAG pipeline (index ... train, select, generate, compare) on the bundled data; resumable',
  builder: (y) =>
    y
      .option('out', { type: 'string', default: 'out/demo', describe: 'working directory for every stage' })
      .option('questions', { type: 'number', default: 200, describe: 'questions to retrieve for (train + test)' })
      .option('synthesize', { type: 'number', default: 24, describe: 'train questions to synthesize gain signals for' })
      .option('test-share', { type: 'number', default: 0.2, describe: 'share of questions held out for select/generate/compare (by a hash of the id)' })
      .option('top-k', { type: 'number', default: 20, describe: 'passages retrieved per question (and reranked by select)' })
      .option('k-docs', { type: 'string', default: '1,5', describe: 'passages in the prompt for compare (select keeps the largest)' })
      .option('max-new-tokens', { type: 'number', default: 16, describe: 'tokens per generated answer (the bundled LLM never stops early)' })
      .option('encoder', { type: 'string', describe: 'bi-encoder directory (default: bundled random-weight bert-tiny)' })
      .option('reranker', { type: 'string', describe: 'reranker to train the selector from, and the reranker baseline (default: bundled xlmr-tiny-reranker)' })
      .option('llm', { type: 'string', describe: 'causal LM directory (default: bundled random-weight llama-tiny)' })
      .option('passages', { type: 'string', describe: 'passages file (default: data/demo/passages.jsonl)' })
      .option('data', { type: 'string', describe: 'questions file {question, answers} (default: data/demo/questions.jsonl)' }) as never,
  handler: async (argv) => {
    const data = path.join(packageRoot, 'data', 'demo');
    const models = path.join(packageRoot, 'models');
    const encoder = path.resolve(argv.encoder ?? path.join(models, 'bert-tiny'));
    const reranker = path.resolve(argv.reranker ?? path.join(models, 'xlmr-tiny-reranker'));
    const llm = path.resolve(argv.llm ?? path.join(models, 'llama-tiny'));
    const passagesFile = path.resolve(argv.passages ?? path.join(data, 'passages.jsonl'));
    const questionsFile = path.resolve(argv.data ?? path.join(data, 'questions.jsonl'));
    const { maxK } = checkDemoFlags(argv, { passages: passagesFile, data: questionsFile, models: { encoder, reranker, llm } });
    const bundled = [encoder, reranker, llm].some((m) => isBundledModel(m));
    // A random-weight LLM's answers rarely match, so filter keeps next to nothing (see to-selector).
    const randomLlm = isBundledModel(llm);
    const share = argv['test-share'];
    const out = path.resolve(argv.out);
    const stagesDir = path.join(out, 'stages');
    mkdirSync(stagesDir, { recursive: true });
    const file = (name: string) => path.join(out, name);
    const notice = bundled
      ? 'NOTE: the bundled models have RANDOM weights: the numbers of this run show that every stage runs end to end, not GainRAG\'s quality; pass --encoder/--reranker/--llm to run the same pipeline on real models.'
      : 'models: ' + [encoder, reranker, llm].join(', ');
    process.stderr.write(`demo: ${notice}\n`);
    const llmArgs = ['--llm', llm, '--max-new-tokens', String(argv['max-new-tokens'])];
    const stages: Stage[] = [
      {
        name: 'index build',
        output: file('index'),
        args: ['index', 'build', '--passages', passagesFile, '--encoder', encoder, '--out', file('index')],
        settings: { passages: fileIdentity(passagesFile) },
        stale: [], // index build replaces an earlier index itself
        rate: (s, t) => perSecond(s.passages, 'passages', t),
      },
      {
        name: 'retrieve',
        output: file('retrieved.jsonl'),
        prepare: () => writeAtomic(file('questions.jsonl'), `${nonEmptyLines(questionsFile).slice(0, argv.questions).join('\n')}\n`),
        settings: { data: fileIdentity(questionsFile), questions: argv.questions },
        args: ['retrieve', '--index', file('index'), '--encoder', encoder, '--data', file('questions.jsonl'), '--top-k', String(argv['top-k']), '--out', file('retrieved.jsonl')],
        rate: (s, t) => perSecond(s.questions, 'questions', t),
      },
      {
        name: 'split',
        output: file('test-retrieved.jsonl'),
        run: () => {
          const train: string[] = [];
          const test: string[] = [];
          for (const line of nonEmptyLines(file('retrieved.jsonl'))) (isTestQuestion(JSON.parse(line), share) ? test : train).push(line);
          writeAtomic(file('train-retrieved.jsonl'), `${train.join('\n')}\n`);
          writeAtomic(file('test-retrieved.jsonl'), `${test.join('\n')}\n`);
          return { train: train.length, test: test.length, share };
        },
        settings: { share },
        stale: [file('train-retrieved.jsonl'), file('test-retrieved.jsonl')],
      },
      {
        name: 'synthesize',
        output: file('synthesized.jsonl'),
        prepare: () => writeAtomic(file('train-subset.jsonl'), `${nonEmptyLines(file('train-retrieved.jsonl')).slice(0, argv.synthesize).join('\n')}\n`),
        settings: { synthesize: argv.synthesize },
        args: ['synthesize', '--data', file('train-subset.jsonl'), '--llm', llm, '--top-k', '5', '--max-new-tokens', '8', '--pseudo-max-new-tokens', '48',
          '--out', file('synthesized.jsonl'), '--resume'],
        rate: (s, t) => perSecond(s.written, 'questions', t),
      },
      { name: 'filter', output: file('filtered.jsonl'), args: ['filter', '--data', file('synthesized.jsonl'), '--out', file('filtered.jsonl')], rate: (s, t) => perSecond(s.records, 'questions', t) },
      {
        name: 'to-selector',
        output: file('selector-train.jsonl'),
        // The bundled LLM has random weights, so its answers rarely match (filter keeps few or no
        // questions). The demo therefore converts all synthesized questions; a real run converts
        // the filtered file.
        args: ['to-selector', '--data', file(randomLlm ? 'synthesized.jsonl' : 'filtered.jsonl'), '--out', file('selector-train.jsonl')],
        rate: (s, t) => perSecond(s.written, 'questions', t),
      },
      {
        name: 'train',
        output: path.join(file('selector'), 'model.safetensors'),
        args: ['train', '--model', reranker, '--data', file('selector-train.jsonl'), '--out', file('selector'),
          '--group-size', '4', '--batch-size', '4', '--epochs', '1', '--query-max-len', '64', '--passage-max-len', '128', '--resume'],
        stale: [file('selector')], // its checkpoints would resume the old training
        rate: (s) => (typeof s.pairsPerSec === 'number' ? `${s.pairsPerSec.toFixed(1)} pairs/s` : '-'),
      },
      {
        name: 'select',
        output: file('selected.jsonl'),
        args: ['select', '--data', file('test-retrieved.jsonl'), '--selector', file('selector'), '--llm', llm, '--candidates', String(argv['top-k']),
          '--k-docs', String(maxK), '--pseudo-max-new-tokens', '48', '--out', file('selected.jsonl'), '--resume'],
        rate: (s) => (typeof s.pairsPerSecond === 'number' ? `${s.pairsPerSecond.toFixed(1)} pairs/s` : '-'),
      },
      {
        name: 'generate',
        output: file('answers.jsonl'),
        args: ['generate', '--data', file('selected.jsonl'), ...llmArgs, '--k-docs', '1', '--out', file('answers.jsonl'), '--resume'],
        rate: (s, t) => (typeof s.tokensPerSecond === 'number' ? `${s.tokensPerSecond.toFixed(1)} tokens/s` : perSecond(s.written, 'questions', t)),
      },
      {
        name: 'evaluate',
        output: path.join(stagesDir, 'evaluate.json'), // its stage record is its output
        args: ['evaluate', '--data', file('answers.jsonl')],
        rate: (s, t) => perSecond(s.records, 'records', t),
      },
      {
        name: 'compare',
        output: file(path.join('compare', 'compare.json')),
        args: ['compare', '--data', file('test-retrieved.jsonl'), ...llmArgs, '--selector', file('selector'), '--reranker', reranker,
          '--k-docs', argv['k-docs'], '--candidates', String(argv['top-k']), '--pseudo-max-new-tokens', '48', '--out', file('compare'), '--resume'],
        // compare --resume itself reruns the runs whose settings changed
        stale: [file(path.join('compare', 'compare.json'))],
        rate: (s, t) => perSecond(Array.isArray(s.rows) ? s.rows.length * Number(s.questions) : undefined, 'answers', t),
      },
    ];
    const results: StageResult[] = [];
    let key = '';
    for (const stage of stages) {
      const record = path.join(stagesDir, `${stage.name.replace(/\s+/g, '-')}.json`);
      key = chainKey(key, { args: stage.args ?? stage.name, settings: stage.settings ?? null });
      const before = existsSync(record) ? (JSON.parse(readFileSync(record, 'utf8')) as StageResult) : undefined;
      if (existsSync(stage.output) && before?.settings === key) {
        // Done by an earlier run with these settings; its time is known from that run's record.
        process.stderr.write(`demo: ${stage.name}: done before (${path.relative(process.cwd(), stage.output) || stage.output})\n`);
        results.push({ ...before, resumed: true });
        continue;
      }
      if (existsSync(stage.output) || before) {
        // Made with other flags (or by a demo that kept no settings): not this run's result.
        process.stderr.write(`demo: ${stage.name}: settings changed since the earlier run; running it again\n`);
        rmSync(record, { force: true });
        const stale = stage.stale ?? [stage.output, `${stage.output}.partial`, `${stage.output}.partial.settings.json`];
        for (const p of stale) rmSync(p, { recursive: true, force: true });
      }
      stage.prepare?.();
      const t0 = performance.now();
      let summary: Record<string, unknown> = {};
      if (stage.run) {
        process.stderr.write(`demo: ${stage.name}\n`);
        summary = stage.run();
      } else {
        const args = stage.args as string[];
        process.stderr.write(`demo: ${stage.name}\n$ gainrag ${args.join(' ')}\n`);
        const text = (await runGainrag(mainJs, args, stage.name)).trim();
        try {
          summary = text ? JSON.parse(text.split('\n').pop() as string) : {};
        } catch {
          summary = { output: text };
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      const result: StageResult = { name: stage.name, seconds, rate: stage.rate?.(summary, seconds) ?? '-', resumed: false, summary, settings: key };
      writeAtomic(record, JSON.stringify(result));
      results.push(result);
    }
    const comparison = existsSync(file(path.join('compare', 'compare.json')))
      ? (JSON.parse(readFileSync(file(path.join('compare', 'compare.json')), 'utf8')) as CompareSummary)
      : undefined;
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ notice, out, stages: results, comparison: comparison ?? null })}\n`);
      return;
    }
    const w = Math.max(...results.map((r) => r.name.length));
    const lines = [
      `demo finished; outputs in ${out}`,
      '',
      `${'stage'.padEnd(w)}  ${'seconds'.padStart(8)}  throughput`,
      `${'-'.repeat(w)}  ${'-'.repeat(8)}  ${'-'.repeat(20)}`,
      ...results.map((r) => `${r.name.padEnd(w)}  ${(Number.isFinite(r.seconds) ? r.seconds.toFixed(1) : '-').padStart(8)}  ${r.rate}${r.resumed ? '  (earlier run)' : ''}`),
      '',
    ];
    if (comparison) lines.push(formatComparison(comparison));
    lines.push(notice);
    process.stdout.write(`${lines.join('\n')}\n`);
  },
};
