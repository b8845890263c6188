// Cost of index verification at open (issue #13): DenseIndex.open with verify 'full' (reads
// vectors.bin once: checksum + NaN scan) against 'header' (sizes, manifest and ids checks only),
// on one saved index, alternating in one run; and how that compares with one search pass.
//   node dist/bench/index-verify.js [--n 200000] [--dim 256] [--q 256] [--k 10] [--rounds 3]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { uniformF32 } from './random.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const n = arg('n', 200_000), dim = arg('dim', 256), q = arg('q', 256), k = arg('k', 10), rounds = arg('rounds', 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-bench-verify-'));
try {
  const rows = uniformF32(n * dim, 1);
  await (await DenseIndex.fromVectors(rows, dim)).save(path.join(dir, 'ix'));
  const queries = uniformF32(q * dim, 2);
  const full: number[] = [], header: number[] = [], search: number[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const mode of ['full', 'header'] as const) {
      const t0 = performance.now();
      const index = await DenseIndex.open(path.join(dir, 'ix'), { verify: mode });
      (mode === 'full' ? full : header).push(performance.now() - t0);
      if (mode === 'header') {
        const t1 = performance.now();
        await index.search(queries, k);
        search.push(performance.now() - t1);
      }
      await index.dispose();
    }
  }
  const mb = (n * dim * 4) / 2 ** 20;
  console.log(JSON.stringify({
    n, dim, q, k, vectorsMiB: Math.round(mb),
    openFullMs: +median(full).toFixed(1), openHeaderMs: +median(header).toFixed(1),
    fullOverHeader: +(median(full) / median(header)).toFixed(1),
    verifyMiBPerSec: Math.round(mb / ((median(full) - median(header)) / 1000)),
    searchMs: +median(search).toFixed(1),
    verifyOverOneSearch: +((median(full) - median(header)) / median(search)).toFixed(2),
  }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
