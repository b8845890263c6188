// sentence-transformers / FlagEmbedding conventions in Encoder (modules.json, Pooling config,
// Normalize, prompts), the encoder recorded in an index manifest and checked by retrieve, and
// the reranker's normalize / rank.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { CrossEncoder, Encoder, engineInfo, hasCode } from '../lib/index.js';
import { readManifest } from '../lib/io/manifest.js';
import { buildIndex, importIndex } from '../lib/retrieval/build.js';
import { evalQueryVectors } from '../lib/retrieval/eval-ann.js';
import { retrieve } from '../lib/retrieval/retrieve.js';
import { cliPath, dataDir, fixture } from './helpers.js';
import { dnnlHas } from './capabilities.js';

const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-st-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const f = (name: string) => path.join(scratch, name);

/** bert-tiny as a sentence-transformers repository (as BGE ships: CLS pooling, Normalize, a query prompt). */
function stModel(name: string, pooling: Record<string, unknown>, extra: { modules?: unknown[]; prompts?: Record<string, string> } = {}): string {
  const dir = f(name);
  mkdirSync(path.join(dir, '1_Pooling'), { recursive: true });
  for (const file of readdirSync(fixture('bert-tiny'))) copyFileSync(path.join(fixture('bert-tiny'), file), path.join(dir, file));
  const modules = extra.modules ?? [
    { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
    { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
    { idx: 2, name: '2', path: '2_Normalize', type: 'sentence_transformers.models.Normalize' },
  ];
  writeFileSync(path.join(dir, 'modules.json'), JSON.stringify(modules));
  writeFileSync(path.join(dir, '1_Pooling', 'config.json'), JSON.stringify({ word_embedding_dimension: 64, pooling_mode_cls_token: false, pooling_mode_mean_tokens: false, pooling_mode_max_tokens: false, pooling_mode_lasttoken: false, ...pooling }));
  const prompts = extra.prompts ?? { query: 'Represent this sentence for searching relevant passages: ', document: 'passage: ' };
  writeFileSync(path.join(dir, 'config_sentence_transformers.json'), JSON.stringify({ prompts, default_prompt_name: null, similarity_fn_name: 'cosine' }));
  return dir;
}

const QUERY = 'Represent this sentence for searching relevant passages: ';
const texts = ['who wrote hamlet', 'the capital of france', 'a longer text about rivers and the sea'];

test('a sentence-transformers directory (CLS + Normalize + prompts) embeds exactly as the explicit options on prefixed text', async () => {
  const st = await Encoder.load(stModel('bge-like', { pooling_mode_cls_token: true }));
  assert.equal(st.pooling, 'cls');
  assert.equal(st.normalize, true);
  assert.equal(st.queryPrefix, QUERY);
  assert.equal(st.passagePrefix, 'passage: ');
  const plain = await Encoder.load(fixture('bert-tiny'), { pooling: 'cls' });
  const q = await st.embedQueries(texts);
  assert.deepEqual(q, await plain.embed(texts.map((t) => QUERY + t), { normalize: true }));
  assert.deepEqual(await st.embedPassages(texts), await plain.embed(texts.map((t) => `passage: ${t}`), { normalize: true }));
  for (let i = 0; i < texts.length; i++) {
    const row = q.subarray(i * 64, (i + 1) * 64);
    assert.ok(Math.abs(Math.hypot(...row) - 1) < 1e-5, 'unit length');
  }
  // The default of the old API (mean, unnormalised, no prefix) gives other vectors.
  const mean = await Encoder.load(fixture('bert-tiny'));
  assert.notDeepEqual(await mean.embedQueries(texts), q);
  // Explicit options win over the model's configuration.
  const overridden = await Encoder.load(st.dir, { pooling: 'mean', normalize: false, queryPrefix: '' });
  assert.deepEqual(await overridden.embedQueries(texts), await mean.embed(texts));
  for (const e of [st, plain, mean, overridden]) await e.dispose();
});

test('E5-style mean pooling with query:/passage: prompts; configurations the engine cannot run are E_UNSUPPORTED', async () => {
  const e5 = await Encoder.load(stModel('e5-like', { pooling_mode_mean_tokens: true }, { prompts: { query: 'query: ', passage: 'passage: ' } }));
  assert.deepEqual([e5.pooling, e5.normalize, e5.queryPrefix, e5.passagePrefix], ['mean', true, 'query: ', 'passage: ']);
  await e5.dispose();
  const unsupported = (e: unknown) => hasCode(e, 'E_UNSUPPORTED');
  await assert.rejects(Encoder.load(stModel('max-pool', { pooling_mode_max_tokens: true })), unsupported);
  await assert.rejects(Encoder.load(stModel('last-token', { pooling_mode_lasttoken: true })), unsupported);
  await assert.rejects(Encoder.load(stModel('two-modes', { pooling_mode_cls_token: true, pooling_mode_mean_tokens: true })), unsupported);
  await assert.rejects(Encoder.load(stModel('no-prompt-in-mean', { pooling_mode_mean_tokens: true, include_prompt: false })), unsupported);
  const dense = stModel('dense', { pooling_mode_cls_token: true }, {
    modules: [
      { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
      { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
      { idx: 2, name: '2', path: '2_Dense', type: 'sentence_transformers.models.Dense' },
    ],
  });
  await assert.rejects(Encoder.load(dense), (e) => unsupported(e) && /Dense/.test((e as Error).message));
  // Max pooling overridden explicitly is what the caller asked for.
  const forced = await Encoder.load(f('max-pool'), { pooling: 'cls' });
  assert.equal(forced.pooling, 'cls');
  await forced.dispose();
});

test('index eval embeds its questions as retrieve does: the index\'s pooling, normalize and query prefix', async () => {
  const passages = f('eval-passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'), 'utf8').split('\n').slice(0, 8).join('\n') + '\n');
  const questionsFile = f('eval-questions.jsonl');
  const lines = readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'), 'utf8').split('\n').slice(0, 3);
  writeFileSync(questionsFile, lines.join('\n') + '\n');
  const questions = lines.map((l) => (JSON.parse(l) as { question: string }).question);
  const bge = stModel('bge-like-eval', { pooling_mode_cls_token: true });
  const index = f('index-bge-eval');
  await buildIndex({ passages, encoder: bge, out: index });
  // Given plain bert-tiny (mean pooling, no prefix), the eval still embeds with the index's settings.
  const got = await evalQueryVectors({ index, data: questionsFile, encoder: fixture('bert-tiny') }, 64);
  const st = await Encoder.load(bge);
  const plain = await Encoder.load(fixture('bert-tiny'));
  try {
    const want = await st.embedQueries(questions);
    const unprefixed = await st.embed(questions);
    const meanPooled = await plain.embed(questions);
    assert.equal(got.length, want.length);
    const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
    assert.ok(maxDiff(got, want) < 1e-5, `eval queries = the index encoder's embedQueries (max diff ${maxDiff(got, want)})`);
    assert.ok(maxDiff(got, unprefixed) > 1e-3, 'the query prefix is applied');
    assert.ok(maxDiff(got, meanPooled) > 1e-3, 'the index\'s CLS pooling is used, not the model\'s default');
  } finally {
    await st.dispose();
    await plain.dispose();
  }
});

test('the index records its encoder; retrieve refuses another encoder (E_INDEX naming what differs) unless allowed', async () => {
  const passages = f('passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'), 'utf8').split('\n').slice(0, 12).join('\n') + '\n');
  const questions = f('questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'), 'utf8').split('\n').slice(0, 3).join('\n') + '\n');
  const bge = f('bge-like');
  const index = f('index-bge');
  await buildIndex({ passages, encoder: bge, out: index });
  const manifest = JSON.parse(readFileSync(path.join(index, 'manifest.json'), 'utf8'));
  assert.equal(manifest.encoder.ref, bge);
  assert.deepEqual([manifest.encoder.pooling, manifest.encoder.normalize, manifest.encoder.queryPrefix, manifest.encoder.passagePrefix], ['cls', true, QUERY, 'passage: ']);
  assert.match(manifest.encoder.weights, /^[0-9a-f]{32}$/);

  // The same encoder (defaults from the index and the model agree): accepted.
  const ok = await retrieve({ index, encoder: bge, data: questions, out: f('ok.jsonl'), topK: 3 });
  assert.equal(ok.questions, 3);

  // bert-tiny plainly: same weights and dimension, but mean-less settings taken from the index ...
  const same = await retrieve({ index, encoder: fixture('bert-tiny'), data: questions, out: f('same.jsonl'), topK: 3 });
  assert.deepEqual(readFileSync(f('same.jsonl'), 'utf8'), readFileSync(f('ok.jsonl'), 'utf8'));
  assert.equal(same.questions, 3);
  // ... explicit settings that differ are refused, naming them.
  await assert.rejects(
    retrieve({ index, encoder: fixture('bert-tiny'), data: questions, out: f('no.jsonl'), topK: 3, pooling: 'mean', queryPrefix: '' }),
    (e) => hasCode(e, 'E_INDEX') && /pooling \(index: "cls"; given: "mean"\)/.test((e as Error).message) && /queryPrefix/.test((e as Error).message) && !/normalize/.test((e as Error).message),
  );
  // Other weights of the same shape: refused as "weights".
  const other = f('bert-tiny-retrained');
  mkdirSync(other);
  for (const file of readdirSync(fixture('bert-tiny'))) copyFileSync(path.join(fixture('bert-tiny'), file), path.join(other, file));
  const weights = readFileSync(path.join(other, 'model.safetensors'));
  weights[weights.length - 2] ^= 0x01; // a low mantissa bit of the last value
  writeFileSync(path.join(other, 'model.safetensors'), weights);
  await assert.rejects(retrieve({ index, encoder: other, data: questions, out: f('no.jsonl'), topK: 3 }), (e) => hasCode(e, 'E_INDEX') && /weights \(index: /.test((e as Error).message));
  const allowed = await retrieve({ index, encoder: other, data: questions, out: f('allowed.jsonl'), topK: 3, allowEncoderMismatch: true });
  assert.equal(allowed.questions, 3);

  // An index from before the record (none in its manifest) is accepted with any encoder.
  delete manifest.encoder;
  writeFileSync(path.join(index, 'manifest.json'), JSON.stringify(manifest));
  assert.equal((await retrieve({ index, encoder: other, data: questions, out: f('old.jsonl'), topK: 3 })).questions, 3);
});

