// The approximate-index flags shared by `index build` and `index import` (FAISS does the ANN part).
import type { Argv } from 'yargs';
import type { AnnOptions } from '../../retrieval/ann.js';

export interface AnnArgs {
  'faiss-factory'?: string;
  'train-size'?: number;
  nprobe?: number;
  'ef-search'?: number;
}

export function withAnnFlags<T>(y: Argv<T>): Argv<T & AnnArgs> {
  return y
    .option('faiss-factory', { type: 'string', describe: 'also build an approximate FAISS index: "PQ64", "IVF4096,PQ64", "HNSW32,Flat", "IVF4096,SQ8" ... (exact search stays available)' })
    .option('train-size', { type: 'number', describe: 'rows sampled to train the FAISS index (default min(rows, 262144))' })
    .option('nprobe', { type: 'number', describe: 'IVF lists probed per query by default' })
    .option('ef-search', { type: 'number', describe: 'HNSW efSearch by default' }) as Argv<T & AnnArgs>;
}

export function annFromArgs(a: AnnArgs): AnnOptions | undefined {
  const factory = a['faiss-factory'];
  if (factory === undefined) return undefined;
  return { factory, trainSize: a['train-size'], nprobe: a.nprobe, efSearch: a['ef-search'] };
}
