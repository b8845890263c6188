// Output formats by extension (refused when unknown), --format overriding it, inputs recognised
// by their first bytes, and the columnar writers' output guarantees (nothing under the final name
// before close, OUT.partial removed, manifest beside the output).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Field, List, RecordBatchFileReader, RecordBatchStreamReader, Table, Utf8, tableToIPC, vectorFromArray } from 'apache-arrow';
import { parquetWasm } from '../lib/io/parquet.js';
import { inputFormat, outputFormat } from '../lib/io/formats.js';
import { countRecords, openStageOutput, readStageInput } from '../lib/io/records.js';
import { readRecords } from '../lib/io/jsonl.js';
import { manifestPath } from '../lib/io/manifest.js';
import { cliPath, dataDir, repoRoot } from './helpers.js';

const model = (name: string) => path.join(repoRoot, 'models', name);
const work = mkdtempSync(path.join(tmpdir(), 'gainrag-formats-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const f = (name: string) => path.join(work, name);
const squad = path.join(dataDir, 'squad_v1.1_dev_open');

function cli(args: string[], expectOk = true) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work, env: { ...process.env, GAINRAG_THREADS: '2' } });
  if (expectOk) assert.equal(r.status, 0, `gainrag ${args.join(' ')} failed:\n${r.stderr}`);
  return r;
}

function head(file: string, n: number): string {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(n);
    readSync(fd, b, 0, n, 0);
    return b.toString('latin1');
  } finally {
    closeSync(fd);
  }
}

async function all(file: string): Promise<unknown[]> {
  const out = [];
  for await (const r of readStageInput(file)) out.push(r.record);
  return out;
}

test('outputFormat: by extension, --format overrides, an unknown extension or format is E_INVALID_ARG listing the formats', () => {
  const cases: [string, string][] = [
    ['a.jsonl', 'jsonl'], ['a.json', 'jsonl'], ['a.arrow', 'arrow'], ['A.FEATHER', 'arrow'], ['a.arrows', 'arrows'], ['a.ipc', 'arrows'], ['dir.v2/a.parquet', 'parquet'],
  ];
  for (const [file, format] of cases) assert.equal(outputFormat(file), format, file);
  assert.equal(outputFormat('a.txt', 'parquet'), 'parquet');
  assert.equal(outputFormat('a.arrow', 'jsonl'), 'jsonl');
  assert.equal(outputFormat('a.arrow', 'auto'), 'arrow');
  for (const bad of ['a.txt', 'a.parq', 'noext', 'dir.d/noext']) {
    assert.throws(() => outputFormat(bad), { code: 'E_INVALID_ARG', message: /\.jsonl.*\.arrow.*\.arrows.*\.parquet/ }, bad);
  }
  assert.throws(() => outputFormat('a.jsonl', 'csv'), { code: 'E_INVALID_ARG', message: /auto, jsonl, arrow, arrows, parquet/ });
});

test('columnar writers: Arrow file (ARROW1 + footer), stream, Parquet (PAR1); nothing published before close; inputs by magic bytes', async () => {
  const records = [{ question: 'q1', answers: ['a'] }, { question: 'q2', answers: [] }, { question: 'q3', answers: ['b', 'c'] }];
  for (const [name, format] of [['w.arrow', 'arrow'], ['w.arrows', 'arrows'], ['w.parquet', 'parquet']] as const) {
    const out = f(name);
    const w = openStageOutput(out, { format, manifest: { stage: 'test', settings: {} } });
    w.write(records[0]);
    w.write(records[1]);
    w.flush();
    w.write(records[2]);
    assert.equal(existsSync(out), false, `${name}: nothing under the final name before close`);
    await w.close();
    assert.equal(existsSync(`${out}.partial`), false, name);
    assert.equal(existsSync(`${out}.partial.convert`), false, name);
    assert.equal(JSON.parse(readFileSync(manifestPath(out), 'utf8')).records, 3, name);
    assert.equal(inputFormat(out), format, name);
    assert.deepEqual(await all(out), records, name);
    assert.equal(await countRecords(out), 3, name);
    // Every reader of records reads it (evaluate, compare, filter... go through readRecords).
    const viaReadRecords = [];
    for await (const r of readRecords(out)) viaReadRecords.push(r.record);
    assert.deepEqual(viaReadRecords, records, name);
  }
  assert.equal(head(f('w.arrow'), 6), 'ARROW1');
  assert.equal(readFileSync(f('w.arrow')).subarray(-6).toString('latin1'), 'ARROW1');
  assert.equal(head(f('w.parquet'), 4), 'PAR1');
  // The file format is what readers of .arrow expect: apache-arrow's file reader finds both batches.
  const batches = [...RecordBatchFileReader.from(readFileSync(f('w.arrow')))];
  assert.deepEqual(batches.map((b) => b.numRows), [2, 1]);
  assert.deepEqual([...(await RecordBatchStreamReader.from(readFileSync(f('w.arrows'))))].map((b) => b.numRows), [2, 1]);
  // An empty output is a valid file of each format.
  for (const [name, format] of [['e.arrow', 'arrow'], ['e.arrows', 'arrows'], ['e.parquet', 'parquet']] as const) {
    await openStageOutput(f(name), { format }).close();
    assert.deepEqual(await all(f(name)), [], name);
    assert.equal(await countRecords(f(name)), 0, name);
  }
  // Aborted: no output, no partial.
  const a = openStageOutput(f('gone.parquet'), { format: 'parquet' });
  a.write(records[0]);
  a.flush();
  a.abort();
  assert.equal(existsSync(f('gone.parquet')) || existsSync(f('gone.parquet.partial')), false);
  // A truncated Arrow file is damaged, not shorter; JSON stays JSON whatever its name.
  const cut = f('cut.arrow');
  writeFileSync(cut, readFileSync(f('w.arrow')).subarray(0, -12));
  await assert.rejects(countRecords(cut), { code: 'E_DATA' });
  await assert.rejects(all(cut), { code: 'E_DATA' });
  writeFileSync(f('j.arrow'), '{"question":"x"}\n');
  assert.equal(inputFormat(f('j.arrow')), 'jsonl');
});

