// The oneDNN GEMM path (gemm: 'dnnl', native/backends/dnnl): Hugging Face parity as the LibTorch
// path has it, equality with the LibTorch path on ragged batches (products split into a 64-row
// block and a tail) and wider layers than the fixtures', bfloat16 against float32, concurrent
// calls, and how the option and GAINRAG_GEMM are checked. On a build without oneDNN only the
// refusal is tested.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { encodeSafetensors, type F32Tensor } from '../lib/convert/llama2c.js';
import { CrossEncoder, Encoder, engineInfo, hasCode } from '../lib/index.js';
import { dnnlHas } from './capabilities.js';
import { fixture, maxRelDiff, readReference } from './helpers.js';

interface BertRef { queries: string[]; mean_pooled: number[][]; cls: number[][] }
interface XlmrRef { pairs: [string, string][]; scores: number[]; max_length: number }
const bertRef = readReference<BertRef>('bert-tiny');
const xlmrRef = readReference<XlmrRef>('xlmr-tiny-reranker');
const hasDnnl = engineInfo().backends.includes('dnnl');
const skip = hasDnnl ? false : 'this build has no oneDNN backend';
const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-dnnl-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

// Texts of 1..~120 tokens, so batches are ragged and most products have a row tail.
const words = 'the river bank holds a small boat while seven quiet herons watch the morning fog lift'.split(' ');
const texts = [
  ...bertRef.queries,
  ...xlmrRef.pairs.map((p) => p[1]),
  ...Array.from({ length: 40 }, (_, i) => Array.from({ length: 1 + ((i * 37) % 110) }, (_, j) => words[(i + j * 3) % words.length]).join(' ')),
];

function cosines(a: Float32Array, b: Float32Array, dim: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < a.length / dim; r++) {
    let dot = 0, na = 0, nb = 0;
    for (let j = r * dim; j < (r + 1) * dim; j++) { dot += a[j] * b[j]; na += a[j] * a[j]; nb += b[j] * b[j]; }
    out.push(dot / Math.sqrt(na * nb));
  }
  return out;
}

/** A BERT with random weights, wider than the fixtures (K up to 1024 splits into blocks). */
function writeWideModel(name: string, hiddenAct: string, H = 256): string {
  const dir = path.join(scratch, name);
  mkdirSync(dir, { recursive: true });
  const I = 1024, L = 2, vocab = 1200, positions = 128;
  let state = 12345;
  const rand = () => ((state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 0.07;
  const t = (n: string, shape: number[], fill?: number): F32Tensor => {
    const size = shape.reduce((a, b) => a * b, 1);
    return { name: n, shape, data: Float32Array.from({ length: size }, () => (fill === undefined ? rand() : fill)) };
  };
  const ts: F32Tensor[] = [
    t('embeddings.word_embeddings.weight', [vocab, H]), t('embeddings.position_embeddings.weight', [positions, H]),
    t('embeddings.token_type_embeddings.weight', [2, H]), t('embeddings.LayerNorm.weight', [H], 1), t('embeddings.LayerNorm.bias', [H], 0),
  ];
  for (let l = 0; l < L; l++) {
    const p = `encoder.layer.${l}.`;
    for (const m of ['query', 'key', 'value']) ts.push(t(`${p}attention.self.${m}.weight`, [H, H]), t(`${p}attention.self.${m}.bias`, [H]));
    ts.push(t(`${p}attention.output.dense.weight`, [H, H]), t(`${p}attention.output.dense.bias`, [H]),
      t(`${p}attention.output.LayerNorm.weight`, [H], 1), t(`${p}attention.output.LayerNorm.bias`, [H], 0),
      t(`${p}intermediate.dense.weight`, [I, H]), t(`${p}intermediate.dense.bias`, [I]),
      t(`${p}output.dense.weight`, [H, I]), t(`${p}output.dense.bias`, [H]),
      t(`${p}output.LayerNorm.weight`, [H], 1), t(`${p}output.LayerNorm.bias`, [H], 0));
  }
  writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(ts));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    model_type: 'bert', architectures: ['BertModel'], vocab_size: vocab, hidden_size: H, num_hidden_layers: L,
    num_attention_heads: 4, intermediate_size: I, max_position_embeddings: positions, type_vocab_size: 2, pad_token_id: 0,
    layer_norm_eps: 1e-12, hidden_act: hiddenAct,
  }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(fixture('bert-tiny'), f), path.join(dir, f));
  return dir;
}

