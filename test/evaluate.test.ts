// `gainrag evaluate`: EM / F1 / Recall from a hand-written answers file (expected values worked out
// by hand from the SQuAD rules), the JSON array form, other field names, and bad records.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { evaluate } from '../lib/pipeline/evaluate.js';
import { cliPath } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-evaluate-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

// [generated, answers, EM, F1]
const cases: [string, string[], number, number][] = [
  ['Jane Austen', ['Jane Austen'], 1, 1],
  // regex EM finds the answer inside; F1: prediction [it, was, jane, austen] vs [jane, austen]: p = 1/2, r = 1
  ['It was Jane Austen.', ['jane austen'], 1, 2 / 3],
  ['the Beatles', ['Beatles', 'Rolling Stones'], 1, 1],
  ['Paris', ['London'], 0, 0],
  ['new york city', ['New York'], 1, 0.8], // p = 2/3, r = 1
  ['', ['x'], 0, 0],
];

const ctxs = (flags: boolean[]) => flags.map((f, i) => ({ title: `t${i}`, text: f ? 'here is Jane Austen' : 'nothing here' }));

test('evaluate: EM/F1 means x100 and Recall@1..5 recomputed from the file', async () => {
  const file = path.join(work, 'a.jsonl');
  const records = cases.map(([generated, answers], i) => ({
    question: `q${i}`, answers, generated,
    // ctxs: the answer "Jane Austen" sits at rank i for the first two records, nowhere else.
    ...(i < 2 ? { ctxs: ctxs([false, false, false].map((_, j) => j === i * 2)) } : i === 2 ? { ctxs: ctxs([false]) } : {}),
    EM: i === 3 ? 1 : undefined, // a stored value that disagrees
  }));
  writeFileSync(file, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const s = await evaluate({ data: file });
  const em = cases.reduce((a, c) => a + c[2], 0) / cases.length;
  const f1 = cases.reduce((a, c) => a + c[3], 0) / cases.length;
  assert.equal(s.evaluated, cases.length);
  assert.ok(Math.abs(s.EM - 100 * em) < 1e-9, `EM ${s.EM}`);
  assert.ok(Math.abs(s.F1 - 100 * f1) < 1e-9, `F1 ${s.F1}`);
  // Records 0 (hit at rank 0) and 1 (hit at rank 2: "jane austen" matches the text) and 2 (no hit) have ctxs.
  assert.equal(s.withCtxs, 3);
  assert.deepEqual(s.recall, { 1: 1 / 3, 2: 1 / 3, 3: 2 / 3, 4: 2 / 3, 5: 2 / 3 });
  assert.equal(s.storedMismatches, 1);

  // The same records as one JSON array, under other field names, through the CLI.
  const arr = path.join(work, 'b.json');
  writeFileSync(arr, JSON.stringify(records.map(({ generated, answers, ...rest }) => ({ ...rest, prediction: generated, gold: answers }))));
  const r = spawnSync(process.execPath, [cliPath, 'evaluate', '--data', arr, '--field', 'prediction', '--answers-field', 'gold', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.EM, s.EM);
  assert.equal(j.F1, s.F1);
  const t = spawnSync(process.execPath, [cliPath, 'evaluate', '--data', file], { encoding: 'utf8' });
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, new RegExp(`EM\\s+${s.EM.toFixed(2)}`));
});

test('evaluate: bad records are counted skips with FILE:LINE; invalid JSON is an E_DATA error', async () => {
  const file = path.join(work, 'bad.jsonl');
  writeFileSync(file, [
    JSON.stringify({ answers: ['a'], generated: 'a' }),
    JSON.stringify({ answers: ['a'] }),
    JSON.stringify({ answers: [' '], generated: 'a' }),
    JSON.stringify({ generated: 'a' }),
    '"just a string"',
  ].join('\n') + '\n');
  const warnings: string[] = [];
  const s = await evaluate({ data: file, warn: (m) => warnings.push(m) });
  assert.equal(s.evaluated, 1);
  assert.equal(s.EM, 100);
  assert.deepEqual(s.skippedReasons, { 'no-prediction': 1, 'no-answers': 2, 'not-an-object': 1 });
  assert.ok(warnings.some((w) => w.includes('bad.jsonl:2:')));
  writeFileSync(file, '{"answers": ["a"], "generated": "a"}\n{"answers": \n');
  await assert.rejects(evaluate({ data: file }), { code: 'E_DATA', message: /bad\.jsonl:2/ });
  await assert.rejects(evaluate({ data: path.join(work, 'missing.jsonl') }), { code: 'E_IO' });
});
