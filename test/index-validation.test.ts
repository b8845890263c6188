// Index contents are validated at open (issue #13 item 3): corrupt ids, NaN rows and edited
// manifests are E_INDEX, not silently wrong rankings; ids are non-negative; sliced Arrow
// queries read the right rows; concurrent adds get ids in call order; a vectors.bin rewritten
// in place is E_INDEX on the next search instead of SIGBUS (run in a child process, so a crash
// would fail this test instead of killing the runner).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { makeData, makeVector, FixedSizeList, Field, Float32 } from 'apache-arrow';
import { DenseIndex, DenseIndexWriter, hasCode } from '../lib/index.js';
import { repoRoot } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-index-validation-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const dim = 8;
const n = 6;

/** Distinct rows: row r is one-hot-ish so that query r ranks row r first. */
function rows(count = n): Float32Array {
  const v = new Float32Array(count * dim);
  for (let r = 0; r < count; r++) for (let j = 0; j < dim; j++) v[r * dim + j] = j === r % dim ? 10 + r : 0.01 * (r + j);
  return v;
}

let counter = 0;
async function savedIndex(ids?: number[]): Promise<string> {
  const dir = path.join(tmp, `ix${counter++}`);
  const index = await DenseIndex.fromVectors(rows(), dim, { ids });
  await index.save(dir);
  return dir;
}

function readIds(dir: string): BigInt64Array {
  const b = readFileSync(path.join(dir, 'ids.bin'));
  return new BigInt64Array(new Uint8Array(b).buffer);
}
function writeIds(dir: string, ids: BigInt64Array): void {
  writeFileSync(path.join(dir, 'ids.bin'), Buffer.from(ids.buffer));
}
function editManifest(dir: string, edit: (m: Record<string, unknown>) => void): void {
  const file = path.join(dir, 'manifest.json');
  const m = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(m);
  writeFileSync(file, JSON.stringify(m));
}
const isIndexError = (re: RegExp) => (e: Error) => hasCode(e, 'E_INDEX') && re.test(e.message);

test('a saved index carries checksums and opens (full and header verification)', async () => {
  const dir = await savedIndex();
  const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  assert.match(m.checksums.vectors, /^[0-9a-f]{16}$/);
  assert.match(m.checksums.ids, /^[0-9a-f]{16}$/);
  assert.match(m.checksums.manifest, /^[0-9a-f]{16}$/);
  for (const verify of ['full', 'header'] as const) {
    const index = await DenseIndex.open(dir, { verify });
    const { ids } = await index.search(rows().subarray(2 * dim, 3 * dim), 1);
    assert.equal(ids[0], 2n);
  }
  await assert.rejects(DenseIndex.open(dir, { verify: 'lazy' as 'full' }), RangeError);
});

test('the streaming writer records the same checksums as save()', async () => {
  const dir = path.join(tmp, 'writer');
  const w = DenseIndexWriter.create(dir, dim);
  await w.append(rows().subarray(0, 2 * dim));
  await w.append(rows().subarray(2 * dim));
  await w.finish();
  const saved = await savedIndex();
  const a = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  const b = JSON.parse(readFileSync(path.join(saved, 'manifest.json'), 'utf8'));
  assert.deepEqual(a.checksums, b.checksums);
  await DenseIndex.open(dir);
});

test('an edited metric, dtype or count is E_INDEX (manifest checksum)', async () => {
  const dir = await savedIndex();
  editManifest(dir, (m) => (m.metric = 'cosine'));
  await assert.rejects(DenseIndex.open(dir), isIndexError(/manifest checksum/));
  await assert.rejects(DenseIndex.open(dir, { verify: 'header' }), isIndexError(/manifest checksum/));
});

test('reordered, duplicate and negative ids are E_INDEX', async () => {
  const reordered = await savedIndex();
  const ids = readIds(reordered);
  [ids[1], ids[2]] = [ids[2], ids[1]];
  writeIds(reordered, ids);
  await assert.rejects(DenseIndex.open(reordered, { verify: 'header' }), isIndexError(/ids\.bin/));

  // Without checksums (an index written before they existed) the ids themselves are checked.
  const legacy = async (edit: (ids: BigInt64Array) => void): Promise<string> => {
    const dir = await savedIndex([10, 11, 12, 13, 14, 15]);
    const v = readIds(dir);
    edit(v);
    writeIds(dir, v);
    editManifest(dir, (m) => delete m.checksums);
    return dir;
  };
  await assert.rejects(DenseIndex.open(await legacy((v) => (v[3] = -1n))), isIndexError(/non-negative/));
  await assert.rejects(DenseIndex.open(await legacy((v) => (v[4] = 11n))), isIndexError(/twice/));
  const ok = await DenseIndex.open(await legacy(() => {}));
  assert.equal(ok.size, n);
});

test('a NaN row in vectors.bin is E_INDEX under full verification', async () => {
  const dir = await savedIndex();
  const file = path.join(dir, 'vectors.bin');
  const b = readFileSync(file);
  b.writeFloatLE(NaN, (3 * dim + 1) * 4);
  writeFileSync(file, b);
  await assert.rejects(DenseIndex.open(dir), isIndexError(/row 3 holds NaN/));
  // Also caught without a checksum.
  editManifest(dir, (m) => delete m.checksums);
  await assert.rejects(DenseIndex.open(dir), isIndexError(/row 3 holds NaN/));
});