test('engineInfo lists dnnl exactly when an explicit gemm: dnnl loads', async () => {
  if (hasDnnl) {
    // oneDNN's run-time choice of kernel for each precision is reported ("none" where it has none).
    assert.match(engineInfo().dnnlKernels, /^f32 \S+, bf16 \S+, int8 \S+$/);
    assert.doesNotMatch(engineInfo().dnnlKernels, /^f32 none/);
    const enc = await Encoder.load(fixture('bert-tiny'), { gemm: 'dnnl' });
    assert.equal(enc.gemm, 'dnnl');
    assert.equal((await Encoder.load(fixture('bert-tiny'), { gemm: 'torch' })).gemm, 'torch');
  } else {
    assert.equal(engineInfo().dnnlKernels, '');
    await assert.rejects(Encoder.load(fixture('bert-tiny'), { gemm: 'dnnl' }), (e) => hasCode(e, 'E_UNSUPPORTED'));
  }
});

test('dnnl float32 matches transformers within 1e-4 (bert-tiny mean + CLS, xlmr-tiny scores)', { skip }, async () => {
  const mean = await Encoder.load(fixture('bert-tiny'), { gemm: 'dnnl' });
  assert.ok(maxRelDiff(await mean.embed(bertRef.queries), bertRef.mean_pooled.flat(), 1e-3) < 1e-4);
  const cls = await Encoder.load(fixture('bert-tiny'), { gemm: 'dnnl', pooling: 'cls' });
  assert.ok(maxRelDiff(await cls.embed(bertRef.queries), bertRef.cls.flat(), 1e-3) < 1e-4);
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { gemm: 'dnnl' });
  assert.equal(ce.gemm, 'dnnl');
  const scores = await ce.score(xlmrRef.pairs.map((p) => p[0]), xlmrRef.pairs.map((p) => p[1]), { maxLength: xlmrRef.max_length });
  assert.ok(maxRelDiff(scores, xlmrRef.scores, 1e-3) < 1e-4, `max rel diff ${maxRelDiff(scores, xlmrRef.scores, 1e-3)}`);
});

test('dnnl float32 equals the LibTorch path on ragged batches and wider layers (GELU erf and tanh epilogues)', { skip }, async () => {
  const dirs = [fixture('bert-tiny'), writeWideModel('wide-gelu', 'gelu'), writeWideModel('wide-gelu-new', 'gelu_new')];
  for (const dir of dirs) {
    const torch = await Encoder.load(dir, { gemm: 'torch' });
    const dnnl = await Encoder.load(dir, { gemm: 'dnnl' });
    for (const batchTokens of [1, 300, 1 << 20]) {
      const a = await torch.embed(texts, { batchTokens });
      const b = await dnnl.embed(texts, { batchTokens });
      // Relative to max(|value|, 1e-2): the embeddings here lie in [-2.4, 2.4], and the two paths
      // block the products differently (the oneDNN path runs only the real tokens, packed), so
      // they differ by 1-2 float32 ulps (<= 3.6e-7 absolute), which a 1e-3 floor magnified to
      // ~1.4e-4 on entries near 2e-3. A wrong product, mask or epilogue moves entries by > 1e-2.
      const d = maxRelDiff(b, a, 1e-2);
      assert.ok(d < 1e-4, `${path.basename(dir)} batchTokens ${batchTokens}: max rel diff ${d}`);
    }
  }
});

