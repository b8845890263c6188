// `gainrag merge`: joins shard outputs (`--shard I/N`) in shard order into one file,
// byte-identical to an unsharded run of the same stage with the same settings. Shards that carry
// manifests are checked to be one job's, complete and in order (lib/scale/merge.ts).
import type { CommandModule } from 'yargs';
import { mergeOutputs } from '../../scale/merge.js';

interface Args {
  json: boolean;
  out: string;
  inputs: string[];
}

export const mergeCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'merge <inputs..>',
  describe: 'concatenate shard outputs (JSONL or Arrow) in the order given, into one file',
  builder: (y) =>
    y
      .positional('inputs', { type: 'string', array: true, demandOption: true, describe: 'shard outputs, shard 0 first' })
      .option('out', { type: 'string', demandOption: true, describe: 'merged output (written as OUT.partial, renamed when complete)' }) as never,
  handler: async (argv) => {
    const summary = await mergeOutputs(argv.inputs.map(String), argv.out, { warn: (m) => process.stderr.write(`${m}\n`) });
    if (argv.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else process.stdout.write(`merged ${summary.inputs} ${summary.format} files, ${summary.records} records (${summary.bytes} bytes) into ${summary.out}\n`);
  },
};
