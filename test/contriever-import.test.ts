// `index import --contriever` (issue #17 item 1): Contriever's pickled embedding shards read by
// our restricted unpickler, joined to the passage file by id, search like the same vectors
// imported from .npy; hostile pickles are refused with nothing created and nothing executed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cliPath, fixture } from './helpers.js';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { readNpyFloat32 } from '../lib/retrieval/npy.js';
import { PassageStore } from '../lib/io/passages.js';
import { FileBytes, NdArray, PyTuple, pickleStringList, unpickleBuffer, unpickleFile } from '../lib/io/pickle.js';
import { importContriever } from '../lib/retrieval/import-contriever.js';

const dir = fixture('contriever');
const psgs = path.join(dir, 'psgs.tsv');

function cli(args: string[]) {
  return spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
}

function work(): string {
  return mkdtempSync(path.join(tmpdir(), 'gainrag-contriever-test-'));
}

/** Passage ids (best first) and scores of each query, brute force over the passages `ids` (1-based rows of vectors.npy). */
function bruteForce(ids: number[], k: number): { ids: string[][]; scores: number[][] } {
  const v = readNpyFloat32(path.join(dir, 'vectors.npy'));
  const q = readNpyFloat32(path.join(dir, 'queries.npy'));
  const out = { ids: [] as string[][], scores: [] as number[][] };
  for (let i = 0; i < q.rows; i++) {
    const scored = ids.map((id) => {
      let s = 0;
      for (let d = 0; d < v.cols; d++) s += q.data[i * v.cols + d] * v.data[(id - 1) * v.cols + d];
      return { id: String(id), s };
    });
    scored.sort((a, b) => b.s - a.s);
    out.ids.push(scored.slice(0, k).map((x) => x.id));
    out.scores.push(scored.slice(0, k).map((x) => x.s));
  }
  return out;
}

