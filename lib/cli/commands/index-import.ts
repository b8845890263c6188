// `gainrag index import`: an index directory from precomputed embeddings (.npy, row i = passage i).
import type { CommandModule } from 'yargs';
import { importIndex } from '../../retrieval/build.js';
import { withInterrupt } from '../progress.js';
import type { IndexDType, IndexMetric } from '../../retrieval/dense-index.js';

interface Args {
  json: boolean;
  vectors: string;
  passages: string;
  out: string;
  dtype: IndexDType;
  metric: IndexMetric;
  encoder?: string;
  pooling?: 'mean' | 'cls';
  normalize?: boolean;
  'query-prefix'?: string;
  'passage-prefix'?: string;
}

export const indexImportCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'import',
  describe: 'build an index directory from a float32/float16 .npy matrix and its passage file',
  builder: (y) =>
    y
      .option('vectors', { type: 'string', demandOption: true, describe: '.npy matrix [passages, dim] (float32 or float16, C order)' })
      .option('passages', { type: 'string', demandOption: true, describe: 'passages in the same order: DPR TSV (id, text, title) or JSONL {id,title,text}' })
      .option('out', { type: 'string', demandOption: true, describe: 'index directory to write' })
      .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, default: 'float32' as IndexDType, describe: 'storage type of the vectors' })
      .option('metric', { choices: ['ip', 'cosine'] as const, default: 'ip' as IndexMetric, describe: 'inner product or cosine' })
      .option('encoder', { type: 'string', describe: 'the encoder (directory or hub id) that made the vectors: recorded for retrieve to check' })
      .option('pooling', { choices: ['mean', 'cls'] as const, describe: "with --encoder: its pooling (default: the model's config)" })
      .option('normalize', { type: 'boolean', describe: "with --encoder: whether the vectors were normalised (default: the model's config)" })
      .option('query-prefix', { type: 'string', describe: "with --encoder: the query prefix retrieve uses (default: the model's 'query' prompt)" })
      .option('passage-prefix', { type: 'string', describe: 'with --encoder: the prefix the passages were embedded with' }) as never,
  handler: async (argv) => {
    const t0 = performance.now();
    const count = await withInterrupt((signal) =>
      importIndex({
        vectors: argv.vectors, passages: argv.passages, out: argv.out, dtype: argv.dtype, metric: argv.metric, signal,
        encoder: argv.encoder, pooling: argv.pooling, normalize: argv.normalize, queryPrefix: argv['query-prefix'], passagePrefix: argv['passage-prefix'],
      }),
    );
    const summary = { out: argv.out, passages: count, seconds: (performance.now() - t0) / 1000 };
    process.stdout.write(argv.json ? `${JSON.stringify(summary)}\n` : `indexed ${count} passages into ${argv.out}\n`);
  },
};
