// `gainrag to-selector`: filtered synthesis output -> FlagEmbedding reranker training JSONL.
import type { CommandModule } from 'yargs';
import { toSelector, SELECTOR_PROMPT } from '../../pipeline/to-selector.js';
import { SCORE_FIELDS, type ScoreField } from '../../pipeline/filter.js';

interface Args {
  json: boolean;
  data: string;
  out: string;
  prompt: string;
  'score-field': ScoreField;
}

export const toSelectorCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'to-selector',
  describe: 'convert (filtered) synthesis output to selector training data {query, pos, neg, pos_scores, neg_scores, prompt}',
  builder: (y) =>
    y
      .option('data', { type: 'string', demandOption: true, describe: 'filter (or synthesize) output' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL' })
      .option('score-field', {
        choices: SCORE_FIELDS,
        default: 'PPL_CD' as const,
        describe:
          'perplexity that ranks the passages and gives the teacher scores -log(PPL+1): PPL_CD is the contrastive gain the paper trains on; ' +
          "retrieved_ppl (plain perplexity given the passage) is what the reference's data2selector.py sorts by",
      })
      .option('prompt', { type: 'string', default: SELECTOR_PROMPT, describe: 'value of the "prompt" field' }) as never,
  handler: async (argv) => {
    const summary = await toSelector({
      data: argv.data,
      out: argv.out,
      prompt: argv.prompt,
      scoreField: argv['score-field'],
      warn: (m) => process.stderr.write(`gainrag: warning: ${m}\n`),
    });
    if (argv.json) process.stdout.write(`${JSON.stringify({ output: argv.out, ...summary })}\n`);
    else process.stdout.write(`wrote ${summary.written} of ${summary.records} questions by ${summary.scoreField} (${summary.skipped} skipped, ${summary.droppedPassages} passages dropped) -> ${argv.out}\n`);
  },
};
