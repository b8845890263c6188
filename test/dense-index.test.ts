// DenseIndex: exact search against a float64 brute force computed here, storage types, files,
// and the errors of bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, truncateSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { makeData, makeVector, vectorFromArray, FixedSizeList, Field, Float32 } from 'apache-arrow';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { writeNpyFloat32 } from '../lib/retrieval/npy.js';
import { DenseIndexWriter } from '../lib/retrieval/index-writer.js';

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

function randomMatrix(rows: number, dim: number, seed: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(rows * dim);
  for (let i = 0; i < out.length; i++) out[i] = r() * 2 - 1;
  return out;
}

// Storage rounding done independently of the engine: IEEE half (round to nearest even) and bfloat16.
function roundHalf(x: number): number {
  if (x === 0) return x;
  const a = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  const ulp = 2 ** (e - 10);
  const m = a / ulp;
  const f = Math.floor(m);
  const r = m - f > 0.5 || (m - f === 0.5 && f % 2 === 1) ? f + 1 : f;
  return Math.sign(x) * r * ulp;
}
function roundBf16(x: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, x);
  let bits = view.getUint32(0);
  bits = (bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000;
  view.setUint32(0, bits >>> 0);
  return view.getFloat32(0);
}

function normalizeRows(m: Float32Array | number[], dim: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < m.length; i += dim) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += m[i + j] * m[i + j];
    const n = Math.sqrt(s) || 1;
    for (let j = 0; j < dim; j++) out.push(m[i + j] / n);
  }
  return out;
}

/** float64 scores [Q][N] of the stored rows. */
function bruteScores(corpus: ArrayLike<number>, queries: ArrayLike<number>, dim: number): number[][] {
  const n = corpus.length / dim;
  const out: number[][] = [];
  for (let q = 0; q < queries.length / dim; q++) {
    const row: number[] = [];
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += queries[q * dim + j] * corpus[i * dim + j];
      row.push(s);
    }
    out.push(row);
  }
  return out;
}

/**
 * Checks one search result against float64 scores: returned scores match the reference score of
 * the returned row, are sorted, and equal the reference's j-th best score at every rank j (so the
 * returned set is the true top-k up to ties within `tol`).
 */
function assertExact(res: { ids: BigInt64Array; scores: Float32Array }, ref: number[][], k: number, tol: number, idToRow = (id: number) => id): void {
  for (let q = 0; q < ref.length; q++) {
    const sorted = [...ref[q]].sort((a, b) => b - a);
    const seen = new Set<number>();
    for (let j = 0; j < k; j++) {
      const id = Number(res.ids[q * k + j]);
      const score = res.scores[q * k + j];
      const row = idToRow(id);
      assert.ok(row >= 0 && row < ref[q].length, `query ${q} rank ${j}: id ${id} out of range`);
      assert.ok(!seen.has(id), `query ${q}: id ${id} returned twice`);
      seen.add(id);
      assert.ok(Math.abs(score - ref[q][row]) <= tol, `query ${q} rank ${j}: score ${score} vs reference ${ref[q][row]}`);
      assert.ok(Math.abs(score - sorted[j]) <= tol, `query ${q} rank ${j}: score ${score} but the ${j}-th best is ${sorted[j]}`);
      if (j > 0) assert.ok(res.scores[q * k + j - 1] >= score, `query ${q}: scores not sorted at rank ${j}`);
    }
  }
}

const cases: { n: number; dim: number; q: number; k: number; block: number; qblock: number; group?: number }[] = [
  { n: 1, dim: 4, q: 2, k: 1, block: 1, qblock: 1 },
  { n: 100, dim: 16, q: 5, k: 10, block: 7, qblock: 2 },
  { n: 1000, dim: 24, q: 9, k: 100, block: 96, qblock: 4 },
  { n: 257, dim: 8, q: 3, k: 257, block: 64, qblock: 1024 }, // k = N
  { n: 3001, dim: 8, q: 3, k: 2048, block: 1000, qblock: 2 }, // large k, N not a multiple of the block
  { n: 500, dim: 33, q: 17, k: 5, block: 0, qblock: 0 }, // engine defaults
  { n: 999, dim: 20, q: 23, k: 31, block: 100, qblock: 3, group: 7 }, // several query groups, one corpus pass each
];

for (const c of cases) {
  test(`ip search equals float64 brute force: N=${c.n} dim=${c.dim} Q=${c.q} k=${c.k} block=${c.block}/${c.qblock}/${c.group ?? 0}`, async () => {
    const corpus = randomMatrix(c.n, c.dim, 1 + c.n);
    const queries = randomMatrix(c.q, c.dim, 2 + c.n);
    const index = await DenseIndex.fromVectors(corpus, c.dim);
    assert.equal(index.size, c.n);
    assert.equal(index.dim, c.dim);
    const res = await index.search(queries, c.k, { corpusBlock: c.block || undefined, queryBlock: c.qblock || undefined, queryGroup: c.group });
    assert.equal(res.ids.length, c.q * c.k);
    assertExact(res, bruteScores(corpus, queries, c.dim), c.k, 1e-4);
  });
}

