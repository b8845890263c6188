// `gainrag to-selector`: filtered synthesis output -> FlagEmbedding reranker training JSONL.
import type { CommandModule } from 'yargs';
import { toSelector, SELECTOR_PROMPT } from '../../pipeline/to-selector.js';

interface Args {
  json: boolean;
  data: string;
  out: string;
  prompt: string;
}

export const toSelectorCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'to-selector',
  describe: 'convert (filtered) synthesis output to selector training data {query, pos, neg, pos_scores, neg_scores, prompt}',
  builder: (y) =>
    y
      .option('data', { type: 'string', demandOption: true, describe: 'filter (or synthesize) output' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL' })
      .option('prompt', { type: 'string', default: SELECTOR_PROMPT, describe: 'value of the "prompt" field' }) as never,
  handler: async (argv) => {
    const summary = await toSelector({ data: argv.data, out: argv.out, prompt: argv.prompt, warn: (m) => process.stderr.write(`gainrag: warning: ${m}\n`) });
    if (argv.json) process.stdout.write(`${JSON.stringify({ output: argv.out, ...summary })}\n`);
    else process.stdout.write(`wrote ${summary.written} of ${summary.records} questions (${summary.skipped} skipped, ${summary.droppedPassages} passages dropped) -> ${argv.out}\n`);
  },
};
