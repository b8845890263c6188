// Encoder / CrossEncoder: parity with Hugging Face transformers (fixtures), reduced precision,
// and every kind of bad input the brief lists. Expected numbers come from the fixtures only.
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Utf8, vectorFromArray } from 'apache-arrow';
import { CrossEncoder, Encoder, embeddingsToArrow, hasCode } from '../lib/index.js';
import { native } from '../lib/native.js';
import { fixture, maxRelDiff, readReference } from './helpers.js';

interface BertRef { queries: string[]; input_ids: number[][]; attention_mask: number[][]; mean_pooled: number[][]; cls: number[][] }
interface XlmrRef { pairs: [string, string][]; input_ids: number[][]; attention_mask: number[][]; scores: number[]; max_length: number }

const bertRef = readReference<BertRef>('bert-tiny');
const xlmrRef = readReference<XlmrRef>('xlmr-tiny-reranker');
const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-encoder-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const unpad = (ids: number[][], mask: number[][]) => ids.map((row, i) => row.filter((_, j) => mask[i][j] === 1));
const rowsOf = (ids: Int32Array, offsets: Int32Array) =>
  Array.from({ length: offsets.length - 1 }, (_, i) => Array.from(ids.subarray(offsets[i], offsets[i + 1])));

test('bert-tiny mean and CLS embeddings match transformers within 1e-4', async () => {
  const mean = await Encoder.load(fixture('bert-tiny'));
  assert.equal(mean.dim, 64);
  assert.equal(mean.maxLength, 128);
  const batch = await mean.tokenizer.encodeBatch(bertRef.queries, { maxLength: mean.maxLength });
  assert.deepEqual(rowsOf(batch.ids, batch.offsets), unpad(bertRef.input_ids, bertRef.attention_mask));
  const got = await mean.embed(bertRef.queries);
  assert.equal(got.length, bertRef.queries.length * 64);
  assert.ok(maxRelDiff(got, bertRef.mean_pooled.flat(), 1e-3) < 1e-4);
  const cls = await Encoder.load(fixture('bert-tiny'), { pooling: 'cls' });
  assert.ok(maxRelDiff(await cls.embed(bertRef.queries), bertRef.cls.flat(), 1e-3) < 1e-4);
});

test('xlmr-tiny reranker scores match transformers within 1e-4 (only_second at 64)', async () => {
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'));
  assert.equal(ce.numLabels, 1);
  const q = xlmrRef.pairs.map((p) => p[0]);
  const p = xlmrRef.pairs.map((x) => x[1]);
  const batch = await ce.tokenizer.encodePairs(q, p, { maxLength: xlmrRef.max_length, truncation: 'only_second' });
  assert.deepEqual(rowsOf(batch.ids, batch.offsets), unpad(xlmrRef.input_ids, xlmrRef.attention_mask));
  const scores = await ce.score(q, p, { maxLength: xlmrRef.max_length });
  assert.equal(scores.length, q.length);
  assert.ok(maxRelDiff(scores, xlmrRef.scores, 1e-3) < 1e-4, `max rel diff ${maxRelDiff(scores, xlmrRef.scores, 1e-3)}`);
});

test('results do not depend on batching (length buckets, scatter back to input order)', async () => {
  const enc = await Encoder.load(fixture('bert-tiny'));
  const texts = [...bertRef.queries, ...xlmrRef.pairs.map((p) => p[1])];
  const one = await enc.embed(texts, { batchTokens: 1 });
  const all = await enc.embed(texts, { batchTokens: 1 << 20 });
  // Padded and unpadded rows differ only by float rounding of differently shaped products.
  assert.ok(maxRelDiff(one, all, 1e-3) < 1e-4);
});

test('bfloat16 agrees with float32: embeddings cosine > 0.999, scores within 0.01 + 2%', async () => {
  const f32 = await Encoder.load(fixture('bert-tiny'));
  const b16 = await Encoder.load(fixture('bert-tiny'), { dtype: 'bfloat16' });
  const a = await f32.embed(bertRef.queries);
  const b = await b16.embed(bertRef.queries);
  for (let i = 0; i < bertRef.queries.length; i++) {
    const x = a.subarray(i * 64, (i + 1) * 64);
    const y = b.subarray(i * 64, (i + 1) * 64);
    let dot = 0, nx = 0, ny = 0;
    for (let j = 0; j < 64; j++) { dot += x[j] * y[j]; nx += x[j] * x[j]; ny += y[j] * y[j]; }
    assert.ok(dot / Math.sqrt(nx * ny) > 0.999, `row ${i}`);
  }
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { dtype: 'bfloat16' });
  const s = await ce.score(xlmrRef.pairs.map((p) => p[0]), xlmrRef.pairs.map((p) => p[1]), { maxLength: 64 });
  xlmrRef.scores.forEach((ref, i) => assert.ok(Math.abs(s[i] - ref) <= 0.01 + 0.02 * Math.abs(ref), `pair ${i}: ${s[i]} vs ${ref}`));
});

