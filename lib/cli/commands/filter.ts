// `gainrag filter`: keep synthesized questions whose lowest-PPL passage is answered correctly.
import type { CommandModule } from 'yargs';
import { filterSynthesized } from '../../pipeline/filter.js';

interface Args {
  json: boolean;
  data: string;
  out: string;
}

export const filterCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'filter',
  describe: 'keep questions whose best (lowest PPL_CD) passage has EM_with_retrieval true',
  builder: (y) =>
    y
      .option('data', { type: 'string', demandOption: true, describe: 'synthesize output (JSONL or JSON array)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output: JSONL, or Arrow (.arrow/.arrows) / Parquet (.parquet) by extension' }) as never,
  handler: async (argv) => {
    const summary = await filterSynthesized({ data: argv.data, out: argv.out, warn: (m) => process.stderr.write(`gainrag: warning: ${m}\n`) });
    if (argv.json) process.stdout.write(`${JSON.stringify({ output: argv.out, ...summary })}\n`);
    else {
      const bad = summary.badScores > 0 ? `, ${summary.badScores} passages with a negative/NaN PPL_CD ignored` : '';
      process.stdout.write(`kept ${summary.kept} of ${summary.records} questions (${summary.skipped} skipped${bad}) -> ${argv.out}\n`);
    }
  },
};
