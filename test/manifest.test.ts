// Output manifests (`OUT.gainrag.json`, lib/io/manifest.ts): published by both stage writers
// after the output's rename, counting resumed records; removed when a fresh writer opens over
// the output; a file of someone else's at that name is never deleted or overwritten.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inputIdentity, manifestPath, readManifest } from '../lib/io/manifest.js';
import { openStageOutput } from '../lib/io/records.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-manifest-'));
after(() => rmSync(work, { recursive: true, force: true }));
const f = (name: string) => path.join(work, name);

test('JSONL and Arrow writers publish a manifest after the output; records include resumed ones', () => {
  const input = f('in.jsonl');
  writeFileSync(input, '{"question": "a"}\n{"question": "b"}\n{"question": "c"}\n');
  const spec = { stage: 'select', settings: { kDocs: 2, model: '/m' }, input, range: { start: 1, end: 3 } };
  for (const format of ['jsonl', 'arrow'] as const) {
    const out = f(`out.${format}`);
    const w = openStageOutput(out, { format, kind: 'json', manifest: spec });
    w.write({ x: 1 });
    w.write({ x: 2 });
    w.flush();
    assert.equal(existsSync(manifestPath(out)), false, 'nothing published before close');
    w.close();
    const m = readManifest(out);
    const st = statSync(input);
    assert.deepEqual(m, {
      format: 'gainrag-output-1', stage: 'select', settings: { kDocs: 2, model: '/m' },
      input: { path: input, size: st.size, mtimeMs: st.mtimeMs }, range: { start: 1, end: 3 }, records: 2,
    });
    assert.deepEqual(inputIdentity(input), m!.input);
  }
  // A resumed JSONL output counts what the partial file already held.
  const out = f('resumed.jsonl');
  const a = openStageOutput(out, { format: 'jsonl', append: true, manifest: spec });
  a.write({ x: 1 });
  a.write({ x: 2 });
  a.abort({ keepPartial: true });
  const b = openStageOutput(out, { format: 'jsonl', append: true, manifest: spec });
  assert.equal(b.resumedRecords, 2);
  b.write({ x: 3 });
  b.close();
  assert.equal(readManifest(out)!.records, 3);
  assert.equal(readFileSync(out, 'utf8').trim().split('\n').length, 3);
});

test('a fresh writer removes a stale manifest; a writer without a spec leaves none; aborting publishes none', () => {
  const out = f('stale.jsonl');
  const w = openStageOutput(out, { format: 'jsonl', manifest: { stage: 'generate', settings: {} } });
  w.write({ a: 1 });
  w.close();
  assert.equal(readManifest(out)!.input, null);
  assert.equal(readManifest(out)!.range, null);
  // Rewritten by a run that records no manifest: the old one would describe the old file.
  const w2 = openStageOutput(out, { format: 'jsonl' });
  assert.equal(existsSync(manifestPath(out)), false, 'removed when the fresh writer opens');
  w2.write({ a: 2 });
  w2.close();
  assert.equal(readManifest(out), null);
  const w3 = openStageOutput(f('aborted.arrow'), { format: 'arrow', kind: 'json', manifest: { stage: 'generate', settings: {} } });
  w3.write({ a: 1 });
  w3.abort();
  assert.equal(existsSync(manifestPath(f('aborted.arrow'))), false);
});

test('a file at the manifest name that is not ours is refused, not replaced; readManifest reports it as E_DATA', () => {
  const out = f('theirs.jsonl');
  writeFileSync(manifestPath(out), '{"my": "notes"}\n');
  assert.throws(() => readManifest(out), { code: 'E_DATA', message: /not a gainrag output manifest/ });
  assert.throws(() => openStageOutput(out, { format: 'jsonl', manifest: { stage: 'select', settings: {} } }), { code: 'E_INVALID_ARG', message: /gainrag\.json/ });
  assert.equal(readFileSync(manifestPath(out), 'utf8'), '{"my": "notes"}\n');
  assert.equal(existsSync(`${out}.lock`), false, 'the lock is released');
  writeFileSync(manifestPath(f('garbled.jsonl')), '{"format": "gainrag-output-1", ');
  assert.throws(() => readManifest(f('garbled.jsonl')), { code: 'E_DATA' });
  assert.equal(readManifest(f('none.jsonl')), null);
});
