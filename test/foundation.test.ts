// Foundation: the addon loads, reports itself, reads safetensors without copies, rejects
// corrupt files with E_SAFETENSORS, and keeps the boundary contracts (zero-copy in and out,
// cancellation, progress).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { engineInfo, readSafetensors, SafetensorsFile, decode16 } from '../lib/index.js';
import { native } from '../lib/native.js';
import { withControls } from '../lib/controls.js';
import { cliPath, fixture, fixturesDir } from './helpers.js';

/** Independent reader: parses the header and sums an F32 tensor with DataView, no addon involved. */
function sumF32Independently(file: string, name: string): { shape: number[]; sum: number; first: number } {
  const bytes = readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8'));
  const entry = header[name];
  const [begin, end] = entry.data_offsets as [number, number];
  const view = new DataView(bytes.buffer, bytes.byteOffset + 8 + headerLen + begin, end - begin);
  let sum = 0;
  for (let i = 0; i < (end - begin) / 4; i++) sum += view.getFloat32(i * 4, true);
  return { shape: entry.shape, sum, first: view.getFloat32(0, true) };
}

/** Builds a safetensors file from a header object and a data section. */
function makeSafetensors(header: unknown, data: Buffer, headerLenOverride?: bigint): Buffer {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLenOverride ?? BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-foundation-'));
function writeTemp(name: string, bytes: Buffer): string {
  const p = path.join(tmp, name);
  writeFileSync(p, bytes);
  return p;
}

test('engineInfo reports version, LibTorch, backends, devices and threads', () => {
  const info = engineInfo();
  assert.match(info.version, /^\d+\.\d+\.\d+/);
  assert.match(info.torch, /^\d+\.\d+/);
  assert.ok(info.backends.includes('cpu'));
  assert.equal(typeof info.cudaDevices, 'number');
  if (!info.backends.includes('cuda')) assert.equal(info.cudaDevices, 0);
  assert.ok(info.threads >= 1);
});

test('gainrag info --json prints the same facts', () => {
  const out = JSON.parse(execFileSync(process.execPath, [cliPath, 'info', '--json'], { encoding: 'utf8' }));
  assert.deepEqual(out.backends, engineInfo().backends);
  assert.equal(out.torch, engineInfo().torch);
});

for (const model of ['bert-tiny', 'xlmr-tiny-reranker', 'llama-tiny']) {
  test(`safetensors metadata and values of ${model} match an independent reader`, async () => {
    const file = path.join(fixture(model), 'model.safetensors');
    const st = await readSafetensors(file);
    const tensors = st.tensors();
    assert.ok(tensors.length > 10);
    for (const meta of tensors.filter((t) => t.dtype === 'F32').slice(0, 6)) {
      const expected = sumF32Independently(file, meta.name);
      assert.deepEqual(meta.shape, expected.shape);
      const values = st.tensor(meta.name) as Float32Array;
      assert.ok(values instanceof Float32Array);
      assert.equal(values.length, expected.shape.reduce((a, b) => a * b, 1));
      let sum = 0;
      for (const v of values) sum += v;
      assert.ok(Math.abs(sum - expected.sum) <= 1e-6 * Math.max(1, Math.abs(expected.sum)), `${meta.name}: ${sum} vs ${expected.sum}`);
      assert.equal(values[0], expected.first);
    }
  });
}

test('tensor() returns a view into the mapped file, not a copy', async () => {
  const st = await SafetensorsFile.open(path.join(fixture('bert-tiny'), 'model.safetensors'));
  const [a, b] = st.tensors();
  const va = st.tensor(a.name);
  const vb = st.tensor(b.name);
  // Both views live in the same mapping, at the distance their file offsets say.
  const delta = native().testing.addressOf(vb) - native().testing.addressOf(va);
  assert.equal(delta, BigInt(b.byteOffset - a.byteOffset));
  assert.equal(native().testing.addressOf(st.tensor(a.name)), native().testing.addressOf(va));
});

test('F16, BF16 and I64 tensors round-trip through a file we write', async () => {
  const f16 = Buffer.alloc(4);
  f16.writeUInt16LE(0x3c00, 0); // 1.0
  f16.writeUInt16LE(0xc000, 2); // -2.0
  const bf16 = Buffer.alloc(4);
  bf16.writeUInt16LE(0x3f80, 0); // 1.0
  bf16.writeUInt16LE(0x4040, 2); // 3.0
  const i64 = Buffer.alloc(16);
  i64.writeBigInt64LE(-5n, 0);
  i64.writeBigInt64LE(1n << 40n, 8);
  const header = {
    __metadata__: { format: 'pt' },
    h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
    b: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] },
    i: { dtype: 'I64', shape: [1, 2], data_offsets: [8, 24] },
  };
  const st = await readSafetensors(writeTemp('typed.safetensors', makeSafetensors(header, Buffer.concat([f16, bf16, i64]))));
  assert.deepEqual(st.metadata(), { format: 'pt' });
  assert.deepEqual(Array.from(decode16(st.tensor('h') as Uint16Array, 'F16')), [1, -2]);
  assert.deepEqual(Array.from(decode16(st.tensor('b') as Uint16Array, 'BF16')), [1, 3]);
  assert.deepEqual(Array.from(st.tensor('i') as BigInt64Array), [-5n, 1n << 40n]);
  await assert.rejects(async () => st.tensor('missing'), { code: 'E_SHAPE' });
});

