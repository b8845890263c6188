// `gainrag split`: train/test split of a question set by a hash of each id (lib/pipeline/split.ts).
import type { CommandModule } from 'yargs';
import { splitQuestions } from '../../pipeline/split.js';
import { outputFormat } from '../../io/records.js';
import { scaleArgs, withInputOptions } from '../../stages/flags.js';

export const splitCommand: CommandModule<{ json: boolean }, Record<string, never>> = {
  command: 'split',
  describe: 'split questions into train and test by a hash of their id (stable under reordering; the demo\'s split)',
  builder: (y) =>
    withInputOptions(y)
      .option('format', { choices: ['auto', 'jsonl', 'arrow', 'arrows', 'parquet'], default: 'auto', describe: 'output format (auto: by the extension of --out-train)' })
      .option('data', { type: 'string', demandOption: true, describe: 'questions, or any stage output (any dataset format, see --data-format)' })
      .option('out-train', { type: 'string', demandOption: true, describe: 'train part' })
      .option('out-test', { type: 'string', demandOption: true, describe: 'test part' })
      .option('test-fraction', { type: 'number', default: 0.2, describe: 'share of records held out as test' })
      .option('seed', { type: 'number', default: 0, describe: 'another integer draws another split (0: the demo\'s)' }) as never,
  handler: async (argv: Record<string, never>) => {
    const a = argv as Record<string, string & number & boolean>;
    const { dataset } = scaleArgs({ ...(a as object), out: a['out-train'], format: a.format });
    const summary = await splitQuestions({
      data: a.data, outTrain: a['out-train'], outTest: a['out-test'], testFraction: a['test-fraction'], seed: a.seed, dataset,
      format: outputFormat(a['out-train'], a.format),
    });
    process.stdout.write(a.json ? `${JSON.stringify(summary)}\n` : `split ${summary.records} records: ${summary.train} train -> ${a['out-train']}, ${summary.test} test -> ${a['out-test']}\n`);
  },
};
