// The seed's question sets in the form their downloads take (test/data/datasets, see its
// PROVENANCE.md): each is read with its own questions and answers (extracted here from the raw
// file by this test's own reading of the format) and goes retrieve -> generate -> evaluate.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { mapRecord, parseTargetValue } from '../lib/io/datasets.js';
import { readStageInput } from '../lib/io/records.js';
import { cliPath, dataDir, repoRoot } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-datasets-'));
after(() => rmSync(work, { recursive: true, force: true }));
const model = (name: string) => path.join(repoRoot, 'models', name);
const ds = (name: string) => path.join(dataDir, 'datasets', name);

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [cliPath, ...args, '--json'], { encoding: 'utf8', env: { ...process.env, GAINRAG_THREADS: '1' } });
  assert.equal(r.status, 0, `gainrag ${args.join(' ')}:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() as string);
}

const json = (f: string) => JSON.parse(readFileSync(f, 'utf8'));
const jsonl = (f: string) => readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const uniq = (a: string[]) => [...new Set(a)];

// What each file holds, read directly from its documented layout.
const DATASETS: { name: string; file: string; expected: () => { question: string; answers: string[] }[] }[] = [
  { name: 'hotpotqa', file: ds('hotpotqa_train.slice.json'), expected: () => json(ds('hotpotqa_train.slice.json')).map((r: { question: string; answer: string }) => ({ question: r.question, answers: [r.answer] })) },
  { name: '2wikimultihopqa', file: ds('2wikimultihopqa_format.sample.json'), expected: () => json(ds('2wikimultihopqa_format.sample.json')).map((r: { question: string; answer: string }) => ({ question: r.question, answers: [r.answer] })) },
  { name: 'webquestions', file: ds('webquestions_devtest.slice.json'), expected: () => json(ds('webquestions_devtest.slice.json')).map((r: { qText: string; answers: string[] }) => ({ question: r.qText, answers: r.answers })) },
  { name: 'nq-open', file: ds('nq_open_dev.slice.jsonl'), expected: () => jsonl(ds('nq_open_dev.slice.jsonl')).map((r: { question: string; answer: string[] }) => ({ question: r.question, answers: r.answer })) },
  {
    name: 'triviaqa', file: ds('triviaqa_format.sample.json'),
    expected: () => json(ds('triviaqa_format.sample.json')).Data.map((q: { Question: string; Answer: { Value: string; Aliases: string[] } }) => ({ question: q.Question, answers: uniq([q.Answer.Value, ...q.Answer.Aliases]) })),
  },
  {
    name: 'squad', file: ds('squad_v1.1_dev.slice.json'),
    expected: () =>
      json(ds('squad_v1.1_dev.slice.json')).data.flatMap((a: { paragraphs: { qas: { question: string; answers: { text: string }[] }[] }[] }) =>
        a.paragraphs.flatMap((p) => p.qas.map((qa) => ({ question: qa.question, answers: uniq(qa.answers.map((x) => x.text)) })))),
  },
];

test('each dataset as downloaded is read with its own questions and answers', async () => {
  for (const d of DATASETS) {
    const got: { question: string; answers: string[] }[] = [];
    for await (const { record } of readStageInput(d.file)) {
      const r = record as { question: string; answers: string[] };
      got.push({ question: r.question, answers: r.answers });
    }
    assert.deepEqual(got, d.expected(), d.name);
    assert.ok(got.length >= 3, d.name);
  }
  // The original WebQuestions layout (utterance + targetValue) and named fields.
  assert.deepEqual(parseTargetValue('(list (description "Jazmine Sullivan") (description Jamaica))'), ['Jazmine Sullivan', 'Jamaica']);
  assert.deepEqual(mapRecord({ url: 'u', utterance: 'what is x?', targetValue: '(list (description Y))' }), { question: 'what is x?', answers: ['Y'], url: 'u' });
  assert.deepEqual(mapRecord({ q: { text: 'why?' }, gold: [{ text: 'because' }], key: 7 }, { questionField: 'q.text', answersField: 'gold', idField: 'key' }), { id: 7, question: 'why?', answers: ['because'], q: { text: 'why?' } });
});

test('each dataset goes retrieve -> generate -> evaluate with its questions and answers', () => {
  const passages = path.join(work, 'passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'), 'utf8').trim().split('\n').slice(0, 48).join('\n') + '\n');
  const index = path.join(work, 'index');
  cli(['index', 'build', '--passages', passages, '--encoder', model('bert-tiny'), '--out', index, '--batch-size', '48']);
  for (const d of DATASETS) {
    const expected = d.expected();
    const retrieved = path.join(work, `${d.name}.retrieved.jsonl`);
    const r = cli(['retrieve', '--index', index, '--encoder', model('bert-tiny'), '--data', d.file, '--top-k', '2', '--out', retrieved]);
    assert.equal(r.questions, expected.length, `${d.name}: retrieve saw every question`);
    const records = jsonl(retrieved);
    assert.deepEqual(records.map((x: { question: string; answers: string[] }) => ({ question: x.question, answers: x.answers })), expected, `${d.name}: retrieve output`);
    assert.ok(records.every((x: { ctxs: unknown[] }) => x.ctxs.length === 2));
    const answered = path.join(work, `${d.name}.answers.jsonl`);
    const g = cli(['generate', '--data', retrieved, '--llm', model('llama-tiny'), '--max-new-tokens', '4', '--out', answered]);
    assert.equal(g.written, expected.length, `${d.name}: every question answered`);
    const e = cli(['evaluate', '--data', answered]);
    assert.equal(e.evaluated, expected.length, `${d.name}: evaluate counts every record`);
  }
});

test('split: the demo\'s hash split as a command, reading a dataset as downloaded', () => {
  const train = path.join(work, 'wq.train.jsonl');
  const testPart = path.join(work, 'wq.test.jsonl');
  const s = cli(['split', '--data', ds('webquestions_devtest.slice.json'), '--out-train', train, '--out-test', testPart, '--test-fraction', '0.5']);
  const all = json(ds('webquestions_devtest.slice.json'));
  assert.equal(s.records, all.length);
  assert.equal(s.train + s.test, all.length);
  const ids = [...jsonl(train), ...jsonl(testPart)].map((r: { id: string }) => r.id).sort();
  assert.deepEqual(ids, all.map((r: { qId: string }) => r.qId).sort(), 'every question once, keyed by its qId');
  // Same inputs, same split; another seed draws another (fraction 0.5 of 6: some record moves).
  const again = cli(['split', '--data', ds('webquestions_devtest.slice.json'), '--out-train', path.join(work, 'a.jsonl'), '--out-test', path.join(work, 'b.jsonl'), '--test-fraction', '0.5']);
  assert.deepEqual([again.train, again.test], [s.train, s.test]);
  assert.deepEqual(readFileSync(path.join(work, 'b.jsonl'), 'utf8'), readFileSync(testPart, 'utf8'));
});
