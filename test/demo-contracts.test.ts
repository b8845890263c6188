// `gainrag demo` contracts from issue #20: every flag is checked before the first stage (with a
// proper code, and nothing created), a failing stage keeps its own error code, and a rerun with
// other flags recomputes the stages those flags reach instead of printing the old table.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { cliPath, dataDir, fixture } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-demo-contracts-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const squad = path.join(dataDir, 'squad_v1.1_dev_open');
const passages = path.join(tmp, 'passages.jsonl');
writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').split('\n').slice(0, 60).join('\n') + '\n');
const defaults: Record<string, string> = {
  passages, data: path.join(squad, 'questions.jsonl'), questions: '16', synthesize: '4', 'test-share': '0.25', 'top-k': '4', 'k-docs': '1,2', 'max-new-tokens': '2',
};
// The demo's flags with some changed (each given once: a repeated flag is refused).
function flags(changes: Record<string, string | undefined> = {}): string[] {
  return Object.entries({ ...defaults, ...changes }).flatMap(([k, v]) => (v === undefined ? [] : [`--${k}`, v]));
}

function demo(out: string, args: string[]) {
  return spawnSync(process.execPath, [cliPath, 'demo', '--out', out, ...args], { encoding: 'utf8', cwd: tmp });
}

test('demo checks every flag before the first stage: E_INVALID_ARG, nothing created', () => {
  const out = path.join(tmp, 'never');
  const cases: [Record<string, string>, RegExp][] = [
    [{ 'top-k': '0' }, /--top-k must be a positive integer/],
    [{ questions: '2.5' }, /--questions must be a positive integer/],
    [{ 'k-docs': '1,x' }, /--k-docs must be a comma-separated list/],
    [{ 'k-docs': '9' }, /--k-docs 9 is more than the --top-k 4/],
    [{ 'test-share': '1' }, /--test-share must be in \(0, 1\)/],
    [{ llm: path.join(tmp, 'no-such-model') }, /--llm .*no-such-model is not a model directory/],
    [{ passages: tmp }, /is a directory, not a regular file/],
  ];
  for (const [change, message] of cases) {
    const what = JSON.stringify(change);
    const r = demo(out, flags(change));
    assert.equal(r.status, 1, `${what}\n${r.stderr}`);
    assert.match(r.stderr, message, what);
    assert.match(r.stderr, /\(E_INVALID_ARG\)\n$/, what);
    assert.doesNotMatch(r.stderr, /\$ gainrag/, 'no stage ran');
    assert.ok(!existsSync(out), `${what} created --out`);
  }
});

test("a failing demo stage reports the stage's own error code, not E_INTERNAL", () => {
  // 3 synthesized questions make no full training batch of 4: train fails with E_DATA.
  const r = demo(path.join(tmp, 'fails'), flags({ synthesize: '3' }));
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /gainrag: demo stage 'train' failed: .*no full batch.*\(E_DATA\)\n$/);
});

test('demo rerun with other --top-k/--questions/--llm (or --llm left out) recomputes from the first stage they reach', () => {
  const out = path.join(tmp, 'demo');
  const first = demo(out, flags());
  assert.equal(first.status, 0, first.stderr);
  const ctxs = () => JSON.parse(readFileSync(path.join(out, 'retrieved.jsonl'), 'utf8').split('\n')[0]).ctxs.length;
  const lines = (f: string) => readFileSync(path.join(out, f), 'utf8').trim().split('\n').length;
  assert.equal(ctxs(), 4);
  assert.equal(lines('questions.jsonl'), 16);

  // Another --llm path (test/fixtures links to the same bundled model, which the demo's
  // random-weight handling needs; another model would leave filter with nothing to train on).
  const llm = fixture('llama-tiny');
  const second = demo(out, flags({ 'top-k': '5', questions: '20', llm }));
  assert.equal(second.status, 0, second.stderr);
  assert.match(second.stderr, /demo: index build: done before/);
  assert.match(second.stderr, /demo: retrieve: settings changed/);
  assert.equal(ctxs(), 5);
  assert.equal(lines('questions.jsonl'), 20);
  assert.match(second.stderr, new RegExp(`\\$ gainrag compare .*--llm ${llm.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  for (const stage of ['retrieve', 'select', 'generate', 'compare']) assert.match(second.stdout, new RegExp(`^${stage}\\s+\\d+\\.\\d\\s+\\S+(?!.*earlier run).*$`, 'm'), stage);
  assert.doesNotMatch(second.stdout, /^(retrieve|synthesize|select|generate|compare)\s.*\(earlier run\)/m);
  const cmp = JSON.parse(readFileSync(path.join(out, 'compare', 'compare.json'), 'utf8'));
  assert.ok(cmp.rows.every((r: { answers: string }) => existsSync(r.answers)));

  // --llm left out: the bundled LLM again, so synthesize and what follows run again.
  const third = demo(out, flags({ 'top-k': '5', questions: '20' }));
  assert.equal(third.status, 0, third.stderr);
  for (const stage of ['index build', 'retrieve', 'split']) assert.match(third.stderr, new RegExp(`demo: ${stage}: done before`));
  assert.match(third.stderr, /demo: synthesize: settings changed/);
  assert.match(third.stderr, /\$ gainrag compare .*--llm \S*models\/llama-tiny /);

  // the same flags once more: nothing runs
  const fourth = demo(out, flags({ 'top-k': '5', questions: '20' }));
  assert.equal(fourth.status, 0, fourth.stderr);
  assert.equal((fourth.stderr.match(/: done before/g) ?? []).length, 11);
  assert.doesNotMatch(fourth.stderr, /^\$ gainrag/m);
});