const data8 = Buffer.alloc(8);
const corrupt: [string, Buffer][] = [
  ['empty file', Buffer.alloc(0)],
  ['truncated length prefix', Buffer.from([1, 0, 0])],
  ['header length past end of file', makeSafetensors({}, Buffer.alloc(0), 1000n)],
  ['header length beyond the 100 MB cap', makeSafetensors({}, Buffer.alloc(0), 1n << 40n)],
  ['non-JSON header', makeSafetensors('{"a": [1, 2', data8)],
  ['header is not an object', makeSafetensors('[1,2,3]', data8)],
  ['unknown dtype', makeSafetensors({ t: { dtype: 'F12', shape: [2], data_offsets: [0, 8] } }, data8)],
  ['offsets out of range', makeSafetensors({ t: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, data8)],
  ['size disagrees with shape', makeSafetensors({ t: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, data8)],
  ['offsets reversed', makeSafetensors({ t: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, data8)],
  ['negative shape', makeSafetensors({ t: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, data8)],
  [
    'overlapping tensors',
    makeSafetensors(
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } },
      data8,
    ),
  ],
  ['truncated data section', makeSafetensors({ t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, Buffer.alloc(4))],
];

for (const [what, bytes] of corrupt) {
  test(`corrupt safetensors (${what}) is rejected with E_SAFETENSORS`, async () => {
    const file = writeTemp(`${what.replace(/\W+/g, '_')}.safetensors`, bytes);
    await assert.rejects(readSafetensors(file), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'E_SAFETENSORS', err.message);
      assert.ok(err.message.includes(file), 'message names the file');
      return true;
    });
  });
}

test('the process survives a truncated copy of a real checkpoint', async () => {
  const full = readFileSync(path.join(fixture('bert-tiny'), 'model.safetensors'));
  const file = writeTemp('cut.safetensors', full.subarray(0, Math.floor(full.length / 2)));
  await assert.rejects(readSafetensors(file), { code: 'E_SAFETENSORS' });
  await assert.rejects(readSafetensors(path.join(tmp, 'does-not-exist.safetensors')), { code: 'E_IO' });
});

test('zero-copy round trip: native writes through the borrowed JS buffer and returns an external buffer', async () => {
  const x = new Float32Array([1, 2, 3, 4]);
  const r = await native().testing.roundTrip(x);
  // The in-place doubling is visible in JS only if native used our memory, not a copy.
  assert.deepEqual(Array.from(x), [2, 4, 6, 8]);
  assert.equal(r.inAddress, native().testing.addressOf(x));
  assert.deepEqual(Array.from(r.out), [2, 6, 12, 20]);
  // The result views the native tensor's memory directly (external ArrayBuffer).
  assert.equal(native().testing.addressOf(r.out), r.outAddress);
});

test('long calls report progress and stop on AbortSignal with E_CANCELLED', async () => {
  const seen: number[] = [];
  const done = await withControls({ onProgress: (d) => seen.push(d) }, (c) => native().testing.sleepSteps(5, 1, c));
  assert.equal(done, 5);
  // Every progress event is delivered before the Promise settles.
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);

  const controller = new AbortController();
  // Aborted on the first progress event (the call is demonstrably running), not after a timer.
  let steps = 0;
  const started = withControls(
    { signal: controller.signal, onProgress: () => (++steps === 1 ? controller.abort() : undefined) },
    (c) => native().testing.sleepSteps(100000, 2, c),
  );
  await assert.rejects(started, { code: 'E_CANCELLED' });
  assert.ok(steps < 100000, 'stopped long before the end');
  await assert.rejects(withControls({ signal: controller.signal }, (c) => native().testing.sleepSteps(1, 1, c)), { code: 'E_CANCELLED' });
});

test('arguments are checked on the JS thread', async () => {
  assert.throws(() => native().testing.roundTrip(new Float64Array(2) as unknown as Float32Array), TypeError);
  assert.throws(() => native().testing.sleepSteps(-1, 1), RangeError);
  await assert.rejects(SafetensorsFile.open(42 as unknown as string), TypeError);
});

test('the C++ engine works without Node (native test program)', () => {
  const binary = nativeTestBinary();
  assert.ok(binary, 'gainrag_native_test is built next to the addon');
  const out = execFileSync(binary, [fixturesDir], { encoding: 'utf8' });
  assert.match(out, /all native checks passed/);
  // The int8 kernels of CPUs without VNNI, checked here too: 7-bit input codes (the pair kernel)
  // and every int8 product routed through the engine's own kernels.
  for (const env of [{ GAINRAG_INT8_INPUT_BITS: '7' }, { GAINRAG_INT8_PRODUCTS: 'avx2' }]) {
    const o = execFileSync(binary, [fixturesDir], { encoding: 'utf8', env: { ...process.env, ...env } });
    assert.match(o, /all native checks passed/, JSON.stringify(env));
    if (env.GAINRAG_INT8_INPUT_BITS && /int8 gemv \(kernels: [^;]*vnni512/.test(out)) assert.match(o, /kernels: [^;]*avx2-pairs[^;]*; 7-bit/);
  }
});

function nativeTestBinary(): string | undefined {
  const addon = process.env.GAINRAG_ADDON;
  const dir = addon ? path.dirname(addon) : path.join(path.dirname(cliPath), '..', '..', '..', 'build', 'Release');
  const p = path.join(dir, 'gainrag_native_test');
  try {
    readFileSync(p);
    return p;
  } catch {
    return undefined;
  }
}
