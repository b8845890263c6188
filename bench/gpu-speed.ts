// GPU throughput against the reference method in the same run (see scripts/gpu-speed.sh):
// exact retrieval (fp16 corpus, k=100) and cross-encoder scoring (XLM-R base shape, fp16).
// Prints one JSON line per measurement; the shell script prints the reference's numbers.
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { uniformF32 } from './random.js';

const [, , mode, arg] = process.argv;

async function time<T>(fn: () => Promise<T>, iters = 3): Promise<number> {
  await fn();
  const ts: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await fn();
    ts.push((performance.now() - t0) / 1000);
  }
  return ts.sort((a, b) => a - b)[Math.floor(iters / 2)];
}

async function main(): Promise<void> {
  if (mode === 'retrieval') {
    const n = Number(arg ?? 1_000_000), d = 768, q = 4096, k = 100;
    const index = await DenseIndex.fromVectors(uniformF32(n * d, 1), d, { dtype: 'float16' });
    index.setDevice('cuda');
    const queries = uniformF32(q * d, 2);
    const sec = await time(() => index.search(queries, k));
    console.log(JSON.stringify({ bench: 'retrieval', engine: 'gainrag', n, d, q, k, sec, qps: q / sec }));
  } else if (mode === 'cross-encoder') {
    const ce = await CrossEncoder.load(arg!, { device: 'cuda', dtype: 'float16' });
    const words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu'.split(' ');
    const passages = Array.from({ length: 256 }, (_, i) => Array.from({ length: 120 + (i % 140) }, (_, j) => words[(i + j) % words.length]).join(' '));
    const queries = passages.map(() => 'which greek letter comes after gamma');
    const sec = await time(() => ce.score(queries, passages, { maxLength: 512 }));
    console.log(JSON.stringify({ bench: 'cross-encoder', engine: 'gainrag', pairs: 256, sec, pairsPerSec: 256 / sec }));
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
