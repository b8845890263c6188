// --resume on Arrow (file and stream) and Parquet outputs: a run stopped at a batch boundary
// (E_CANCELLED) keeps OUT.partial with its complete record batches; --resume continues from
// there, cuts a torn tail, and publishes a file byte-identical to an uninterrupted run's.
// --shard + merge on the same formats: the merged shards are the unsharded output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { countRecords, readStageInput } from '../lib/io/records.js';
import { mergeOutputs } from '../lib/scale/merge.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { openRetrieveResources, retrieve } from '../lib/retrieval/retrieve.js';
import { dataDir, repoRoot } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-colresume-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const f = (name: string) => path.join(work, name);

test('generate --resume on .arrow, .arrows and .parquet outputs: byte-identical to an uninterrupted run', async () => {
  const lm = await CausalLM.load(path.join(repoRoot, 'models', 'llama-tiny'));
  const records = Array.from({ length: 7 }, (_, i) => ({
    id: `q${i}`, question: `what is item ${i}?`, answers: [`item ${i}`], ctxs: [{ id: `p${i}`, title: `T${i}`, text: `Item ${i} is a thing.`, score: 1, hasanswer: true }],
  }));
  const data = f('in.jsonl');
  writeFileSync(data, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const base = { lm, data, batchQuestions: 2, maxNewTokens: 3 };
  for (const format of ['arrow', 'arrows', 'parquet'] as const) {
    const whole = f(`whole.${format}`);
    await generateAnswers({ ...base, out: whole, format });
    const out = f(`out.${format}`);
    // Stopped after the second batch is written.
    const controller = new AbortController();
    let batches = 0;
    await assert.rejects(
      generateAnswers({ ...base, out, format, signal: controller.signal, onProgress: (_d, _t, note) => note === 'written' && ++batches === 2 && controller.abort() }),
      { code: 'E_CANCELLED' },
    );
    assert.equal(existsSync(out), false, format);
    assert.ok(existsSync(`${out}.partial`), `${format}: OUT.partial kept for --resume`);
    // A torn write after the last complete batch is cut off.
    appendFileSync(`${out}.partial`, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x40, 0, 0, 0, 1, 2, 3]));
    const s = await generateAnswers({ ...base, out, format, resume: true });
    assert.equal(s.resumed, 4, format);
    assert.equal(s.written, 3, format);
    assert.ok(readFileSync(out).equals(readFileSync(whole)), `${format}: the resumed output differs from the uninterrupted one`);
    assert.equal(await countRecords(out), 7);
    const back = [];
    for await (const r of readStageInput(out)) back.push(r.record.id);
    assert.deepEqual(back, records.map((r) => r.id));
    // --resume onto the finished output: nothing to redo.
    const again = await generateAnswers({ ...base, out, format, resume: true });
    assert.equal(again.resumed, 7);
    assert.ok(readFileSync(out).equals(readFileSync(whole)));
  }
});

test('retrieve --shard + merge on .parquet, .arrow, .arrows: the merged file is the unsharded one; other formats or schemas are refused', async () => {
  const squad = path.join(dataDir, 'squad_v1.1_dev_open');
  const passages = f('passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').trim().split('\n').slice(-50).join('\n') + '\n');
  const questions = f('questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(5352, 5375).join('\n') + '\n');
  const index = f('index');
  const encoder = path.join(repoRoot, 'models', 'bert-tiny');
  await buildIndex({ passages, encoder, out: index, batchSize: 50 });
  const resources = await openRetrieveResources({ index, encoder });
  for (const format of ['parquet', 'arrow', 'arrows'] as const) {
    const whole = f(`r.${format}`);
    const opts = { index, encoder, data: questions, topK: 3, batchSize: 4, resources, format };
    await retrieve({ ...opts, out: whole, manifest: { stage: 'retrieve', settings: {}, input: questions } });
    const shards = [];
    for (let i = 0; i < 3; i++) {
      const out = f(`r-${i}.${format}`);
      const shard = { index: i, count: 3 };
      const { shardOf } = await import('../lib/io/records.js');
      const range = await shardOf(questions, shard, 4);
      await retrieve({ ...opts, out, shard, manifest: { stage: 'retrieve', settings: {}, input: questions, range } });
      shards.push(out);
    }
    const merged = f(`merged.${format}`);
    const m = await mergeOutputs(shards, merged);
    assert.equal(m.records, 23, format);
    assert.equal(m.checked, true, format);
    assert.ok(readFileSync(merged).equals(readFileSync(whole)), `${format}: merged shards differ from the unsharded output`);
  }
  await assert.rejects(mergeOutputs([f('r-0.parquet'), f('r-1.arrow')], f('x.parquet')), { code: 'E_DATA', message: /is arrow but .* is parquet/ });
  await assert.rejects(mergeOutputs([f('r-0.parquet'), f('r-1.parquet')], f('x.arrow')), { code: 'E_INVALID_ARG', message: /shards are parquet/ });
  await assert.rejects(mergeOutputs([f('r-0.parquet'), f('whole.parquet')], f('x.parquet')), { code: 'E_DATA' }); // generate's output: another stage
  assert.equal(existsSync(f('x.parquet')) || existsSync(f('x.parquet.partial')), false);
});
