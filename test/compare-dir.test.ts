// `compare --out D` writes only into a directory it made or adopted (issue #20, item 6): a
// user's D/input.jsonl (or any file of a name compare writes) is never overwritten.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compare } from '../lib/pipeline/compare.js';
import type { GenerateAnswersOptions } from '../lib/pipeline/generate.js';
import { AtomicJsonlWriter } from '../lib/io/jsonl.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-compare-dir-'));
after(() => rmSync(work, { recursive: true, force: true }));

const data = path.join(work, 'retrieved.jsonl');
writeFileSync(data, [0, 1, 2].map((i) => JSON.stringify({ question: `q${i}`, answers: ['a'], ctxs: [{ id: `${i}`, title: 't', text: 'a b', score: 1, hasanswer: true }] })).join('\n') + '\n');
// Stand-in answer writer: no model needed for what is checked here.
const fake = async (o: GenerateAnswersOptions) => {
  const w = AtomicJsonlWriter.open(o.out);
  for (const line of readFileSync(o.data, 'utf8').trim().split('\n')) w.write({ ...JSON.parse(line), generated: 'a' });
  w.close();
  return { seconds: 0 };
};
const run = (outDir: string, resume = false) => compare({ data, outDir, generateUrl: 'http://127.0.0.1:9', kDocs: [1], candidates: 1, generateAnswers: fake, resume });

test('compare refuses a directory holding its file names that it did not write; the files are kept', async () => {
  const d = path.join(work, 'mine');
  mkdirSync(d);
  writeFileSync(path.join(d, 'input.jsonl'), 'my own data\n');
  await assert.rejects(run(d), { code: 'E_INVALID_ARG', message: /input\.jsonl, not written by gainrag compare/ });
  await assert.rejects(run(d, true), { code: 'E_INVALID_ARG' });
  assert.equal(readFileSync(path.join(d, 'input.jsonl'), 'utf8'), 'my own data\n');
  assert.deepEqual(readdirSync(d), ['input.jsonl']);
  const f = path.join(work, 'a-file');
  writeFileSync(f, 'x');
  await assert.rejects(run(f), { code: 'E_INVALID_ARG', message: /not a directory/ });
});

test('compare adopts a directory of unrelated files (kept) and reruns into its own directory', async () => {
  const d = path.join(work, 'shared');
  mkdirSync(d);
  writeFileSync(path.join(d, 'notes.txt'), 'keep');
  const s = await run(d);
  assert.equal(s.questions, 3);
  assert.equal(readFileSync(path.join(d, 'notes.txt'), 'utf8'), 'keep');
  // Its own files may be replaced by a later run (and by --resume).
  assert.equal((await run(d)).questions, 3);
  assert.equal((await run(d, true)).questions, 3);
  const fresh = path.join(work, 'new', 'dir');
  assert.equal((await run(fresh)).questions, 3);
});