test('cosine metric normalises rows and queries', async () => {
  const dim = 12;
  const corpus = randomMatrix(300, dim, 5);
  for (let j = 0; j < dim; j++) corpus[7 * dim + j] *= 1000; // a long vector must not dominate
  const queries = randomMatrix(4, dim, 6);
  const index = await DenseIndex.fromVectors(corpus, dim, { metric: 'cosine' });
  assert.equal(index.metric, 'cosine');
  const res = await index.search(queries, 20, { corpusBlock: 50 });
  assertExact(res, bruteScores(normalizeRows(corpus, dim), normalizeRows(queries, dim), dim), 20, 1e-5);
  for (const s of res.scores) assert.ok(s <= 1 + 1e-5 && s >= -1 - 1e-5);
});

for (const [dtype, round] of [['float16', roundHalf], ['bfloat16', roundBf16]] as const) {
  test(`${dtype} storage: exact over the rounded rows`, async () => {
    const dim = 16;
    const corpus = randomMatrix(700, dim, 9);
    const queries = randomMatrix(6, dim, 10);
    const index = await DenseIndex.fromVectors(corpus, dim, { dtype });
    assert.equal(index.dtype, dtype);
    const res = await index.search(queries, 30, { corpusBlock: 128 });
    const rounded = Array.from(corpus, round);
    assertExact(res, bruteScores(rounded, queries, dim), 30, 1e-4);
    // and close to the unrounded scores (storage precision)
    assertExact(res, bruteScores(corpus, queries, dim), 30, dtype === 'float16' ? 0.02 : 0.1);
  });
}