test('float16 on CPU either runs close to float32 or is rejected with E_UNSUPPORTED', async () => {
  try {
    const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { dtype: 'float16' });
    const s = await ce.score(xlmrRef.pairs.map((p) => p[0]), xlmrRef.pairs.map((p) => p[1]), { maxLength: 64 });
    xlmrRef.scores.forEach((ref, i) => assert.ok(Math.abs(s[i] - ref) <= 0.01 + 0.02 * Math.abs(ref)));
  } catch (err) {
    assert.ok(hasCode(err, 'E_UNSUPPORTED'), String(err));
    assert.match((err as Error).message, /float32 or bfloat16/);
  }
});

test('Arrow Utf8 vectors give the same results as string arrays', async () => {
  const enc = await Encoder.load(fixture('bert-tiny'));
  const fromArrow = await enc.embed(vectorFromArray(bertRef.queries, new Utf8()));
  assert.deepEqual(fromArrow, await enc.embed(bertRef.queries));
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'));
  const q = xlmrRef.pairs.map((p) => p[0]);
  const p = xlmrRef.pairs.map((x) => x[1]);
  const s = await ce.score(vectorFromArray(q, new Utf8()), vectorFromArray(p, new Utf8()), { maxLength: 64 });
  assert.deepEqual(s, await ce.score(q, p, { maxLength: 64 }));
  await assert.rejects(enc.embed(vectorFromArray(['a', null], new Utf8())), TypeError);
  // ... and embeddings go out as Arrow without a copy.
  const vec = embeddingsToArrow(fromArrow, enc.dim);
  assert.equal(vec.length, bertRef.queries.length);
  assert.deepEqual(Array.from(vec.get(1)!), Array.from(fromArrow.subarray(64, 128)));
  assert.equal(vec.data[0].children[0].values.buffer, fromArrow.buffer);
});

test('empty batch, empty strings, over-long texts', async () => {
  const enc = await Encoder.load(fixture('bert-tiny'));
  assert.equal((await enc.embed([])).length, 0);
  const blank = await enc.embed(['', 'a']);
  assert.equal(blank.length, 128);
  assert.ok(blank.every(Number.isFinite));
  // Both texts are cut to the same first 128 tokens, so their embeddings are identical.
  const long = 'the norman conquest of england began in 1066 '.repeat(40);
  const [x, y] = [await enc.embed([long]), await enc.embed([long + ' and then much more text'])];
  assert.deepEqual(x, y);
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'));
  assert.equal((await ce.score([], [])).length, 0);
  const s = await ce.score(['', 'q'], ['', long]);
  assert.ok(s.every(Number.isFinite));
  await assert.rejects(ce.score(['a', 'b'], ['c']), RangeError);
  await assert.rejects(ce.score(['a'], ['b'], { maxLength: 1000 }), RangeError);
});

test('argument errors are TypeError / RangeError on the JS thread', async () => {
  await assert.rejects(Encoder.load(fixture('bert-tiny'), { dtype: 'int4' as never }), TypeError);
  await assert.rejects(Encoder.load(fixture('bert-tiny'), { pooling: 'max' as never }), TypeError);
  await assert.rejects(Encoder.load(fixture('bert-tiny'), { maxLength: 0 }), RangeError);
  await assert.rejects(Encoder.load(fixture('bert-tiny'), { maxLength: 129 }), RangeError);
  const enc = await Encoder.load(fixture('bert-tiny'));
  await assert.rejects(enc.embed('text' as never), TypeError);
  await assert.rejects(enc.embed([1 as never]), TypeError);
  await assert.rejects(enc.embed(['a'], { batchTokens: 0 }), RangeError);
});

