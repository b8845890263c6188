// Compatibility with files the reference implementation writes and with its run settings:
// Python's NaN / Infinity / -Infinity JSON tokens in every reader, valid JSON for non-finite
// numbers in every writer, `to-selector --score-field`, `train --drop-last` step counts (HF
// Trainer semantics), and `retrieve` recall over all questions with Recall@25.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseJson, stringifyJson } from '../lib/io/json-values.js';
import { AtomicJsonlWriter, readRecords } from '../lib/io/jsonl.js';
import { AtomicArrowWriter } from '../lib/io/arrow-records.js';
import { readArrowRecords } from '../lib/io/arrow-read.js';
import { loadTrainingData, NEG_INF_TEACHER_SCORE } from '../lib/training/data.js';
import { batchesPerEpoch } from '../lib/training/sampling.js';
import { filterSynthesized } from '../lib/pipeline/filter.js';
import { toSelector } from '../lib/pipeline/to-selector.js';
import { cliPath, dataDir, fixture } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-compat-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function cli(args: string[]) {
  return spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work });
}

async function collect(file: string) {
  const out = [];
  for await (const r of readRecords(file)) out.push(r);
  return out;
}

// What Python's json.dumps writes for {"question": ..., "passages": [...]} with float('inf'),
// float('nan') and -float('inf') values (default allow_nan=True): bare tokens, ", " and ": ".
const PY_LINE =
  '{"question": "Is Infinity bigger than NaN?", "passages": [{"title": "NaN", "text": "-Infinity and Infinity, NaN bread", ' +
  '"PPL_CD": Infinity, "retrieved_ppl": NaN, "score": -Infinity, "EM_with_retrieval": false}, {"title": "x", "text": "\\"NaN\\" Infinity", "PPL_CD": 2.5}]}';

test('parseJson: Python NaN/Infinity/-Infinity tokens, strings that contain those words untouched', () => {
  const r = parseJson(PY_LINE) as { question: string; passages: Record<string, unknown>[] };
  assert.equal(r.question, 'Is Infinity bigger than NaN?');
  assert.equal(r.passages[0].title, 'NaN');
  assert.equal(r.passages[0].text, '-Infinity and Infinity, NaN bread');
  assert.equal(r.passages[0].PPL_CD, Infinity);
  assert.ok(Number.isNaN(r.passages[0].retrieved_ppl));
  assert.equal(r.passages[0].score, -Infinity);
  assert.equal(r.passages[0].EM_with_retrieval, false);
  assert.equal(r.passages[1].text, '"NaN" Infinity');
  assert.equal(r.passages[1].PPL_CD, 2.5);
  // The same document with valid JSON stand-ins parses to the same structure.
  const standIns = PY_LINE.replace(': Infinity,', ': 1e999,').replace(': NaN,', ': null,').replace(': -Infinity,', ': -1e999,');
  const expected = JSON.parse(standIns) as { passages: Record<string, unknown>[] };
  expected.passages[0].retrieved_ppl = NaN;
  assert.deepEqual(r, expected);
  assert.deepEqual(parseJson('[NaN, Infinity, -Infinity, -0, 1E2, "\\u0041", {"__proto__": 1}]'), [NaN, Infinity, -Infinity, -0, 100, 'A', JSON.parse('{"__proto__": 1}')]);
  assert.equal(Object.getPrototypeOf(parseJson('{"__proto__": {"polluted": NaN}}')), Object.prototype);
  // Deep nesting does not exhaust the stack.
  const deep = `${'['.repeat(20000)}NaN${']'.repeat(20000)}`;
  let v = parseJson(deep);
  for (let i = 0; i < 20000; i++) v = (v as unknown[])[0];
  assert.ok(Number.isNaN(v));
});

test('parseJson: everything else JSON rejects stays rejected', () => {
  for (const bad of ['{"a": NaN,}', '{"a": nan}', '{"a": inf}', '[Infinity 1]', '{"a": "NaN}', '[NaNx]', '{"a": -NaN}', '[01, NaN]', '{"a" NaN}', '[NaN] x', '{NaN: 1}', '[+Infinity]', '["\tNaN"]']) {
    assert.throws(() => parseJson(bad), SyntaxError, bad);
  }
});