test('custom ids, ties broken by insertion order, add after open spans both storage parts', async () => {
  const dim = 4;
  const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-idx-'));
  try {
    // rows 0..2 identical: equal scores, returned in insertion order whatever the block size
    const base = new Float32Array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]);
    const index = await DenseIndex.fromVectors(base, dim, { ids: [30, 10, 20, 99] });
    for (const block of [1, 2, 3, 100]) {
      const r = await index.search(new Float32Array([2, 0, 0, 0]), 3, { corpusBlock: block });
      assert.deepEqual(Array.from(r.ids, Number), [30, 10, 20]);
      assert.deepEqual(Array.from(r.scores), [2, 2, 2]);
    }
    await index.save(dir);
    const opened = await DenseIndex.open(dir);
    assert.equal(opened.size, 4);
    await opened.add(new Float32Array([0, 0, 5, 0, 3, 0, 0, 0]), BigInt64Array.from([7n, 8n]));
    const r = await opened.search(new Float32Array([1, 0, 1, 0]), 6, { corpusBlock: 3 });
    assert.deepEqual(Array.from(r.ids, Number), [7, 8, 30, 10, 20, 99]);
    assert.deepEqual(Array.from(r.scores), [5, 3, 1, 1, 1, 0]);
    await assert.rejects(opened.add(new Float32Array(4), [99]), { code: 'E_INDEX', message: /99/ });
    await assert.rejects(opened.add(new Float32Array(8), [5, 5]), { code: 'E_INDEX', message: /duplicate id 5/ });
    assert.equal(opened.size, 6, 'failed adds leave the index unchanged');
    // default ids continue after the largest
    await opened.add(new Float32Array(4));
    const all = await opened.search(new Float32Array([0, 0, 0, 1]), 7);
    assert.ok(Array.from(all.ids, Number).includes(100));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('save / open round trip, npy import, truncated files', async () => {
  const dim = 10;
  const corpus = randomMatrix(123, dim, 21);
  const queries = randomMatrix(3, dim, 22);
  const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-idx-'));
  try {
    const index = await DenseIndex.fromVectors(corpus, dim, { dtype: 'float16', metric: 'cosine' });
    const before = await index.search(queries, 9);
    await index.save(path.join(dir, 'a'));
    const manifest = JSON.parse(readFileSync(path.join(dir, 'a', 'manifest.json'), 'utf8'));
    const { checksums, ...fields } = manifest; // checksums: see test/index-validation.test.ts
    assert.deepEqual(fields, { format: 'gainrag-dense-index', version: 1, dim, dtype: 'float16', count: 123, metric: 'cosine' });
    assert.deepEqual(Object.keys(checksums).sort(), ['ids', 'manifest', 'vectors']);
    const opened = await DenseIndex.open(path.join(dir, 'a'));
    assert.equal(opened.dtype, 'float16');
    assert.equal(opened.metric, 'cosine');
    const after = await opened.search(queries, 9);
    assert.deepEqual(after.ids, before.ids);
    assert.deepEqual(after.scores, before.scores);

    const npy = path.join(dir, 'v.npy');
    writeNpyFloat32(npy, corpus, 123, dim);
    const imported = await DenseIndex.fromNpy(npy);
    assertExact(await imported.search(queries, 9), bruteScores(corpus, queries, dim), 9, 1e-4);
    // float16 .npy: the same bits as the rounded rows
    const half = Buffer.from(readFileSync(npy));
    const h = half.toString('latin1', 10, 10 + half.readUInt16LE(8)).replace("'<f4'", "'<f2'");
    const body = Buffer.alloc(123 * dim * 2);
    const f16 = (x: number) => {
      const r = roundHalf(x);
      const sign = r < 0 ? 0x8000 : 0;
      const a = Math.abs(r);
      if (a < 2 ** -14) return sign | Math.round(a / 2 ** -24);
      const e = Math.floor(Math.log2(a));
      return sign | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
    };
    corpus.forEach((x, i) => body.writeUInt16LE(f16(x), i * 2));
    const npy16 = path.join(dir, 'v16.npy');
    const head = Buffer.alloc(10);
    head.write('\x93NUMPY', 0, 'latin1');
    head[6] = 1;
    head.writeUInt16LE(h.length, 8);
    writeFileSync(npy16, Buffer.concat([head, Buffer.from(h, 'latin1'), body]));
    const imported16 = await DenseIndex.fromNpy(npy16);
    assertExact(await imported16.search(queries, 9), bruteScores(Array.from(corpus, roundHalf), queries, dim), 9, 1e-4);

    // version 2 header (uint32 length) and Fortran order
    const head2 = Buffer.alloc(12);
    head2.write('\x93NUMPY', 0, 'latin1');
    head2[6] = 2;
    const h2 = h.slice(0, -1).padEnd(h.length + 1, ' ') + '\n'; // two bytes longer: data stays 2-byte aligned
    head2.writeUInt32LE(h2.length, 8);
    writeFileSync(path.join(dir, 'v2.npy'), Buffer.concat([head2, Buffer.from(h2, 'latin1'), body]));
    assert.deepEqual((await DenseIndex.fromNpy(path.join(dir, 'v2.npy'))).size, 123);
    writeFileSync(path.join(dir, 'f.npy'), Buffer.concat([head, Buffer.from(h.replace('False', 'True '), 'latin1'), body]));
    await assert.rejects(DenseIndex.fromNpy(path.join(dir, 'f.npy')), { code: 'E_INDEX', message: /Fortran/ });
    truncateSync(npy16, 10 + h.length + body.length - 2);
    await assert.rejects(DenseIndex.fromNpy(npy16), { code: 'E_INDEX', message: /truncated/ });
    writeFileSync(path.join(dir, 'bad.npy'), Buffer.concat([head, Buffer.from(h.replace("'<f2'", "'<i8'"), 'latin1'), body]));
    await assert.rejects(DenseIndex.fromNpy(path.join(dir, 'bad.npy')), { code: 'E_INDEX', message: /not supported/ });

    truncateSync(path.join(dir, 'a', 'vectors.bin'), 100);
    await assert.rejects(DenseIndex.open(path.join(dir, 'a')), { code: 'E_INDEX', message: /vectors\.bin.*truncated/ });
    await index.save(path.join(dir, 'a')); // replaces the damaged index
    truncateSync(path.join(dir, 'a', 'ids.bin'), 8);
    await assert.rejects(DenseIndex.open(path.join(dir, 'a')), { code: 'E_INDEX', message: /ids\.bin/ });
    writeFileSync(path.join(dir, 'a', 'manifest.json'), '{"format": "other"}');
    await assert.rejects(DenseIndex.open(path.join(dir, 'a')), { code: 'E_INDEX' });
    await assert.rejects(DenseIndex.open(path.join(dir, 'missing')), { code: 'E_INDEX' });
    // never replaces a directory that is not an index
    writeFileSync(path.join(dir, 'keep.txt'), 'x');
    await assert.rejects(index.save(dir), { code: 'E_IO' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad input: NaN/Inf, dimension mismatch, k out of range, empty index, wrong types', async () => {
  const dim = 3;
  const bad = new Float32Array([1, 2, 3, 4, NaN, 6]);
  const empty = DenseIndex.create(dim);
  await assert.rejects(empty.add(bad), { code: 'E_DATA', message: /vector 1/ });
  await assert.rejects(empty.add(new Float32Array([1, 2, Infinity])), { code: 'E_DATA' });
  await assert.rejects(DenseIndex.fromVectors(new Float32Array([70000, 0, 0]), dim, { dtype: 'float16' }), { code: 'E_DATA', message: /range/ });
  assert.equal(empty.size, 0);
  await assert.rejects(empty.search(new Float32Array(3), 1), { code: 'E_INDEX', message: /empty/ });
  const index = await DenseIndex.fromVectors(new Float32Array([1, 0, 0, 0, 1, 0]), dim);
  await assert.rejects(index.search(new Float32Array(3), 3), RangeError);
  await assert.rejects(index.search(new Float32Array(3), 0), RangeError);
  await assert.rejects(index.search(new Float32Array(4), 1), RangeError);
  await assert.rejects(index.add(new Float32Array(4)), RangeError);
  await assert.rejects(index.search(new Float32Array([0, NaN, 0]), 1), { code: 'E_DATA' });
  await assert.rejects(index.search(new Float64Array(3) as never, 1), TypeError);
  await assert.rejects(index.add([1, 2, 3] as never), TypeError);
  await assert.rejects(index.add(new Float32Array(3), [1.5]), TypeError);
  assert.throws(() => DenseIndex.create(0), RangeError);
  assert.throws(() => DenseIndex.create(4, { metric: 'l2' as never }), TypeError);
  const none = await index.search(new Float32Array(0), 1);
  assert.equal(none.ids.length, 0);
});

test('queries as an Arrow FixedSizeList<Float32> vector; cancellation', async () => {
  const dim = 5;
  const corpus = randomMatrix(200, dim, 31);
  const queries = randomMatrix(4, dim, 32);
  const index = await DenseIndex.fromVectors(corpus, dim);
  const type = new FixedSizeList(dim, new Field('item', new Float32()));
  const child = makeData({ type: new Float32(), length: queries.length, data: queries });
  const arrow = makeVector(makeData({ type, length: 4, child }));
  const viaArrow = await index.search(arrow, 7);
  const viaArray = await index.search(queries, 7);
  assert.deepEqual(viaArrow.ids, viaArray.ids);
  await assert.rejects(index.search(arrow, 7).then(() => index.search(vectorFromArray([1, 2, 3]), 7)), TypeError);

  const controller = new AbortController();
  controller.abort();
  await assert.rejects(index.search(queries, 7, { signal: controller.signal }), { code: 'E_CANCELLED' });
  const progress: number[] = [];
  await index.search(queries, 7, { corpusBlock: 50, onProgress: (done) => progress.push(done) });
  await new Promise((r) => setImmediate(r));
  assert.ok(progress.length > 0);
});

test('DenseIndexWriter streams rows to disk; a bad append writes nothing; abort leaves no files', async () => {
  const dim = 6;
  const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-writer-'));
  try {
    const corpus = randomMatrix(250, dim, 41);
    const queries = randomMatrix(3, dim, 42);
    const writer = DenseIndexWriter.create(path.join(dir, 'w'), dim, { dtype: 'bfloat16', metric: 'cosine' });
    await writer.append(corpus.subarray(0, 100 * dim));
    const bad = corpus.slice(100 * dim, 150 * dim);
    bad[10 * dim + 2] = Infinity;
    await assert.rejects(writer.append(bad), { code: 'E_DATA', message: /vector 110/ });
    assert.equal(writer.count, 100);
    await writer.append(corpus.subarray(100 * dim));
    assert.equal(await writer.finish(), 250);
    const opened = await DenseIndex.open(path.join(dir, 'w'));
    assert.equal(opened.dtype, 'bfloat16');
    const rounded = normalizeRows(corpus, dim).map(roundBf16);
    assertExact(await opened.search(queries, 11, { corpusBlock: 64 }), bruteScores(rounded, normalizeRows(queries, dim), dim), 11, 1e-4);

    const npy = path.join(dir, 'v.npy');
    writeNpyFloat32(npy, corpus, 250, dim);
    const w2 = DenseIndexWriter.create(path.join(dir, 'n'), dim);
    assert.equal(await w2.appendNpy(npy), 250);
    await w2.finish();
    assertExact(await (await DenseIndex.open(path.join(dir, 'n'))).search(queries, 5), bruteScores(corpus, queries, dim), 5, 1e-4);

    const w3 = DenseIndexWriter.create(path.join(dir, 'x'), dim);
    await w3.append(corpus);
    w3.abort();
    assert.deepEqual(readdirSync(path.join(dir, 'x')), []);
    await assert.rejects(w3.append(corpus), { code: 'E_CANCELLED', message: /was aborted/ }); // an aborted writer stays aborted
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