// The dnnl path attends per row over its real keys (q/k/v read in place, no additive mask);
// LibTorch's path masks a padded [B, heads, T, T]. They must agree whatever the padding.
test('dnnl attention over each row\'s real keys equals the masked LibTorch attention (padded batches, head width 60, cross-encoder pairs)', { skip }, async () => {
  const dir = writeWideModel('wide-head60', 'gelu', 240); // 4 heads of 60: the 1/sqrt(60) scale is inexact
  const torch = await Encoder.load(dir, { gemm: 'torch' });
  const dnnl = await Encoder.load(dir, { gemm: 'dnnl' });
  const one = await dnnl.embed(texts, { batchTokens: 1 });
  for (const batchTokens of [1, 1 << 20]) {
    const d = maxRelDiff(await dnnl.embed(texts, { batchTokens }), await torch.embed(texts, { batchTokens }), 1e-3);
    assert.ok(d < 1e-4, `batchTokens ${batchTokens}: max rel diff ${d}`);
  }
  // One padded batch against one row per batch (no padding at all) on the dnnl path itself.
  const d1 = maxRelDiff(await dnnl.embed(texts, { batchTokens: 1 << 20 }), one, 1e-3);
  assert.ok(d1 < 1e-4, `padded vs unpadded: ${d1}`);
  const q = [...xlmrRef.pairs.map((p) => p[0]), ...texts.slice(-20).map((t) => t.split(' ').slice(0, 1 + (t.length % 7)).join(' '))];
  const p = [...xlmrRef.pairs.map((x) => x[1]), ...texts.slice(0, 20)];
  const ceT = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { gemm: 'torch' });
  const ceD = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { gemm: 'dnnl' });
  for (const batchTokens of [1, 1 << 20]) {
    const a = await ceD.score(q, p, { batchTokens });
    const b = await ceT.score(q, p, { batchTokens });
    const d = maxRelDiff(a, b, 1e-3);
    assert.ok(d < 1e-4, `cross-encoder batchTokens ${batchTokens}: max rel diff ${d}`);
  }
  await Promise.all([torch, dnnl, ceT, ceD].map((m) => m.dispose()));
});

// Where oneDNN has a bf16 kernel the products round rows and weights to bf16; where it has only
// float32 kernels (AVX2) the weights are rounded to bf16 and the products run in float32. Either
// way bf16 rounding is applied and the result stays close to float32.
test('dnnl bfloat16 (fp32 activations, bf16 weights): embedding cosine >= 0.999 to float32, scores close', { skip }, async () => {
  if (!dnnlHas('bf16') && !dnnlHas('f32')) {
    await assert.rejects(Encoder.load(fixture('bert-tiny'), { gemm: 'dnnl', dtype: 'bfloat16' }), (e) => hasCode(e, 'E_UNSUPPORTED'));
    return;
  }
  for (const dir of [fixture('bert-tiny'), writeWideModel('wide-bf16', 'gelu')]) {
    const f32 = await Encoder.load(dir);
    const b16 = await Encoder.load(dir, { gemm: 'dnnl', dtype: 'bfloat16' });
    assert.equal(b16.gemm, 'dnnl');
    const a = await f32.embed(texts);
    const b = await b16.embed(texts);
    const worst = Math.min(...cosines(a, b, f32.dim));
    assert.ok(worst >= 0.999, `${path.basename(dir)}: lowest cosine ${worst}`);
    // bf16 rounding is really applied (this is not the float32 path under another name).
    assert.ok(maxRelDiff(b, a, 1e-3) > 1e-6);
  }
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { gemm: 'dnnl', dtype: 'bfloat16' });
  const s = await ce.score(xlmrRef.pairs.map((p) => p[0]), xlmrRef.pairs.map((p) => p[1]), { maxLength: 64 });
  xlmrRef.scores.forEach((ref, i) => assert.ok(Math.abs(s[i] - ref) <= 0.01 + 0.02 * Math.abs(ref), `pair ${i}: ${s[i]} vs ${ref}`));
});

