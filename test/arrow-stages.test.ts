// Arrow IPC between stages: retrieval output as an Arrow IPC file (typed columns: List<Int64>
// ctx_ids, List<Float32> ctx_scores, List<Bool> ctx_hasanswer, List<Utf8> ctx_title/ctx_text)
// reads back as exactly the JSONL records; record batches follow the stage's batches; writer
// atomicity; damaged files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RecordBatchFileReader, Type } from 'apache-arrow';
import { AtomicArrowWriter, countArrowRows } from '../lib/io/arrow-records.js';
import { readStageInput, inputFormat } from '../lib/io/records.js';
import { readRecords } from '../lib/io/jsonl.js';
import { cliPath, dataDir, repoRoot } from './helpers.js';

// The bundled tiny models (the same as test/fixtures), read only.
const model = (name: string) => path.join(repoRoot, 'models', name);

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-arrow-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const squad = path.join(dataDir, 'squad_v1.1_dev_open');

function cli(args: string[], expectOk = true) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work });
  if (expectOk) assert.equal(r.status, 0, `gainrag ${args.join(' ')} failed:\n${r.stderr}`);
  return r;
}

async function all(file: string, indexDir?: string): Promise<unknown[]> {
  const out = [];
  for await (const r of readStageInput(file, { indexDir })) out.push(r.record);
  return out;
}

test('retrieve --format arrow: typed columns in an Arrow IPC file, the JSONL records back', async (t) => {
  // Held apart: questions 5200-5229 with the 80 passages before the last 128.
  const passages = path.join(work, 'passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').trim().split('\n').slice(-208, -128).join('\n') + '\n');
  const questions = path.join(work, 'questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(5200, 5230).join('\n') + '\n');
  const index = path.join(work, 'index');
  cli(['index', 'build', '--passages', passages, '--encoder', model('bert-tiny'), '--out', index, '--batch-size', '40']);
  const args = ['retrieve', '--index', index, '--encoder', model('bert-tiny'), '--data', questions, '--top-k', '10', '--batch-size', '8'];
  const jsonl = path.join(work, 'r.jsonl');
  const arrow = path.join(work, 'r.out'); // format by flag, not extension
  cli([...args, '--out', jsonl]);
  cli([...args, '--out', arrow, '--format', 'arrow']);
  assert.equal(inputFormat(arrow), 'arrow');
  assert.equal(inputFormat(jsonl), 'jsonl');

  const fromJsonl = [];
  for await (const r of readRecords(jsonl)) fromJsonl.push(r.record);
  const fromArrow = await all(arrow);
  assert.equal(fromArrow.length, 30);
  assert.deepEqual(fromArrow, fromJsonl);
  // Key order too: re-serialised Arrow records are the JSONL file.
  assert.equal(fromArrow.map((r) => JSON.stringify(r)).join('\n') + '\n', readFileSync(jsonl, 'utf8'));

  // The columns are typed, and one record batch per search batch (30 = 8+8+8+6), in the IPC file
  // format (apache-arrow's file reader finds every batch through the footer).
  const reader = RecordBatchFileReader.from(readFileSync(arrow));
  const batches = [...reader];
  assert.deepEqual(batches.map((b) => b.numRows), [8, 8, 8, 6]);
  const schema = batches[0].schema;
  const listOf = (name: string) => {
    const f = schema.fields.find((x) => x.name === name)!;
    assert.equal(f.type.typeId, Type.List, name);
    return f.type.children[0].type.typeId;
  };
  assert.equal(listOf('ctx_ids'), Type.Int);
  assert.equal(listOf('ctx_scores'), Type.Float);
  assert.equal(listOf('ctx_hasanswer'), Type.Bool);
  assert.equal(listOf('ctx_text'), Type.Utf8);
  assert.equal(listOf('ctx_passage_ids'), Type.Utf8);
  assert.equal(schema.metadata.get('gainrag.kind'), 'columns');
  assert.equal(schema.metadata.get('gainrag.schema'), 'gainrag-columns-1');
  assert.equal(schema.metadata.get('gainrag.index_name'), 'index'); // not an absolute path
  assert.equal(countArrowRows(arrow), 30);
  // Every record fits the typed columns: no JSON fallback.
  assert.equal(batches.every((b) => b.getChild('_record')!.nullCount === b.numRows), true);
  t.diagnostic(`top-10 retrieval output with passage text: JSONL ${statSync(jsonl).size} B, Arrow ${statSync(arrow).size} B`);

  // Damaged streams fail with E_DATA, never garbage.
  const cut = path.join(work, 'cut.arrow');
  cpSync(arrow, cut);
  truncateSync(cut, statSync(cut).size - 100);
  await assert.rejects(all(cut), { code: 'E_DATA' });
  assert.throws(() => countArrowRows(cut), { code: 'E_DATA' });

  // --resume works on Arrow outputs too (test/columnar-resume.test.ts): with nothing to resume it starts.
  const s = cli(['synthesize', '--data', arrow, '--llm', model('llama-tiny'), '--out', path.join(work, 's.arrow'), '--resume', '--max-new-tokens', '2', '--no-pseudo-passage', '--top-k', '2']);
  assert.equal(s.status, 0);
  assert.equal(countArrowRows(path.join(work, 's.arrow')), 30);
});

test('AtomicArrowWriter: nothing under the final name before close; empty output is a valid stream; abort removes the partial', async () => {
  const out = path.join(work, 'w.arrow');
  const w = new AtomicArrowWriter(out, 'json');
  w.write({ a: 1, b: [1, 2] });
  w.flush();
  w.write({ a: 2 });
  assert.equal(existsSync(out), false);
  w.close();
  assert.equal(existsSync(`${out}.partial`), false);
  assert.deepEqual(await all(out), [{ a: 1, b: [1, 2] }, { a: 2 }]);
  assert.equal(countArrowRows(out), 2);
  const empty = path.join(work, 'empty.arrow');
  new AtomicArrowWriter(empty, 'json').close();
  assert.deepEqual(await all(empty), []);
  const gone = path.join(work, 'gone.arrow');
  const g = new AtomicArrowWriter(gone, 'json');
  g.write({ x: 1 });
  g.flush();
  g.abort();
  assert.equal(existsSync(gone) || existsSync(`${gone}.partial`), false);
  assert.throws(() => new AtomicArrowWriter(path.join(work, 'x.arrow'), 'json').write(undefined), TypeError);
});