test('CrossEncoder: score normalize is the sigmoid of the logits; rank orders best first with topK', async () => {
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'));
  const passages = ['Paris is the capital of France.', 'Bananas are yellow.', 'France borders Spain.', 'The sea is salty.'];
  const q = 'what is the capital of france';
  const logits = await ce.score(passages.map(() => q), passages);
  const probs = await ce.score(passages.map(() => q), passages, { normalize: true });
  for (let i = 0; i < logits.length; i++) assert.ok(Math.abs(probs[i] - 1 / (1 + Math.exp(-logits[i]))) < 1e-6);
  const ranked = await ce.rank(q, passages);
  assert.deepEqual(ranked.map((r) => r.index), Array.from(logits, (s, i) => [s, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map(([, i]) => i));
  assert.deepEqual(ranked.map((r) => r.score), ranked.map((r) => logits[r.index]));
  const top2 = await ce.rank(q, passages, { topK: 2, normalize: true });
  assert.deepEqual(top2.map((r) => r.index), ranked.slice(0, 2).map((r) => r.index));
  assert.ok(top2.every((r) => r.score > 0 && r.score < 1));
  await assert.rejects(ce.rank(q, passages, { topK: 0 }), RangeError);
  await ce.dispose();
});

test('CLI: index build records --pooling / --query-prefix; retrieve takes them from the index, refuses other weights, --allow-encoder-mismatch', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
  const index = f('index-cli');
  const built = run(['index', 'build', '--passages', f('passages.jsonl'), '--encoder', fixture('bert-tiny'), '--out', index, '--pooling', 'cls', '--normalize', '--query-prefix', 'q: ']);
  assert.equal(built.status, 0, built.stderr);
  const rec = JSON.parse(readFileSync(path.join(index, 'manifest.json'), 'utf8')).encoder;
  assert.deepEqual([rec.pooling, rec.normalize, rec.queryPrefix, rec.passagePrefix], ['cls', true, 'q: ', '']);
  const base = ['retrieve', '--index', index, '--data', f('questions.jsonl'), '--top-k', '2'];
  const same = run([...base, '--encoder', fixture('bert-tiny'), '--out', f('cli-same.jsonl')]);
  assert.equal(same.status, 0, same.stderr);
  const other = run([...base, '--encoder', f('bert-tiny-retrained'), '--out', f('cli-other.jsonl')]);
  assert.equal(other.status, 1);
  assert.match(other.stderr, /built with another encoder.*weights.*\(E_INDEX\)/);
  const allowed = run([...base, '--encoder', f('bert-tiny-retrained'), '--out', f('cli-allowed.jsonl'), '--allow-encoder-mismatch']);
  assert.equal(allowed.status, 0, allowed.stderr);
});

test('index build and retrieve take the encoder precision: recorded in the index (provenance, not a mismatch) and in retrieve\'s settings', { skip: !engineInfo().backends.includes('dnnl') ? 'no oneDNN backend' : !dnnlHas('int8') || !dnnlHas('bf16') ? 'no oneDNN int8 and bf16 kernels on this CPU (their refusals: test/encoder-dnnl.test.ts)' : false }, async () => {
  const passages = f('precision-passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'), 'utf8').split('\n').slice(0, 12).join('\n') + '\n');
  const questions = f('precision-questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'), 'utf8').split('\n').slice(0, 3).join('\n') + '\n');
  const enc = fixture('bert-tiny');
  const int8 = f('index-int8'), plain = f('index-fp32');
  await buildIndex({ passages, encoder: enc, out: int8, encoderDType: 'int8' });
  await buildIndex({ passages, encoder: enc, out: plain });
  const record = (dir: string) => JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')).encoder;
  assert.equal(record(int8).precision, 'int8');
  assert.equal(record(plain).precision, undefined, 'plain float32 records no precision (manifests as before)');
  // The passages really went through the int8 encoder.
  assert.ok(!readFileSync(path.join(int8, 'vectors.bin')).equals(readFileSync(path.join(plain, 'vectors.bin'))));
  // The CLI flag reaches the encoder.
  const cli = spawnSync(process.execPath, [cliPath, 'index', 'build', '--passages', passages, '--encoder', enc, '--out', f('index-cli-bf16'), '--encoder-dtype', 'bfloat16'], { encoding: 'utf8' });
  assert.equal(cli.status, 0, cli.stderr);
  assert.equal(record(f('index-cli-bf16')).precision, 'bfloat16');

  // A float32 query encoder on the int8 index is accepted; the question encoder's precision is a setting of the output.
  const out32 = f('precision-fp32.jsonl'), outHigh = f('precision-high.jsonl');
  assert.equal((await retrieve({ index: int8, encoder: enc, data: questions, out: out32, topK: 3 })).questions, 3);
  assert.equal((await retrieve({ index: int8, encoder: enc, data: questions, out: outHigh, topK: 3, matmulPrecision: 'high' })).questions, 3);
  assert.equal(readManifest(out32)?.settings.encoderPrecision, undefined);
  assert.equal(readManifest(outHigh)?.settings.encoderPrecision, 'float32/matmul-high');
  await assert.rejects(retrieve({ index: int8, encoder: enc, data: questions, out: f('precision-bad.jsonl'), topK: 3, encoderDType: 'int8', matmulPrecision: 'high' }), TypeError);
});