test('readRecords: Python-written JSONL and JSON arrays with NaN/Infinity; errors keep FILE:LINE', async () => {
  const jsonl = path.join(work, 'py.jsonl');
  writeFileSync(jsonl, `${PY_LINE}\n{"question": "plain", "passages": []}\n`);
  const got = await collect(jsonl);
  assert.equal(got.length, 2);
  assert.equal(got[0].record.passages[0].PPL_CD, Infinity);
  assert.equal(got[1].line, 2);
  // json.dump(data, f, indent=4) of a list: the reference's .json files.
  const arr = path.join(work, 'py.json');
  writeFileSync(arr, `[\n    {\n        "question": "q",\n        "PPL_CD": -Infinity,\n        "t": "Infinity"\n    },\n    {\n        "question": "r",\n        "PPL_CD": NaN\n    }\n]`);
  const a = await collect(arr);
  assert.deepEqual(a.map((x) => [x.record.PPL_CD, x.line]), [[-Infinity, 2], [NaN, 7]]);
  assert.equal(a[0].record.t, 'Infinity');
  writeFileSync(jsonl, '{"a": 1}\n{"a": Infinity, }\n');
  await assert.rejects(collect(jsonl), { code: 'E_DATA', message: /^py\.jsonl:2: invalid JSON/ });
});

test('writers: +/-Infinity as 1e999 / -1e999, NaN as null; 1e999 read then written stays infinite', async () => {
  assert.equal(stringifyJson({ a: Infinity, b: [-Infinity, NaN, 1.5], c: 'Infinity' }), '{"a":1e999,"b":[-1e999,null,1.5],"c":"Infinity"}');
  assert.equal(stringifyJson({ plain: [1, 'x'] }), '{"plain":[1,"x"]}');
  assert.equal(stringifyJson(new Float32Array([Infinity, 2])), '{"0":1e999,"1":2}');
  // The written text is valid JSON that reads back as infinity.
  assert.deepEqual(JSON.parse(stringifyJson({ x: [Infinity, -Infinity] })!), { x: [Infinity, -Infinity] });
  // Strings and keys that look like the markers or tokens are kept.
  const tricky = { '1e999': '\u0001gainrag-x+', k: '"-1e999"', v: -Infinity };
  assert.deepEqual(JSON.parse(stringifyJson(tricky)!), { ...tricky, v: -Infinity });

  const input = path.join(work, 'inf.jsonl');
  writeFileSync(input, '{"question":"q","PPL_CD":1e999,"low":-1e999}\n');
  const out = path.join(work, 'inf.out.jsonl');
  const w = AtomicJsonlWriter.open(out);
  for await (const { record } of readRecords(input)) w.write(record);
  w.close();
  assert.equal(readFileSync(out, 'utf8'), '{"question":"q","PPL_CD":1e999,"low":-1e999}\n');
  // The Arrow stage stream keeps them too.
  const arrow = path.join(work, 'inf.arrow');
  const aw = new AtomicArrowWriter(arrow, 'json');
  aw.write({ question: 'q', PPL_CD: Infinity, low: -Infinity, nan: NaN });
  aw.close();
  const back = [];
  for await (const r of readArrowRecords(arrow)) back.push(r);
  assert.deepEqual(back, [{ question: 'q', PPL_CD: Infinity, low: -Infinity, nan: null }]);
});

test('filter reads a Python-written synthesis file (Infinity is the worst PPL_CD)', async () => {
  const data = path.join(work, 'synth-py.jsonl');
  writeFileSync(data, [
    '{"question": "a", "passages": [{"title": "t", "text": "x", "PPL_CD": Infinity, "EM_with_retrieval": false}, {"title": "u", "text": "y", "PPL_CD": 3.0, "EM_with_retrieval": true}]}',
    '{"question": "b", "passages": [{"title": "t", "text": "x", "PPL_CD": NaN, "EM_with_retrieval": true}, {"title": "u", "text": "y", "PPL_CD": 3.0, "EM_with_retrieval": false}]}',
  ].join('\n'));
  const out = path.join(work, 'synth-py.filtered.jsonl');
  const s = await filterSynthesized({ data, out });
  assert.deepEqual({ records: s.records, kept: s.kept }, { records: 2, kept: 1 });
  const kept = readFileSync(out, 'utf8');
  assert.match(kept, /"PPL_CD":1e999/);
  assert.equal(JSON.parse(kept).question, 'a');
});

