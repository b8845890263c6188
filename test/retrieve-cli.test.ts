// `gainrag index build|import` and `gainrag retrieve` end to end on open SQuAD (subset) with the
// fixture encoder, plus the streaming JSON/JSONL and passage readers they stand on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AtomicJsonlWriter, readRecords } from '../lib/io/jsonl.js';
import { readPassages } from '../lib/io/passages.js';
import { writeNpyFloat32 } from '../lib/retrieval/npy.js';
import { hasAnswer } from '../lib/retrieval/has-answer.js';
import { Encoder } from '../lib/models/encoder.js';
import { cliPath, dataDir, fixture } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-retrieve-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const squad = path.join(dataDir, 'squad_v1.1_dev_open');
const encoderDir = fixture('bert-tiny');

function headLines(file: string, n: number, out: string): string {
  writeFileSync(out, readFileSync(file, 'utf8').split('\n').slice(0, n).join('\n') + '\n');
  return out;
}

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function collect(file: string) {
  const out = [];
  for await (const r of readRecords(file)) out.push(r);
  return out;
}

test('readRecords: JSONL and JSON arrays, line numbers, errors with FILE:LINE', async () => {
  const a = path.join(work, 'a.jsonl');
  writeFileSync(a, '\ufeff{"q":1}\n\n{"q":"x\\ny"}\r\n{"q":3}');
  assert.deepEqual(await collect(a), [
    { record: { q: 1 }, line: 1 },
    { record: { q: 'x\ny' }, line: 3 },
    { record: { q: 3 }, line: 4 },
  ]);
  const b = path.join(work, 'b.json');
  writeFileSync(b, '\n[\n {"q": "]},\\"["},\n {"q": [1, {"r": 2}]}\n]\n');
  assert.deepEqual(await collect(b), [
    { record: { q: ']},"[' }, line: 3 },
    { record: { q: [1, { r: 2 }] }, line: 4 },
  ]);
  writeFileSync(a, '{"q":1}\n{"q":\n');
  await assert.rejects(collect(a), { code: 'E_DATA', message: /^a\.jsonl:2: / });
  writeFileSync(b, '[{"q":1},\n{"q":2},\n]');
  await assert.rejects(collect(b), { code: 'E_DATA', message: /^b\.json:3: / });
  writeFileSync(b, '[{"q":1}');
  await assert.rejects(collect(b), { code: 'E_DATA', message: /unterminated/ });
  await assert.rejects(collect(path.join(work, 'missing.jsonl')), { code: 'E_IO' });
});

test('AtomicJsonlWriter: nothing under the final name until close; append resumes a partial file', async () => {
  const out = path.join(work, 'w.jsonl');
  const w = AtomicJsonlWriter.open(out);
  w.write({ a: 1 });
  w.flush();
  assert.equal(existsSync(out), false);
  w.abort({ keepPartial: true });
  appendFileSync(`${out}.partial`, '{"a": 2, "trunc'); // a crash mid-line
  const r = AtomicJsonlWriter.open(out, { append: true });
  assert.equal(r.resumedRecords, 1);
  r.write({ b: 2 });
  r.close();
  assert.equal(readFileSync(out, 'utf8'), '{"a":1}\n{"b":2}\n');
  assert.equal(existsSync(`${out}.partial`), false);
  const x = AtomicJsonlWriter.open(out);
  x.write({ c: 3 });
  x.abort();
  assert.equal(existsSync(`${out}.partial`), false);
  assert.equal(readFileSync(out, 'utf8'), '{"a":1}\n{"b":2}\n', 'an aborted writer leaves the old file alone');
  assert.throws(() => AtomicJsonlWriter.open(out).write(undefined), TypeError);
});

test('readPassages: DPR TSV with quoted fields, JSONL', async () => {
  const tsv = path.join(work, 'p.tsv');
  writeFileSync(tsv, 'id\ttext\ttitle\n1\t"Aaron ( or ; ""Ahärôn"") was"\tAaron\n2\tplain text\t"Title, with comma"\n');
  const got = [];
  for await (const p of readPassages(tsv)) got.push(p);
  assert.deepEqual(got, [
    { id: '1', text: 'Aaron ( or ; "Ahärôn") was', title: 'Aaron' },
    { id: '2', text: 'plain text', title: 'Title, with comma' },
  ]);
  writeFileSync(tsv, 'id\ttext\ttitle\n1\t"unterminated\tx\n');
  await assert.rejects(async () => {
    for await (const _ of readPassages(tsv)) void _;
  }, { code: 'E_DATA', message: /p\.tsv:2/ });
  const jsonl = path.join(work, 'p.jsonl');
  writeFileSync(jsonl, '{"id": 5, "title": "T", "text": "x"}\n{"id": "b", "text": 1}\n');
  await assert.rejects(async () => {
    for await (const _ of readPassages(jsonl)) void _;
  }, { code: 'E_DATA', message: /p\.jsonl:2/ });
});

