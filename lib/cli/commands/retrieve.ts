// `gainrag retrieve`: top-k passages for every question, with hasanswer flags and Recall@k.
import type { CommandModule } from 'yargs';
import { countPassages } from '../../retrieval/build.js';
import { progressReporter, withInterrupt } from '../../retrieval/cli-progress.js';
import { retrieve, type RetrieveSummary } from '../../retrieval/retrieve.js';
import { scaleArgs, withScaleOptions, type ScaleArgs } from '../../scale/cli-options.js';

interface Args extends ScaleArgs {
  json: boolean;
  index: string;
  encoder: string;
  data: string;
  'top-k': number;
  out: string;
  'batch-size': number;
  'max-length'?: number;
  device?: string;
}

export const retrieveCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'retrieve',
  describe: 'retrieve the top-k passages for each question (JSON/JSONL {question, answers}) into a JSONL file',
  builder: (y) =>
    withScaleOptions(y)
      .option('index', { type: 'string', demandOption: true, describe: 'index directory (gainrag index build/import)' })
      .option('encoder', { type: 'string', demandOption: true, describe: 'bi-encoder model directory (the one that built the index)' })
      .option('data', { type: 'string', demandOption: true, describe: 'questions: JSON array or JSONL of {question, answers}' })
      .option('top-k', { type: 'number', default: 100, describe: 'passages per question' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL (input fields + ctxs)' })
      .option('batch-size', { type: 'number', default: 512, describe: 'questions embedded and searched together' })
      .option('max-length', { type: 'number', describe: 'tokens per question (default: the model maximum)' })
      .option('device', { type: 'string', describe: 'encoder device: cpu, cuda, cuda:N' }) as never,
  handler: async (argv) => {
    const t0 = performance.now();
    const scale = scaleArgs(argv);
    const total = /\.jsonl$/i.test(argv.data) && !scale.shard ? await countPassages(argv.data) : undefined;
    const progress = progressReporter('retrieve', 'questions');
    let summary: RetrieveSummary;
    try {
      summary = await withInterrupt((signal) =>
        retrieve({
          index: argv.index,
          encoder: argv.encoder,
          data: argv.data,
          out: argv.out,
          topK: argv['top-k'],
          batchSize: argv['batch-size'],
          maxLength: argv['max-length'],
          device: argv.device as never,
          signal,
          ...scale,
          onProgress: (done) => progress.update(done, total),
        }),
      );
    } finally {
      progress.stop();
    }
    const seconds = (performance.now() - t0) / 1000;
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ...summary, seconds })}\n`);
      return;
    }
    const lines = [`retrieved top-${summary.topK} for ${summary.questions} questions into ${summary.out} (${seconds.toFixed(1)} s)`];
    const misses = summary.withoutAnswers > 0 ? ` (${summary.withoutAnswers} without answers, counted as misses)` : '';
    lines.push(`recall over all ${summary.questions} questions${misses}:`);
    for (const [k, r] of Object.entries(summary.recall)) lines.push(`  Recall@${k.padEnd(4)} ${(r * 100).toFixed(2)}%`);
    process.stdout.write(`${lines.join('\n')}\n`);
  },
};