test('train data: Python-written scores; -Infinity negatives get zero teacher weight, NaN/+Infinity are rejected', async () => {
  const file = path.join(work, 'sel-py.jsonl');
  writeFileSync(file, '{"query": "q", "pos": ["p"], "neg": ["n1", "n2"], "pos_scores": [-1.0986], "neg_scores": [-2.5, -Infinity], "prompt": "NaN"}\n');
  const [r] = await loadTrainingData(file);
  assert.deepEqual(r.negScores, [-2.5, NEG_INF_TEACHER_SCORE]);
  assert.equal(r.prompt, 'NaN');
  // exp(score - max) of the stand-in is exactly 0 in float32 next to any finite score.
  assert.equal(Math.fround(Math.exp(Math.fround(NEG_INF_TEACHER_SCORE) - -1.0986)), 0);
  writeFileSync(file, '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [-Infinity], "neg_scores": [NaN]}\n');
  await assert.rejects(loadTrainingData(file), (err: { code?: string; message: string }) => {
    assert.equal(err.code, 'E_DATA');
    assert.match(err.message, /sel-py\.jsonl:1: .*"pos_scores\[0\]" must be a finite number, got -Infinity/);
    assert.match(err.message, /"neg_scores\[0\]" must be a finite number or -Infinity, got NaN/);
    return true;
  });
});

