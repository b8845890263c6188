// index build --embed-url and retrieve --embed-url (lib/retrieval/remote-encoder.ts) against
// gainrag serve started here on 127.0.0.1 with the bundled bi-encoder: an index embedded by the
// server retrieves what the locally built one does, retrieval with the server's query vectors
// equals the local encoder's (ids, scores within 1e-4), the manifest says the vectors came from
// a URL, and the encoder-mismatch check compares the server's model id and settings.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServer, type GainragServer } from '../lib/serve/server.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { retrieve } from '../lib/retrieval/retrieve.js';
import { buildAnn, faissAvailable } from '../lib/retrieval/ann.js';
import { evalIndex } from '../lib/retrieval/eval-ann.js';
import { encoderDifferences, readEncoderRecord } from '../lib/retrieval/encoder-record.js';
import { repoRoot } from './helpers.js';

const encoderDir = path.join(repoRoot, 'models', 'bert-tiny');
const work = mkdtempSync(path.join(tmpdir(), 'gainrag-embed-url-'));
const passages = path.join(work, 'passages.jsonl');
const questions = path.join(work, 'questions.jsonl');
const TOP_K = 5;
let server: GainragServer;

before(async () => {
  const lines = (f: string, n: number) => readFileSync(path.join(repoRoot, 'data', 'demo', f), 'utf8').split('\n').filter(Boolean).slice(0, n).join('\n') + '\n';
  writeFileSync(passages, lines('passages.jsonl', 150));
  writeFileSync(questions, lines('questions.jsonl', 30));
  server = await startServer({ encoder: encoderDir, port: 0 });
});

after(async () => {
  await server?.close();
  rmSync(work, { recursive: true, force: true });
});

type Ctx = { id: string; score: number };
async function run(name: string, o: { index: string; encoder?: string; embedUrl?: string; queryPrefix?: string }): Promise<Ctx[][]> {
  const out = path.join(work, `${name}.jsonl`);
  await retrieve({ ...o, data: questions, out, topK: TOP_K, batchSize: 16, embedClient: { batchSize: 7 } });
  return readFileSync(out, 'utf8').trim().split('\n').map((l) => (JSON.parse(l).ctxs as Ctx[]).map((c) => ({ id: c.id, score: c.score })));
}

function sameRanking(got: Ctx[][], want: Ctx[][], what: string): void {
  assert.equal(got.length, want.length);
  got.forEach((g, q) => {
    assert.deepEqual(g.map((c) => c.id), want[q].map((c) => c.id), `${what}: question ${q}`);
    g.forEach((c, j) => assert.ok(Math.abs(c.score - want[q][j].score) < 1e-4, `${what}: question ${q} rank ${j}: ${c.score} vs ${want[q][j].score}`));
  });
}

test('an index built with --embed-url retrieves as the local one; retrieve --embed-url equals the local encoder', async () => {
  const local = path.join(work, 'local-index');
  const remote = path.join(work, 'remote-index');
  await buildIndex({ passages, encoder: encoderDir, out: local });
  // bert-tiny has no Normalize module; the server is asked for the same (TEI's default is true).
  await buildIndex({ passages, embedUrl: server.url, normalize: false, out: remote, batchSize: 64, embedClient: { batchSize: 5 } });

  const rec = readEncoderRecord(remote)!;
  assert.equal(rec.url, `${server.url}/`);
  assert.equal(rec.modelId, 'bert-tiny', "the server's /info model_id");
  assert.equal(rec.weights, null);
  assert.equal(rec.pooling, 'mean');
  assert.equal(rec.normalize, false);

  const want = await run('local-local', { index: local, encoder: encoderDir });
  sameRanking(await run('local-remote', { index: local, embedUrl: server.url }), want, 'local index, server queries');
  sameRanking(await run('remote-local', { index: remote, encoder: encoderDir }), want, 'server index, local queries');
  sameRanking(await run('remote-remote', { index: remote, embedUrl: server.url }), want, 'server index, server queries');

  // The mismatch check still holds with a server: another query prefix than the index's is refused.
  await assert.rejects(run('bad', { index: local, embedUrl: server.url, queryPrefix: 'query: ' }), { code: 'E_INDEX', message: /queryPrefix/ });
  // Local-only settings are refused with a URL rather than silently dropped.
  await assert.rejects(buildIndex({ passages, embedUrl: server.url, out: path.join(work, 'x'), maxLength: 16 }), { code: 'E_INVALID_ARG', message: /--max-length/ });
  await assert.rejects(buildIndex({ passages, out: path.join(work, 'y') }), { code: 'E_INVALID_ARG', message: /--embed-url/ });
});

test("encoderDifferences: a server's model id stands for its weights", () => {
  const local = { ref: '/models/bge-small-en', revision: null, weights: 'abc', pooling: 'cls', normalize: true, queryPrefix: '', passagePrefix: '' };
  const served = { ...local, ref: 'http://h/', weights: null, url: 'http://h/', modelId: 'BAAI/bge-small-en' };
  assert.deepEqual(encoderDifferences(local, served), [], 'the same model by hub id and by directory name');
  assert.match(encoderDifferences(local, { ...served, modelId: 'intfloat/e5-small' }).join(), /^model \(index: "\/models\/bge-small-en"; given: "intfloat\/e5-small"\)$/);
  assert.match(encoderDifferences({ ...served, pooling: 'last_token' }, local).join(), /pooling/);
  assert.deepEqual(encoderDifferences({ ...served, pooling: 'unknown' }, local), [], 'a server that does not say how it pools');
});

test('index eval --embed-url: the server embeds the questions as the local encoder does (same recall)', { skip: faissAvailable() ? false : 'no FAISS in this build' }, async () => {
  const index = path.join(work, 'eval-index');
  await buildIndex({ passages, encoder: encoderDir, out: index });
  await buildAnn(index, { factory: 'IVF4,Flat', trainSize: 150 });
  const local = await evalIndex({ index, data: questions, encoder: encoderDir, k: 10 });
  const remote = await evalIndex({ index, data: questions, embedUrl: server.url, embedClient: { batchSize: 7 }, k: 10 });
  assert.equal(remote.queries, 30);
  assert.equal(remote.queries, local.queries);
  // FAISS's default nprobe 1 of 4 lists: recall well below 1, so equal recall is not a given.
  assert.ok(local.recall['10'] < 0.99, `recall ${local.recall['10']}`);
  // Vectors within float rounding: at most one near-tie per query set may flip.
  for (const at of ['1', '10']) assert.ok(Math.abs(remote.recall[at] - local.recall[at]) <= 1 / (30 * Number(at)) + 1e-9, `R@${at}: ${remote.recall[at]} vs ${local.recall[at]}`);
  await assert.rejects(evalIndex({ index, data: questions, encoder: encoderDir, embedUrl: server.url }), { code: 'E_INVALID_ARG' });
});
