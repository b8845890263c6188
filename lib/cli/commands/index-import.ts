// `gainrag index import`: an index directory from precomputed embeddings: a .npy matrix (row i =
// passage i), Contriever's pickled shards, or a FAISS index directory (index.faiss +
// index_meta.faiss), the last two joined to the passage file by passage id.
import type { CommandModule } from 'yargs';
import { GainragError } from '../../errors.js';
import { importIndex } from '../../retrieval/build.js';
import { importContriever } from '../../retrieval/import-contriever.js';
import { importFaiss } from '../../retrieval/faiss.js';
import { progressReporter, withInterrupt } from '../progress.js';
import type { IndexDType, IndexMetric } from '../../retrieval/dense-index.js';
import { annFromArgs, withAnnFlags, type AnnArgs } from './ann-flags.js';

interface Args extends AnnArgs {
  json: boolean;
  vectors?: string;
  contriever?: string[];
  faiss?: string;
  'keep-faiss': boolean;
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
  describe: 'build an index directory from a .npy matrix, Contriever embedding shards or a FAISS index, and its passage file',
  builder: (y) =>
    withAnnFlags(y)
      .option('vectors', { type: 'string', describe: '.npy matrix [passages, dim] (float32 or float16, C order), row i = passage i' })
      .option('contriever', { type: 'string', array: true, describe: "Contriever's pickled embedding shards (ids, embeddings): files or a pattern such as 'DIR/passages_*'" })
      .option('faiss', { type: 'string', describe: 'directory with index.faiss + index_meta.faiss as the reference writes them (needs a FAISS build)' })
      .option('keep-faiss', { type: 'boolean', default: false, describe: 'with --faiss: search through the imported FAISS index itself (PQ/IVF/HNSW as FAISS searches them; --nprobe/--ef-search set its defaults)' })
      .option('passages', { type: 'string', demandOption: true, describe: 'the passages: DPR TSV (id, text, title) or JSONL {id,title,text}' })
      .option('out', { type: 'string', demandOption: true, describe: 'index directory to write' })
      .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, default: 'float32' as IndexDType, describe: 'storage type of the vectors' })
      .option('metric', { choices: ['ip', 'cosine'] as const, default: 'ip' as IndexMetric, describe: 'inner product or cosine' })
      .option('encoder', { type: 'string', describe: 'the encoder (directory or hub id) that made the vectors: recorded for retrieve to check' })
      .option('pooling', { choices: ['mean', 'cls'] as const, describe: "with --encoder: its pooling (default: the model's config)" })
      .option('normalize', { type: 'boolean', describe: "with --encoder: whether the vectors were normalised (default: the model's config)" })
      .option('query-prefix', { type: 'string', describe: "with --encoder: the query prefix retrieve uses (default: the model's 'query' prompt)" })
      .option('passage-prefix', { type: 'string', describe: 'with --encoder: the prefix the passages were embedded with' })
      .check((a) => {
        const given = [a.vectors, a.contriever, a.faiss].filter((v) => v !== undefined).length;
        if (given !== 1) throw new GainragError('E_INVALID_ARG', 'give exactly one of --vectors, --contriever and --faiss');
        if (a['keep-faiss'] && a.faiss === undefined) throw new GainragError('E_INVALID_ARG', '--keep-faiss goes with --faiss');
        return true;
      }) as never,
  handler: async (argv) => {
    const t0 = performance.now();
    const common = { passages: argv.passages, out: argv.out, dtype: argv.dtype, metric: argv.metric, ann: annFromArgs(argv) };
    const encoder = { encoder: argv.encoder, pooling: argv.pooling, normalize: argv.normalize, queryPrefix: argv['query-prefix'], passagePrefix: argv['passage-prefix'] };
    const progress = progressReporter('index import', 'vectors');
    let summary: Record<string, unknown>;
    try {
      summary = await withInterrupt(async (signal): Promise<Record<string, unknown>> => {
        const onProgress = (done: number, total: number) => progress.update(done, total);
        if (argv.contriever) return { source: 'contriever', ...(await importContriever({ ...common, shards: argv.contriever, signal, onProgress })) };
        if (argv.faiss) {
          const keepFaiss = argv['keep-faiss'] ? { nprobe: argv.nprobe, efSearch: argv['ef-search'] } : undefined;
          return { source: 'faiss', ...(await importFaiss({ ...common, dir: argv.faiss, keepFaiss, signal, onProgress })) };
        }
        return { source: 'npy', count: await importIndex({ ...common, ...encoder, vectors: argv.vectors as string, signal }) };
      });
    } finally {
      progress.stop();
    }
    const out = { out: argv.out, passages: summary.count, ...summary, seconds: (performance.now() - t0) / 1000 };
    const missing = typeof summary.missing === 'number' && summary.missing > 0 ? ` (${summary.missing} passages without a vector left out)` : '';
    process.stdout.write(argv.json ? `${JSON.stringify(out)}\n` : `indexed ${String(summary.count)} passages into ${argv.out}${missing}\n`);
  },
};
