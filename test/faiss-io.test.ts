// FAISS files in and out (issue #17 item 2): index.faiss + index_meta.faiss written by Python
// FAISS (flat and PQ) import and return the passages FAISS returns; an exported gainrag index
// loads in Python FAISS (/usr/bin/python3 with python3-faiss) and searches the same.
// Skipped when the addon was built without FAISS (engineInfo().backends lacks 'faiss').
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cliPath, fixture } from './helpers.js';
import { engineInfo } from '../lib/engine.js';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { readNpyFloat32 } from '../lib/retrieval/npy.js';
import { PassageStore } from '../lib/io/passages.js';
import { exportFaiss, faissAvailable, importFaiss } from '../lib/retrieval/faiss.js';

const dir = fixture('contriever');
const noFaiss = faissAvailable() ? false : 'this addon was built without FAISS (libfaiss-dev)';
const PY = '/usr/bin/python3';
const pyFaiss = spawnSync(PY, ['-c', 'import faiss, numpy'], { encoding: 'utf8' }).status === 0;

function cli(args: string[]) {
  return spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
}

async function searchIds(indexDir: string, queries: string, k: number): Promise<{ ids: string[][]; scores: number[][] }> {
  const index = await DenseIndex.open(indexDir);
  const store = PassageStore.open(indexDir);
  try {
    const q = readNpyFloat32(queries);
    const r = await index.search(q.data, k);
    const out = { ids: [] as string[][], scores: [] as number[][] };
    for (let i = 0; i < q.rows; i++) {
      out.ids.push(Array.from(r.ids.subarray(i * k, (i + 1) * k), (row) => store.get(Number(row)).id));
      out.scores.push(Array.from(r.scores.subarray(i * k, (i + 1) * k)));
    }
    return out;
  } finally {
    store.close();
    await index.dispose();
  }
}