test('gainrag retrieve --out: .parquet writes Parquet, .feather/.arrow the IPC file, .arrows the stream; .txt is refused', async () => {
  const passages = f('passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').trim().split('\n').slice(-60).join('\n') + '\n');
  const questions = f('questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(5360, 5372).join('\n') + '\n');
  const index = f('index');
  cli(['index', 'build', '--passages', passages, '--encoder', model('bert-tiny'), '--out', index]);
  const args = ['retrieve', '--index', index, '--encoder', model('bert-tiny'), '--data', questions, '--top-k', '5', '--batch-size', '5'];
  cli([...args, '--out', f('r.jsonl')]);
  const jsonl = [];
  for await (const r of readRecords(f('r.jsonl'))) jsonl.push(r.record);
  for (const [name, magic] of [['r.parquet', 'PAR1'], ['r.feather', 'ARROW1'], ['r.arrow', 'ARROW1'], ['r.arrows', '\xff\xff\xff\xff']] as const) {
    cli([...args, '--out', f(name)]);
    assert.equal(head(f(name), magic.length), magic, name);
    assert.deepEqual(await all(f(name)), jsonl, name);
  }
  assert.equal([...RecordBatchFileReader.from(readFileSync(f('r.feather')))].reduce((n, b) => n + b.numRows, 0), 12);
  const bad = cli([...args, '--out', f('r.txt')], false);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /unknown output format \.txt.*\.parquet.*\(E_INVALID_ARG\)/s);
  assert.equal(existsSync(f('r.txt')) || existsSync(f('r.txt.partial')), false);
  // Damaged Parquet is E_DATA (never a crash of the process, never garbage): a cut footer, or
  // overwritten pages (which parquet-wasm's async readers would throw outside any promise).
  const pbytes = readFileSync(f('r.parquet'));
  writeFileSync(f('cut.parquet'), pbytes.subarray(0, pbytes.length - 40));
  await assert.rejects(countRecords(f('cut.parquet')), { code: 'E_DATA' });
  writeFileSync(f('bad.parquet'), Buffer.concat([pbytes.subarray(0, 100), Buffer.alloc(300, 7), pbytes.subarray(400)]));
  await assert.rejects(all(f('bad.parquet')), { code: 'E_DATA' });
  assert.deepEqual(await all(f('r.parquet')), jsonl, 'the reader still works after a damaged file');
  // Question sets written by other tools (an Arrow file, Parquet, no gainrag metadata) are read
  // row by row as records: retrieving from them gives the JSONL run's output.
  const qs = [];
  for await (const r of readRecords(questions)) qs.push(r.record as { id: string; question: string; answers: string[]; gold_passage_ids: string[] });
  const utf8List = new List(new Field('item', new Utf8(), true));
  const table = new Table({
    id: vectorFromArray(qs.map((q) => q.id), new Utf8()), question: vectorFromArray(qs.map((q) => q.question), new Utf8()),
    answers: vectorFromArray(qs.map((q) => q.answers), utf8List), gold_passage_ids: vectorFromArray(qs.map((q) => q.gold_passage_ids), utf8List),
  });
  writeFileSync(f('q.arrow'), tableToIPC(table, 'file'));
  const pq = parquetWasm();
  writeFileSync(f('q.parquet'), pq.writeParquet(pq.Table.fromIPCStream(tableToIPC(table, 'stream'))));
  for (const q of ['q.arrow', 'q.parquet']) {
    assert.deepEqual(await all(f(q)), qs, q);
    cli([...args.map((a) => (a === questions ? f(q) : a)), '--out', f(`from-${q}.jsonl`)]);
    assert.equal(readFileSync(f(`from-${q}.jsonl`), 'utf8'), readFileSync(f('r.jsonl'), 'utf8'), q);
  }
  // gainrag convert records: JSONL -> Parquet -> JSONL gives the file back byte for byte.
  cli(['convert', 'records', '--data', f('r.jsonl'), '--out', f('c.parquet')]);
  assert.deepEqual(await all(f('c.parquet')), jsonl);
  cli(['convert', 'records', '--data', f('c.parquet'), '--out', f('c.jsonl')]);
  assert.equal(readFileSync(f('c.jsonl'), 'utf8'), readFileSync(f('r.jsonl'), 'utf8'));
  // --format overrides the extension.
  cli([...args, '--out', f('r.txt'), '--format', 'parquet']);
  assert.equal(head(f('r.txt'), 4), 'PAR1');
  // A later stage reads Parquet input like JSONL: filter keeps the same records.
  cli(['filter', '--data', f('r.parquet'), '--out', f('filtered-p.jsonl')]);
  cli(['filter', '--data', f('r.jsonl'), '--out', f('filtered-j.jsonl')]);
  assert.equal(readFileSync(f('filtered-p.jsonl'), 'utf8'), readFileSync(f('filtered-j.jsonl'), 'utf8'));
  // filter writes Parquet by extension too (synthesize-shaped records: passages with PPL_CD).
  const syn = f('syn.jsonl');
  writeFileSync(syn, [1, 2, 3].map((i) => JSON.stringify({ question: `q${i}`, answers: ['a'], passages: [{ title: 't', text: 'x', PPL_CD: i, EM_with_retrieval: i !== 2 }] })).join('\n') + '\n');
  cli(['filter', '--data', syn, '--out', f('kept.parquet')]);
  assert.equal(head(f('kept.parquet'), 4), 'PAR1');
  assert.deepEqual((await all(f('kept.parquet'))).map((r) => (r as { question: string }).question), ['q1', 'q3']);
});

