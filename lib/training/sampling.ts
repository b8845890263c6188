// Group sampling as FlagEmbedding's reranker dataset does it: one positive (random.choice over
// `pos`; GainRAG data has exactly one) and group_size - 1 negatives drawn without replacement
// from `neg`, or, when `neg` is too short, from `neg` repeated ceil((group_size - 1) / len)
// times (so passages repeat, each at most that many times). Teacher scores travel with their
// passages. Query order is reshuffled every epoch.
import { Rng } from './prng.js';
import type { TrainRecord } from './data.js';

/** One listwise training group: passages[0] is the positive. */
export interface TrainGroup {
  query: string;
  passages: string[];
  teacherScores: number[];
}

// Purposes keep the generator streams of different draws apart.
const ORDER = 1;
const GROUPS = 2;

export function sampleGroup(record: TrainRecord, groupSize: number, rng: Rng): TrainGroup {
  const p = rng.int(record.pos.length);
  const passages = [record.pos[p]];
  const teacherScores = [record.posScores[p]];
  const want = groupSize - 1;
  const n = record.neg.length;
  const repeat = n < want ? Math.ceil(want / n) : 1;
  for (const i of rng.sampleIndices(n * repeat, want)) {
    passages.push(record.neg[i % n]);
    teacherScores.push(record.negScores[i % n]);
  }
  return { query: record.query, passages, teacherScores };
}

/** Order of the records in `epoch` (0-based). */
export function epochOrder(count: number, seed: number, epoch: number): number[] {
  return new Rng(seed, ORDER, epoch).shuffle(Array.from({ length: count }, (_, i) => i));
}

/** Batches in one epoch; with dropLast the last incomplete batch is left out (HF drop_last). */
export function batchesPerEpoch(count: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/** The groups of batch `batch` of `epoch`: a pure function of its arguments (resumable). */
export function sampleBatch(
  records: TrainRecord[],
  order: number[],
  seed: number,
  epoch: number,
  batch: number,
  batchSize: number,
  groupSize: number,
): TrainGroup[] {
  const rng = new Rng(seed, GROUPS, epoch, batch);
  const ids = order.slice(batch * batchSize, (batch + 1) * batchSize);
  return ids.map((i) => sampleGroup(records[i], groupSize, rng));
}