test('engineInfo().backends and `gainrag info` say whether FAISS is compiled in', () => {
  assert.equal(engineInfo().backends.includes('faiss'), faissAvailable());
  const r = cli(['info', '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).backends.includes('faiss'), faissAvailable());
});

for (const kind of ['flat', 'pq'] as const) {
  test(`index import --faiss (${kind === 'flat' ? 'IndexFlatIP' : 'IndexPQ'} from Python FAISS) returns the passages FAISS returns`, { skip: noFaiss }, async () => {
    const w = mkdtempSync(path.join(tmpdir(), 'gainrag-faiss-test-'));
    try {
      const out = path.join(w, 'idx');
      const r = cli(['index', 'import', '--faiss', path.join(dir, `faiss_${kind}`), '--passages', path.join(dir, 'psgs_faiss.tsv'), '--out', out, '--json']);
      assert.equal(r.status, 0, r.stderr);
      const s = JSON.parse(r.stdout);
      assert.equal(s.type, kind === 'flat' ? 'IndexFlatIP' : 'IndexPQ');
      assert.equal(s.count, 256);
      assert.equal(s.missing, 44);
      const expected = JSON.parse(readFileSync(path.join(dir, 'faiss_expected.json'), 'utf8'))[kind] as { ids: string[][]; scores: number[][] };
      const got = await searchIds(out, path.join(dir, 'faiss_queries.npy'), 10);
      assert.deepEqual(got.ids, expected.ids);
      got.scores.flat().forEach((sc, i) => assert.ok(Math.abs(sc - expected.scores.flat()[i]) < 1e-4, `score ${i}: ${sc} vs ${expected.scores.flat()[i]}`));
    } finally {
      rmSync(w, { recursive: true, force: true });
    }
  });
}

test('a FAISS directory whose id list does not match the index is E_DATA with nothing created', { skip: noFaiss }, async () => {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-faiss-test-'));
  try {
    const out = path.join(w, 'idx');
    // The ids name passages of psgs_faiss.tsv, not psgs.tsv.
    await assert.rejects(importFaiss({ dir: path.join(dir, 'faiss_flat'), passages: path.join(dir, 'psgs.tsv'), out }), (e: Error & { code?: string }) => e.code === 'E_DATA' && /is not in/.test(e.message));
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.partial`), false);
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('index export --faiss writes index.faiss + index_meta.faiss that Python FAISS loads and searches the same', { skip: noFaiss || (pyFaiss ? false : `${PY} has no faiss/numpy (python3-faiss python3-numpy)`) }, async () => {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-faiss-test-'));
  try {
    const idx = path.join(w, 'idx');
    let r = cli(['index', 'import', '--contriever', path.join(dir, 'passages_*'), '--passages', path.join(dir, 'psgs.tsv'), '--out', idx, '--dtype', 'float16']);
    assert.equal(r.status, 0, r.stderr);
    const fdir = path.join(w, 'faiss');
    r = cli(['index', 'export', idx, '--faiss', fdir, '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).vectors, 40);
    // As the reference's Indexer.deserialize_from reads it.
    const script = [
      'import faiss, pickle, json, sys, numpy as np',
      `index = faiss.read_index(${JSON.stringify(path.join(fdir, 'index.faiss'))})`,
      `meta = pickle.load(open(${JSON.stringify(path.join(fdir, 'index_meta.faiss'))}, 'rb'))`,
      'assert len(meta) == index.ntotal, (len(meta), index.ntotal)',
      `q = np.load(${JSON.stringify(path.join(dir, 'queries.npy'))})`,
      'scores, rows = index.search(q, 10)',
      'print(json.dumps({"metric": int(index.metric_type), "flat": isinstance(index, faiss.IndexFlat), "ids": [[meta[r] for r in row] for row in rows], "scores": scores.tolist()}))',
    ].join('\n');
    const py = spawnSync(PY, ['-c', script], { encoding: 'utf8' });
    assert.equal(py.status, 0, py.stderr);
    const fromPython = JSON.parse(py.stdout) as { metric: number; flat: boolean; ids: string[][]; scores: number[][] };
    assert.equal(fromPython.metric, 0); // faiss.METRIC_INNER_PRODUCT
    assert.equal(fromPython.flat, true);
    const ours = await searchIds(idx, path.join(dir, 'queries.npy'), 10);
    assert.deepEqual(fromPython.ids, ours.ids);
    fromPython.scores.flat().forEach((sc, i) => assert.ok(Math.abs(sc - ours.scores.flat()[i]) < 1e-4));
    // A directory holding other files is not overwritten.
    await assert.rejects(exportFaiss({ index: idx, out: idx }), (e: Error & { code?: string }) => e.code === 'E_INVALID_ARG');
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('index import --faiss --keep-faiss searches through the imported IndexPQ itself (FAISS results, decoded rows as exact fallback)', { skip: noFaiss }, async () => {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-faiss-test-'));
  try {
    const out = path.join(w, 'idx');
    const r = cli(['index', 'import', '--faiss', path.join(dir, 'faiss_pq'), '--keep-faiss', '--passages', path.join(dir, 'psgs_faiss.tsv'), '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    const index = await DenseIndex.open(out);
    try {
      assert.equal(index.approximate?.type, 'IndexPQ');
      assert.equal(index.approximate?.factory, 'imported IndexPQ');
    } finally {
      await index.dispose();
    }
    const expected = JSON.parse(readFileSync(path.join(dir, 'faiss_expected.json'), 'utf8')).pq as { ids: string[][]; scores: number[][] };
    const got = await searchIds(out, path.join(dir, 'faiss_queries.npy'), 10);
    assert.deepEqual(got.ids, expected.ids);
    assert.deepEqual(got.scores.flat().map((x) => Math.fround(x)), expected.scores.flat().map((x) => Math.fround(x)));
    const bad = cli(['index', 'import', '--vectors', path.join(dir, 'vectors.npy'), '--keep-faiss', '--passages', path.join(dir, 'psgs.tsv'), '--out', path.join(w, 'x')]);
    assert.match(bad.stderr, /--keep-faiss goes with --faiss \(E_INVALID_ARG\)/);
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('without FAISS compiled in: FAISS commands are E_UNSUPPORTED with nothing created; an index carrying ann.faiss searches exactly', { skip: noFaiss ? false : 'FAISS is compiled in' }, async () => {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-faiss-test-'));
  try {
    const out = path.join(w, 'idx');
    await assert.rejects(importFaiss({ dir: path.join(dir, 'faiss_flat'), passages: path.join(dir, 'psgs_faiss.tsv'), out }), { code: 'E_UNSUPPORTED' });
    let r = cli(['index', 'import', '--vectors', path.join(dir, 'vectors.npy'), '--passages', path.join(dir, 'psgs.tsv'), '--out', out, '--faiss-factory', 'PQ4']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /\(E_UNSUPPORTED\)/);
    assert.equal(existsSync(out), false);
    r = cli(['index', 'import', '--vectors', path.join(dir, 'vectors.npy'), '--passages', path.join(dir, 'psgs.tsv'), '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    await assert.rejects(exportFaiss({ index: out, out: path.join(w, 'f') }), { code: 'E_UNSUPPORTED' });
    // An index built elsewhere with a FAISS index beside it.
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    writeFileSync(path.join(out, 'ann.json'), JSON.stringify({ format: 'gainrag-faiss-ann', version: 1, factory: 'PQ4', count: 40, manifest: manifest.checksums.manifest }));
    writeFileSync(path.join(out, 'ann.faiss'), 'not read here');
    const index = await DenseIndex.open(out);
    try {
      assert.equal(index.approximate, null);
      const q = readNpyFloat32(path.join(dir, 'queries.npy'));
      const a = await index.search(q.data, 5);
      const b = await index.search(q.data, 5, { exact: true });
      assert.deepEqual(a.ids, b.ids);
    } finally {
      await index.dispose();
    }
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});
