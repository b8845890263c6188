// `gainrag select` end to end: real retrieval (index build + retrieve with the fixture bi-encoder
// on open SQuAD), then selection with the fixture reranker and pseudo-passages from the fixture
// Llama. Checked against an independent ranking (every pair scored one question at a time here),
// recall recomputed from the files, SIGKILL + --resume, and bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { hasAnswer } from '../lib/retrieval/has-answer.js';
import { rankCandidates, select } from '../lib/pipeline/select.js';
import { backgroundPrompt } from '../lib/pipeline/prompts.js';
import { cliPath, dataDir, fixture } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-select-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const squad = path.join(dataDir, 'squad_v1.1_dev_open');
const reranker = fixture('xlmr-tiny-reranker');
const llm = fixture('llama-tiny');
const QUESTIONS = 40;
const TOP = 20;

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function headLines(file: string, n: number, out: string): string {
  writeFileSync(out, readFileSync(file, 'utf8').split('\n').slice(0, n).join('\n') + '\n');
  return out;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function readJsonl(file: string): any[] {
  return readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

let retrieved = '';
function retrievedFile(): string {
  if (retrieved) return retrieved;
  const passages = headLines(path.join(squad, 'passages.jsonl'), 300, path.join(work, 'passages.jsonl'));
  const questions = headLines(path.join(squad, 'questions.jsonl'), QUESTIONS, path.join(work, 'questions.jsonl'));
  const index = path.join(work, 'index');
  const b = cli(['index', 'build', '--passages', passages, '--encoder', fixture('bert-tiny'), '--out', index, '--json']);
  assert.equal(b.status, 0, b.stderr);
  const out = path.join(work, 'retrieved.jsonl');
  const r = cli(['retrieve', '--index', index, '--encoder', fixture('bert-tiny'), '--data', questions, '--top-k', String(TOP), '--out', out, '--json']);
  assert.equal(r.status, 0, r.stderr);
  retrieved = out;
  return out;
}

const selectArgs = (data: string, out: string, extra: string[] = []) =>
  ['select', '--data', data, '--selector', reranker, '--out', out, '--llm', llm, '--pseudo-max-new-tokens', '12', '--json', ...extra];

test("rankCandidates: highest first, NaN last; ties put the later candidate first (the reference's argsort) unless told otherwise", () => {
  assert.deepEqual(rankCandidates([1, 2, 2, Number.NaN, 0]), [2, 1, 0, 4, 3]);
  assert.deepEqual(rankCandidates(new Float32Array([-1, -1, -1])), [2, 1, 0]);
  assert.deepEqual(rankCandidates([1, 2, 2, Number.NaN, 0], 'earlier'), [1, 2, 0, 4, 3]);
  assert.deepEqual(rankCandidates(new Float32Array([-1, -1, -1]), 'earlier'), [0, 1, 2]);
});

test('select keeps the independent ranking; recall and pseudoSelected match the file', async () => {
  const data = retrievedFile();
  const out = path.join(work, 'all.jsonl');
  // k-docs = every candidate, so the whole reranked list is in the file.
  const r = cli(selectArgs(data, out, ['--k-docs', String(TOP + 1), '--batch-questions', '16']));
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  const inputs = readJsonl(data);
  const records = readJsonl(out);
  assert.equal(summary.questions, QUESTIONS);
  assert.equal(records.length, QUESTIONS);
  assert.equal(summary.pairs, QUESTIONS * (TOP + 1));
  assert.equal(summary.pseudoGenerated, QUESTIONS);

  const ce = await CrossEncoder.load(reranker);
  let pseudoTop = 0;
  const origin = [0, 0, 0];
  const rerank = [0, 0, 0];
  for (const [i, rec] of records.entries()) {
    const input = inputs[i];
    assert.equal(rec.question, input.question);
    assert.equal(typeof rec.pseudo_passage, 'string');
    const cands = [...input.ctxs.map((c: { title: string; text: string }) => ({ title: c.title, text: c.text })), { title: '', text: rec.pseudo_passage }];
    // One question per call: a different batching from select's, so scores agree to rounding.
    const scores = await ce.score(cands.map(() => input.question), cands.map((c) => `${c.title}\n${c.text}`));
    const expected = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
    assert.equal(rec.ctxs.length, cands.length);
    rec.ctxs.forEach((c: { title: string; text: string; selector_score: number; hasanswer: boolean; pseudo?: boolean }, j: number) => {
      const want = cands[expected[j]];
      const same = c.title === want.title && c.text === want.text;
      // Only candidates whose scores tie to rounding may trade places.
      if (!same) {
        const got = cands.findIndex((x) => x.title === c.title && x.text === c.text);
        assert.ok(Math.abs(scores[got] - scores[expected[j]]) < 1e-4, `record ${i} rank ${j}: ${c.title} instead of ${want.title}`);
      }
      assert.ok(Math.abs(c.selector_score - scores[cands.findIndex((x) => x.title === c.title && x.text === c.text)]) < 1e-4);
      assert.equal(c.hasanswer, hasAnswer(c.text, input.answers));
      assert.equal(c.pseudo === true, c.text === rec.pseudo_passage && c.title === '');
    });
    if (rec.ctxs[0].pseudo) pseudoTop++;
    [1, 3, 5].forEach((k, n) => {
      if (input.ctxs.slice(0, k).some((c: { hasanswer: boolean }) => c.hasanswer)) origin[n]++;
      if (rec.ctxs.slice(0, k).some((c: { hasanswer: boolean }) => c.hasanswer)) rerank[n]++;
    });
  }
  assert.equal(summary.pseudoSelected, pseudoTop);
  [1, 3, 5].forEach((k, n) => {
    assert.equal(summary.originRecall[k], origin[n] / QUESTIONS, `originRecall@${k}`);
    assert.equal(summary.rerankRecall[k], rerank[n] / QUESTIONS, `rerankRecall@${k}`);
  });

  // Selecting again from that output reuses its pseudo-passages (no --llm) and keeps the same top-1.
  const again = path.join(work, 'again.jsonl');
  const r2 = cli(['select', '--data', out, '--selector', reranker, '--out', again, '--json']);
  assert.equal(r2.status, 0, r2.stderr);
  const s2 = JSON.parse(r2.stdout);
  assert.equal(s2.pseudoReused, QUESTIONS);
  assert.equal(s2.pseudoGenerated, 0);
  readJsonl(again).forEach((rec, i) => {
    assert.equal(rec.ctxs.length, 1);
    assert.equal(rec.ctxs[0].text, records[i].ctxs[0].text);
  });
});

test('SIGKILL mid-run + --resume gives the same bytes as an uninterrupted run', async () => {
  const data = headLines(retrievedFile(), 16, path.join(work, 'retrieved16.jsonl'));
  const full = path.join(work, 'full.jsonl');
  const extra = ['--k-docs', '3', '--batch-questions', '4'];
  const r = cli(selectArgs(data, full, extra));
  assert.equal(r.status, 0, r.stderr);

  const cut = path.join(work, 'cut.jsonl');
  const partial = `${cut}.partial`;
  const child = spawn(process.execPath, [cliPath, ...selectArgs(data, cut, extra)], { cwd: work, stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  // Kill as soon as the first group is on disk (an event, not a delay).
  await new Promise<void>((resolve) => {
    const poll = setInterval(() => {
      if (existsSync(partial) && statSync(partial).size > 0) {
        child.kill('SIGKILL');
        clearInterval(poll);
        resolve();
      }
    }, 2);
  });
  await exited;
  assert.equal(existsSync(cut), false, 'a killed run must not publish its output');
  const kept = readFileSync(partial, 'utf8').split('\n').filter((l) => l.length > 0).length;
  assert.ok(kept > 0 && kept < 16, `partial file holds ${kept} records`);
  appendFileSync(partial, '{"question": "torn wri'); // as if the kill had hit a write
  const resumed = cli([...selectArgs(data, cut, extra), '--resume']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.ok(JSON.parse(resumed.stdout).resumed > 0);
  assert.equal(existsSync(partial), false);
  assert.ok(readFileSync(cut).equals(readFileSync(full)), 'resumed output differs from the uninterrupted one');
  // A changed setting is refused rather than mixed into the file.
  const out2 = path.join(work, 'mixed.jsonl');
  writeFileSync(`${out2}.partial`, readFileSync(full, 'utf8').split('\n').slice(0, 4).join('\n') + '\n');
  writeFileSync(`${out2}.partial.settings.json`, JSON.stringify({ kDocs: 2 }));
  const bad = cli([...selectArgs(data, out2, extra), '--resume']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /differ from the interrupted run.*E_INVALID_ARG/s);
});

test('bad input: counted skips with FILE:LINE, clear errors, nothing partial published', async () => {
  const data = retrievedFile();
  const [good] = readJsonl(data);
  const bad = path.join(work, 'bad.jsonl');
  const lines = [
    good,
    { question: 'no ctxs', answers: ['x'] },
    { question: 'short', answers: ['x'], ctxs: [good.ctxs[0]] },
    { question: 'empties', answers: ['x'], ctxs: [{ title: 't', text: '  ' }, ...good.ctxs.slice(0, 3)] },
    { question: 'no answers', answers: [], ctxs: good.ctxs },
    [1, 2],
  ];
  writeFileSync(bad, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  const out = path.join(work, 'bad-out.jsonl');
  const r = cli(['select', '--data', bad, '--selector', reranker, '--out', out, '--k-docs', '2', '--no-pseudo-passage', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.questions, 2);
  assert.deepEqual(s.skippedReasons, { 'no-ctxs': 1, 'short-ctxs': 1, 'no-answers': 1, 'not-an-object': 1 });
  assert.equal(s.droppedPassages, 1);
  assert.match(r.stderr, /bad\.jsonl:2: record has no "ctxs"/);
  assert.match(r.stderr, /bad\.jsonl:3: 1 candidate/);
  assert.match(r.stderr, /bad\.jsonl:4: 1 passage\(s\) with empty/);
  const recs = readJsonl(out);
  assert.deepEqual(recs.map((x) => x.question), [good.question, 'empties']);
  assert.ok(recs.every((x) => x.ctxs.length === 2 && x.ctxs.every((c: { pseudo?: boolean }) => !c.pseudo)));

  // Invalid JSON stops the run: exit 1, E_DATA with the line, no output under the final name.
  writeFileSync(bad, `${JSON.stringify(good)}\n{"question": \n`);
  const broken = path.join(work, 'broken.jsonl');
  const r2 = cli(['select', '--data', bad, '--selector', reranker, '--out', broken, '--no-pseudo-passage']);
  assert.equal(r2.status, 1);
  assert.match(r2.stderr, /bad\.jsonl:2: invalid JSON.*E_DATA/);
  assert.equal(existsSync(broken), false);

  // A bi-encoder is not a selector.
  const r3 = cli(['select', '--data', data, '--selector', fixture('bert-tiny'), '--out', path.join(work, 'x.jsonl')]);
  assert.equal(r3.status, 1);
  assert.match(r3.stderr, /sequence-classification head.*E_MODEL_CONFIG/);
  // The pseudo-passage needs an LLM when the records do not carry one.
  const r4 = cli(['select', '--data', data, '--selector', reranker, '--out', path.join(work, 'y.jsonl')]);
  assert.equal(r4.status, 1);
  assert.match(r4.stderr, /has no pseudo-passage.*E_INVALID_ARG/);
  assert.equal(existsSync(path.join(work, 'y.jsonl')), false);
  // Bad options fail before any model loads.
  const r5 = cli(['select', '--data', data, '--selector', reranker, '--out', path.join(work, 'z.jsonl'), '--k-docs', '0']);
  assert.equal(r5.status, 1);
  assert.match(r5.stderr, /kDocs must be a positive integer/);
});

test('select(): an aborted signal stops with E_CANCELLED and publishes nothing', async () => {
  const data = retrievedFile();
  const ce = await CrossEncoder.load(reranker);
  const out = path.join(work, 'cancel.jsonl');
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(select(ce, { data, out, pseudoPassage: false, signal: controller.signal }), { code: 'E_CANCELLED' });
  assert.equal(existsSync(out), false);
});

test('--generate-url: pseudo-passages from an OpenAI-compatible server, with the background prompt', async () => {
  const data = headLines(retrievedFile(), 6, path.join(work, 'retrieved6.jsonl'));
  const seen: { prompt: string; max_tokens: number; temperature: number }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.url === '/v1/models') return res.end(JSON.stringify({ data: [{ id: 'served' }] }));
      const b = JSON.parse(body);
      seen.push(b);
      res.end(JSON.stringify({ choices: [{ index: 0, text: `background of: ${b.prompt.slice(b.prompt.lastIndexOf('Question: ') + 10)}` }] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    const out = path.join(work, 'served.jsonl');
    // Asynchronous child: this process must keep serving while it runs.
    const child = spawn(process.execPath, [cliPath, 'select', '--data', data, '--selector', reranker, '--out', out, '--generate-url', url,
      '--pseudo-max-new-tokens', '12', '--k-docs', String(TOP + 1), '--json'], { cwd: work });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 0, stderr);
    assert.equal(JSON.parse(stdout).pseudoGenerated, 6);
    const inputs = readJsonl(data);
    assert.deepEqual(seen.map((b) => b.prompt).sort(), inputs.map((q) => backgroundPrompt(q.question)).sort());
    assert.ok(seen.every((b) => b.max_tokens === 12 && b.temperature === 0));
    readJsonl(out).forEach((rec, i) => {
      assert.equal(rec.pseudo_passage, `background of: ${inputs[i].question}`);
      assert.equal(rec.ctxs.filter((c: { pseudo?: boolean; text: string }) => c.pseudo && c.text === rec.pseudo_passage).length, 1);
    });
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
