// `gainrag index build` (embed a passage file) and the `gainrag index` command group.
import type { CommandModule } from 'yargs';
import { buildIndex } from '../../retrieval/build.js';
import { progressReporter, withInterrupt } from '../progress.js';
import type { IndexDType, IndexMetric } from '../../retrieval/dense-index.js';
import { indexImportCommand } from './index-import.js';
import { indexExportCommand } from './index-export.js';
import { indexEvalCommand } from './index-eval.js';
import { annFromArgs, withAnnFlags, type AnnArgs } from './ann-flags.js';
import { embedClientFromArgs, withEmbedUrlFlags, type EmbedUrlArgs } from '../../stages/embed-flags.js';

interface Args extends AnnArgs, EmbedUrlArgs {
  json: boolean;
  passages: string;
  encoder?: string;
  out: string;
  'batch-size': number;
  'max-length'?: number;
  device?: string;
  'encoder-dtype'?: 'float32' | 'bfloat16' | 'int8' | 'float16';
  'matmul-precision'?: 'highest' | 'high';
  dtype: IndexDType;
  metric: IndexMetric;
  title: boolean;
  pooling?: 'mean' | 'cls';
  normalize?: boolean;
  'query-prefix'?: string;
  'passage-prefix'?: string;
}

export const indexBuildCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'build',
  describe: 'embed a passage file with a bi-encoder and write an index directory',
  builder: (y) =>
    withEmbedUrlFlags(withAnnFlags(y))
      .option('passages', { type: 'string', demandOption: true, describe: 'DPR TSV (id, text, title with header) or JSONL {id,title,text}' })
      .option('encoder', { type: 'string', describe: 'bi-encoder: a model directory or a hub id org/name[@revision] (e.g. facebook/contriever-msmarco, BAAI/bge-base-en-v1.5); or --embed-url' })
      .option('out', { type: 'string', demandOption: true, describe: 'index directory to write' })
      .option('batch-size', { type: 'number', default: 256, describe: 'passages per encoder call' })
      .option('max-length', { type: 'number', describe: 'tokens per passage (default: the model maximum)' })
      .option('device', { type: 'string', describe: 'encoder device: cpu, cuda, cuda:N' })
      .option('encoder-dtype', { choices: ['float32', 'bfloat16', 'int8', 'float16'] as const, describe: 'encoder compute dtype (bfloat16 / int8: CPU with oneDNN, fp32 activations; recorded in the index)' })
      .option('matmul-precision', { choices: ['highest', 'high'] as const, describe: 'float32 encoder products: highest (default) or high (bf16x3 on the bf16 units, CPU with oneDNN)' })
      .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, default: 'float32' as IndexDType, describe: 'storage type of the vectors (memory while building: passages x dim x bytes)' })
      .option('metric', { choices: ['ip', 'cosine'] as const, default: 'ip' as IndexMetric, describe: 'inner product or cosine' })
      .option('title', { type: 'boolean', default: true, describe: 'embed "title text" (--no-title: the text alone)' })
      .option('pooling', { choices: ['mean', 'cls'] as const, describe: "encoder pooling (default: the model's sentence-transformers Pooling config, else mean)" })
      .option('normalize', { type: 'boolean', describe: 'L2-normalise embeddings (default: whether the model has a Normalize module; with --embed-url: true)' })
      .option('query-prefix', { type: 'string', describe: "text put before each query at retrieve time, recorded in the index (default: the model's 'query' prompt)" })
      .option('passage-prefix', { type: 'string', describe: "text put before each passage (default: the model's 'document'/'passage' prompt)" }) as never,
  handler: async (argv) => {
    const t0 = performance.now();
    const progress = progressReporter('index build', 'passages');
    let count: number;
    try {
      count = await withInterrupt((signal) =>
        buildIndex({
          passages: argv.passages,
          encoder: argv.encoder,
          embedUrl: argv['embed-url'],
          embedClient: embedClientFromArgs(argv),
          out: argv.out,
          batchSize: argv['batch-size'],
          maxLength: argv['max-length'],
          device: argv.device as never,
          encoderDType: argv['encoder-dtype'],
          matmulPrecision: argv['matmul-precision'],
          dtype: argv.dtype,
          metric: argv.metric,
          withTitle: argv.title,
          pooling: argv.pooling,
          normalize: argv.normalize,
          queryPrefix: argv['query-prefix'],
          passagePrefix: argv['passage-prefix'],
          ann: annFromArgs(argv),
          signal,
          onProgress: (done, total) => progress.update(done, total),
        }),
      );
    } finally {
      progress.stop();
    }
    const seconds = (performance.now() - t0) / 1000;
    const summary = { out: argv.out, passages: count, seconds, passagesPerSecond: count / seconds };
    process.stdout.write(argv.json ? `${JSON.stringify(summary)}\n` : `indexed ${count} passages into ${argv.out} (${seconds.toFixed(1)} s)\n`);
  },
};

export const indexCommand: CommandModule<{ json: boolean }, { json: boolean }> = {
  command: 'index <command>',
  describe: 'build, import, export or evaluate a dense passage index',
  builder: (y) => y.command(indexBuildCommand as never).command(indexImportCommand as never).command(indexExportCommand as never).command(indexEvalCommand as never).demandCommand(1) as never,
  handler: () => undefined,
};