test('cancellation through AbortSignal gives E_CANCELLED; progress is reported', async () => {
  const enc = await Encoder.load(fixture('bert-tiny'));
  const texts = Array.from({ length: 64 }, (_, i) => `passage number ${i} about the norman conquest`);
  const seen: number[] = [];
  await enc.embed(texts, { batchTokens: 64, onProgress: (done, total) => { seen.push(done); assert.equal(total, 64); } });
  // Progress goes through a thread-safe function, so its last event may trail the result.
  for (let i = 0; i < 1000 && seen.at(-1) !== 64; i++) await new Promise((r) => setImmediate(r));
  assert.equal(seen.at(-1), 64);
  assert.ok(seen.every((d, i) => i === 0 || d > seen[i - 1]));
  const early = new AbortController();
  early.abort();
  await assert.rejects(enc.embed(texts, { signal: early.signal }), (e) => hasCode(e, 'E_CANCELLED'));
  // Many one-row batches, aborted at the first progress event: the native loop sees the flag
  // at its next batch boundary, long before it could finish.
  const many = Array.from({ length: 4000 }, (_, i) => `passage ${i}`);
  const mid = new AbortController();
  await assert.rejects(
    enc.embed(many, { batchTokens: 8, signal: mid.signal, onProgress: () => mid.abort() }),
    (e) => hasCode(e, 'E_CANCELLED'),
  );
});

// A model directory copied from a fixture, with edits.
function copyModel(from: string, name: string, edit: { config?: (c: Record<string, unknown>) => Record<string, unknown> | null; tensors?: (t: Tensors) => void }): string {
  const dir = path.join(scratch, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
    copyFileSync(path.join(from, f), path.join(dir, f));
    chmodSync(path.join(dir, f), 0o644);
  }
  const config = JSON.parse(readFileSync(path.join(from, 'config.json'), 'utf8'));
  const edited = edit.config ? edit.config(config) : config;
  if (edited) writeFileSync(path.join(dir, 'config.json'), JSON.stringify(edited));
  const tensors = readSafetensors(path.join(from, 'model.safetensors'));
  edit.tensors?.(tensors);
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  return dir;
}

type Tensors = Map<string, { dtype: string; shape: number[]; data: Buffer }>;

// Minimal safetensors reader/writer so the test can make broken checkpoints on its own.
function readSafetensors(file: string): Tensors {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Tensors = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out.set(name, { dtype: t.dtype, shape: t.shape, data: buf.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]) });
  }
  return out;
}

function writeSafetensors(file: string, tensors: Tensors): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...[...tensors.values()].map((t) => t.data)]));
}

test('bad checkpoints: missing or unsupported config (E_MODEL_CONFIG), missing or mis-shaped tensor (E_SHAPE)', async () => {
  const bert = fixture('bert-tiny');
  const noConfig = copyModel(bert, 'no-config', { config: () => null });
  await assert.rejects(Encoder.load(noConfig), (e) => hasCode(e, 'E_MODEL_CONFIG') && /config\.json/.test((e as Error).message));
  const gpt = copyModel(bert, 'gpt2', { config: (c) => ({ ...c, model_type: 'gpt2' }) });
  await assert.rejects(Encoder.load(gpt), (e) => hasCode(e, 'E_MODEL_CONFIG') && /gpt2/.test((e as Error).message));
  const missing = copyModel(bert, 'missing-tensor', { tensors: (t) => void t.delete('encoder.layer.1.attention.self.key.weight') });
  await assert.rejects(Encoder.load(missing), (e) => hasCode(e, 'E_SHAPE') && /encoder\.layer\.1\.attention\.self\.key\.weight/.test((e as Error).message));
  const misshaped = copyModel(bert, 'bad-shape', {
    tensors: (t) => {
      const w = t.get('embeddings.LayerNorm.weight')!;
      t.set('embeddings.LayerNorm.weight', { dtype: w.dtype, shape: [32], data: w.data.subarray(0, 128) });
    },
  });
  await assert.rejects(Encoder.load(misshaped), (e) => hasCode(e, 'E_SHAPE') && /embeddings\.LayerNorm\.weight.*\[32\]/.test((e as Error).message));
  const noHead = copyModel(fixture('xlmr-tiny-reranker'), 'no-head', { tensors: (t) => void t.delete('classifier.out_proj.bias') });
  await assert.rejects(CrossEncoder.load(noHead), (e) => hasCode(e, 'E_SHAPE') && /classifier\.out_proj\.bias/.test((e as Error).message));
  // A bare encoder is not a cross-encoder.
  await assert.rejects(CrossEncoder.load(bert), (e) => hasCode(e, 'E_MODEL_CONFIG'));
});

