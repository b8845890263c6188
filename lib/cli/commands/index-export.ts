// `gainrag index export --faiss DIR`: a gainrag index as the reference's FAISS directory.
import type { CommandModule } from 'yargs';
import { exportFaiss } from '../../retrieval/faiss.js';
import { withInterrupt } from '../progress.js';

interface Args {
  json: boolean;
  index: string;
  faiss: string;
}

export const indexExportCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'export <index>',
  describe: "write an index as index.faiss + index_meta.faiss (the reference's Indexer.deserialize_from reads them)",
  builder: (y) =>
    y
      .positional('index', { type: 'string', demandOption: true, describe: 'gainrag index directory' })
      .option('faiss', { type: 'string', demandOption: true, describe: 'directory to write index.faiss and index_meta.faiss into' }) as never,
  handler: async (argv) => {
    const t0 = performance.now();
    const count = await withInterrupt((signal) => exportFaiss({ index: argv.index, out: argv.faiss, signal }));
    const summary = { out: argv.faiss, vectors: count, seconds: (performance.now() - t0) / 1000 };
    process.stdout.write(argv.json ? `${JSON.stringify(summary)}\n` : `exported ${count} vectors to ${argv.faiss}\n`);
  },
};
