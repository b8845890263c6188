// Approximate indexes through FAISS (issue #17 item 3): `--faiss-factory` on index import/build
// trains and stores ann.faiss; DenseIndex searches through it unless `exact`; `gainrag index eval`
// reports Recall@1/10/100 against exact search. Skipped without FAISS in the build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cliPath, dataDir, fixture } from './helpers.js';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { writeNpyFloat32 } from '../lib/retrieval/npy.js';
import { faissAvailable } from '../lib/retrieval/ann.js';
import { importIndex } from '../lib/retrieval/build.js';

const skip = faissAvailable() ? false : 'this addon was built without FAISS (libfaiss-dev)';
const PY = '/usr/bin/python3';
const pyFaiss = spawnSync(PY, ['-c', 'import faiss, numpy'], { encoding: 'utf8' }).status === 0;

// Recall@10 of the same factory driven from Python FAISS on the same rows (trained on all of them,
// as gainrag does when the corpus is under the default train size).
function pythonRecall(vectors: string, queries: string, factory: string, efSearch?: number): number {
  const script = [
    'import sys, numpy as np, faiss',
    `v = np.load(${JSON.stringify(vectors)}); q = np.load(${JSON.stringify(queries)})`,
    'ex = faiss.IndexFlatIP(v.shape[1]); ex.add(v); _, E = ex.search(q, 10)',
    `idx = faiss.index_factory(v.shape[1], ${JSON.stringify(factory)}, faiss.METRIC_INNER_PRODUCT)`,
    'idx.train(v); idx.add(v)',
    efSearch ? `faiss.ParameterSpace().set_index_parameter(idx, 'efSearch', ${efSearch})` : '',
    '_, A = idx.search(q, 10)',
    'print(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(A, E)]))',
  ].join('\n');
  const r = spawnSync(PY, ['-c', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return Number(r.stdout.trim());
}
const N = 2000;
const DIM = 32;

function cli(args: string[]) {
  return spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
}

// Clustered data (what embeddings look like to an IVF/PQ index), from a fixed LCG.
function corpus(w: string): { vectors: string; passages: string; queries: string; q: Float32Array } {
  let s = 12345;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;
  const centers = Array.from({ length: 20 }, () => Array.from({ length: DIM }, rnd));
  const make = (n: number) => {
    const out = new Float32Array(n * DIM);
    for (let i = 0; i < n; i++) {
      const c = centers[Math.floor((rnd() + 0.5) * 20) % 20];
      for (let d = 0; d < DIM; d++) out[i * DIM + d] = c[d] + 0.3 * rnd();
    }
    return out;
  };
  const vectors = path.join(w, 'v.npy');
  writeNpyFloat32(vectors, make(N), N, DIM);
  const q = make(50);
  const queries = path.join(w, 'q.npy');
  writeNpyFloat32(queries, q, 50, DIM);
  const passages = path.join(w, 'p.jsonl');
  writeFileSync(passages, Array.from({ length: N }, (_, i) => JSON.stringify({ id: `p${i}`, title: '', text: `passage ${i}` })).join('\n') + '\n');
  return { vectors, passages, queries, q };
}

test('IVF with every list probed returns exactly the exact top-k; fewer lists trade recall, reported by index eval', { skip }, async () => {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-ann-test-'));
  try {
    const c = corpus(w);
    const out = path.join(w, 'ivf');
    const r = cli(['index', 'import', '--vectors', c.vectors, '--passages', c.passages, '--out', out, '--faiss-factory', 'IVF16,Flat', '--train-size', '1000', '--nprobe', '16']);
    assert.equal(r.status, 0, r.stderr);
    const meta = JSON.parse(readFileSync(path.join(out, 'ann.json'), 'utf8'));
    assert.equal(meta.factory, 'IVF16,Flat');
    assert.equal(meta.count, N);
    const index = await DenseIndex.open(out);
    try {
      assert.equal(index.approximate?.type, 'IndexIVFFlat');
      const approx = await index.search(c.q, 10);
      const exact = await index.search(c.q, 10, { exact: true });
      assert.deepEqual(approx.ids, exact.ids);
      for (let i = 0; i < approx.scores.length; i++) assert.ok(Math.abs(approx.scores[i] - exact.scores[i]) < 1e-4);
      const one = await index.search(c.q, 10, { nprobe: 1 });
      assert.notDeepEqual(one.ids, exact.ids, 'one list of 16 should miss some neighbours');
    } finally {
      await index.dispose();
    }
    let e = cli(['index', 'eval', out, '--data', c.queries, '--json']);
    assert.equal(e.status, 0, e.stderr);
    const all = JSON.parse(e.stdout);
    assert.deepEqual(Object.keys(all.recall), ['1', '10', '100']);
    assert.deepEqual(all.recall, { '1': 1, '10': 1, '100': 1 });
    assert.equal(all.queries, 50);
    e = cli(['index', 'eval', out, '--against', out, '--data', c.queries, '--nprobe', '1', '--json']);
    assert.equal(e.status, 0, e.stderr);
    const few = JSON.parse(e.stdout);
    assert.ok(few.recall['100'] < 1 && few.recall['100'] > 0, JSON.stringify(few.recall));
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('PQ and HNSW indexes search through FAISS: recall against exact search, as Python FAISS gets it', { skip }, async () => {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-ann-test-'));
  try {
    const c = corpus(w);
    const exactDir = path.join(w, 'exact');
    await importIndex({ vectors: c.vectors, passages: c.passages, out: exactDir });
    for (const [factory, type, extra] of [['PQ8x4', 'IndexPQ', []], ['HNSW16,Flat', 'IndexHNSWFlat', ['--ef-search', '64']]] as const) {
      const out = path.join(w, type);
      const r = cli(['index', 'import', '--vectors', c.vectors, '--passages', c.passages, '--out', out, '--faiss-factory', factory, ...extra]);
      assert.equal(r.status, 0, r.stderr);
      const e = cli(['index', 'eval', out, '--against', exactDir, '--data', c.queries, '--k', '10', '--json']);
      assert.equal(e.status, 0, e.stderr);
      const s = JSON.parse(e.stdout);
      assert.equal(s.type, type);
      assert.deepEqual(Object.keys(s.recall), ['1', '10']);
      assert.ok(s.recall['10'] > 0 && s.recall['10'] <= 1, `${factory}: ${JSON.stringify(s.recall)}`);
      if (pyFaiss) {
        // Same library, same training rows: PQ's k-means is seeded, so recall is identical; HNSW's
        // parallel insertion may build a slightly different graph.
        const py = pythonRecall(c.vectors, c.queries, factory, type === 'IndexPQ' ? undefined : 64);
        if (type === 'IndexPQ') assert.ok(Math.abs(s.recall['10'] - py) < 1e-9, `${factory}: gainrag ${s.recall['10']} vs Python FAISS ${py}`);
        else assert.ok(Math.abs(s.recall['10'] - py) <= 0.05, `${factory}: gainrag ${s.recall['10']} vs Python FAISS ${py}`);
      }
      if (type === 'IndexPQ') assert.ok(s.annBytes < s.vectorsBytes / 4, `PQ8x4 codes are 4 bytes a row: ${s.annBytes} vs ${s.vectorsBytes}`);
    }
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('a factory FAISS rejects is E_INVALID_ARG with nothing created; a stale ann.json is E_INDEX', { skip }, async () => {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-ann-test-'));
  try {
    const c = corpus(w);
    const out = path.join(w, 'bad');
    await assert.rejects(importIndex({ vectors: c.vectors, passages: c.passages, out, ann: { factory: 'NoSuchIndex9' } }), (e: Error & { code?: string }) => e.code === 'E_INVALID_ARG' && /NoSuchIndex9/.test(e.message));
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.partial`), false);
    const good = path.join(w, 'good');
    await importIndex({ vectors: c.vectors, passages: c.passages, out: good, ann: { factory: 'PQ4x4' } });
    const meta = JSON.parse(readFileSync(path.join(good, 'ann.json'), 'utf8'));
    writeFileSync(path.join(good, 'ann.json'), JSON.stringify({ ...meta, manifest: '0000000000000000' }));
    await assert.rejects(DenseIndex.open(good), (e: Error & { code?: string }) => e.code === 'E_INDEX' && /another version of this index/.test(e.message));
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('index build --faiss-factory, then retrieve: searches through FAISS (all IVF lists probed: the exact results; one list: fewer)', { skip }, async () => {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-ann-test-'));
  try {
    const squad = path.join(dataDir, 'squad_v1.1_dev_open');
    const passages = path.join(w, 'p.jsonl');
    writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').split('\n').slice(0, 300).join('\n') + '\n');
    const questions = path.join(w, 'q.jsonl');
    writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').split('\n').slice(0, 20).join('\n') + '\n');
    const encoder = fixture('bert-tiny');
    const results: string[][][] = [];
    const runs = [[], ['--faiss-factory', 'IVF4,Flat', '--nprobe', '4'], ['--faiss-factory', 'IVF4,Flat', '--nprobe', '1']];
    for (const [i, extra] of runs.entries()) {
      const index = path.join(w, `idx${i}`);
      let r = cli(['index', 'build', '--passages', passages, '--encoder', encoder, '--out', index, ...extra]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(existsSync(path.join(index, 'ann.faiss')), extra.length > 0);
      const out = path.join(w, `r${i}.jsonl`);
      r = cli(['retrieve', '--index', index, '--encoder', encoder, '--data', questions, '--top-k', '5', '--out', out]);
      assert.equal(r.status, 0, r.stderr);
      results.push(readFileSync(out, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { ctxs: { id: string }[] }).ctxs.map((c) => c.id)));
    }
    assert.equal(results[0].length, 20);
    assert.deepEqual(results[1], results[0]);
    // One list of four: retrieve really went through FAISS (its default nprobe from ann.json).
    assert.notDeepEqual(results[2], results[0]);
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});
