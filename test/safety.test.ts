// Memory safety and load-time validation (issue #13 items 1, 3, 6): transferring an input
// ArrayBuffer while a call runs, truncating a loaded model file in place, FIFOs as model files,
// absurd or NaN config numbers, NaN weights. The risky parts run in a child process and the
// test asserts its exit status and output, so a crash fails the test instead of the runner.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, lstatSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { CausalLM, CrossEncoder, DenseIndex, Encoder, hasCode } from '../lib/index.js';
import { fixture, repoRoot } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-safety-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let counter = 0;

/** Copy of a fixture model directory that a test may damage. */
function modelCopy(name: string): string {
  const dir = path.join(tmp, `${name}-${counter++}`);
  // dereference: test/fixtures/<model> are symlinks to models/; without it the "copy" is a link
  // and the damage below lands on the shared model files.
  cpSync(fixture(name), dir, { recursive: true, dereference: true });
  assert.ok(!lstatSync(dir).isSymbolicLink() && realpathSync(dir).startsWith(realpathSync(tmp)), `${dir} must be a private copy`);
  return dir;
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const file = path.join(dir, 'config.json');
  const c = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(c);
  // NaN is not JSON; Python's json (and this engine) read the bare literal.
  writeFileSync(file, JSON.stringify(c).replace(/"__NaN__"/g, 'NaN'));
}

interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs an ES module body (with `gainrag` imported) in a child Node process. */
function runChild(body: string, timeoutMs = 120_000): ChildResult {
  const script = path.join(tmp, `child-${counter++}.mjs`);
  const lib = path.join(repoRoot, 'dist', 'lib', 'index.js');
  writeFileSync(script, `import * as gainrag from ${JSON.stringify(lib)};\n${body}\n`);
  const r = spawnSync(process.execPath, ['--expose-gc', script], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function assertCleanExit(r: ChildResult): void {
  assert.equal(r.signal, null, `child killed by ${r.signal} (timeout or crash): ${r.stderr}`);
  assert.equal(r.status, 0, `child exited ${r.status}: ${r.stderr}`);
}

test('transferring the vectors/queries buffer while add/search run cannot change their inputs', () => {
  const r = runChild(`
    const dim = 64, n = 20000;
    const rows = new Float32Array(n * dim);
    for (let i = 0; i < rows.length; i++) rows[i] = Math.sin(i * 0.37);
    const keep = rows.slice();
    const index = gainrag.DenseIndex.create(dim);
    let bad = 0;
    for (let round = 0; round < 4; round++) {
      const v = keep.slice(round * 5000 * dim, (round + 1) * 5000 * dim);
      const p = index.add(v);
      // Move the memory to a new owner and scribble over it while the add runs.
      const moved = new Float32Array(structuredClone(v.buffer, { transfer: [v.buffer] }));
      moved.fill(123);
      globalThis.gc();
      await p;
    }
    for (const r of [0, 4999, 5000, 12345, n - 1]) {
      const got = index.row(r);
      for (let j = 0; j < dim; j++) if (got[j] !== keep[r * dim + j]) bad++;
    }
    const q = keep.slice(0, 200 * dim);
    const expected = await index.search(q.slice(), 5);
    let wrong = 0;
    for (let round = 0; round < 4; round++) {
      const qq = q.slice();
      const p = index.search(qq, 5);
      new Float32Array(structuredClone(qq.buffer, { transfer: [qq.buffer] })).fill(-1);
      globalThis.gc();
      const got = await p;
      for (let i = 0; i < got.ids.length; i++) if (got.ids[i] !== expected.ids[i]) wrong++;
    }
    console.log(JSON.stringify({ size: index.size, bad, wrong }));
  `);
  assertCleanExit(r);
  assert.deepEqual(JSON.parse(r.stdout.trim()), { size: 20000, bad: 0, wrong: 0 });
});

test('a detached (transferred) buffer is a TypeError, not an empty or garbage call', async () => {
  const index = await DenseIndex.fromVectors(new Float32Array([1, 0, 0, 1]), 2);
  const q = new Float32Array([1, 0]);
  structuredClone(q.buffer, { transfer: [q.buffer] });
  await assert.rejects(index.search(q, 1), (e: Error) => e instanceof TypeError && /detached/.test(e.message));
  const v = new Float32Array([0, 1]);
  structuredClone(v.buffer, { transfer: [v.buffer] });
  await assert.rejects(index.add(v), (e: Error) => e instanceof TypeError && /detached/.test(e.message));
  assert.equal(index.size, 2);
});

test('model.safetensors truncated in place after load: the loaded model keeps working', () => {
  const dir = modelCopy('bert-tiny');
  const r = runChild(`
    import { truncateSync, writeFileSync } from 'node:fs';
    const enc = await gainrag.Encoder.load(${JSON.stringify(dir)});
    const before = await enc.embed(['who wrote pride and prejudice', 'a second text']);
    // What \`cp new.safetensors model.safetensors\` does: truncate, then write.
    truncateSync(${JSON.stringify(path.join(dir, 'model.safetensors'))}, 0);
    writeFileSync(${JSON.stringify(path.join(dir, 'model.safetensors'))}, Buffer.alloc(64));
    const after = await enc.embed(['who wrote pride and prejudice', 'a second text']);
    let same = before.length === after.length;
    for (let i = 0; i < before.length; i++) same &&= before[i] === after[i];
    console.log(same ? 'same' : 'different');
  `);
  assertCleanExit(r);
  assert.equal(r.stdout.trim(), 'same');
});

test('a FIFO as model.safetensors or config.json is rejected at once (no blocked load)', () => {
  const weights = modelCopy('bert-tiny');
  rmSync(path.join(weights, 'model.safetensors'));
  execFileSync('mkfifo', [path.join(weights, 'model.safetensors')]);
  const config = modelCopy('bert-tiny');
  rmSync(path.join(config, 'config.json'));
  execFileSync('mkfifo', [path.join(config, 'config.json')]);
  // A child with a timeout: before the fix the open() of a FIFO blocks forever.
  const r = runChild(`
    for (const dir of ${JSON.stringify([weights, config])}) {
      try {
        await gainrag.Encoder.load(dir);
        console.log('loaded');
      } catch (e) {
        console.log(e.code);
      }
    }
  `, 60_000);
  assertCleanExit(r);
  const codes = r.stdout.trim().split('\n');
  assert.equal(codes.length, 2);
  assert.equal(codes[0], 'E_IO');
  // config.json that is not a regular file: either the tokenizer or the config loader refuses it.
  assert.ok(['E_IO', 'E_MODEL_CONFIG', 'E_TOKENIZER'].includes(codes[1]), codes[1]);
});

test('layer_norm_eps NaN, 0 or negative is E_MODEL_CONFIG (encoder and cross-encoder)', async () => {
  for (const eps of ['__NaN__', 0, -1e-12, 5]) {
    const dir = modelCopy('bert-tiny');
    editConfig(dir, (c) => (c.layer_norm_eps = eps));
    await assert.rejects(Encoder.load(dir), (e: Error) => hasCode(e, 'E_MODEL_CONFIG') && /layer_norm_eps/.test(e.message), String(eps));
  }
  const ce = modelCopy('xlmr-tiny-reranker');
  editConfig(ce, (c) => (c.layer_norm_eps = 0));
  await assert.rejects(CrossEncoder.load(ce), (e: Error) => hasCode(e, 'E_MODEL_CONFIG'));
});

test('rms_norm_eps NaN/<= 0 and rope factor 0 are E_MODEL_CONFIG (decoder)', async () => {
  for (const eps of ['__NaN__', 0, -1]) {
    const dir = modelCopy('llama-tiny');
    editConfig(dir, (c) => (c.rms_norm_eps = eps));
    await assert.rejects(CausalLM.load(dir), (e: Error) => hasCode(e, 'E_MODEL_CONFIG') && /rms_norm_eps/.test(e.message), String(eps));
  }
  for (const rope of [{ rope_type: 'linear', factor: 0 }, { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 4 }]) {
    const dir = modelCopy('llama-tiny');
    editConfig(dir, (c) => {
      c.rope_scaling = rope;
      delete c.rope_parameters;
    });
    await assert.rejects(CausalLM.load(dir), (e: Error) => hasCode(e, 'E_MODEL_CONFIG') && /rope|freq/.test(e.message), JSON.stringify(rope));
  }
});

test('num_hidden_layers 30000000 fails at the config check, before sizing anything by it', async () => {
  const enc = modelCopy('bert-tiny');
  editConfig(enc, (c) => (c.num_hidden_layers = 30_000_000));
  await assert.rejects(Encoder.load(enc), (e: Error) => hasCode(e, 'E_MODEL_CONFIG') && /num_hidden_layers.*limit/.test(e.message));
  const lm = modelCopy('llama-tiny');
  editConfig(lm, (c) => (c.num_hidden_layers = 30_000_000));
  await assert.rejects(CausalLM.load(lm), (e: Error) => hasCode(e, 'E_MODEL_CONFIG') && /num_hidden_layers.*limit/.test(e.message));
  const wide = modelCopy('llama-tiny');
  editConfig(wide, (c) => (c.vocab_size = 2 ** 40));
  await assert.rejects(CausalLM.load(wide), (e: Error) => hasCode(e, 'E_MODEL_CONFIG') && /vocab_size/.test(e.message));
});

/** Overwrites element `index` of the first F32 tensor (in file order) with `value`. */
function poisonFirstF32(file: string, value: number): string {
  const bytes = readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const [name, entry] = Object.entries(header).filter(([k, v]) => k !== '__metadata__' && v.dtype === 'F32')
    .sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0])[0];
  bytes.writeFloatLE(value, 8 + headerLen + entry.data_offsets[0] + 4 * 3);
  writeFileSync(file, bytes);
  return name;
}

test('NaN or Inf weights are E_SAFETENSORS at load, naming the tensor', async () => {
  for (const value of [NaN, Infinity, -Infinity]) {
    const dir = modelCopy('bert-tiny');
    const name = poisonFirstF32(path.join(dir, 'model.safetensors'), value);
    await assert.rejects(Encoder.load(dir), (e: Error) => hasCode(e, 'E_SAFETENSORS') && e.message.includes(name) && /NaN or Inf/.test(e.message));
  }
  const lm = modelCopy('llama-tiny');
  poisonFirstF32(path.join(lm, 'model.safetensors'), NaN);
  await assert.rejects(CausalLM.load(lm), (e: Error) => hasCode(e, 'E_SAFETENSORS'));
  // The untouched model loads and embeds finite numbers.
  const enc = await Encoder.load(fixture('bert-tiny'));
  assert.ok((await enc.embed(['finite'])).every(Number.isFinite));
});
