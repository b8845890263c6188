// `gainrag serve` (lib/serve) against servers started here on 127.0.0.1 with free ports and the
// bundled tiny models: every endpoint answers what the library computes for the same inputs,
// concurrent requests are batched without changing results, and the limits and faults
// (429, 413, 400, 401, 404, timeouts, disconnects, SIGTERM) behave as documented.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Encoder } from '../lib/models/encoder.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { PassageStore } from '../lib/io/passages.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { OpenAIGenerator } from '../lib/pipeline/openai-generate.js';
import { DEFAULT_SYSTEM_PROMPT, promptWrapper, retrievedPrompt, standardPrompt, taskInstruction } from '../lib/pipeline/prompts.js';
import { startServer, type GainragServer } from '../lib/serve/server.js';
import { Batcher } from '../lib/serve/batcher.js';
import { dnnlHas } from './capabilities.js';
import { engineInfo } from '../lib/engine.js';
import { cliPath, repoRoot } from './helpers.js';

const models = path.join(repoRoot, 'models');
const encoderDir = path.join(models, 'bert-tiny');
const rerankerDir = path.join(models, 'xlmr-tiny-reranker');
const work = mkdtempSync(path.join(tmpdir(), 'gainrag-serve-'));
const indexDir = path.join(work, 'index');
// llama-tiny with a chat template, for /v1/chat/completions and /gain's wrapping.
const llmDir = path.join(work, 'llama-chat');
const TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

let server: GainragServer;
let encoder: Encoder;
let reranker: CrossEncoder;
let lm: CausalLM;

const passages = readFileSync(path.join(repoRoot, 'data', 'demo', 'passages.jsonl'), 'utf8').split('\n').filter(Boolean).slice(0, 120).map((l) => JSON.parse(l) as { title: string; text: string });
const questions = readFileSync(path.join(repoRoot, 'data', 'demo', 'questions.jsonl'), 'utf8').split('\n').filter(Boolean).slice(0, 40).map((l) => JSON.parse(l) as { question: string; answers: string[] });

before(async () => {
  const llama = path.join(models, 'llama-tiny');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(llmDir);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'generation_config.json']) symlinkSync(path.join(llama, f), path.join(llmDir, f));
  const cfg = JSON.parse(readFileSync(path.join(llama, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(path.join(llmDir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, chat_template: TEMPLATE }));
  const pfile = path.join(work, 'passages.jsonl');
  writeFileSync(pfile, passages.map((p, i) => JSON.stringify({ id: `p${i}`, ...p })).join('\n') + '\n');
  await buildIndex({ passages: pfile, encoder: encoderDir, out: indexDir });
  [encoder, reranker, lm] = await Promise.all([Encoder.load(encoderDir), CrossEncoder.load(rerankerDir), CausalLM.load(llmDir)]);
  server = await startServer({ encoder: encoderDir, reranker: rerankerDir, llm: llmDir, index: indexDir, port: 0, maxBodyBytes: 256 * 1024 });
});

after(async () => {
  await server?.close();
  await Promise.all([encoder?.dispose(), reranker?.dispose(), lm?.dispose()]);
  rmSync(work, { recursive: true, force: true });
});

async function post(url: string, body: unknown, init: RequestInit = {}): Promise<{ status: number; json: any; headers: Headers; text: string }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...(init.headers ?? {}) }, body: typeof body === 'string' ? body : JSON.stringify(body), signal: init.signal });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, headers: res.headers, text };
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-5, what = 'values'): void {
  assert.equal(a.length, b.length, `${what}: lengths differ`);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol, `${what}[${i}]: ${a[i]} vs ${b[i]}`);
}

