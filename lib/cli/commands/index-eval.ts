// `gainrag index eval INDEX --against EXACT --data Q`: Recall@1/10/100 of an approximate index.
import type { CommandModule } from 'yargs';
import { evalIndex } from '../../retrieval/eval-ann.js';
import { withInterrupt } from '../progress.js';
import { embedClientFromArgs, withEmbedUrlFlags, type EmbedUrlArgs } from '../../stages/embed-flags.js';

interface Args extends Partial<EmbedUrlArgs> {
  json: boolean;
  index: string;
  against?: string;
  data: string;
  encoder?: string;
  device?: string;
  k: number;
  nprobe?: number;
  'ef-search'?: number;
}

export const indexEvalCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'eval <index>',
  describe: 'Recall@1/10/100 of an approximate (FAISS) index against exact search, q/s and memory',
  builder: (y) =>
    withEmbedUrlFlags(y)
      .positional('index', { type: 'string', demandOption: true, describe: 'index directory with a FAISS index (built with --faiss-factory)' })
      .option('against', { type: 'string', describe: 'exact index over the same rows (default: INDEX itself, searched exactly)' })
      .option('data', { type: 'string', demandOption: true, describe: 'queries: float32 .npy [Q, dim], or JSONL with "question" (needs --encoder or --embed-url)' })
      .option('encoder', { type: 'string', describe: 'bi-encoder that embeds the questions of a JSONL --data' })
      .option('device', { type: 'string', describe: 'encoder device' })
      .option('k', { type: 'number', default: 100, describe: 'largest k (recall at 1, 10, 100 up to it)' })
      .option('nprobe', { type: 'number', describe: 'IVF lists probed (default: the index setting)' })
      .option('ef-search', { type: 'number', describe: 'HNSW efSearch (default: the index setting)' }) as never,
  handler: async (argv) => {
    const s = await withInterrupt((signal) =>
      evalIndex({ index: argv.index, against: argv.against, data: argv.data, encoder: argv.encoder, embedUrl: argv['embed-url'], embedClient: embedClientFromArgs(argv), device: argv.device as never, k: argv.k, nprobe: argv.nprobe, efSearch: argv['ef-search'], signal }),
    );
    if (argv.json) {
      process.stdout.write(`${JSON.stringify(s)}\n`);
      return;
    }
    const recall = Object.entries(s.recall).map(([k, v]) => `R@${k} ${v.toFixed(4)}`).join('  ');
    process.stdout.write(
      `${s.factory} (${s.type}), ${s.queries} queries: ${recall}\n` +
        `approximate ${s.approximate.queriesPerSecond.toFixed(1)} q/s, exact ${s.exact.queriesPerSecond.toFixed(1)} q/s; ` +
        `ann.faiss ${((s.annBytes ?? 0) / 2 ** 20).toFixed(1)} MiB, vectors.bin ${(s.vectorsBytes / 2 ** 20).toFixed(1)} MiB, peak RSS ${s.peakRssMiB.toFixed(0)} MiB\n`,
    );
  },
};
