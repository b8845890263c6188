// Explicit lifetimes and call ordering (issue #13 items 4, 5): dispose() / Symbol.asyncDispose
// on every engine class (idempotent; later calls E_DISPOSED; a call already running finishes
// with the right answer), PassageStore after close(), SelectorTrainer steps in call order, a
// step before the schedule is known, and an abort while a step waits its turn.
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { CausalLM, CrossEncoder, DenseIndex, Encoder, PassageStore, SelectorTrainer, hasCode } from '../lib/index.js';
import { PassageStoreWriter } from '../lib/io/passages.js';
import { fixture } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-dispose-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const disposed = (e: Error) => hasCode(e, 'E_DISPOSED');

test('Encoder: dispose while embed runs; idempotent; later calls are E_DISPOSED', async () => {
  const enc = await Encoder.load(fixture('bert-tiny'));
  const texts = Array.from({ length: 64 }, (_, i) => `passage number ${i} about something`);
  const expected = await enc.embed(texts);
  const running = enc.embed(texts);
  await enc.dispose();
  await enc.dispose();
  assert.deepEqual(await running, expected, 'the running call finished on the weights it started with');
  assert.equal(enc.disposed, true);
  await assert.rejects(enc.embed(['x']), disposed);
});

test('CrossEncoder and CausalLM: asyncDispose, then E_DISPOSED', async () => {
  const ce = await CrossEncoder.load(fixture('xlmr-tiny-reranker'));
  assert.equal((await ce.score(['q'], ['p'])).length, 1);
  await ce[Symbol.asyncDispose]();
  await assert.rejects(ce.score(['q'], ['p']), disposed);

  const lm = await CausalLM.load(fixture('llama-tiny'));
  const prompts = ['Question: who wrote hamlet? Answer:'];
  const expected = await lm.generate(prompts, { maxNewTokens: 4 });
  const running = lm.generate(prompts, { maxNewTokens: 4 });
  await lm.dispose();
  assert.deepEqual((await running).texts, expected.texts);
  await lm.dispose();
  await assert.rejects(lm.generate(prompts, { maxNewTokens: 4 }), disposed);
});

test('DenseIndex: a search running at dispose finishes; later calls are E_DISPOSED', async () => {
  const dim = 16;
  const rows = new Float32Array(5000 * dim).map((_, i) => Math.cos(i * 0.11));
  const index = await DenseIndex.fromVectors(rows, dim);
  const q = rows.slice(0, 50 * dim);
  const expected = await index.search(q, 3);
  const running = index.search(q, 3, { corpusBlock: 64 });
  await index.dispose();
  const got = await running;
  assert.deepEqual(got.ids, expected.ids);
  await index.dispose();
  await assert.rejects(index.search(q, 3), disposed);
  await assert.rejects(index.add(rows.slice(0, dim)), disposed);
  assert.throws(() => index.size, disposed);
  assert.throws(() => index.row(0), disposed);
});

function writeStore(dir: string, texts: string[]): void {
  const w = new PassageStoreWriter(dir);
  texts.forEach((text, i) => w.add({ id: String(i), title: `t${i}`, text }));
  w.close();
}

test('PassageStore: get() after close() is E_DISPOSED, never another file read through a reused fd', async () => {
  const dir = path.join(tmp, 'store');
  mkdirSync(dir);
  writeStore(dir, ['alpha', 'beta']);
  const store = PassageStore.open(dir);
  assert.equal(store.get(1).text, 'beta');
  store.close();
  // The OS reuses the lowest free descriptor: this file very likely gets the store's old fd.
  const other = path.join(tmp, 'other.txt');
  writeFileSync(other, '{"id":"x","title":"other","text":"not a passage of this store"}\n');
  const fd = openSync(other, 'r');
  try {
    assert.throws(() => store.get(0), disposed);
    store.close(); // a second close must not close `fd`
    const buf = Buffer.alloc(4);
    assert.equal(readSync(fd, buf, 0, 4, 0), 4, 'the unrelated file is still open');
  } finally {
    closeSync(fd);
  }
  const again = PassageStore.open(dir);
  assert.equal(again.get(0).text, 'alpha');
  await again[Symbol.asyncDispose]();
  assert.throws(() => again.get(0), disposed);
});

const trainerModel = fixture('xlmr-tiny-reranker');
const constant = { lr: 1e-3, schedule: 'constant' as const, maxGradNorm: 0, maxLength: 48, seed: 7 };

function groupsFor(step: number) {
  return [0, 1].map((g) => ({
    query: `query ${step} ${g}`,
    passages: [0, 1, 2, 3].map((p) => `passage ${step} ${g} ${p} ${'word '.repeat(p + step)}`),
    teacherScores: [3, 1, 0.5, 0].map((x) => x + step * 0.1 + g),
  }));
}

test('SelectorTrainer: unawaited steps run in call order (same losses as awaited steps)', async () => {
  const sequential = await SelectorTrainer.create(trainerModel, constant);
  const expected: number[] = [];
  for (let s = 0; s < 5; s++) expected.push((await sequential.step(groupsFor(s))).loss);
  await sequential.dispose();

  const concurrent = await SelectorTrainer.create(trainerModel, constant);
  // Later steps have longer texts, so their tokenisation would not finish first by itself;
  // the order is the queue's doing either way (the assertion is on the sequence of losses).
  const pending = Array.from({ length: 5 }, (_, s) => concurrent.step(groupsFor(s)));
  const results = await Promise.all(pending);
  assert.deepEqual(results.map((r) => r.optimizerStep), [1, 2, 3, 4, 5]);
  assert.deepEqual(results.map((r) => r.loss), expected);
  await concurrent.dispose();
  await assert.rejects(concurrent.step(groupsFor(0)), disposed);
});

test('SelectorTrainer: step() before the schedule is known fails clearly (linear, no totalSteps)', async () => {
  const t = await SelectorTrainer.create(trainerModel, { lr: 1e-3, maxLength: 48 });
  await assert.rejects(t.step(groupsFor(0)), (e: Error) => hasCode(e, 'E_INVALID_ARG') && /setSchedule/.test(e.message));
  assert.equal(t.optimizerStep, 0);
  t.setSchedule(0, 10);
  const r = await t.step(groupsFor(0));
  assert.ok(r.lr > 0 && r.updated);
  await t.dispose();
});

test('SelectorTrainer: an abort while a step waits its turn cancels it; the trainer is unchanged', async () => {
  const t = await SelectorTrainer.create(trainerModel, constant);
  const ctl = new AbortController();
  const first = t.step(groupsFor(0));
  const second = t.step(groupsFor(1), { signal: ctl.signal });
  const third = t.step(groupsFor(2));
  ctl.abort();
  assert.equal((await first).optimizerStep, 1);
  await assert.rejects(second, (e: Error) => hasCode(e, 'E_CANCELLED'));
  assert.equal((await third).optimizerStep, 2, 'the aborted step did not update the weights');
  await t.dispose();
});