test('index build + retrieve on open SQuAD: well-formed output, scores = encoder dot products, recall = flags', async () => {
  const passages = headLines(path.join(squad, 'passages.jsonl'), 300, path.join(work, 'passages.jsonl'));
  const questions = headLines(path.join(squad, 'questions.jsonl'), 50, path.join(work, 'questions.jsonl'));
  const index = path.join(work, 'index');
  const built = cli(['index', 'build', '--passages', passages, '--encoder', encoderDir, '--out', index, '--batch-size', '64', '--json']);
  assert.equal(built.status, 0, built.stderr);
  assert.equal(JSON.parse(built.stdout).passages, 300);
  assert.equal(existsSync(`${index}.partial`), false);

  const out = path.join(work, 'retrieved.jsonl');
  const k = 20;
  const r = cli(['retrieve', '--index', index, '--encoder', encoderDir, '--data', questions, '--top-k', String(k), '--out', out, '--batch-size', '16', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.questions, 50);
  assert.deepEqual(Object.keys(summary.recall), ['1', '5', '10', '20']);

  const inputs = readFileSync(questions, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const records = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(records.length, 50);
  const byRow = readFileSync(passages, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const byId = new Map(byRow.map((p, i) => [p.id as string, i]));
  const encoder = await Encoder.load(encoderDir);
  const pEmb = await encoder.embed(byRow.map((p) => `${p.title} ${p.text}`));
  const qEmb = await encoder.embed(inputs.map((q) => q.question));
  const dim = encoder.dim;
  const found = [1, 5, 10, 20].map(() => 0);
  records.forEach((rec, qi) => {
    const { ctxs, ...rest } = rec;
    assert.deepEqual(rest, inputs[qi], 'input fields are kept');
    assert.equal(ctxs.length, k);
    const all = byRow.map((_, pi) => {
      let s = 0;
      for (let j = 0; j < dim; j++) s += qEmb[qi * dim + j] * pEmb[pi * dim + j];
      return s;
    }).sort((a, b) => b - a);
    ctxs.forEach((c: { id: string; title: string; text: string; score: number; hasanswer: boolean }, j: number) => {
      const row = byId.get(c.id);
      assert.ok(row !== undefined, `unknown passage id ${c.id}`);
      assert.equal(c.text, byRow[row].text);
      assert.equal(c.title, byRow[row].title);
      let s = 0;
      for (let d = 0; d < dim; d++) s += qEmb[qi * dim + d] * pEmb[row * dim + d];
      assert.ok(Math.abs(c.score - s) < 1e-3 * Math.max(1, Math.abs(s)), `score ${c.score} vs ${s}`);
      assert.ok(Math.abs(c.score - all[j]) < 1e-3 * Math.max(1, Math.abs(s)), `rank ${j} is not the ${j}-th best`);
      assert.equal(c.hasanswer, hasAnswer(c.text, rec.answers));
    });
    const first = ctxs.findIndex((c: { hasanswer: boolean }) => c.hasanswer);
    [1, 5, 10, 20].forEach((kk, i) => {
      if (first >= 0 && first < kk) found[i]++;
    });
  });
  [1, 5, 10, 20].forEach((kk, i) => assert.equal(summary.recall[String(kk)], found[i] / 50, `Recall@${kk}`));

  // import: the same vectors from .npy give the same output; JSON-array input works too
  const npy = path.join(work, 'emb.npy');
  writeNpyFloat32(npy, pEmb, byRow.length, dim);
  const imported = path.join(work, 'imported');
  const imp = cli(['index', 'import', '--vectors', npy, '--passages', passages, '--out', imported]);
  assert.equal(imp.status, 0, imp.stderr);
  const asJson = path.join(work, 'questions.json');
  writeFileSync(asJson, JSON.stringify(inputs, null, 1));
  const out2 = path.join(work, 'retrieved2.jsonl');
  const r2 = cli(['retrieve', '--index', imported, '--encoder', encoderDir, '--data', asJson, '--top-k', String(k), '--out', out2]);
  assert.equal(r2.status, 0, r2.stderr);
  assert.match(r2.stdout, /Recall@1 /);
  const again = readFileSync(out2, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(again.map((x) => x.ctxs.map((c: { id: string }) => c.id)), records.map((x) => x.ctxs.map((c: { id: string }) => c.id)));

  // bad input: a clear error, no output published
  const bad = path.join(work, 'bad.jsonl');
  writeFileSync(bad, '{"question": "q", "answers": ["a"]}\n{"answers": ["b"]}\n');
  const out3 = path.join(work, 'never.jsonl');
  const r3 = cli(['retrieve', '--index', index, '--encoder', encoderDir, '--data', bad, '--top-k', '5', '--out', out3]);
  assert.equal(r3.status, 1);
  assert.match(r3.stderr, /bad\.jsonl:2: .*question.*E_DATA/);
  assert.equal(existsSync(out3) || existsSync(`${out3}.partial`), false);
  const r4 = cli(['retrieve', '--index', index, '--encoder', encoderDir, '--data', questions, '--top-k', '301', '--out', out3]);
  assert.equal(r4.status, 1);
  assert.match(r4.stderr, /top-k 301 exceeds the index size 300/);
  const short = path.join(work, 'short.npy');
  writeNpyFloat32(short, pEmb.subarray(0, 10 * dim), 10, dim);
  const r5 = cli(['index', 'import', '--vectors', short, '--passages', passages, '--out', path.join(work, 'x')]);
  assert.equal(r5.status, 1);
  assert.match(r5.stderr, /10 vectors but .* 300 passages.*E_DATA/);
  assert.equal(existsSync(path.join(work, 'x')) || existsSync(path.join(work, 'x.partial')), false);
});