async function searchPassages(indexDir: string, k: number): Promise<{ ids: string[][]; scores: number[][] }> {
  const index = await DenseIndex.open(indexDir);
  const store = PassageStore.open(indexDir);
  try {
    assert.equal(store.size, index.size);
    const q = readNpyFloat32(path.join(dir, 'queries.npy'));
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

test('the unpickler reads Contriever shards of protocols 2, 4 and 5 (fp16 and fp32) without reading their data', () => {
  const expect = [
    { file: 'passages_00', rows: 16, dtype: 'float16', first: '1' },
    { file: 'passages_01', rows: 14, dtype: 'float32' },
    { file: 'passages_02', rows: 10, dtype: 'float16', first: '31' },
  ];
  for (const e of expect) {
    const v = unpickleFile(path.join(dir, e.file), { lazyBytes: 256 });
    assert.ok(v instanceof PyTuple, e.file);
    const [ids, arr] = v.items;
    assert.ok(Array.isArray(ids) && ids.length === e.rows, e.file);
    if (e.first) assert.equal(ids[0], e.first);
    assert.ok(arr instanceof NdArray);
    assert.deepEqual(arr.shape, [e.rows, 16]);
    assert.equal(arr.dtype, e.dtype);
    assert.equal(arr.fortran, false);
    // Protocol 2 carries bytes as _codecs.encode(str, 'latin1'): decoded in memory; the others stay in the file.
    assert.equal(arr.data instanceof FileBytes, e.file !== 'passages_02', e.file);
  }
});

test('the unpickler refuses other opcodes and globals with E_DATA naming them', () => {
  const cases: [string, Buffer, RegExp][] = [
    ['dict', Buffer.from([0x80, 4, 0x7d, 0x2e]), /opcode EMPTY_DICT/],
    ['protocol 0', Buffer.from('(lp0\n.', 'latin1'), /not a pickle of protocol 2-5/],
    ['builtins.eval', Buffer.concat([Buffer.from([0x80, 2]), Buffer.from('cbuiltins\neval\n', 'latin1'), Buffer.from([0x29, 0x52, 0x2e])]), /global builtins\.eval is not allowed/],
    ['persistent id', Buffer.from([0x80, 4, 0x4e, 0x51, 0x2e]), /opcode BINPERSID/],
    ['out-of-band buffer', Buffer.from([0x80, 5, 0x97, 0x2e]), /opcode NEXT_BUFFER/],
    ['bad memo', Buffer.from([0x80, 4, 0x68, 7, 0x2e]), /memo entry 7/],
  ];
  for (const [name, buf, re] of cases) {
    assert.throws(() => unpickleBuffer(buf, name), (e: Error & { code?: string }) => e.code === 'E_DATA' && re.test(e.message), name);
  }
  // A list nested a million deep (two bytes a level) is data, not a stack overflow.
  const depth = 1_000_000;
  const deep = Buffer.concat([Buffer.from([0x80, 4]), Buffer.alloc(depth, 0x5d), Buffer.alloc(depth - 1, 0x61), Buffer.from([0x2e])]);
  assert.ok(Array.isArray(unpickleBuffer(deep)));
  // Our own list writer round-trips (long strings use BINUNICODE).
  const ids = ['1', 'x'.repeat(300), 'é'];
  assert.deepEqual(unpickleBuffer(Buffer.concat(pickleStringList(ids))), ids);
});

test('index import --contriever: shards (glob) + psgs.tsv search exactly like the same vectors imported from .npy', async () => {
  const w = work();
  try {
    const a = path.join(w, 'from-pickles');
    const b = path.join(w, 'from-npy');
    let r = cli(['index', 'import', '--contriever', path.join(dir, 'passages_*'), '--passages', psgs, '--out', a, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.count, 40);
    assert.equal(summary.dim, 16);
    assert.equal(summary.missing, 0);
    r = cli(['index', 'import', '--vectors', path.join(dir, 'vectors.npy'), '--passages', psgs, '--out', b]);
    assert.equal(r.status, 0, r.stderr);
    const fromPickles = await searchPassages(a, 10);
    const fromNpy = await searchPassages(b, 10);
    assert.deepEqual(fromPickles.ids, fromNpy.ids);
    assert.deepEqual(fromPickles.scores, fromNpy.scores);
    const expected = bruteForce(Array.from({ length: 40 }, (_, i) => i + 1), 10);
    assert.deepEqual(fromPickles.ids, expected.ids);
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('a subset of the shards keeps only their passages (file order), each with its own vector', async () => {
  const w = work();
  try {
    const out = path.join(w, 'idx');
    const s = await importContriever({ shards: [path.join(dir, 'passages_01'), path.join(dir, 'passages_02')], passages: psgs, out });
    assert.deepEqual(s, { count: 24, dim: 16, missing: 16 });
    const store = PassageStore.open(out);
    assert.deepEqual(Array.from({ length: store.size }, (_, i) => store.get(i).id), Array.from({ length: 24 }, (_, i) => String(i + 17)));
    store.close();
    const got = await searchPassages(out, 24);
    const expected = bruteForce(Array.from({ length: 24 }, (_, i) => i + 17), 24);
    assert.deepEqual(got.ids, expected.ids);
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('hostile pickles are refused (E_DATA naming the problem) before anything is created or run', async () => {
  const pwned = '/tmp/gainrag-pickle-pwned';
  rmSync(pwned, { force: true });
  const cases: [string, RegExp][] = [
    ['os_system.pkl', /global os\.system is not allowed/],
    ['posix_system.pkl', /global posix\.system is not allowed/],
    ['truncated_frame.pkl', /frame of \d+ bytes .* runs past the end of the file/],
    ['huge_length.pkl', /length of 4611686018427387904 bytes .* runs past the end of the file/],
  ];
  const w = work();
  try {
    for (const [name, re] of cases) {
      const out = path.join(w, `idx-${name}`);
      const shard = path.join(dir, 'hostile', name);
      // A good shard first: the hostile one must still stop the import before any output exists.
      await assert.rejects(importContriever({ shards: [path.join(dir, 'passages_00'), shard], passages: psgs, out }), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'E_DATA', `${name}: ${e.message}`);
        assert.match(e.message, re, name);
        assert.ok(e.message.includes(shard), name);
        return true;
      });
      for (const p of [out, `${out}.partial`, `${out}.lock`]) assert.equal(existsSync(p), false, `${name}: ${p} exists`);
      const r = cli(['index', 'import', '--contriever', shard, '--passages', psgs, '--out', out]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /\(E_DATA\)/);
      assert.equal(existsSync(out), false);
    }
    assert.equal(existsSync(pwned), false, 'a pickle ran code');
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('ids that are not in the passage file, or repeated, are E_DATA naming the id', async () => {
  const w = work();
  try {
    const out = path.join(w, 'idx');
    // passages_00 twice: every id repeats.
    await assert.rejects(importContriever({ shards: [path.join(dir, 'passages_00'), path.join(dir, 'passages_00')], passages: psgs, out }), (e: Error & { code?: string }) => e.code === 'E_DATA' && /passage id "1" has a second vector/.test(e.message));
    // A passage file without ids 31..40.
    const short = path.join(w, 'short.tsv');
    const lines = readFileSync(psgs, 'utf8').split('\n').slice(0, 31).join('\n') + '\n';
    writeFileSync(short, lines);
    await assert.rejects(importContriever({ shards: [path.join(dir, 'passages_02')], passages: short, out }), (e: Error & { code?: string }) => e.code === 'E_DATA' && /id "31" \(vector 0\) is not in/.test(e.message));
    assert.equal(existsSync(out), false);
    const r = cli(['index', 'import', '--passages', psgs, '--out', out]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /exactly one of --vectors, --contriever and --faiss \(E_INVALID_ARG\)/);
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

test('mutated and truncated shards are E_DATA or parse, never another error (seeded mutations)', () => {
  let seed = 17;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
  for (const name of ['passages_00', 'passages_01', 'passages_02']) {
    const good = readFileSync(path.join(dir, name));
    for (let i = 0; i < 300; i++) {
      const buf = Buffer.from(good);
      const kind = rnd(3);
      if (kind === 0) for (let j = 0; j < 1 + rnd(4); j++) buf[rnd(buf.length)] = rnd(256);
      const bytes = kind === 1 ? buf.subarray(0, rnd(buf.length)) : buf;
      if (kind === 2) bytes.writeUInt32LE(rnd(2 ** 32), Math.min(bytes.length - 4, 2 + rnd(40)));
      try {
        unpickleBuffer(bytes, `${name}#${i}`, { lazyBytes: 64 });
      } catch (e) {
        assert.equal((e as { code?: string }).code, 'E_DATA', `${name} mutation ${i}: ${(e as Error).stack}`);
      }
    }
  }
});
