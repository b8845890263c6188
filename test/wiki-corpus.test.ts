// bench/wiki-corpus.ts: a row of the synthetic DPR-shaped corpus depends only on (seed, row), so
// a chunk regenerated alone, or a prefix, equals the same rows of one big generation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { syntheticRows } from '../bench/wiki-corpus.js';

test('synthetic corpus rows do not depend on chunking', () => {
  const dim = 768;
  const whole = syntheticRows(0, 64, dim, 21);
  const parts = [syntheticRows(0, 10, dim, 21), syntheticRows(10, 1, dim, 21), syntheticRows(11, 53, dim, 21)];
  const joined = new Float32Array(whole.length);
  let at = 0;
  for (const p of parts) {
    joined.set(p, at);
    at += p.length;
  }
  assert.deepEqual(joined, whole);
  assert.deepEqual(syntheticRows(5_000_000, 2, dim, 21), syntheticRows(5_000_000, 2, dim, 21));
});

test('synthetic corpus: values in [-1, 1), rows and seeds differ', () => {
  const a = syntheticRows(0, 2, 768, 21);
  for (const v of a) assert.ok(v >= -1 && v < 1);
  assert.notDeepEqual(a.subarray(0, 768), a.subarray(768));
  assert.notDeepEqual(syntheticRows(0, 1, 768, 22), a.subarray(0, 768));
  // Roughly centred: the mean of 1536 uniform(-1,1) values is within 0.1 of 0.
  assert.ok(Math.abs(a.reduce((s, v) => s + v, 0) / a.length) < 0.1);
});
