// Out-of-core CPU search (issue #10): above GAINRAG_MAPPED_RESIDENT_MAX bytes of mapped rows,
// each scored block of the mapped vectors.bin is dropped from the resident set (MADV_DONTNEED)
// and the next one read ahead. Dropping pages of the mapping is harmless (they are read again
// from the file), dropping pages of the in-memory rows added after open would zero them: these
// tests compare searches with the release on and off over a mapped + added index. The memory
// bound itself is measured by `node dist/bench/retrieval.js --out-of-core`, not asserted here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DenseIndex, type IndexDType } from '../lib/retrieval/dense-index.js';

function rand(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

async function searchWith(limit: string | undefined, index: DenseIndex, q: Float32Array, k: number) {
  const saved = process.env.GAINRAG_MAPPED_RESIDENT_MAX;
  if (limit === undefined) delete process.env.GAINRAG_MAPPED_RESIDENT_MAX;
  else process.env.GAINRAG_MAPPED_RESIDENT_MAX = limit;
  try {
    // Blocks of 300 rows: many blocks, and block edges that do not fall on page boundaries.
    return await index.search(q, k, { corpusBlock: 300 });
  } finally {
    if (saved === undefined) delete process.env.GAINRAG_MAPPED_RESIDENT_MAX;
    else process.env.GAINRAG_MAPPED_RESIDENT_MAX = saved;
  }
}

for (const dtype of ['float16', 'float32'] as IndexDType[]) {
  test(`block release over a mapped ${dtype} index (+ rows added after open) returns the same results`, async () => {
    const dim = 40;
    const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-ooc-test-'));
    try {
      const built = await DenseIndex.fromVectors(rand(5000 * dim, 1), dim, { dtype });
      await built.save(path.join(dir, 'idx'));
      const index = await DenseIndex.open(path.join(dir, 'idx'));
      await index.add(rand(1700 * dim, 2));
      const q = rand(23 * dim, 3);
      const kept = await searchWith(String(2 ** 60), index, q, 50);
      const released = await searchWith('0', index, q, 50);
      const again = await searchWith(undefined, index, q, 50);
      assert.deepEqual(released.ids, kept.ids);
      assert.deepEqual(released.scores, kept.scores);
      assert.deepEqual(again.ids, kept.ids);
      // Rows added after open (ids >= 5000) must still be found: a release that reached the
      // in-memory part would have zeroed them.
      let added = 0;
      for (const id of released.ids) if (id >= 5000n) added++;
      assert.ok(added > 0, 'some results come from the rows added after open');
      // And the best hit of query 0 is its exact best by brute force.
      const all = new Float32Array(6700);
      for (let r = 0; r < 6700; r++) {
        const row = index.row(r);
        let s = 0;
        for (let d = 0; d < dim; d++) s += row[d] * q[d];
        all[r] = s;
      }
      let best = 0;
      for (let r = 1; r < 6700; r++) if (all[r] > all[best]) best = r;
      assert.equal(released.ids[0], BigInt(best));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