function rows(flat: Float32Array, dim: number): Float32Array[] {
  return Array.from({ length: flat.length / dim }, (_, i) => flat.subarray(i * dim, (i + 1) * dim));
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

async function metric(base: string, line: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const hit = text.split('\n').find((l) => l.startsWith(`${line} `));
  return hit === undefined ? 0 : Number(hit.slice(line.length + 1));
}

test('/embed and /v1/embeddings equal Encoder.embed (normalized and raw, single string, base64)', async () => {
  const texts = passages.slice(0, 12).map((p) => p.text.slice(0, 80));
  const norm = rows(await encoder.embed(texts, { normalize: true }), encoder.dim);
  const raw = rows(await encoder.embed(texts), encoder.dim);
  const a = await post(`${server.url}/embed`, { inputs: texts });
  assert.equal(a.status, 200);
  a.json.forEach((r: number[], i: number) => close(r, norm[i], 1e-5, `embed ${i}`));
  const b = await post(`${server.url}/embed`, { inputs: texts, normalize: false });
  b.json.forEach((r: number[], i: number) => close(r, raw[i], 1e-5, `raw ${i}`));
  const c = await post(`${server.url}/embed`, { inputs: texts[3] });
  assert.equal(c.json.length, 1);
  close(c.json[0], norm[3]);
  const d = await post(`${server.url}/v1/embeddings`, { input: texts, model: 'bert-tiny' });
  assert.equal(d.status, 200);
  assert.equal(d.json.object, 'list');
  assert.equal(d.json.model, 'bert-tiny');
  d.json.data.forEach((e: { index: number; embedding: number[] }, i: number) => {
    assert.equal(e.index, i);
    close(e.embedding, norm[i]);
  });
  const counted = await encoder.tokenizer.encodeBatch(texts, { maxLength: encoder.maxLength });
  assert.equal(d.json.usage.prompt_tokens, counted.offsets[texts.length]);
  const e = await post(`${server.url}/v1/embeddings`, { input: texts[0], encoding_format: 'base64' });
  const buf = Buffer.from(e.json.data[0].embedding, 'base64');
  close(new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4), norm[0]);
  assert.equal((await post(`${server.url}/v1/embeddings`, { input: 'x', model: 'other' })).status, 404);
});

test('/embed: truncate false refuses an over-long input with 413, truncate true cuts it as the library does', async () => {
  const long = passages.slice(0, 6).map((p) => p.text).join(' ');
  const r = await post(`${server.url}/embed`, { inputs: ['short', long] });
  assert.equal(r.status, 413);
  assert.equal(r.json.error.code, 'E_INVALID_ARG');
  assert.match(r.json.error.message, /inputs\[1\] has more than 128 tokens/);
  const t = await post(`${server.url}/embed`, { inputs: ['short', long], truncate: true });
  assert.equal(t.status, 200);
  const lib = rows(await encoder.embed(['short', long], { normalize: true }), encoder.dim);
  close(t.json[1], lib[1]);
});

test('/rerank equals CrossEncoder.score: sigmoid or raw logits, best first, return_text', async () => {
  const q = questions[0].question;
  const texts = passages.slice(0, 15).map((p) => p.text.slice(0, 120));
  const logits = await reranker.score(texts.map(() => q), texts);
  const r = await post(`${server.url}/rerank`, { query: q, texts, return_text: true, truncate: true });
  assert.equal(r.status, 200);
  assert.equal(r.json.length, texts.length);
  for (let i = 1; i < r.json.length; i++) assert.ok(r.json[i - 1].score >= r.json[i].score, 'sorted best first');
  for (const hit of r.json) {
    assert.ok(Math.abs(hit.score - sigmoid(logits[hit.index])) <= 1e-5);
    assert.equal(hit.text, texts[hit.index]);
  }
  const raw = await post(`${server.url}/rerank`, { query: q, texts, raw_scores: true, truncate: true });
  for (const hit of raw.json) {
    assert.ok(Math.abs(hit.score - logits[hit.index]) <= 1e-5);
    assert.equal(hit.text, undefined);
  }
  const long = await post(`${server.url}/rerank`, { query: q, texts: [passages.slice(0, 4).map((p) => p.text).join(' ')] });
  assert.equal(long.status, 413);
});

test('serve matmulPrecision high: /rerank scores are those of a CrossEncoder loaded the same way', { skip: !engineInfo().backends.includes('dnnl') ? 'no oneDNN backend' : !dnnlHas('bf16') ? 'no oneDNN bf16 kernel on this CPU (its refusal: test/encoder-dnnl.test.ts)' : false }, async () => {
  const s = await startServer({ reranker: rerankerDir, port: 0, matmulPrecision: 'high' });
  try {
    const q = questions[1].question;
    const texts = passages.slice(0, 6).map((p) => p.text.slice(0, 120));
    const high = await CrossEncoder.load(rerankerDir, { matmulPrecision: 'high' });
    const logits = await high.score(texts.map(() => q), texts);
    const r = await post(`${s.url}/rerank`, { query: q, texts, raw_scores: true, truncate: true });
    assert.equal(r.status, 200);
    for (const hit of r.json) assert.ok(Math.abs(hit.score - logits[hit.index]) <= 1e-5);
    assert.equal(s.context.models.reranker?.matmulPrecision, 'high');
    high.dispose();
  } finally {
    await s.close();
  }
});

