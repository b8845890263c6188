// Every stage's Arrow (file and stream) and Parquet outputs: typed, flat columns (the schemas the
// README documents), read back as exactly the JSONL records, read as input by the next stage like
// JSONL; and a real consumer: DuckDB opens the Parquet outputs (avg("F1") is the generate
// summary's F1, list_extract(ctx_scores, 1) the first score), apache-arrow's file reader the
// Arrow files. (DuckDB's arrow extension is not installable offline: Arrow files are checked
// with apache-arrow's RecordBatchFileReader, and with DuckDB too when the extension loads.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RecordBatchFileReader, Type, type Schema } from 'apache-arrow';
import { readStageInput, type RecordFormat } from '../lib/io/records.js';
import { columnarSchema } from '../lib/io/arrow-records.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { openRetrieveResources, retrieve } from '../lib/retrieval/retrieve.js';
import { synthesize } from '../lib/pipeline/synthesize.js';
import { select } from '../lib/pipeline/select.js';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { evaluate } from '../lib/pipeline/evaluate.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { nativeGenerator } from '../lib/pipeline/text-backend.js';
import { dataDir, repoRoot } from './helpers.js';

const model = (name: string) => path.join(repoRoot, 'models', name);
const work = mkdtempSync(path.join(tmpdir(), 'gainrag-columns-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const f = (name: string) => path.join(work, name);
const squad = path.join(dataDir, 'squad_v1.1_dev_open');
const COLUMNAR = [['arrow', 'arrow'], ['arrows', 'arrows'], ['parquet', 'parquet']] as const;

async function records(file: string): Promise<unknown[]> {
  const out = [];
  for await (const r of readStageInput(file)) out.push(r.record);
  return out;
}

// name -> Arrow type, as `List<Float32>`, `Int8`...
function types(schema: Schema): Record<string, string> {
  return Object.fromEntries(schema.fields.map((x) => [x.name, String(x.type)]));
}

// The typed columns each stage must have (a subset of its schema; README: "Columnar outputs").
const EXPECT: Record<string, Record<string, string>> = {
  retrieve: {
    id: 'Utf8', question: 'Utf8', answers: 'List<Utf8>', ctx_ids: 'List<Int64>', ctx_passage_ids: 'List<Utf8>', ctx_title: 'List<Utf8>',
    ctx_text: 'List<Utf8>', ctx_scores: 'List<Float32>', ctx_hasanswer: 'List<Bool>', gold_passage_ids: 'List<Utf8>', _record: 'Utf8',
  },
  synthesize: {
    id: 'Utf8', question: 'Utf8', answers: 'List<Utf8>', prompt_standard: 'Utf8', passage_title: 'List<Utf8>', passage_text: 'List<Utf8>',
    passage_has_answer: 'List<Bool>', passage_retrieval_score: 'List<Float64>', passage_PPL_CD: 'List<Float64>', passage_retrieved_ppl: 'List<Float64>',
    passage_EM_with_retrieval: 'List<Bool>', passage_F1_with_retrieval: 'List<Float64>', passage_generated: 'List<Utf8>', passage_pseudo: 'List<Bool>',
    passage_truncated: 'List<Bool>',
  },
  select: {
    question: 'Utf8', ctx_passage_ids: 'List<Utf8>', ctx_scores: 'List<Float32>', ctx_selector_score: 'List<Float32>', ctx_hasanswer: 'List<Bool>',
    ctx_pseudo: 'List<Bool>', origin_hit_rank: 'Int64', rerank_hit_rank: 'Int64',
  },
  generate: { question: 'Utf8', generated: 'Utf8', EM: 'Int8', F1: 'Float64', truncated: 'Bool' },
};

test('every stage: Arrow file/stream and Parquet outputs in typed columns, read back as the JSONL records; DuckDB reads them', async (t) => {
  const passages = f('passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').trim().split('\n').slice(-80, -20).join('\n') + '\n');
  const questions = f('questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(5340, 5352).join('\n') + '\n');
  const index = f('index');
  await buildIndex({ passages, encoder: model('bert-tiny'), out: index, batchSize: 60 });
  const resources = await openRetrieveResources({ index, encoder: model('bert-tiny') });
  const lm = await CausalLM.load(model('llama-tiny'));
  const selector = await CrossEncoder.load(model('xlmr-tiny-reranker'));
  const run = {
    retrieve: (data: string, out: string, format: RecordFormat) => retrieve({ index, encoder: model('bert-tiny'), data, out, topK: 4, batchSize: 5, resources, format }),
    synthesize: (data: string, out: string, format: RecordFormat) =>
      synthesize(lm, { data, out, topK: 2, batchQuestions: 4, maxNewTokens: 3, pseudoMaxNewTokens: 6, format }),
    select: (data: string, out: string, format: RecordFormat) =>
      select(selector, { data, out, generator: nativeGenerator(lm), pseudoMaxNewTokens: 6, batchQuestions: 4, candidates: 4, kDocs: 3, format }),
    generate: (data: string, out: string, format: RecordFormat) => generateAnswers({ lm, data, out, batchQuestions: 4, maxNewTokens: 3, kDocs: 2, format }),
  };
  const input = { retrieve: questions, synthesize: f('retrieve.jsonl'), select: f('retrieve.jsonl'), generate: f('select.jsonl') };
  const summaries: Record<string, unknown> = {};
  const { DuckDBInstance } = await import('@duckdb/node-api');
  const db = await DuckDBInstance.create(':memory:');
  const duck = await db.connect();
  const sql = async (q: string) => (await duck.runAndReadAll(q)).getRowObjectsJson();
  let duckArrow = true;
  try {
    await duck.run('LOAD arrow');
  } catch {
    duckArrow = false;
  }
  t.diagnostic(duckArrow ? 'DuckDB arrow extension loaded: Arrow files read by DuckDB too' : 'DuckDB arrow extension not installable offline: Arrow files read by apache-arrow RecordBatchFileReader');

  for (const stage of ['retrieve', 'synthesize', 'select', 'generate'] as const) {
    summaries[stage] = await run[stage](input[stage], f(`${stage}.jsonl`), 'jsonl');
    const jsonl = await records(f(`${stage}.jsonl`));
    assert.ok(jsonl.length >= 8, `${stage}: ${jsonl.length} records`);
    const lines = readFileSync(f(`${stage}.jsonl`), 'utf8');
    for (const [ext, format] of COLUMNAR) {
      const out = f(`${stage}.${ext}`);
      await run[stage](input[stage], out, format);
      const back = await records(out);
      // Same values, same key order: re-serialised, the records are the JSONL file.
      assert.equal(back.map((r) => JSON.stringify(r)).join('\n') + '\n', lines.replace(/-?1e999/g, 'null'), `${stage} ${format}`);
      assert.deepEqual(back, jsonl, `${stage} ${format}`);
      const schema = await columnarSchema(out);
      const ty = types(schema);
      for (const [col, type] of Object.entries(EXPECT[stage])) assert.equal(ty[col], type, `${stage} ${format}: column ${col}`);
      assert.equal(schema.metadata.get('gainrag.schema'), 'gainrag-columns-1');
      assert.equal(schema.metadata.get('gainrag.stage'), stage);
      if (format === 'arrow') {
        // The real Arrow file reader: every record fits the typed columns (no JSON fallback).
        const batches = [...RecordBatchFileReader.from(readFileSync(out))];
        assert.equal(batches.reduce((n, b) => n + b.numRows, 0), jsonl.length);
        const fell = batches.flatMap((b) => [...b.getChild('_record')!].filter((x) => x !== null));
        assert.deepEqual(fell, [], `${stage}: a record fell back to JSON`);
        assert.equal(schema.fields.find((x) => x.name === '_record')!.type.typeId, Type.Utf8);
      }
    }
    // The next stage reads Parquet input as it reads JSONL.
    if (stage === 'retrieve') {
      await run.synthesize(f('retrieve.parquet'), f('synthesize-from-parquet.jsonl'), 'jsonl');
    }
  }
  assert.equal(readFileSync(f('synthesize-from-parquet.jsonl'), 'utf8'), readFileSync(f('synthesize.jsonl'), 'utf8'));

  // DuckDB on the Parquet outputs: typed columns, the same numbers as the JSONL output.
  const gen = (await records(f('generate.jsonl'))) as { EM: number; F1: number }[];
  const g = summaries.generate as { F1: number; EM: number };
  const [avg] = await sql(`SELECT avg("F1") AS f1, avg("EM") AS em, typeof(any_value("EM")) AS em_t, typeof(any_value("F1")) AS f1_t, typeof(any_value(truncated)) AS tr_t, count(*) AS n FROM '${f('generate.parquet')}'`);
  assert.ok(Math.abs(Number(avg.f1) - g.F1 / 100) < 1e-12, `avg(F1) ${avg.f1} vs summary ${g.F1}`);
  assert.ok(Math.abs(Number(avg.em) - g.EM / 100) < 1e-12);
  assert.deepEqual([avg.em_t, avg.f1_t, avg.tr_t, Number(avg.n)], ['TINYINT', 'DOUBLE', 'BOOLEAN', gen.length]);

  const ret = (await records(f('retrieve.jsonl'))) as { id: string; ctxs: { score: number; text: string; hasanswer: boolean }[] }[];
  const rows = await sql(`SELECT id, list_extract(ctx_scores, 1) AS s1, ctx_text[2] AS t2, len(ctx_ids) AS k, typeof(ctx_scores) AS ty, typeof(ctx_ids) AS ity FROM '${f('retrieve.parquet')}'`);
  assert.equal(rows.length, ret.length);
  rows.forEach((r, i) => {
    assert.equal(r.id, ret[i].id);
    assert.equal(Number(r.s1), ret[i].ctxs[0].score, 'list_extract(ctx_scores, 1) is the first score');
    assert.equal(r.t2, ret[i].ctxs[1].text);
    assert.equal(Number(r.k), ret[i].ctxs.length);
    assert.deepEqual([r.ty, r.ity], ['FLOAT[]', 'BIGINT[]']);
  });
  const [hits] = await sql(`SELECT sum(CASE WHEN list_contains(ctx_hasanswer, true) THEN 1 ELSE 0 END) AS hit FROM '${f('retrieve.parquet')}'`);
  assert.equal(Number(hits.hit), ret.filter((r) => r.ctxs.some((c) => c.hasanswer)).length);

  const syn = (await records(f('synthesize.jsonl'))) as { passages: { PPL_CD: number }[] }[];
  const ppl = await sql(`SELECT list_extract(passage_PPL_CD, 1) AS p FROM '${f('synthesize.parquet')}'`);
  ppl.forEach((r, i) => assert.equal(Number(r.p), syn[i].passages[0].PPL_CD));

  const sel = (await records(f('select.jsonl'))) as { origin_hit_rank: number | null; rerank_hit_rank: number | null; ctxs: { selector_score: number }[] }[];
  const sr = await sql(`SELECT origin_hit_rank AS o, rerank_hit_rank AS r, ctx_selector_score[1] AS s, typeof(origin_hit_rank) AS ty FROM '${f('select.parquet')}'`);
  sr.forEach((r, i) => {
    assert.equal(r.o === null ? null : Number(r.o), sel[i].origin_hit_rank);
    assert.equal(r.r === null ? null : Number(r.r), sel[i].rerank_hit_rank);
    assert.equal(Number(r.s), sel[i].ctxs[0].selector_score);
    assert.equal(r.ty, 'BIGINT');
  });

  if (duckArrow) {
    const [a] = await sql(`SELECT avg("F1") AS f1 FROM read_arrow('${f('generate.arrow')}')`);
    assert.ok(Math.abs(Number(a.f1) - g.F1 / 100) < 1e-12);
  } else {
    const table = [...RecordBatchFileReader.from(readFileSync(f('generate.arrow')))];
    const f1 = table.flatMap((b) => [...b.getChild('F1')!] as number[]);
    assert.ok(Math.abs(f1.reduce((a, b) => a + b, 0) / f1.length - g.F1 / 100) < 1e-12);
    const first = [...RecordBatchFileReader.from(readFileSync(f('retrieve.arrow')))].flatMap((b) => [...b.getChild('ctx_scores')!].map((l) => (l as { get(i: number): number }).get(0)));
    assert.deepEqual(first, ret.map((r) => r.ctxs[0].score));
  }
  // evaluate reads every format: the same summary from each.
  const ev = await evaluate({ data: f('generate.jsonl') });
  for (const [ext] of COLUMNAR) assert.deepEqual({ ...(await evaluate({ data: f(`generate.${ext}`) })), input: '' }, { ...ev, input: '' }, `evaluate ${ext}`);
  assert.equal(ev.storedMismatches, 0);
  duck.closeSync();
  const sizes = Object.fromEntries(['jsonl', 'arrow', 'parquet'].map((e) => [e, readFileSync(f(`retrieve.${e}`)).length]));
  t.diagnostic(`retrieve top-4 output bytes: ${JSON.stringify(sizes)}`);
});
