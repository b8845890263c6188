// One error contract (issue #13, item 7): the code list is the same in C++ and TypeScript, no
// code is used that is not on it, nothing branches on message text, and the failures that used
// to escape without a code (corrupt passages.idx offsets, read-only file system, full disk, a
// 23-digit .npy shape, SharedArrayBuffer inputs, a non-AbortSignal `signal`, records nested
// 100k levels deep) now carry one.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ERROR_CODES, ioError, isErrorCode } from '../lib/errors.js';
import { AtomicJsonlWriter, readRecords } from '../lib/io/jsonl.js';
import { DenseIndex, npyInfo } from '../lib/retrieval/dense-index.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { PassageStore } from '../lib/io/passages.js';
import { readNpyFloat32 } from '../lib/retrieval/npy.js';
import { loadTrainingData } from '../lib/training/data.js';
import { cliPath, dataDir, fixture, repoRoot } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-errors-'));
after(() => rmSync(work, { recursive: true, force: true }));

function sourceFiles(dir: string, ext: RegExp): string[] {
  return readdirSync(path.join(repoRoot, dir), { recursive: true })
    .map(String)
    .filter((f) => ext.test(f))
    .map((f) => path.join(repoRoot, dir, f));
}

test('the code list in native/core/error.h and lib/errors.ts is the same, in the same order', () => {
  const header = readFileSync(path.join(repoRoot, 'native', 'core', 'error.h'), 'utf8');
  const block = header.slice(header.indexOf('#define GAINRAG_ERROR_CODES'), header.indexOf('enum class ErrorCode'));
  const native = [...block.matchAll(/X\(\s*k\w+\s*,\s*"(E_[A-Z_]+)"\s*\)/g)].map((m) => m[1]);
  assert.ok(native.length >= 10, `parsed ${native.length} codes from error.h`);
  assert.deepEqual(native, [...ERROR_CODES]);
  assert.equal(new Set(native).size, native.length, 'no duplicates');
});