test('200 concurrent /rerank requests give the sequential results, packed into fewer engine calls', async () => {
  const reqs = Array.from({ length: 200 }, (_, i) => ({
    query: questions[i % questions.length].question,
    texts: passages.slice(i % 50, (i % 50) + 1 + (i % 7)).map((p) => p.text.slice(0, 100 + (i % 5) * 20)),
    raw_scores: true,
    truncate: true,
  }));
  const batchesBefore = await metric(server.url, 'gainrag_batch_requests_count{queue="rerank"}');
  const sequential: { index: number; score: number }[][] = [];
  for (const r of reqs) {
    const answer = await post(`${server.url}/rerank`, r);
    assert.equal(answer.status, 200);
    sequential.push(answer.json);
  }
  const mid = await metric(server.url, 'gainrag_batch_requests_count{queue="rerank"}');
  assert.equal(mid - batchesBefore, 200, 'one engine call per sequential request');
  const concurrent = await Promise.all(reqs.map((r) => post(`${server.url}/rerank`, r)));
  const batches = (await metric(server.url, 'gainrag_batch_requests_count{queue="rerank"}')) - mid;
  concurrent.forEach((c, i) => {
    assert.equal(c.status, 200);
    const byIndex = (hits: { index: number; score: number }[]) => hits.slice().sort((a, b) => a.index - b.index).map((h) => h.score);
    close(byIndex(c.json), byIndex(sequential[i]), 1e-5, `request ${i}`);
  });
  assert.ok(batches < 200, `concurrent requests share engine calls (${batches} calls for 200 requests)`);
});

test('/v1/completions equals CausalLM.generate; stop strings; stream chunks add up to the text', async () => {
  const prompts = questions.slice(0, 6).map((q) => standardPrompt(taskInstruction(), q.question));
  const lib = await lm.generate(prompts, { maxNewTokens: 12 });
  const many = await post(`${server.url}/v1/completions`, { model: 'llama-chat', prompt: prompts, max_tokens: 12, temperature: 0 });
  assert.equal(many.status, 200);
  assert.deepEqual(many.json.choices.map((c: { text: string }) => c.text), lib.texts);
  assert.equal(many.json.object, 'text_completion');
  assert.equal(many.json.usage.completion_tokens, lib.tokenIds.reduce((n, t) => n + t.length, 0));
  // Concurrent single-prompt requests (batched together) give the same texts.
  const each = await Promise.all(prompts.map((prompt) => post(`${server.url}/v1/completions`, { prompt, max_tokens: 12 })));
  assert.deepEqual(each.map((r) => r.json.choices[0].text), lib.texts);
  // A stop string cuts the text before it.
  const text = lib.texts[0];
  const stop = text.slice(3, 6);
  const cut = await post(`${server.url}/v1/completions`, { prompt: prompts[0], max_tokens: 12, stop: [stop] });
  assert.equal(cut.json.choices[0].text, text.slice(0, text.indexOf(stop)));
  assert.equal(cut.json.choices[0].finish_reason, 'stop');
  const s = await post(`${server.url}/v1/completions`, { prompt: prompts[1], max_tokens: 12, stream: true });
  assert.match(s.headers.get('content-type') ?? '', /^text\/event-stream/);
  const events = s.text.split('\n\n').filter(Boolean);
  assert.equal(events.at(-1), 'data: [DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, '')));
  assert.equal(chunks.map((c) => c.choices[0].text).join(''), lib.texts[1]);
  assert.ok(chunks.length > 2);
  assert.equal(chunks.at(-1).choices[0].finish_reason, lib.tokenIds[1].length < 12 ? 'stop' : 'length');
  assert.equal((await post(`${server.url}/v1/completions`, { prompt: 'x', temperature: 0.7 })).json.error.code, 'E_UNSUPPORTED');
});

test("OpenAIGenerator (--generate-url) pointed at our /v1/completions gets CausalLM.generate's text", async () => {
  const wrapped = questions.slice(0, 10).map((q) => standardPrompt(taskInstruction(), q.question));
  const lib = await lm.generate(wrapped, { maxNewTokens: 10 });
  const gen = new OpenAIGenerator({ url: server.url, concurrency: 4 });
  const got = await gen.generate(wrapped.map((w) => ({ raw: w, wrapped: w })), { maxNewTokens: 10 });
  assert.deepEqual(got, lib.texts);
});

test('/v1/chat/completions renders the chat template and equals generate on the rendered prompt', async () => {
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: questions[2].question }];
  const prompt = lm.applyChatTemplate(messages, { addGenerationPrompt: true });
  const lib = await lm.generate([prompt], { maxNewTokens: 9 });
  const r = await post(`${server.url}/v1/chat/completions`, { model: 'llama-chat', messages, max_tokens: 9 });
  assert.equal(r.status, 200);
  assert.equal(r.json.object, 'chat.completion');
  assert.deepEqual(r.json.choices[0].message, { role: 'assistant', content: lib.texts[0] });
  const s = await post(`${server.url}/v1/chat/completions`, { messages, max_tokens: 9, stream: true });
  const chunks = s.text.split('\n\n').filter((e) => e && e !== 'data: [DONE]').map((e) => JSON.parse(e.slice(6)));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), lib.texts[0]);
});

