// An Arrow retrieval output used to store only index rows, which an index rebuilt at the same
// path from other passages (same count) would silently resolve to other passages. Outputs now
// carry their passages' ids, titles and texts as columns (self-contained) and record the build
// of the index their ctx_ids refer to (gainrag.index_id).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildIndex } from '../lib/retrieval/build.js';
import { retrieve } from '../lib/retrieval/retrieve.js';
import { readStageInput } from '../lib/io/records.js';
import { dataDir, fixture } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-index-id-'));
after(() => rmSync(work, { recursive: true, force: true }));
const f = (name: string) => path.join(work, name);
const squad = path.join(dataDir, 'squad_v1.1_dev_open');

test('an Arrow retrieval output reads the same passages after its index was rebuilt from others; it names the index build', async () => {
  const lines = readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').split('\n');
  writeFileSync(f('p1.jsonl'), lines.slice(0, 12).join('\n') + '\n');
  writeFileSync(f('p2.jsonl'), lines.slice(12, 24).join('\n') + '\n');
  writeFileSync(f('q.jsonl'), readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').split('\n').slice(0, 3).join('\n') + '\n');
  const index = f('index');
  const encoder = fixture('bert-tiny');
  await buildIndex({ passages: f('p1.jsonl'), encoder, out: index });
  await retrieve({ index, encoder, data: f('q.jsonl'), out: f('r.arrow'), topK: 2, format: 'arrow' });
  const read = async () => {
    const out = [];
    for await (const r of readStageInput(f('r.arrow'))) out.push(r.record.ctxs.map((c: { id: string }) => c.id));
    return out;
  };
  const ids = await read();
  assert.equal(ids.length, 3);
  await buildIndex({ passages: f('p2.jsonl'), encoder, out: index }); // same path, same count, other passages
  assert.deepEqual(await read(), ids, 'the passages retrieved, from the file itself');
  const { tableFromIPC } = await import('apache-arrow');
  const table = tableFromIPC(readFileSync(f('r.arrow')));
  assert.match(table.schema.metadata.get('gainrag.index_id') ?? '', /.+/, 'the index build is recorded');
});
