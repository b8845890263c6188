// TEI clients (lib/pipeline/tei-client.ts) against a real TEI-compatible server (gainrag serve,
// started here on 127.0.0.1): select with --rerank-url writes what select with the local selector
// writes (scores within float tolerance, the same passages kept), and a busy server (503, 429 with
// Retry-After) is retried.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServer } from '../lib/serve/server.js';
import { TeiEmbedder, TeiReranker } from '../lib/pipeline/tei-client.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { cliPath, fixture } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-tei-'));
after(() => rmSync(work, { recursive: true, force: true }));
const reranker = fixture('xlmr-tiny-reranker');

function records(n: number): string {
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      question: `which passage is number ${i}?`, answers: [`answer ${i}`], pseudo_passage: `background on ${i}`,
      ctxs: [0, 1, 2, 3].map((j) => ({ title: `title ${j}`, text: j === i % 4 ? `this passage holds answer ${i}` : `passage ${j} about something else entirely` })),
    }),
  ).join('\n') + '\n';
}

test('select --rerank-url against a TEI server equals select with the local selector', async () => {
  const server = await startServer({ reranker, port: 0 });
  try {
    const data = path.join(work, 'in.jsonl');
    writeFileSync(data, records(6));
    // Asynchronously: the server answers from this process's event loop.
    const run = async (out: string, args: string[]) => {
      await promisify(execFile)(process.execPath, [cliPath, 'select', '--data', data, '--out', out, '--k-docs', '3', '--json', ...args], { encoding: 'utf8' });
      return readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    };
    const local = await run(path.join(work, 'local.jsonl'), ['--selector', reranker]);
    const remote = await run(path.join(work, 'remote.jsonl'), ['--rerank-url', server.url, '--rerank-batch', '2']);
    assert.equal(remote.length, local.length);
    remote.forEach((r, i) => {
      assert.deepEqual(r.ctxs.map((c: { text: string }) => c.text), local[i].ctxs.map((c: { text: string }) => c.text), `record ${i}: the same passages kept`);
      r.ctxs.forEach((c: { selector_score: number }, j: number) => assert.ok(Math.abs(c.selector_score - local[i].ctxs[j].selector_score) < 1e-4, `record ${i} rank ${j}`));
    });
    // The client alone: the library's raw logits for the same pairs.
    const tei = new TeiReranker({ url: server.url, batchSize: 3 });
    const q = ['q one', 'q one', 'q one', 'q one', 'q two'];
    const p = ['a\nfirst', 'b\nsecond', 'c\nthird', 'd\nfourth', 'e\nfifth'];
    const model = await CrossEncoder.load(reranker);
    try {
      const want = await model.score(q, p);
      const got = await tei.score(q, p);
      want.forEach((v, i) => assert.ok(Math.abs(v - got[i]) < 1e-4, `pair ${i}: ${got[i]} vs ${v}`));
    } finally {
      model.dispose();
    }
  } finally {
    await server.close();
  }
});

test('a busy TEI server is retried (503, then 429 with Retry-After); a 400 fails at once with the server\'s words', async () => {
  const answers: { status: number; body: unknown; headers?: Record<string, string> }[] = [
    { status: 503, body: { error: 'loading' } },
    { status: 429, body: { error: 'busy' }, headers: { 'retry-after': '0' } },
    { status: 200, body: [{ index: 1, score: -2 }, { index: 0, score: 3.5 }] },
    { status: 400, body: { error: 'bad texts' } },
  ];
  let calls = 0;
  const http = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const a = answers[Math.min(calls++, answers.length - 1)];
      res.writeHead(a.status, { 'content-type': 'application/json', ...(a.headers ?? {}) });
      res.end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
    const tei = new TeiReranker({ url, backoffMs: 1 });
    assert.deepEqual(Array.from(await tei.score(['q', 'q'], ['x', 'y'])), [3.5, -2]);
    assert.equal(calls, 3);
    await assert.rejects(tei.score(['q'], ['x']), { code: 'E_IO', errno: 'HTTP_400', message: /bad texts/ });
    assert.equal(calls, 4, 'a 400 is not retried');
  } finally {
    http.close();
  }
});

test("a server still busy (429 E_BUSY) after every retry is E_BUSY; its Retry-After is what the client waits, not its own backoff", async () => {
  let calls = 0;
  const http = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      calls++;
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '0' });
      res.end(JSON.stringify({ error: { message: 'server busy: the embed queue is full', code: 'E_BUSY' } }));
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
    // A ten-minute backoff: only by honouring Retry-After: 0 does this finish within the test's run.
    const tei = new TeiEmbedder({ url, retries: 2, backoffMs: 600_000, maxDelayMs: 600_000 });
    await assert.rejects(tei.embed(['x']), { code: 'E_BUSY', errno: 'HTTP_429', message: /queue is full.*gave up after 3 attempts/ });
    assert.equal(calls, 3);
  } finally {
    http.close();
  }
});