test('stream: true: chunks add up to the non-streamed answer (stop strings too); a client gone mid-stream stops its generation in the engine', async () => {
  const prompt = standardPrompt(taskInstruction(), questions[3].question);
  const text = (await post(`${server.url}/v1/completions`, { prompt, max_tokens: 16 })).json.choices[0].text as string;
  const stop = text.slice(4, 7);
  assert.ok(stop.length === 3, `precondition: a text to cut (${JSON.stringify(text)})`);
  const plain = await post(`${server.url}/v1/completions`, { prompt, max_tokens: 16, stop: [stop] });
  const streamed = await post(`${server.url}/v1/completions`, { prompt, max_tokens: 16, stop: [stop], stream: true });
  const chunks = streamed.text.split('\n\n').filter((e) => e && e !== 'data: [DONE]').map((e) => JSON.parse(e.slice(6)));
  assert.equal(chunks.map((c) => c.choices[0].text).join(''), plain.json.choices[0].text);
  assert.equal(plain.json.choices[0].text, text.slice(0, text.indexOf(stop)));
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');

  // A long answer (no EOS within max_tokens): read its first chunk, then hang up.
  const max = 400;
  const lib = await lm.generate([prompt], { maxNewTokens: max });
  assert.equal(lib.tokenIds[0].length, max, 'precondition: the answer runs to max_tokens');
  const engine = server.context.models.lm!;
  const before = engine.stats();
  const batches = 'gainrag_batch_duration_seconds_count{queue="generate"}';
  const [batchesBefore, cancelledBefore] = [await metric(server.url, batches), await metric(server.url, 'gainrag_queue_cancelled_total{queue="generate"}')];
  const ac = new AbortController();
  const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: max, stream: true }), signal: ac.signal });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  let seen = '';
  while (!/"text":"[^"]/.test(seen)) {
    const { value, done } = await reader.read();
    assert.equal(done, false, 'the stream ended before its first text chunk');
    seen += new TextDecoder().decode(value);
  }
  ac.abort();
  // The engine call ends (its batch is counted) once the row is stopped.
  while ((await metric(server.url, batches)) === batchesBefore) await new Promise((r) => setTimeout(r, 20));
  const generated = engine.stats().generatedTokens - before.generatedTokens;
  assert.ok(generated < max, `the first chunk came while the engine was still decoding, and the hang-up stopped it (${generated} of ${max} tokens made)`);
  assert.equal(await metric(server.url, 'gainrag_queue_cancelled_total{queue="generate"}'), cancelledBefore + 1);
  // The server serves on.
  assert.equal((await post(`${server.url}/v1/completions`, { prompt, max_tokens: 16 })).json.choices[0].text, text);
});

