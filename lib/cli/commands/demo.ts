// The main job: the round-1 GainRAG pipeline on the bundled data and models, stage by stage
// through the same CLI commands a user would run. Each stage's output is written atomically by
// that stage, so a finished stage is skipped when the demo is run again.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandModule } from 'yargs';

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const mainJs = path.join(packageRoot, 'dist', 'lib', 'cli', 'main.js');

interface DemoArgs {
  json: boolean;
  out: string;
  questions: number;
  synthesize: number;
}

interface Stage {
  name: string;
  output: string;
  args: string[];
  /** Runs before the command (e.g. writes the stage's input subset). */
  prepare?: () => void;
}

/** Writes the first `n` non-empty lines of `src` to `dst` (atomically) unless `dst` exists. */
function headLines(src: string, dst: string, n: number): void {
  if (existsSync(dst)) return;
  const lines = readFileSync(src, 'utf8').split('\n').filter((l) => l.trim().length > 0).slice(0, n);
  writeFileSync(`${dst}.partial`, `${lines.join('\n')}\n`);
  renameSync(`${dst}.partial`, dst);
}

function countLines(file: string): number {
  const text = readFileSync(file, 'utf8');
  return text.split('\n').filter((l) => l.trim().length > 0).length;
}

export const demoCommand: CommandModule<{ json: boolean }, DemoArgs> = {
  command: 'demo',
  describe: 'run the GainRAG pipeline (index, retrieve, synthesize, filter, to-selector, train) on the bundled data',
  builder: (y) =>
    y
      .option('out', { type: 'string', default: 'out/demo', describe: 'working directory for every stage' })
      .option('questions', { type: 'number', default: 200, describe: 'questions to retrieve for' })
      .option('synthesize', { type: 'number', default: 24, describe: 'questions to synthesize gain signals for' }) as never,
  handler: (argv) => {
    const data = path.join(packageRoot, 'data', 'demo');
    const models = path.join(packageRoot, 'models');
    const out = path.resolve(argv.out);
    mkdirSync(out, { recursive: true });
    const file = (name: string) => path.join(out, name);
    const stages: Stage[] = [
      {
        name: 'index build',
        output: file('index'),
        args: ['index', 'build', '--passages', path.join(data, 'passages.jsonl'), '--encoder', path.join(models, 'bert-tiny'), '--out', file('index')],
      },
      {
        name: 'retrieve',
        output: file('retrieved.jsonl'),
        prepare: () => headLines(path.join(data, 'questions.jsonl'), file('questions.jsonl'), argv.questions),
        args: ['retrieve', '--index', file('index'), '--encoder', path.join(models, 'bert-tiny'), '--data', file('questions.jsonl'),
          '--top-k', '20', '--out', file('retrieved.jsonl')],
      },
      {
        name: 'synthesize',
        output: file('synthesized.jsonl'),
        prepare: () => headLines(file('retrieved.jsonl'), file('retrieved-subset.jsonl'), argv.synthesize),
        args: ['synthesize', '--data', file('retrieved-subset.jsonl'), '--llm', path.join(models, 'llama-tiny'), '--top-k', '5',
          '--max-new-tokens', '8', '--pseudo-max-new-tokens', '48', '--out', file('synthesized.jsonl'), '--resume'],
      },
      { name: 'filter', output: file('filtered.jsonl'), args: ['filter', '--data', file('synthesized.jsonl'), '--out', file('filtered.jsonl')] },
      {
        name: 'to-selector',
        output: file('selector-train.jsonl'),
        // The bundled LLM has random weights, so its answers rarely match (filter keeps few or no
        // questions). The demo therefore converts all synthesized questions; a real run converts
        // the filtered file.
        args: ['to-selector', '--data', file('synthesized.jsonl'), '--out', file('selector-train.jsonl')],
      },
      {
        name: 'train',
        output: path.join(file('selector'), 'model.safetensors'),
        args: ['train', '--model', path.join(models, 'xlmr-tiny-reranker'), '--data', file('selector-train.jsonl'), '--out', file('selector'),
          '--group-size', '4', '--batch-size', '4', '--epochs', '1', '--query-max-len', '64', '--passage-max-len', '128', '--resume'],
      },
    ];
    const summary: Record<string, unknown> = {};
    for (const stage of stages) {
      if (existsSync(stage.output)) {
        process.stderr.write(`demo: ${stage.name}: done before (${path.relative(process.cwd(), stage.output)})\n`);
        continue;
      }
      stage.prepare?.();
      process.stderr.write(`demo: ${stage.name}\n$ gainrag ${stage.args.join(' ')}\n`);
      const r = spawnSync(process.execPath, [mainJs, ...stage.args, '--json'], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`demo stage '${stage.name}' failed (exit ${r.status})`);
      const text = r.stdout.trim();
      try {
        summary[stage.name] = text ? JSON.parse(text.split('\n').pop()!) : {};
      } catch {
        summary[stage.name] = text;
      }
    }
    summary.filtered = existsSync(file('filtered.jsonl')) ? countLines(file('filtered.jsonl')) : null;
    if (argv.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else process.stdout.write(`demo finished; outputs in ${out}\n${JSON.stringify(summary, null, 2)}\n`);
  },
};