test('add rejects negative ids, -1 included (the "no result" slot)', async () => {
  const index = DenseIndex.create(dim);
  await assert.rejects(index.add(rows(1), [-1]), RangeError);
  await assert.rejects(index.add(rows(1), new BigInt64Array([-1n])), isIndexError(/negative/));
  await assert.rejects(index.add(rows(2), new BigInt64Array([5n, -7n])), isIndexError(/negative/));
  assert.equal(index.size, 0);
  await index.add(rows(1), [0]);
  assert.equal(index.size, 1);
});

test('sliced Arrow FixedSizeList queries search the rows of the slice', async () => {
  const all = rows();
  const index = await DenseIndex.fromVectors(all, dim);
  const child = makeData({ type: new Float32(), length: all.length, data: all });
  const vector = makeVector(makeData({ type: new FixedSizeList(dim, new Field('x', new Float32())), length: n, child }));
  for (const [a, b] of [[1, 4], [2, 3], [0, 6], [3, 6]]) {
    const sliced = await index.search(vector.slice(a, b), 1);
    const expected = await index.search(all.subarray(a * dim, b * dim), 1);
    assert.deepEqual(Array.from(sliced.ids), Array.from(expected.ids), `slice(${a}, ${b})`);
    assert.deepEqual(Array.from(sliced.ids), Array.from({ length: b - a }, (_, i) => BigInt(a + i)));
  }
});

test('concurrent adds without ids get ids in call order', async () => {
  for (let round = 0; round < 5; round++) {
    const index = DenseIndex.create(dim);
    const calls = 24;
    // Call c adds (c % 3) + 1 rows whose first value is c: ids must follow the calls.
    const pending: Promise<void>[] = [];
    const owner: number[] = [];
    for (let c = 0; c < calls; c++) {
      const count = (c % 3) + 1;
      const v = new Float32Array(count * dim).fill(0.5);
      for (let r = 0; r < count; r++) {
        v[r * dim] = c;
        owner.push(c);
      }
      pending.push(index.add(v));
    }
    await Promise.all(pending);
    assert.equal(index.size, owner.length);
    for (let id = 0; id < owner.length; id++) assert.equal(index.row(id)[0], owner[id], `round ${round}: id ${id}`);
  }
});

/** Runs `body` (an ES module snippet with `gainrag` imported) in a child Node process. */
export function runChild(body: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const script = path.join(tmp, `child-${counter++}.mjs`);
  const lib = path.join(repoRoot, 'dist', 'lib', 'index.js');
  writeFileSync(script, `import * as gainrag from ${JSON.stringify(lib)};\n${body}\n`);
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8' });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

test('vectors.bin truncated in place after open: the next search is E_INDEX, not SIGBUS', async () => {
  const big = path.join(tmp, 'big');
  // Large enough that the truncated part spans whole pages of the mapping.
  const count = 4096;
  const index = await DenseIndex.fromVectors(new Float32Array(count * 64).fill(0.25), 64);
  await index.save(big);
  const r = runChild(`
    import { truncateSync } from 'node:fs';
    const index = await gainrag.DenseIndex.open(${JSON.stringify(big)});
    const q = new Float32Array(64).fill(1);
    await index.search(q, 3);
    truncateSync(${JSON.stringify(path.join(big, 'vectors.bin'))}, 4096);
    try {
      await index.search(q, 3);
      console.log('searched');
    } catch (e) {
      console.log('rejected', e.code);
    }
  `);
  assert.equal(r.signal, null, `child died with ${r.signal}: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'rejected E_INDEX');
});

test('DenseIndexWriter.abort() during a long append returns at once: the append stops at its next chunk, nothing is left', async () => {
  const dir = path.join(mkdtempSync(path.join(tmpdir(), 'gainrag-abort-')), 'index');
  const dim = 4;
  const rows = 64 * 65536; // 64 of the writer's chunks: the first progress report comes long before the last
  const w = DenseIndexWriter.create(dir, dim);
  const vectors = new Float32Array(rows * dim).fill(0.5);
  let countAtAbort = -1;
  let aborted = false;
  const appended = w.append(vectors, {
    onProgress: () => {
      if (aborted) return;
      aborted = true;
      w.abort(); // before the fix this waited for the whole append, on the JS thread
      countAtAbort = w.count;
    },
  });
  await assert.rejects(appended, { code: 'E_CANCELLED' });
  assert.equal(countAtAbort, 0, 'abort returned while the append was still running');
  assert.deepEqual(readdirSync(path.dirname(dir)).filter((f) => f !== 'index'), []);
  assert.ok(!existsSync(path.join(dir, 'manifest.json')));
  assert.deepEqual(existsSync(dir) ? readdirSync(dir) : [], [], 'temporary files removed');
  await assert.rejects(w.finish(), { code: 'E_CANCELLED' });
  rmSync(path.dirname(dir), { recursive: true, force: true });
});
