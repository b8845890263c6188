// `gainrag evaluate`: EM / F1 / Recall@1..5 recomputed from any file with answers + predictions.
import type { CommandModule } from 'yargs';
import { evaluate, formatEvaluation } from '../../pipeline/evaluate.js';

interface Args {
  json: boolean;
  data: string;
  field: string;
  'answers-field': string;
}

export const evaluateCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'evaluate',
  describe: 'recompute EM, F1 and Recall@1..5 from any JSON/JSONL with answers and generated answers',
  builder: (y) =>
    y
      .option('data', { type: 'string', demandOption: true, describe: 'JSONL or JSON array of {answers, generated, ctxs?} (gainrag generate, or another system)' })
      .option('field', { type: 'string', default: 'generated', describe: 'field holding the prediction' })
      .option('answers-field', { type: 'string', default: 'answers', describe: 'field holding the gold answers' }) as never,
  handler: async (argv) => {
    const summary = await evaluate({
      data: argv.data,
      predictionField: argv.field,
      answersField: argv['answers-field'],
      warn: (m) => process.stderr.write(`gainrag: warning: ${m}\n`),
    });
    process.stdout.write(argv.json ? `${JSON.stringify(summary)}\n` : formatEvaluation(summary));
  },
};