test('/retrieve equals Encoder.embed + DenseIndex.search over the same index', async () => {
  const index = await DenseIndex.open(indexDir);
  const store = PassageStore.open(indexDir);
  try {
    const qs = questions.slice(0, 5).map((q) => q.question);
    const { ids, scores } = await index.search(await encoder.embed(qs), 4);
    const r = await post(`${server.url}/retrieve`, { query: qs, top_k: 4 });
    assert.equal(r.status, 200);
    r.json.results.forEach((hits: { row: number; id: string; score: number; text: string }[], q: number) => {
      assert.deepEqual(hits.map((h) => h.row), Array.from(ids.subarray(q * 4, q * 4 + 4), Number));
      close(hits.map((h) => h.score), scores.subarray(q * 4, q * 4 + 4));
      hits.forEach((h) => assert.equal(h.text, store.get(h.row).text));
    });
    const one = await post(`${server.url}/retrieve`, { query: qs[0], top_k: 2, return_text: false });
    assert.equal(one.json.results.length, 2);
    assert.equal(one.json.results[0].text, undefined);
  } finally {
    store.close();
    await index.dispose();
  }
});

test("/gain equals contrastivePerplexity with synthesize's prompts", async () => {
  const q = questions[0];
  const ps = passages.slice(0, 3).map((p) => ({ title: p.title, text: p.text.slice(0, 200) }));
  const instruction = taskInstruction();
  const wrap = promptWrapper(lm, 'auto', true, DEFAULT_SYSTEM_PROMPT);
  const [lib] = await lm.contrastivePerplexity([{
    standardPrompt: wrap(standardPrompt(instruction, q.question)),
    contextPrompts: ps.map((p) => wrap(retrievedPrompt(instruction, q.question, p.title, p.text))),
    answers: q.answers,
  }], { alpha: 0.5 });
  const r = await post(`${server.url}/gain`, { question: q.question, answers: q.answers, passages: ps });
  assert.equal(r.status, 200);
  close(r.json.passages.map((p: { PPL_CD: number }) => p.PPL_CD), lib.min, 1e-5 * Math.max(...lib.min));
  close(r.json.passages.map((p: { retrieved_ppl: number }) => p.retrieved_ppl), lib.plainMin, 1e-5 * Math.max(...lib.plainMin));
  assert.equal(r.json.passages[1].prompt_retrieved, retrievedPrompt(instruction, q.question, ps[1].title, ps[1].text));
  const bad = await post(`${server.url}/gain`, { question: q.question, answers: [], passages: ps });
  assert.equal(bad.status, 400);
});