// matmulPrecision 'high': float32 layers whose products run as bf16x3 (hi·hi + hi·lo + lo·hi on
// the bf16 units). Its error sits between float32's and bfloat16's by construction (~2^-16 vs
// ~2^-8 per product term); both bounds are asserted, against transformers and against float32.
test('dnnl float32 matmulPrecision high (bf16x3): transformers parity within 5e-4, far closer to float32 than bfloat16 is', { skip }, async () => {
  if (!dnnlHas('bf16')) {
    await assert.rejects(Encoder.load(fixture('bert-tiny'), { matmulPrecision: 'high' }), (e) => hasCode(e, 'E_UNSUPPORTED') && /bf16 kernel/.test(String(e)));
    return;
  }
  const high = await Encoder.load(fixture('bert-tiny'), { matmulPrecision: 'high' });
  assert.equal(high.gemm, 'dnnl');
  assert.equal(high.matmulPrecision, 'high');
  assert.equal((await Encoder.load(fixture('bert-tiny'))).matmulPrecision, 'highest');
  assert.equal((await Encoder.load(fixture('bert-tiny'), { dtype: 'bfloat16' })).matmulPrecision, '');
  const d = maxRelDiff(await high.embed(bertRef.queries), bertRef.mean_pooled.flat(), 1e-3);
  assert.ok(d < 5e-4, `bert-tiny mean: max rel diff to transformers ${d}`);
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { matmulPrecision: 'high' });
  assert.equal(ce.matmulPrecision, 'high');
  const scores = await ce.score(xlmrRef.pairs.map((p) => p[0]), xlmrRef.pairs.map((p) => p[1]), { maxLength: xlmrRef.max_length });
  const ds = maxRelDiff(scores, xlmrRef.scores, 1e-3);
  assert.ok(ds < 5e-4, `xlmr-tiny scores: max rel diff to transformers ${ds}`);

  const dir = writeWideModel('wide-high', 'gelu');
  const f32 = await (await Encoder.load(dir, { gemm: 'torch' })).embed(texts, { batchTokens: 300 });
  const h = await (await Encoder.load(dir, { matmulPrecision: 'high' })).embed(texts, { batchTokens: 300 });
  const b = await (await Encoder.load(dir, { dtype: 'bfloat16' })).embed(texts, { batchTokens: 300 });
  const dh = maxRelDiff(h, f32, 1e-2), db = maxRelDiff(b, f32, 1e-2);
  assert.ok(dh < db / 30, `bf16x3 ${dh} vs bfloat16 ${db} (max rel diff to float32)`);
  assert.ok(dh > 1e-7, `bf16x3 equals float32 (${dh}): the split products did not run`);
  assert.ok(Math.min(...cosines(h, f32, 256)) > 0.999999);
});

test('matmulPrecision is checked: a float32 mode on the oneDNN path only', async () => {
  const dir = fixture('bert-tiny');
  await assert.rejects(Encoder.load(dir, { matmulPrecision: 'medium' as never }), TypeError);
  await assert.rejects(Encoder.load(dir, { matmulPrecision: 'high', dtype: 'bfloat16' }), TypeError);
  await assert.rejects(CrossEncoder.load(fixture('xlmr-tiny-reranker'), { matmulPrecision: 'high', dtype: 'int8' }), TypeError);
  await assert.rejects(Encoder.load(dir, { matmulPrecision: 'high', gemm: 'torch' }), (e) => hasCode(e, 'E_UNSUPPORTED'));
  if (!hasDnnl) await assert.rejects(Encoder.load(dir, { matmulPrecision: 'high' }), (e) => hasCode(e, 'E_UNSUPPORTED'));
});

