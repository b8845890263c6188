// --resume on Arrow (file and stream) and Parquet outputs: a run stopped at a batch boundary
// (E_CANCELLED) keeps OUT.partial with its complete record batches; --resume continues from
// there, cuts a torn tail, and publishes a file byte-identical to an uninterrupted run's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { countRecords, readStageInput } from '../lib/io/records.js';
import { repoRoot } from './helpers.js';

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