test('malformed and oversized bodies: 400 / 413 with our error codes; unknown routes 404; /info, /health, /v1/models, /metrics', async () => {
  for (const body of ['{"inputs": ', '[1, 2]', '"text"', '{"inputs": 3}', '{"inputs": []}', '{"inputs": ["a", 2]}', '{"inputs": "a", "normalize": "yes"}']) {
    const r = await post(`${server.url}/embed`, body);
    assert.equal(r.status, 400, body);
    assert.equal(r.json.error.code, 'E_INVALID_ARG', body);
    assert.equal(typeof r.json.error.message, 'string');
  }
  assert.equal((await post(`${server.url}/rerank`, { query: 'q' })).status, 400);
  const big = await post(`${server.url}/embed`, { inputs: ['x'.repeat(300 * 1024)] });
  assert.equal(big.status, 413);
  assert.equal(big.json.error.code, 'E_INVALID_ARG');
  const missing = await fetch(`${server.url}/nothing-here`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, 'E_INVALID_ARG');
  const info = await (await fetch(`${server.url}/info`)).json();
  assert.equal(info.model_id, 'bert-tiny');
  assert.equal(info.models.reranker.id, 'xlmr-tiny-reranker');
  assert.deepEqual(await (await fetch(`${server.url}/health`)).json(), { status: 'ok' });
  const list = await (await fetch(`${server.url}/v1/models`)).json();
  assert.equal(list.data[0].id, 'llama-chat');
  const m = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(m, /# TYPE gainrag_http_requests_total counter/);
  assert.match(m, /gainrag_http_requests_total\{route="\/embed",status="413"\} \d+/);
  assert.match(m, /gainrag_batch_inputs_bucket\{queue="rerank",le="\+Inf"\} \d+/);
  assert.match(m, /gainrag_queue_depth\{queue="embed"\} 0/);
  assert.match(m, /gainrag_tokens_total\{queue="generate",kind="completion"\} \d+/);
});

test('a full queue answers 429 with Retry-After and the server keeps serving; a route without its model is 404', async () => {
  // One waiting request at most; the first waits 300 ms for company, so the rest find the queue full.
  const small = await startServer({ reranker: rerankerDir, port: 0, maxQueue: 1, maxWaitMs: 300 });
  try {
    const body = { query: 'q', texts: ['a b c', 'd e f'] };
    const all = await Promise.all(Array.from({ length: 20 }, () => post(`${small.url}/rerank`, body)));
    const busy = all.filter((r) => r.status === 429);
    assert.ok(busy.length > 0, 'some requests were refused');
    assert.ok(all.some((r) => r.status === 200), 'some were served');
    assert.equal(busy[0].headers.get('retry-after'), '1');
    assert.equal(busy[0].json.error.code, 'E_BUSY');
    assert.equal(all.filter((r) => r.status !== 200 && r.status !== 429).length, 0);
    const later = await post(`${small.url}/rerank`, body);
    assert.equal(later.status, 200);
    assert.equal(await metric(small.url, 'gainrag_queue_rejected_total{queue="rerank"}'), busy.length);
    const none = await post(`${small.url}/embed`, { inputs: 'x' });
    assert.equal(none.status, 404);
    assert.equal(none.json.error.code, 'E_UNSUPPORTED');
    assert.equal((await post(`${small.url}/v1/completions`, { prompt: 'x' })).status, 404);
  } finally {
    await small.close();
  }
});

test('a disconnected client leaves the queue; a request past its timeout gets 504; the bearer key is required', async () => {
  const slow = await startServer({ encoder: encoderDir, port: 0, maxWaitMs: 60_000, requestTimeoutMs: 3000, apiKey: 'sesame' });
  const auth = { headers: { authorization: 'Bearer sesame' } };
  try {
    assert.equal((await post(`${slow.url}/embed`, { inputs: 'x' })).status, 401);
    assert.equal((await post(`${slow.url}/embed`, { inputs: 'x' }, { headers: { authorization: 'Bearer wrong' } })).status, 401);
    assert.equal((await fetch(`${slow.url}/health`)).status, 200);
    const depth = async () => {
      const r = await fetch(`${slow.url}/metrics`, auth);
      const line = (await r.text()).split('\n').find((l) => l.startsWith('gainrag_queue_depth{queue="embed"}'));
      return Number(line?.split(' ')[1]);
    };
    const ac = new AbortController();
    const gone = post(`${slow.url}/embed`, { inputs: 'x' }, { ...auth, signal: ac.signal }).catch((e) => e);
    while ((await depth()) !== 1) await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    assert.equal(((await gone) as Error).name, 'AbortError');
    while ((await depth()) !== 0) await new Promise((r) => setTimeout(r, 20));
    const timedOut = await post(`${slow.url}/embed`, { inputs: 'y' }, auth);
    assert.equal(timedOut.status, 504);
    assert.equal(timedOut.json.error.code, 'E_CANCELLED');
    assert.equal(await depth(), 0);
    const m = await (await fetch(`${slow.url}/metrics`, auth)).text();
    assert.match(m, /gainrag_queue_cancelled_total\{queue="embed"\} 2/);
    // Neither request reached the engine.
    assert.doesNotMatch(m, /gainrag_batch_requests_count\{queue="embed"\}/);
  } finally {
    await slow.close();
  }
});

test('SIGTERM: the CLI server finishes the request in flight, then exits 0', async () => {
  const child = spawn(process.execPath, [cliPath, 'serve', '--encoder', encoderDir, '--port', '0', '--max-wait-ms', '1500', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]).url);
    });
    child.on('exit', () => reject(new Error(`serve exited early: ${stderr}`)));
  });
  const texts = ['drain me', 'and me'];
  // Queued for up to 1.5 s (max-wait-ms) when SIGTERM arrives.
  const inflight = post(`${url}/embed`, { inputs: texts });
  for (;;) {
    const m = await (await fetch(`${url}/metrics`)).text();
    if (/gainrag_queue_depth\{queue="embed"\} 1/.test(m)) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGTERM');
  const r = await inflight;
  assert.equal(r.status, 200);
  const lib = rows(await encoder.embed(texts, { normalize: true }), encoder.dim);
  close(r.json[0], lib[0]);
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /SIGTERM: draining/);
  await assert.rejects(fetch(`${url}/health`));
});

