// `gainrag demo` (the main job) at reduced sizes: every stage's output exists, the test questions
// are held out from training, the final table lists every stage and the four compared runs, the
// random-weights notice is printed, and a second run skips every finished stage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isTestQuestion } from '../lib/cli/commands/demo.js';
import { cliPath, dataDir } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-demo-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const squad = path.join(dataDir, 'squad_v1.1_dev_open');

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function readJsonl(file: string): any[] {
  return readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

test('isTestQuestion: a stable split by id, close to the asked share', () => {
  const qs = readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(0, 1000).map((l) => JSON.parse(l));
  const held = qs.filter((q) => isTestQuestion(q, 0.2)).length;
  assert.ok(held > 150 && held < 250, `${held} of 1000 held out`);
  assert.equal(isTestQuestion(qs[0], 0.2), isTestQuestion({ ...qs[0], question: 'changed text, same id' }, 0.2));
});

test('gainrag demo runs every stage, resumes, and ends with the stage and comparison tables', () => {
  const passages = path.join(work, 'passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').split('\n').slice(0, 150).join('\n') + '\n');
  const out = path.join(work, 'demo');
  const args = [cliPath, 'demo', '--out', out, '--passages', passages, '--data', path.join(squad, 'questions.jsonl'), '--questions', '40', '--synthesize', '6',
    '--test-share', '0.25', '--top-k', '8', '--k-docs', '1,3', '--max-new-tokens', '4'];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: work });
  assert.equal(r.status, 0, r.stderr);
  const outputs = ['index', 'retrieved.jsonl', 'train-retrieved.jsonl', 'test-retrieved.jsonl', 'synthesized.jsonl', 'filtered.jsonl', 'selector-train.jsonl',
    path.join('selector', 'model.safetensors'), 'selected.jsonl', 'answers.jsonl', path.join('compare', 'compare.json')];
  for (const o of outputs) assert.ok(existsSync(path.join(out, o)), `${o} missing`);

  // Selection and answers are for held-out questions only.
  const train = new Set(readJsonl(path.join(out, 'synthesized.jsonl')).map((q) => q.question));
  const test = readJsonl(path.join(out, 'selected.jsonl'));
  assert.ok(test.length > 0 && test.every((q) => !train.has(q.question)));
  assert.equal(test.length, readJsonl(path.join(out, 'test-retrieved.jsonl')).length);
  assert.ok(test.every((q) => isTestQuestion(q, 0.25)));

  assert.match(r.stdout, /RANDOM weights/);
  for (const stage of ['index build', 'retrieve', 'split', 'synthesize', 'filter', 'to-selector', 'train', 'select', 'generate', 'evaluate', 'compare']) {
    assert.match(r.stdout, new RegExp(`^${stage}\\s+\\d+\\.\\d\\s+`, 'm'), `stage ${stage} not in the table`);
  }
  const cmp = JSON.parse(readFileSync(path.join(out, 'compare', 'compare.json'), 'utf8'));
  assert.equal(cmp.questions, test.length);
  assert.deepEqual(cmp.rows.map((x: { run: string; k: number }) => `${x.run}:${x.k}`),
    ['no-retrieval:0', 'retrieval:1', 'retrieval:3', 'reranker:1', 'reranker:3', 'gainrag:1', 'gainrag:3']);
  for (const run of ['no-retrieval', 'retrieval', 'reranker', 'gainrag']) assert.match(r.stdout, new RegExp(`^${run}\\s+\\d`, 'm'));
  assert.equal(readJsonl(path.join(out, 'answers.jsonl')).length, test.length);

  // Second run: every stage is done before; the tables are printed again from the records.
  const again = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: work });
  assert.equal(again.status, 0, again.stderr);
  assert.equal((again.stderr.match(/: done before/g) ?? []).length, 11);
  assert.doesNotMatch(again.stderr, /^\$ gainrag/m);
  assert.match(again.stdout, /\(earlier run\)/);
});