test('concurrent calls on one dnnl model give the results of sequential ones', { skip }, async () => {
  const enc = await Encoder.load(writeWideModel('wide-concurrent', 'gelu'), { gemm: 'dnnl' });
  const parts = [texts.slice(0, 20), texts.slice(20, 45), texts.slice(45), texts];
  const sequential: Float32Array[] = [];
  for (const p of parts) sequential.push(await enc.embed(p, { batchTokens: 500 }));
  const together = await Promise.all(parts.map((p) => enc.embed(p, { batchTokens: 500 })));
  together.forEach((got, i) => assert.deepEqual(got, sequential[i], `part ${i}`));
});

// Small models with several batches run whole batches concurrently, one per thread
// (native/models/encoder_batched.cpp); GAINRAG_BATCH_PARALLEL=0 runs them one after another with
// each op threaded. Both must give transformers' scores, agree with each other, report progress
// to the total and stop on cancellation.
function scoresInChild(pairs: [string, string][], batchTokens: number, env: Record<string, string>): Float32Array {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const script = `
    const { CrossEncoder } = await import(${JSON.stringify(path.join(here, '..', 'lib', 'index.js'))});
    const ce = await CrossEncoder.load(${JSON.stringify(fixture('xlmr-tiny-reranker'))}, { gemm: 'dnnl' });
    const pairs = ${JSON.stringify(pairs)};
    const s = await ce.score(pairs.map((p) => p[0]), pairs.map((p) => p[1]), { maxLength: ${xlmrRef.max_length}, batchTokens: ${batchTokens} });
    process.stdout.write(JSON.stringify(Array.from(s)));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, ...env } });
  assert.equal(r.status, 0, r.stderr);
  return Float32Array.from(JSON.parse(r.stdout) as number[]);
}

test('batch-parallel schedule: transformers parity, equal to the one-batch-at-a-time schedule, progress and cancellation', { skip }, async () => {
  // 24 copies of the fixture pairs, ~4 pairs a batch: many small batches for two threads to share.
  const pairs = Array.from({ length: 24 }, () => xlmrRef.pairs).flat();
  const expected = Array.from({ length: 24 }, () => xlmrRef.scores).flat();
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { gemm: 'dnnl' });
  const seen: number[] = [];
  const got = await ce.score(pairs.map((p) => p[0]), pairs.map((p) => p[1]), {
    maxLength: xlmrRef.max_length, batchTokens: 256, onProgress: (done, total) => { seen.push(done); assert.equal(total, pairs.length); },
  });
  assert.ok(maxRelDiff(got, expected, 1e-3) < 1e-4, `max rel diff to transformers ${maxRelDiff(got, expected, 1e-3)}`);
  for (let i = 0; i < 1000 && seen.at(-1) !== pairs.length; i++) await new Promise((r) => setImmediate(r));
  assert.equal(seen.at(-1), pairs.length);
  assert.ok(seen.every((d, i) => i === 0 || d > seen[i - 1]), `progress not increasing: ${seen.join(',')}`);
  const threads = { GAINRAG_THREADS: '2' };
  const parallel = scoresInChild(pairs, 256, threads);
  const serial = scoresInChild(pairs, 256, { ...threads, GAINRAG_BATCH_PARALLEL: '0' });
  assert.ok(maxRelDiff(parallel, expected, 1e-3) < 1e-4);
  // Different thread splits of the same products: equal to a few float32 ulps, not bitwise.
  assert.ok(maxRelDiff(parallel, serial, 1e-3) < 1e-5, `parallel vs serial ${maxRelDiff(parallel, serial, 1e-3)}`);
  const many = Array.from({ length: 3000 }, (_, i) => `passage ${i}`);
  const mid = new AbortController();
  await assert.rejects(
    ce.score(many.map(() => 'query'), many, { batchTokens: 16, signal: mid.signal, onProgress: () => mid.abort() }),
    (e) => hasCode(e, 'E_CANCELLED'),
  );
  // The model is still usable after a cancelled call.
  assert.ok(maxRelDiff(await ce.score(pairs.map((p) => p[0]), pairs.map((p) => p[1]), { maxLength: xlmrRef.max_length, batchTokens: 256 }), got, 1e-3) < 1e-6);
  ce.dispose();
});

test('gemm option and GAINRAG_GEMM: bad values are refused; the environment is only a preference', async () => {
  await assert.rejects(Encoder.load(fixture('bert-tiny'), { gemm: 'blas' as 'dnnl' }), TypeError);
  const saved = process.env.GAINRAG_GEMM;
  try {
    process.env.GAINRAG_GEMM = 'blas';
    await assert.rejects(Encoder.load(fixture('bert-tiny')), (e) => hasCode(e, 'E_INVALID_ARG') && /GAINRAG_GEMM/.test(String(e)));
    process.env.GAINRAG_GEMM = 'dnnl';
    assert.equal((await Encoder.load(fixture('bert-tiny'))).gemm, hasDnnl ? 'dnnl' : 'torch');
    // An explicit option wins over the environment.
    assert.equal((await Encoder.load(fixture('bert-tiny'), { gemm: 'torch' })).gemm, 'torch');
    // float16 has no oneDNN path: the environment's preference gives way; LibTorch may still refuse float16 on CPU.
    try {
      assert.equal((await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { dtype: 'float16' })).gemm, 'torch');
    } catch (err) {
      assert.ok(hasCode(err, 'E_UNSUPPORTED') && !/gemm/.test(String(err)), String(err));
    }
  } finally {
    if (saved === undefined) delete process.env.GAINRAG_GEMM;
    else process.env.GAINRAG_GEMM = saved;
  }
  if (hasDnnl) {
    await assert.rejects(Encoder.load(fixture('bert-tiny'), { gemm: 'dnnl', dtype: 'float16' }),
      (e) => hasCode(e, 'E_UNSUPPORTED') && /float32, bfloat16 or int8/.test(String(e)));
  }
});

test('the default CPU path is dnnl where built in; gemm torch and GAINRAG_GEMM=torch opt out and keep HF parity', async () => {
  const saved = process.env.GAINRAG_GEMM;
  delete process.env.GAINRAG_GEMM;
  try {
    assert.equal((await Encoder.load(fixture('bert-tiny'))).gemm, hasDnnl ? 'dnnl' : 'torch');
    // bfloat16 takes oneDNN where it has a bf16 kernel, or float32 kernels to widen bf16 weights in.
    assert.equal((await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { dtype: 'bfloat16' })).gemm,
      hasDnnl && (dnnlHas('bf16') || dnnlHas('f32')) ? 'dnnl' : 'torch');
    process.env.GAINRAG_GEMM = 'torch';
    const viaEnv = await Encoder.load(fixture('bert-tiny'));
    assert.equal(viaEnv.gemm, 'torch');
    assert.ok(maxRelDiff(await viaEnv.embed(bertRef.queries), bertRef.mean_pooled.flat(), 1e-3) < 1e-4);
  } finally {
    if (saved === undefined) delete process.env.GAINRAG_GEMM;
    else process.env.GAINRAG_GEMM = saved;
  }
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { gemm: 'torch' });
  const scores = await ce.score(xlmrRef.pairs.map((p) => p[0]), xlmrRef.pairs.map((p) => p[1]), { maxLength: xlmrRef.max_length });
  assert.ok(maxRelDiff(scores, xlmrRef.scores, 1e-3) < 1e-4, `max rel diff ${maxRelDiff(scores, xlmrRef.scores, 1e-3)}`);
});

test('dtype int8 (dynamic, per-row activation and per-channel weight scales): close to float32, batch-independent', { skip }, async () => {
  if (!dnnlHas('int8')) {
    await assert.rejects(Encoder.load(fixture('bert-tiny'), { dtype: 'int8' }), (e) => hasCode(e, 'E_UNSUPPORTED'));
    return;
  }
  for (const dir of [fixture('bert-tiny'), writeWideModel('wide-int8', 'gelu')]) {
    const f32 = await Encoder.load(dir, { gemm: 'torch' });
    const i8 = await Encoder.load(dir, { dtype: 'int8' });
    assert.equal(i8.gemm, 'dnnl');
    const a = await f32.embed(texts);
    const b = await i8.embed(texts);
    const worst = Math.min(...cosines(a, b, f32.dim));
    assert.ok(worst >= 0.99, `${path.basename(dir)}: lowest cosine ${worst}`);
    assert.ok(maxRelDiff(b, a, 1e-3) > 1e-5, 'int8 rounding is applied');
    // Each row is quantised on its own, so how rows are batched (and padded) changes nothing
    // beyond float rounding in attention.
    const one = await i8.embed(texts, { batchTokens: 1 });
    const all = await i8.embed(texts, { batchTokens: 1 << 20 });
    assert.ok(maxRelDiff(one, all, 1e-3) < 1e-4, `batching changed int8 results by ${maxRelDiff(one, all, 1e-3)}`);
  }
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { dtype: 'int8' });
  const s = await ce.score(xlmrRef.pairs.map((p) => p[0]), xlmrRef.pairs.map((p) => p[1]), { maxLength: 64 });
  xlmrRef.scores.forEach((ref, i) => assert.ok(Math.abs(s[i] - ref) <= 0.02 + 0.05 * Math.abs(ref), `pair ${i}: ${s[i]} vs ${ref}`));
});

// Runs the int8 reranker in a child process with the given environment (GAINRAG_INT8_INPUT_BITS
// and GAINRAG_INT8_PRODUCTS are read once per process): what engineInfo says, the scores, or the
// error.
type Int8Child = { bits?: number; kernels?: string; scores?: number[]; error?: { code: string; message: string } };
function int8InChild(env: Record<string, string>): Int8Child {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const script = `
    const { CrossEncoder, engineInfo } = await import(${JSON.stringify(path.join(here, '..', 'lib', 'index.js'))});
    const out = {};
    try {
      out.bits = engineInfo().int8InputBits;
      out.kernels = engineInfo().dnnlKernels;
      const ce = await CrossEncoder.load(${JSON.stringify(fixture('xlmr-tiny-reranker'))}, { dtype: 'int8' });
      const pairs = ${JSON.stringify(xlmrRef.pairs)};
      out.scores = Array.from(await ce.score(pairs.map((p) => p[0]), pairs.map((p) => p[1]), { maxLength: 64 }));
    } catch (e) { out.error = { code: e.code, message: e.message }; }
    process.stdout.write(JSON.stringify(out));`;
  const childEnv: Record<string, string | undefined> = { ...process.env, GAINRAG_INT8_INPUT_BITS: undefined, GAINRAG_INT8_PRODUCTS: undefined, ...env };
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: childEnv as NodeJS.ProcessEnv });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Int8Child;
}

function assertNearReranker(scores: number[] | undefined, abs: number, rel: number): void {
  assert.ok(scores, 'no scores');
  xlmrRef.scores.forEach((ref, i) => assert.ok(Math.abs(scores[i] - ref) <= abs + rel * Math.abs(ref), `pair ${i}: ${scores[i]} vs ${ref}`));
}

test('GAINRAG_INT8_INPUT_BITS picks 7- or 8-bit input codes on any int8 CPU; other values are refused', { skip }, () => {
  if (!dnnlHas('int8')) return;
  const seven = int8InChild({ GAINRAG_INT8_INPUT_BITS: '7' });
  assert.equal(seven.error, undefined, JSON.stringify(seven.error));
  assert.equal(seven.bits, 7);
  assertNearReranker(seven.scores, 0.03, 0.08);
  const eight = int8InChild({ GAINRAG_INT8_INPUT_BITS: '8' });
  if (eight.error) {
    // Only a CPU with neither VNNI nor AVX2 refuses 8-bit codes.
    assert.equal(eight.error.code, 'E_INVALID_ARG', JSON.stringify(eight));
    assert.match(eight.error.message, /needs VNNI or AVX2/);
  } else {
    assert.equal(eight.bits, 8);
    assertNearReranker(eight.scores, 0.02, 0.05);
    // One bit less per activation is a different rounding of every product.
    assert.ok(seven.scores!.some((s, i) => s !== eight.scores![i]), '7-bit codes changed no score');
  }
  for (const bad of ['6', 'eight']) {
    const r = int8InChild({ GAINRAG_INT8_INPUT_BITS: bad });
    assert.equal(r.error?.code, 'E_INVALID_ARG', JSON.stringify(r));
    assert.match(r.error!.message, /GAINRAG_INT8_INPUT_BITS must be 7 or 8/);
  }
});

test('GAINRAG_INT8_PRODUCTS=avx2 runs the int8 products on the AVX2 kernels of CPUs without VNNI, with the same scores bit for bit', { skip }, () => {
  if (!dnnlHas('int8')) return;
  // Both code widths: 8-bit codes on the signed kernel, 7-bit codes on the pair kernel. Integer
  // sums are exact on every kernel and the rescaling pass is shared, so the scores are equal.
  for (const bits of ['8', '7']) {
    const reference = int8InChild({ GAINRAG_INT8_INPUT_BITS: bits });
    if (reference.error) continue;  // a CPU without 8-bit codes (the test above checks the refusal)
    const avx2 = int8InChild({ GAINRAG_INT8_INPUT_BITS: bits, GAINRAG_INT8_PRODUCTS: 'avx2' });
    if (avx2.error) {
      assert.equal(avx2.error.code, 'E_INVALID_ARG', JSON.stringify(avx2));
      assert.match(avx2.error.message, /no AVX2/);
      continue;
    }
    assert.match(avx2.kernels ?? '', bits === '8' ? /int8 gainrag:avx2-signed/ : /int8 gainrag:avx2-pairs/);
    assert.deepEqual(avx2.scores, reference.scores, `${bits}-bit codes: the AVX2 kernel changed the scores`);
    const auto = int8InChild({ GAINRAG_INT8_INPUT_BITS: bits, GAINRAG_INT8_PRODUCTS: 'auto' });
    assert.deepEqual(auto.scores, reference.scores);
  }
  for (const bad of ['avx512', 'yes']) {
    const r = int8InChild({ GAINRAG_INT8_PRODUCTS: bad });
    assert.equal(r.error?.code, 'E_INVALID_ARG', JSON.stringify(r));
    assert.match(r.error!.message, /GAINRAG_INT8_PRODUCTS must be 'auto' or 'avx2'/);
  }
});

test('dtype int8 needs the oneDNN path: gemm torch (or a build without oneDNN) is E_UNSUPPORTED', async () => {
  await assert.rejects(Encoder.load(fixture('bert-tiny'), { dtype: 'int8', gemm: 'torch' }), (e) => hasCode(e, 'E_UNSUPPORTED') && /int8/.test(String(e)));
  if (!dnnlHas('int8')) await assert.rejects(Encoder.load(fixture('bert-tiny'), { dtype: 'int8' }), (e) => hasCode(e, 'E_UNSUPPORTED'));
  const saved = process.env.GAINRAG_GEMM;
  try {
    // The environment's preference for torch does not silently turn int8 into float32.
    process.env.GAINRAG_GEMM = 'torch';
    if (dnnlHas('int8')) assert.equal((await CrossEncoder.load(fixture('xlmr-tiny-reranker'), { dtype: 'int8' })).gemm, 'dnnl');
  } finally {
    if (saved === undefined) delete process.env.GAINRAG_GEMM;
    else process.env.GAINRAG_GEMM = saved;
  }
});