test('typed columns: records that do not fit (other keys, types, key order, nulls, lone surrogates) read back exactly too', async () => {
  const recs: unknown[] = [
    { id: 'a', question: 'q1', answers: ['x'], ctxs: [{ id: '1', title: 't', text: 'x', score: 1.5, hasanswer: true }], n: 1, F1: 0.5, EM: 1, origin_hit_rank: null },
    { id: 'b', question: 'q2', answers: [], ctxs: [], n: 2.5, F1: NaN, EM: 0, origin_hit_rank: 3 }, // NaN is JSON null
    { question: 'q3', id: 'c', answers: ['y'], ctxs: [{ id: '2', title: 't', text: 'y', score: 0.1, hasanswer: false }] }, // key order; 0.1 is no float32
    { id: 7, question: 'q\ud800', answers: ['z', 1], ctxs: null, n: -0, F1: Infinity, EM: 300, extra: { deep: [1, { a: null }] }, u: undefined },
    { id: 'e', question: 'q5', answers: ['w'], ctxs: [{ id: '3', title: 't', text: 'z', score: -Infinity, hasanswer: false, more: 1 }], EM: 1, origin_hit_rank: 1.5 },
  ];
  // What the JSONL path gives: the records through stringifyJson / parseJson.
  const jl = f('fit.jsonl');
  const w = openStageOutput(jl, { format: 'jsonl' });
  for (const r of recs) w.write(r);
  w.close();
  const expected = await all(jl);
  for (const [name, format] of [['fit.arrow', 'arrow'], ['fit.arrows', 'arrows'], ['fit.parquet', 'parquet']] as const) {
    const out = openStageOutput(f(name), { format, manifest: { stage: 'select', settings: {} } });
    out.write(recs[0]);
    out.write(recs[1]);
    out.flush();
    for (const r of recs.slice(2)) out.write(r);
    await out.close();
    const back = await all(f(name));
    assert.deepEqual(back, expected, name);
    assert.equal(back.map((r) => JSON.stringify(r)).join('\n'), expected.map((r) => JSON.stringify(r)).join('\n'), `${name}: key order`);
  }
  // Arrays and objects inside exploded elements are JSON items.
  const nested = [{ question: 'n', ctxs: [{ id: '1', tags: ['a', 'b'], meta: { x: [1] } }, { id: '2', tags: [], meta: null }] }];
  const nw = openStageOutput(f('nested.parquet'), { format: 'parquet' });
  nw.write(nested[0]);
  await nw.close();
  assert.deepEqual(await all(f('nested.parquet')), nested);
  // The typed columns still hold what fits: the first record entirely, and the ctxs of record 1.
  const [batch0] = [...RecordBatchFileReader.from(readFileSync(f('fit.arrow')))];
  assert.equal(batch0.getChild('_record')!.get(0), null);
  assert.equal(batch0.getChild('ctx_scores')!.get(0)!.get(0), 1.5);
  assert.equal(batch0.getChild('n')!.get(0), 1);
});