test('index import records the encoder it is told made the vectors (dimension checked); without one, none', async () => {
  const rows = 12;
  const npy = (dim: number) => {
    const header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, ${dim}), }`;
    const padded = header + ' '.repeat(64 - ((10 + header.length + 1) % 64)) + '\n';
    const head = Buffer.alloc(10);
    head.write('\x93NUMPY', 0, 'latin1');
    head[6] = 1;
    head.writeUInt16LE(padded.length, 8);
    const data = Float32Array.from({ length: rows * dim }, (_, i) => Math.sin(i + 1));
    const file = f(`v${dim}.npy`);
    writeFileSync(file, Buffer.concat([head, Buffer.from(padded, 'latin1'), Buffer.from(data.buffer)]));
    return file;
  };
  const passages = f('passages.jsonl');
  await importIndex({ vectors: npy(64), passages, out: f('imported'), encoder: f('bge-like') });
  const rec = JSON.parse(readFileSync(path.join(f('imported'), 'manifest.json'), 'utf8')).encoder;
  assert.deepEqual([rec.ref, rec.pooling, rec.normalize, rec.queryPrefix], [f('bge-like'), 'cls', true, QUERY]);
  await assert.rejects(importIndex({ vectors: npy(32), passages, out: f('imported-32'), encoder: f('bge-like') }), (e) => hasCode(e, 'E_SHAPE'));
  await importIndex({ vectors: npy(64), passages, out: f('imported-bare') });
  assert.equal(JSON.parse(readFileSync(path.join(f('imported-bare'), 'manifest.json'), 'utf8')).encoder, undefined);
});