test('Batcher: packs by key and budget, splits results back; a cancelled request aborts the engine call only when the batch is all its own', async () => {
  const calls: { items: number[]; key: string; signal: AbortSignal; release: () => void }[] = [];
  const b = new Batcher<number, number>({
    name: 't', maxBatchTokens: 10, maxWaitMs: 0, maxQueue: 100,
    run: (items, key, signal) => new Promise((resolve, reject) => {
      const call = { items, key, signal, release: () => resolve(items.map((x) => x * 10)) };
      calls.push(call);
      signal.addEventListener('abort', () => reject(signal.reason));
    }),
  });
  const never = new AbortController().signal;
  // The first request runs alone; the next four wait for it, then pack by key and budget.
  const first = b.submit([1], 1, 'a', never);
  await new Promise((r) => setImmediate(r));
  const ps = [b.submit([2, 3], 4, 'a', never), b.submit([4], 4, 'b', never), b.submit([5], 4, 'a', never), b.submit([6], 4, 'a', never)];
  assert.equal(b.depth, 4);
  calls[0].release();
  assert.deepEqual(await first, [10]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(calls[1].items, [2, 3, 5]); // key 'a' up to 10 tokens: 4 + 4, the third would pass it
  calls[1].release();
  assert.deepEqual(await ps[0], [20, 30]);
  assert.deepEqual(await ps[2], [50]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(calls[2].items, [4]); // the older request of key 'b' goes next
  calls[2].release();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(calls[3].items, [6]);
  calls[3].release();
  assert.deepEqual(await Promise.all([ps[1], ps[3]]), [[40], [60]]);

  // Two requests in one running batch: one leaves (answered E_CANCELLED at once), the call goes on.
  const gate = b.submit([0], 1, 'c', never);
  await new Promise((r) => setImmediate(r));
  const x = new AbortController();
  const y = new AbortController();
  const px = b.submit([7], 1, 'c', x.signal);
  const py = b.submit([8], 1, 'c', y.signal);
  calls[4].release();
  await gate;
  await new Promise((r) => setImmediate(r));
  const shared = calls[5];
  assert.deepEqual(shared.items, [7, 8]);
  x.abort(new Error('x went away'));
  await assert.rejects(px, /x went away/);
  assert.equal(shared.signal.aborted, false, 'the other request still wants the results');
  shared.release();
  assert.deepEqual(await py, [80]);

  // A batch of one request: its cancellation reaches the engine call's signal.
  const z = new AbortController();
  const pz = b.submit([9], 1, 'd', z.signal);
  await new Promise((r) => setImmediate(r));
  z.abort(new Error('z went away'));
  await assert.rejects(pz, /z went away/);
  assert.equal(calls[6].signal.aborted, true);
  // Queue bound: 429 with Retry-After once maxQueue requests wait.
  const tiny = new Batcher<number, number>({ name: 'q', maxBatchTokens: 1, maxWaitMs: 0, maxQueue: 1, run: () => new Promise(() => undefined) });
  void tiny.submit([1], 1, 'k', never);
  await new Promise((r) => setImmediate(r));
  void tiny.submit([2], 1, 'k', never);
  await assert.rejects(tiny.submit([3], 1, 'k', never), (e: { status?: number; retryAfter?: number; code?: string }) => e.status === 429 && e.retryAfter === 1 && e.code === 'E_BUSY');
});

test('draining: new requests get 503 (E_DISPOSED) in our error format while the one in flight finishes', async () => {
  const s = await startServer({ encoder: encoderDir, port: 0, maxWaitMs: 1000 });
  const inflight = post(`${s.url}/embed`, { inputs: 'last one' });
  while (s.context.embed!.depth !== 1) await new Promise((r) => setTimeout(r, 10));
  const closed = s.close();
  const late = await s.app.inject({ method: 'POST', url: '/embed', payload: { inputs: 'too late' } });
  assert.equal(late.statusCode, 503);
  assert.equal(late.json().error.code, 'E_DISPOSED');
  assert.equal(late.headers.connection, 'close');
  assert.equal((await inflight).status, 200);
  await closed;
});
