// `gainrag compare`: four runs (no retrieval, top-K retrieval, reranker, GainRAG selector +
// pseudo-passage) on the same questions. The plumbing is checked with a stand-in answer writer
// (which run reads which file with which K), the end-to-end CLI with the real `generate` stage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { compare, formatComparison } from '../lib/pipeline/compare.js';
import type { GenerateAnswersOptions } from '../lib/pipeline/generate.js';
import { emMaxOverGold, f1MaxOverGold } from '../lib/metrics/index.js';
import { hasAnswer } from '../lib/retrieval/has-answer.js';
import { AtomicJsonlWriter } from '../lib/io/jsonl.js';
import { cliPath, dataDir, fixture } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-compare-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const squad = path.join(dataDir, 'squad_v1.1_dev_open');
const reranker = fixture('xlmr-tiny-reranker');
const llm = fixture('llama-tiny');

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function readJsonl(file: string): any[] {
  return readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

let retrieved = '';
function retrievedFile(): string {
  if (retrieved) return retrieved;
  const head = (src: string, n: number, dst: string) => writeFileSync(dst, readFileSync(src, 'utf8').split('\n').slice(0, n).join('\n') + '\n');
  head(path.join(squad, 'passages.jsonl'), 200, path.join(work, 'passages.jsonl'));
  head(path.join(squad, 'questions.jsonl'), 12, path.join(work, 'questions.jsonl'));
  const b = cli(['index', 'build', '--passages', path.join(work, 'passages.jsonl'), '--encoder', fixture('bert-tiny'), '--out', path.join(work, 'index')]);
  assert.equal(b.status, 0, b.stderr);
  const out = path.join(work, 'retrieved.jsonl');
  const r = cli(['retrieve', '--index', path.join(work, 'index'), '--encoder', fixture('bert-tiny'), '--data', path.join(work, 'questions.jsonl'), '--top-k', '10', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  // One record compare must leave out (too few passages for K = 3): every run skips the same one.
  const lines = readFileSync(out, 'utf8').trim().split('\n');
  const short = JSON.parse(lines[0]);
  short.ctxs = short.ctxs.slice(0, 2);
  writeFileSync(out, [...lines, JSON.stringify({ ...short, question: `${short.question} (short)` })].join('\n') + '\n');
  retrieved = out;
  return out;
}

test('compare: every run answers the same questions from its own file with its own K', async () => {
  const data = retrievedFile();
  const calls: GenerateAnswersOptions[] = [];
  // Stand-in for generateAnswers: the "answer" is the titles of the passages it was given.
  const fake = async (o: GenerateAnswersOptions) => {
    calls.push(o);
    const w = AtomicJsonlWriter.open(o.out);
    for (const r of readJsonl(o.data)) w.write({ ...r, generated: o.noRetrieval ? 'no idea' : r.ctxs.slice(0, o.kDocs).map((c: { title: string }) => c.title).join(' ') });
    w.close();
    return { seconds: 0.5 };
  };
  const ce = await CrossEncoder.load(reranker);
  const dir = path.join(work, 'fake');
  const s = await compare({ data, outDir: dir, llm, kDocs: [3, 1], candidates: 10, selector: ce, reranker: ce, generateAnswers: fake, pseudoGenerator: { description: 'fixed', generate: async (p) => p.map(() => 'Super Bowl 50 background') } });
  assert.equal(s.records, 13);
  assert.equal(s.skipped, 1);
  assert.equal(s.questions, 12);
  assert.deepEqual(s.rows.map((r) => `${r.run}:${r.k}`), ['no-retrieval:0', 'retrieval:1', 'retrieval:3', 'reranker:1', 'reranker:3', 'gainrag:1', 'gainrag:3']);
  assert.deepEqual(calls.map((c) => `${path.basename(c.data)}:${c.kDocs}:${c.noRetrieval}`), [
    'input.jsonl:1:true', 'input.jsonl:1:false', 'input.jsonl:3:false', 'reranked.jsonl:1:false', 'reranked.jsonl:3:false', 'selected.jsonl:1:false', 'selected.jsonl:3:false',
  ]);
  const inputs = readJsonl(data).slice(0, 12);
  for (const row of s.rows) {
    const answers = readJsonl(row.answers);
    assert.deepEqual(answers.map((a) => a.question), inputs.map((q) => q.question), `${row.run} k=${row.k}: same questions, same order`);
    const em = answers.reduce((a, r) => a + (emMaxOverGold(r.generated, r.answers) ? 1 : 0), 0) / answers.length;
    const f1 = answers.reduce((a, r) => a + f1MaxOverGold(r.generated, r.answers), 0) / answers.length;
    assert.ok(Math.abs(row.EM - 100 * em) < 1e-9 && Math.abs(row.F1 - 100 * f1) < 1e-9, `${row.run} k=${row.k}`);
    if (row.run === 'retrieval') {
      const want = inputs.filter((q) => q.ctxs.slice(0, row.k).some((c: { text: string }) => hasAnswer(c.text, q.answers))).length / inputs.length;
      assert.equal(row.recall, want);
    }
    if (row.run === 'no-retrieval') assert.equal(row.recall, null);
    // Reranking time is part of the reranked runs' seconds.
    if (row.run === 'gainrag') assert.ok(row.seconds >= (s.gainrag?.seconds ?? Infinity));
  }
  // The GainRAG run saw the pseudo-passage; the reranker run did not.
  assert.ok(readJsonl(path.join(dir, 'selected.jsonl')).every((r) => r.pseudo_passage === 'Super Bowl 50 background'));
  assert.ok(readJsonl(path.join(dir, 'reranked.jsonl')).every((r) => r.ctxs.every((c: { pseudo?: boolean }) => !c.pseudo)));
  const table = formatComparison(s);
  for (const run of ['no-retrieval', 'retrieval', 'reranker', 'gainrag']) assert.match(table, new RegExp(`^${run} `, 'm'));

  // --resume keeps finished runs: nothing is generated again, the table is the same.
  calls.length = 0;
  const again = await compare({ data, outDir: dir, llm, kDocs: [1, 3], candidates: 10, selector: ce, reranker: ce, generateAnswers: fake, resume: true });
  assert.equal(calls.length, 0);
  assert.deepEqual(again.rows.map((r) => [r.EM, r.F1, r.recall]), s.rows.map((r) => [r.EM, r.F1, r.recall]));
  await assert.rejects(compare({ data, outDir: dir, llm, kDocs: [20], candidates: 10, generateAnswers: fake }), RangeError);
});

test('gainrag compare (CLI, real generation): four runs on the same questions, one table', async () => {
  const data = retrievedFile();
  const dir = path.join(work, 'cli');
  const args = ['compare', '--data', data, '--llm', llm, '--selector', reranker, '--reranker', reranker, '--k-docs', '1,3', '--candidates', '10',
    '--max-new-tokens', '6', '--pseudo-max-new-tokens', '12', '--out', dir];
  const r = cli([...args, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.rows.length, 7);
  assert.ok(s.rows.every((row: { questions: number }) => row.questions === 12));
  const none = readJsonl(path.join(dir, 'no-retrieval.answers.jsonl'));
  assert.equal(none.length, 12);
  assert.ok(none.every((a) => typeof a.generated === 'string'));
  const text = cli([...args, '--resume']);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^no-retrieval\s+0\s/m);
  assert.match(text.stdout, /^gainrag\s+3\s/m);
});