test('BERT sequence-classification head (bert. prefix, pooler + classifier, 2 labels) on transformers CLS states', async () => {
  // HF BertForSequenceClassification layout: the bert-tiny backbone under "bert.", plus a pooler
  // and a 2-label classifier with weights made here. The expected logits are computed in JS
  // from the fixture's CLS hidden states (transformers' numbers), so only the head is ours.
  const H = 64;
  const r = (i: number) => Math.sin(i * 12.9898) * 0.2;
  const pw = Float32Array.from({ length: H * H }, (_, i) => r(i));
  const pb = Float32Array.from({ length: H }, (_, i) => r(i + 7e4));
  const cw = Float32Array.from({ length: 2 * H }, (_, i) => r(i + 9e4) * 4);
  const cb = Float32Array.from([0.25, -0.5]);
  const buf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const dir = copyModel(fixture('bert-tiny'), 'bert-classifier', {
    config: (c) => ({ ...c, architectures: ['BertForSequenceClassification'], id2label: { 0: 'NO', 1: 'YES' } }),
    tensors: (t) => {
      for (const [name, v] of [...t]) { t.delete(name); t.set(`bert.${name}`, v); }
      t.set('bert.pooler.dense.weight', { dtype: 'F32', shape: [H, H], data: buf(pw) });
      t.set('bert.pooler.dense.bias', { dtype: 'F32', shape: [H], data: buf(pb) });
      t.set('classifier.weight', { dtype: 'F32', shape: [2, H], data: buf(cw) });
      t.set('classifier.bias', { dtype: 'F32', shape: [2], data: buf(cb) });
    },
  });
  const expected: number[] = [];
  for (const cls of bertRef.cls) {
    const pooled = Array.from({ length: H }, (_, o) => Math.tanh(pb[o] + cls.reduce((acc, x, i) => acc + pw[o * H + i] * x, 0)));
    for (let l = 0; l < 2; l++) expected.push(cb[l] + pooled.reduce((acc, x, i) => acc + cw[l * H + i] * x, 0));
  }
  const ce = await CrossEncoder.load(dir);
  assert.equal(ce.numLabels, 2);
  // The fixture's CLS states are for single texts, so feed the reference ids directly.
  const rows = unpad(bertRef.input_ids, bertRef.attention_mask);
  const offsets = Int32Array.from([0, ...rows.map((_, i) => rows.slice(0, i + 1).flat().length)]);
  const model = await (native() as unknown as { loadCrossEncoder(d: string, o: object): Promise<{ score(...a: unknown[]): Promise<Float32Array> }> })
    .loadCrossEncoder(dir, {});
  const got = await model.score(Int32Array.from(rows.flat()), offsets, undefined, {}, {});
  assert.equal(got.length, 2 * rows.length);
  assert.ok(maxRelDiff(got, expected, 1e-3) < 1e-4, `max rel diff ${maxRelDiff(got, expected, 1e-3)}`);
  // Pairs through the public API give n x 2 logits.
  assert.equal((await ce.score(['a', 'b', 'c'], ['x', 'y', 'z'])).length, 6);
});

test('malformed token batches reaching the native layer are E_SHAPE / TypeError, never a crash', async () => {
  type Raw = { embed(...a: unknown[]): Promise<Float32Array>; maxTokens: number };
  const raw = await (native() as unknown as { loadEncoder(d: string, o: object): Promise<Raw> }).loadEncoder(fixture('bert-tiny'), {});
  const shape = (e: unknown) => hasCode(e, 'E_SHAPE');
  await assert.rejects(raw.embed(Int32Array.of(2, 5, 3), Int32Array.of(0, 2), undefined, {}, {}), shape);  // offsets end early
  await assert.rejects(raw.embed(Int32Array.of(2, 5, 3), Int32Array.of(0, 3, 1), undefined, {}, {}), shape);  // decreasing
  await assert.rejects(raw.embed(Int32Array.of(2, 99999, 3), Int32Array.of(0, 3), undefined, {}, {}), shape);  // outside vocab
  await assert.rejects(raw.embed(Int32Array.of(2, 3), Int32Array.of(0, 0, 2), undefined, {}, {}), shape);  // empty row
  await assert.rejects(raw.embed(Int32Array.of(2, 3), Int32Array.of(0, 2), Int32Array.of(0, 7), {}, {}), shape);  // token type
  const tooLong = new Int32Array(raw.maxTokens + 1).fill(5);
  await assert.rejects(raw.embed(tooLong, Int32Array.of(0, tooLong.length), undefined, {}, {}), shape);
  assert.throws(() => raw.embed(Float32Array.of(1), Int32Array.of(0, 1), undefined, {}, {}), TypeError);  // on the JS thread
  assert.throws(() => raw.embed(Int32Array.of(1), Int32Array.of(0, 1), undefined, { pooling: 'max' }, {}), (e) => hasCode(e, 'E_INVALID_ARG'));
});