test('train on reference selector data with -Infinity negatives: same run as a teacher weight of 0', () => {
  // softmax gives exp(-1e4 - max) = 0 in float32 as it gives exp(-Infinity) = 0 in FlagEmbedding,
  // so the run with -1e4 stand-ins is what a -Infinity negative must train like.
  const write = (name: string, low: string) => {
    const file = path.join(work, name);
    const rows = Array.from({ length: 4 }, (_, i) =>
      `{"query": "query ${i}", "pos": ["answer ${i}"], "neg": ["other ${i}", "noise ${i}"], "pos_scores": [-0.5], "neg_scores": [-2.0, ${low}]}`);
    writeFileSync(file, `${rows.join('\n')}\n`);
    return file;
  };
  const losses = (data: string, out: string) => {
    const r = cli(['train', '--model', fixture('xlmr-tiny-reranker'), '--data', data, '--out', out, '--batch-size', '2', '--group-size', '3', '--epochs', '1',
      '--query-max-len', '8', '--passage-max-len', '8', '--seed', '5', '--json']);
    assert.equal(r.status, 0, r.stderr);
    return readFileSync(path.join(out, 'train_log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
  };
  const withInf = losses(write('neginf.jsonl', '-Infinity'), path.join(work, 'neginf'));
  const withLow = losses(write('neglow.jsonl', '-1e4'), path.join(work, 'neglow'));
  assert.equal(withInf.length, 2);
  assert.ok(withInf.every(Number.isFinite), `losses ${withInf}`);
  withInf.forEach((l, i) => assert.ok(Math.abs(l - withLow[i]) <= 1e-6 * Math.max(1, Math.abs(withLow[i])), `step ${i + 1}: ${l} vs ${withLow[i]}`));
});

test('to-selector --score-field: PPL_CD by default, retrieved_ppl as the reference sorts; --help says so', async () => {
  const psg = (title: string, cd: number, plain: number) => ({ title, text: `text ${title}`, PPL_CD: cd, retrieved_ppl: plain, EM_with_retrieval: true });
  const data = path.join(work, 'scores.jsonl');
  writeFileSync(data, `${JSON.stringify({ question: 'q', passages: [psg('A', 3, 9), psg('B', 1, 4), psg('C', 2, 1)] })}\n`);
  const byCd = path.join(work, 'by-cd.jsonl');
  const r1 = cli(['to-selector', '--data', data, '--out', byCd, '--json']);
  assert.equal(r1.status, 0, r1.stderr);
  assert.equal(JSON.parse(r1.stdout).scoreField, 'PPL_CD');
  const a = JSON.parse(readFileSync(byCd, 'utf8'));
  assert.deepEqual([a.pos, a.neg, a.pos_scores, a.neg_scores], [['B\ntext B'], ['C\ntext C', 'A\ntext A'], [-Math.log(2)], [-Math.log(3), -Math.log(4)]]);
  const byPlain = path.join(work, 'by-plain.jsonl');
  const r2 = cli(['to-selector', '--data', data, '--out', byPlain, '--score-field', 'retrieved_ppl', '--json']);
  assert.equal(r2.status, 0, r2.stderr);
  const b = JSON.parse(readFileSync(byPlain, 'utf8'));
  assert.deepEqual([b.pos, b.neg, b.pos_scores, b.neg_scores], [['C\ntext C'], ['B\ntext B', 'A\ntext A'], [-Math.log(2)], [-Math.log(5), -Math.log(10)]]);
  const r3 = cli(['to-selector', '--data', data, '--out', byPlain, '--score-field', 'F1']);
  assert.notEqual(r3.status, 0);
  assert.match(r3.stderr, /score-field/);
  const help = cli(['to-selector', '--help']);
  assert.match(help.stdout.replace(/\s+/g, ' '), /data2selector\.py sorts by/);
  await assert.rejects(toSelector({ data, out: byPlain, scoreField: 'F1' as never }), RangeError);
});

test('train --drop-last: step count and warmup follow HF Trainer with dataloader_drop_last', async () => {
  // HF: steps/epoch = floor(N / batch) with drop_last, ceil without; total = epochs * that / grad
  // accumulation; warmup = ceil(ratio * total). N = 10, batch 4, 2 epochs, ratio 0.5:
  //   drop_last: 2 batches/epoch -> 4 steps, warmup 2; without: 3 -> 6 steps, warmup 3.
  assert.equal(batchesPerEpoch(10, 4, true), 2);
  assert.equal(batchesPerEpoch(10, 4, false), 3);
  const data = path.join(work, 'train10.jsonl');
  const lines = Array.from({ length: 10 }, (_, i) =>
    JSON.stringify({ query: `query ${i}`, pos: [`answer ${i}`], neg: [`other ${i}`, `noise ${i}`], pos_scores: [-0.5], neg_scores: [-2, -3] }));
  writeFileSync(data, `${lines.join('\n')}\n`);
  const cases: [string[], number, number[]][] = [
    // lr factor of each step as HF's linear schedule gives it: step/warmup, then (total-step)/(total-warmup)
    [[], 4, [0, 0.5, 1, 0.5]],
    [['--no-drop-last'], 6, [0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3]],
  ];
  for (const [flags, steps, factors] of cases) {
    const out = path.join(work, `drop${flags.length}`);
    const r = cli(['train', '--model', fixture('xlmr-tiny-reranker'), '--data', data, '--out', out, '--batch-size', '4', '--group-size', '3', '--epochs', '2',
      '--lr', '1e-4', '--warmup-ratio', '0.5', '--query-max-len', '8', '--passage-max-len', '8', '--json', ...flags]);
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.equal(summary.optimizerSteps, steps, flags.join(' '));
    const log = readFileSync(path.join(out, 'train_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { lr: number });
    assert.equal(log.length, steps);
    log.forEach((e, i) => assert.ok(Math.abs(e.lr - 1e-4 * factors[i]) < 1e-12, `${flags.join(' ')} step ${i + 1}: lr ${e.lr}`));
  }
  const tooFew = cli(['train', '--model', fixture('xlmr-tiny-reranker'), '--data', data, '--out', path.join(work, 'none'), '--batch-size', '16']);
  assert.notEqual(tooFew.status, 0);
  assert.match(tooFew.stderr, /no full batch of 16.*E_DATA|E_DATA.*no full batch of 16/s);
});

test('retrieve: Recall@25, divided by all questions; questions without answers are misses and counted', () => {
  const squad = path.join(dataDir, 'squad_v1.1_dev_open');
  const passages = path.join(work, 'passages40.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').split('\n').slice(0, 40).join('\n') + '\n');
  const qs = readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(0, 4).map((l) => JSON.parse(l));
  qs.push({ question: 'who has no answer', answers: [] }, { question: 'what is empty', answers: [''] });
  const questions = path.join(work, 'q6.jsonl');
  writeFileSync(questions, qs.map((q) => JSON.stringify(q)).join('\n') + '\n');
  const index = path.join(work, 'index40');
  const built = cli(['index', 'build', '--passages', passages, '--encoder', fixture('bert-tiny'), '--out', index]);
  assert.equal(built.status, 0, built.stderr);
  const out = path.join(work, 'r6.jsonl');
  const r = cli(['retrieve', '--index', index, '--encoder', fixture('bert-tiny'), '--data', questions, '--top-k', '30', '--out', out, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(summary.recall), ['1', '5', '10', '20', '25']);
  assert.deepEqual([summary.questions, summary.withAnswers, summary.withoutAnswers], [6, 4, 2]);
  const records = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { ctxs: { hasanswer: boolean }[] });
  for (const rec of records.slice(4)) assert.ok(rec.ctxs.every((c) => !c.hasanswer), 'no answer (or only "") matches nothing');
  for (const k of [1, 5, 10, 20, 25]) {
    const hits = records.filter((rec) => rec.ctxs.slice(0, k).some((c) => c.hasanswer)).length;
    assert.equal(summary.recall[String(k)], hits / 6, `Recall@${k}`);
  }
  const text = cli(['retrieve', '--index', index, '--encoder', fixture('bert-tiny'), '--data', questions, '--top-k', '30', '--out', out]);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /recall over all 6 questions \(2 without answers, counted as misses\)/);
  assert.match(text.stdout, /Recall@25 /);
});