test('every code literal in lib/, bindings/ and native/ is on the list', () => {
  const unknown: string[] = [];
  const files = [...sourceFiles('lib', /\.ts$/), ...sourceFiles('bindings', /\.(cpp|h)$/), ...sourceFiles('native', /\.(cpp|h|cu)$/)];
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/(?:GainragError\(\s*|code[^\n]{0,40}?|MakeError\(\s*env\s*,\s*)['"](E_[A-Z_]+)['"]/g)) {
      if (!isErrorCode(m[1])) unknown.push(`${path.relative(repoRoot, f)}: ${m[1]}`);
    }
  }
  assert.deepEqual(unknown, []);
});

test('nothing in lib/ decides what to do from an error message', () => {
  const offenders: string[] = [];
  for (const f of sourceFiles('lib', /\.ts$/)) {
    readFileSync(f, 'utf8').split('\n').forEach((line, i) => {
      // /re/.test(err.message), err.message.includes(...), .match(...), .startsWith(...)
      if (/\.test\([^)]*\.message\b|\.message\??\.(includes|match|startsWith|endsWith|indexOf|search)\(/.test(line)) offenders.push(`${path.relative(repoRoot, f)}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(offenders, []);
});

test('Node fs errors become E_IO with the errno kept', () => {
  const e = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
  const mapped = ioError(e, 'cannot write out.jsonl');
  assert.equal(mapped.code, 'E_IO');
  assert.equal(mapped.errno, 'ENOSPC');
  assert.equal(mapped.cause, e);
  assert.match(mapped.message, /^cannot write out\.jsonl: no space left/);
});

// A tiny tmpfs shows a real full disk and a real read-only file system (needs root, as in CI).
function mountTmpfs(dir: string, options: string): boolean {
  mkdirSync(dir, { recursive: true });
  return spawnSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]).status === 0;
}

test('a full disk and a read-only file system are E_IO with ENOSPC / EROFS, and nothing is published', async (t) => {
  const full = path.join(work, 'full');
  if (!mountTmpfs(full, 'size=64k')) {
    t.skip('cannot mount a tmpfs here (not root)');
    return;
  }
  try {
    const out = path.join(full, 'out.jsonl');
    const w = AtomicJsonlWriter.open(out);
    const err = (() => {
      try {
        for (let i = 0; i < 1000; i++) w.write({ text: 'x'.repeat(1000), i });
        w.close();
      } catch (e) {
        w.abort();
        return e as { code?: string; errno?: string };
      }
      return undefined;
    })();
    assert.equal(err?.code, 'E_IO');
    assert.equal(err?.errno, 'ENOSPC');
    assert.deepEqual(readdirSync(full), [], 'no output, no partial, no lock left behind');

    assert.equal(spawnSync('mount', ['-o', 'remount,ro', full]).status, 0);
    assert.throws(() => AtomicJsonlWriter.open(path.join(full, 'x.jsonl')), { code: 'E_IO', errno: 'EROFS' });
    // Through the CLI, before any work: index build into a read-only place.
    const r = spawnSync(process.execPath, [cliPath, 'index', 'build', '--passages', path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'),
      '--encoder', fixture('bert-tiny'), '--out', path.join(full, 'sub', 'idx')], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /read-only file system.*\(E_IO\)/);
  } finally {
    spawnSync('umount', [full]);
  }
});

test('corrupt passages.idx offsets are E_INDEX, not ERR_OUT_OF_RANGE', async () => {
  const passages = path.join(work, 'p.jsonl');
  writeFileSync(passages, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'), 'utf8').split('\n').slice(0, 4).join('\n') + '\n');
  const dir = path.join(work, 'idx');
  await buildIndex({ passages, encoder: fixture('bert-tiny'), out: dir });
  const idxFile = path.join(dir, 'passages.idx');
  const offsets = new Float64Array(new Uint8Array(readFileSync(idxFile)).buffer);
  const size = statSync(path.join(dir, 'passages.jsonl')).size;
  assert.equal(offsets[offsets.length - 1], size);
  for (const bad of [[0, 500, 100, 900, size], [0, -8, 100, 200, size], [0, 1.5, 100, 200, size], [0, NaN, 100, 200, size]]) {
    writeFileSync(idxFile, new Uint8Array(Float64Array.from(bad).buffer));
    const store = PassageStore.open(dir);
    try {
      assert.throws(() => {
        for (let i = 0; i < store.size; i++) store.get(i);
      }, { code: 'E_INDEX' }, `offsets ${bad}`);
    } finally {
      store.close();
    }
  }
});

function npyWithShape(shape: string): Buffer {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
  header = header.padEnd(Math.ceil((10 + header.length + 1) / 64) * 64 - 11, ' ') + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.alloc(32)]);
}

test('a 23-digit .npy dimension is a coded error in JS and in the engine', async () => {
  const file = path.join(work, 'huge.npy');
  writeFileSync(file, npyWithShape('(12345678901234567890123, 2)'));
  assert.throws(() => readNpyFloat32(file), { code: 'E_DATA' });
  assert.throws(() => npyInfo(file), (e: { code?: string }) => isErrorCode(e.code) && e.code !== 'E_INTERNAL');
  await assert.rejects(DenseIndex.fromNpy(file), { code: 'E_INDEX' });
  writeFileSync(file, npyWithShape('(4611686018427387904, 4611686018427387904)')); // product overflows 64 bits
  await assert.rejects(DenseIndex.fromNpy(file), { code: 'E_INDEX' });
});

test('SharedArrayBuffer inputs and a non-AbortSignal signal are E_INVALID_ARG', async () => {
  const index = await DenseIndex.fromVectors(new Float32Array([1, 0, 0, 1]), 2);
  const shared = new Float32Array(new SharedArrayBuffer(8));
  await assert.rejects(index.search(shared, 1), { code: 'E_INVALID_ARG', message: /SharedArrayBuffer/ });
  await assert.rejects(index.add(new Float32Array(new SharedArrayBuffer(8))), { code: 'E_INVALID_ARG' });
  await assert.rejects(index.search(new Float32Array([1, 0]), 1, { signal: 'x' as unknown as AbortSignal }), { code: 'E_INVALID_ARG', message: /AbortSignal/ });
  assert.equal(index.size, 2, 'nothing was added');
});

test('a record nested 100k levels deep is E_DATA at FILE:LINE (reader, CLI and training data)', async () => {
  const depth = 100_000;
  const deep = `{"question": "q", "answers": ${'['.repeat(depth)}${']'.repeat(depth)}}`;
  const file = path.join(work, 'deep.jsonl');
  writeFileSync(file, `{"question": "ok", "answers": ["a"]}\n${deep}\n`);
  await assert.rejects(async () => {
    for await (const _ of readRecords(file)) void _;
  }, { code: 'E_DATA', message: /deep\.jsonl:2: .*nested deeper/ });
  const array = path.join(work, 'deep.json');
  writeFileSync(array, `[${deep}]`);
  await assert.rejects(async () => {
    for await (const _ of readRecords(array)) void _;
  }, { code: 'E_DATA' });
  const r = spawnSync(process.execPath, [cliPath, 'filter', '--data', file, '--out', path.join(work, 'f.jsonl')], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /E_DATA/);
  const train = path.join(work, 'deep-train.jsonl');
  writeFileSync(train, `{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1], "neg_scores": ${'['.repeat(depth)}${']'.repeat(depth)}}\n`);
  await assert.rejects(loadTrainingData(train), { code: 'E_DATA' });
});

test('an over-long training query is E_DATA naming FILE:LINE before any step (not a RangeError later)', async () => {
  const { SelectorTrainer } = await import('../lib/training/selector-trainer.js');
  const data = path.join(work, 'long-query.jsonl');
  const ok = { query: 'find code', pos: ['the source code'], neg: ['a b', 'c d'], pos_scores: [-0.7], neg_scores: [-2.3, -2.4] };
  const long = { ...ok, query: Array.from({ length: 60 }, (_, i) => `word${i}`).join(' ') };
  writeFileSync(data, [ok, ok, ok, long].map((r) => JSON.stringify(r)).join('\n') + '\n');
  const t = await SelectorTrainer.create(fixture('xlmr-tiny-reranker'), { lr: 1e-4 });
  let steps = 0;
  await assert.rejects(
    t.train({ data, outDir: path.join(work, 'long-query-out'), epochs: 1, batchSize: 2, groupSize: 3, queryMaxLength: 8, passageMaxLength: 8, onProgress: () => steps++ }),
    (err: { code?: string; message?: string }) => err.code === 'E_DATA' && /long-query\.jsonl:4/.test(err.message ?? ''),
  );
  assert.equal(steps, 0, 'rejected before the first step');
});
