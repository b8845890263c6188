// gainrag generate: the reference's evaluation prompt byte for byte, EM/F1 per record against a
// table, summary means, continuous batching against one prompt at a time, bad input, and the
// CLI end to end (--json, --resume byte-identical). Answers for the metric tests come from a
// local fake OpenAI-compatible server, so they are exactly what the table says.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CausalLM } from '../lib/models/causal-lm.js';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { evaluationPrompt } from '../lib/pipeline/prompts.js';
import { cliPath, dataDir, fixture, readReference } from './helpers.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'gainrag-generate-'));
const INSTR = 'Answer the question below concisely in a few words.';
const llm = fixture('llama-tiny');

// Fake completions server: answers each prompt with `answers[question]`, records the prompts.
const answersByQuestion = new Map<string, string>();
const received: string[] = [];
let server: Server;
let url = '';

before(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const { prompt } = JSON.parse(body) as { prompt: string };
      received.push(prompt);
      const question = prompt.slice(prompt.lastIndexOf('### Input:\n') + 11, -1);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ choices: [{ text: answersByQuestion.get(question) ?? '' }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/completions`;
});

after(() => {
  server.close();
  rmSync(tmp, { recursive: true, force: true });
});

function writeJsonl(name: string, records: unknown[]): string {
  const file = path.join(tmp, name);
  writeFileSync(file, records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
  return file;
}

const readJsonl = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>); // eslint-disable-line @typescript-eslint/no-explicit-any

const ctx = (title: string, text: string, hasanswer = false) => ({ id: title, title, text, hasanswer });

test('evaluation prompts are the reference format byte for byte (K = 1, K = 3, no retrieval)', async () => {
  const ctxs = [ctx('Pride and Prejudice', 'A novel by Jane Austen.'), ctx('Emma', 'Another novel.'), ctx('', 'Untitled {input} text.'), ctx('Fourth', 'Not used.')];
  const q = 'Who wrote Pride and Prejudice?';
  // Built here from the definition: "Passage #{i}{title}\nPassage #{i}{text}", joined by a blank line.
  const k1 = 'Passage #1Pride and Prejudice\nPassage #1A novel by Jane Austen.' + '\n\n### Instruction:\n' + INSTR + '\n\n### Input:\n' + q + '\n';
  const k3 =
    'Passage #1Pride and Prejudice\nPassage #1A novel by Jane Austen.\n\nPassage #2Emma\nPassage #2Another novel.\n\nPassage #3\nPassage #3Untitled {input} text.' +
    '\n\n### Instruction:\n' + INSTR + '\n\n### Input:\n' + q + '\n';
  const none = '### Instruction:\n' + INSTR + '\n\n### Input:\n' + q + '\n';
  assert.equal(evaluationPrompt(INSTR, q, ctxs.slice(0, 1)), k1);
  assert.equal(evaluationPrompt(INSTR, q, ctxs.slice(0, 3)), k3);
  assert.equal(evaluationPrompt(INSTR, q, null), none);
  // And what the pipeline sends (no model directory: no chat template, the raw prompt).
  const data = writeJsonl('prompts.jsonl', [{ question: q, answers: ['Jane Austen'], ctxs }]);
  for (const [kDocs, noRetrieval, expected] of [[1, false, k1], [3, false, k3], [1, true, none]] as const) {
    received.length = 0;
    await generateAnswers({ data, out: path.join(tmp, `prompts-${kDocs}-${noRetrieval}.jsonl`), generateUrl: url, generateModel: 'fake', kDocs, noRetrieval });
    assert.deepEqual(received, [expected]);
  }
});

// prediction, gold answers, regex EM (0/1), token F1 (hand computed), hasanswer flags of ctxs.
const TABLE: { prediction: string; answers: string[]; EM: number; F1: number; hits: boolean[] }[] = [
  { prediction: 'Jane Austen', answers: ['Jane Austen'], EM: 1, F1: 1, hits: [true, false, false, false, false] },
  { prediction: 'It was written by Jane Austen.', answers: ['Jane Austen', 'Austen'], EM: 1, F1: 0.5, hits: [false, true, false, false, false] },
  { prediction: 'Austen wrote it', answers: ['Jane Austen'], EM: 0, F1: 0.4, hits: [false, false, false, true, false] },
  { prediction: 'the Denver Broncos!', answers: ['Denver Broncos', 'Broncos'], EM: 1, F1: 1, hits: [false, false, false, false, false] },
  { prediction: 'Carolina', answers: ['Carolina Panthers'], EM: 0, F1: 2 / 3, hits: [false, false, true, false, false] },
  { prediction: '', answers: ['1998'], EM: 0, F1: 0, hits: [false, false, false, false, true] },
  { prediction: 'in 1998, probably', answers: ['1998', 'nineteen ninety-eight'], EM: 1, F1: 0.5, hits: [true, true, false, false, false] },
];

test('EM/F1 per record follow the metric table; summary EM/F1 and recall are the means over records', async () => {
  const records = TABLE.map((row, i) => {
    const question = `table question ${i}?`;
    answersByQuestion.set(question, row.prediction);
    return { id: i, question, answers: row.answers, ctxs: row.hits.map((h, j) => ctx(`t${j}`, `passage ${j}`, h)) };
  });
  const data = writeJsonl('table.jsonl', records);
  const out = path.join(tmp, 'table.out.jsonl');
  const s = await generateAnswers({ data, out, generateUrl: url, generateModel: 'fake', kDocs: 2 });
  const rows = readJsonl(out);
  assert.equal(rows.length, TABLE.length);
  rows.forEach((r, i) => {
    assert.equal(r.id, i);
    assert.equal(r.generated, TABLE[i].prediction);
    assert.equal(r.EM, TABLE[i].EM, `EM of row ${i}`);
    assert.ok(Math.abs(r.F1 - TABLE[i].F1) < 1e-12, `F1 of row ${i}: ${r.F1}`);
    assert.equal(r.ctxs.length, 5, 'the input record is kept whole');
  });
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(Math.abs(s.EM - 100 * mean(rows.map((r) => r.EM))) < 1e-9);
  assert.ok(Math.abs(s.F1 - 100 * mean(rows.map((r) => r.F1))) < 1e-9);
  assert.ok(Math.abs(s.EM - (100 * 4) / 7) < 1e-9);
  // Recall@k: questions whose first hit is within the top k (first hits: 0, 1, 3, none, 2, 4, 0).
  const expected = { 1: 2 / 7, 2: 3 / 7, 3: 4 / 7, 4: 5 / 7, 5: 6 / 7 };
  for (const [k, v] of Object.entries(expected)) assert.ok(Math.abs(s.recall![k] - v) < 1e-12, `recall@${k}`);
  assert.equal(s.written, 7);
  assert.equal(s.tokensPerSecond, null, 'a server reports no token counts');
});

test('bad input: counted skips and warnings with file:line; short ctxs and empty passages handled', async () => {
  answersByQuestion.set('good?', 'yes');
  const data = writeJsonl('bad.jsonl', [
    { question: 'good?', answers: ['yes'], ctxs: [ctx('a', 'x'), ctx('b', 'y')] },
    { question: 'no answers?', ctxs: [ctx('a', 'x')] },
    { question: 'empty answers?', answers: ['', ' '], ctxs: [ctx('a', 'x')] },
    { question: 'no ctxs?', answers: ['a'] },
    { question: 'good?', answers: ['yes'], ctxs: [ctx('a', 'x')] },
    { question: 'good?', answers: ['yes'], ctxs: [ctx('a', ''), { title: 'b' }] },
    [1, 2],
    { question: 'good?', answers: ['yes'], ctxs: [ctx('a', ''), ctx('b', 'z')] },
  ]);
  const out = path.join(tmp, 'bad.out.jsonl');
  const warnings: string[] = [];
  const s = await generateAnswers({ data, out, generateUrl: url, generateModel: 'fake', kDocs: 2, warn: (m) => warnings.push(m) });
  assert.equal(s.records, 8);
  assert.equal(s.written, 3);
  assert.equal(s.skipped, 5);
  assert.deepEqual(s.skippedReasons, { 'no-answers': 2, 'no-ctxs': 1, 'no-passages': 1, 'not-an-object': 1 });
  assert.equal(s.shortCtxs, 1);
  assert.equal(s.droppedPassages, 3);
  for (const line of [2, 3, 4, 5, 6, 7, 8]) assert.ok(warnings.some((w) => w.includes(`bad.jsonl:${line}:`)), `a warning names line ${line}: ${warnings.join(' | ')}`);
  assert.equal(readJsonl(out).length, 3);
  // Options are checked before any work.
  await assert.rejects(generateAnswers({ data, out, kDocs: 1 }), TypeError);
  await assert.rejects(generateAnswers({ data, out, generateUrl: url, kDocs: 0 }), RangeError);
  await assert.rejects(generateAnswers({ data, out, generateUrl: url, task: 'nope' }), RangeError);
});

test('invalid JSON stops the run with E_DATA naming the line; nothing appears under the final name', async () => {
  answersByQuestion.set('good?', 'yes');
  const data = writeJsonl('broken.jsonl', [{ question: 'good?', answers: ['yes'], ctxs: [ctx('a', 'x')] }, '{"question": ']);
  const out = path.join(tmp, 'broken.out.jsonl');
  await assert.rejects(generateAnswers({ data, out, generateUrl: url, generateModel: 'fake' }), (e: Error & { code?: string }) => e.code === 'E_DATA' && /broken\.jsonl:2/.test(e.message));
  assert.equal(existsSync(out), false);
  assert.equal(readJsonl(`${out}.partial`).length, 1, 'the record before the damage is kept for --resume');
});

/** Sequences cut after their first stop token (what EOS handling must give). */
const cutAt = (seqs: number[][], stop: number) => seqs.map((s) => (s.includes(stop) ? s.slice(0, s.indexOf(stop) + 1) : s));

test('continuous batching gives the tokens of one-prompt-at-a-time decoding; a finished slot is refilled', async () => {
  const ref = readReference<{ context_prompts: string[]; greedy_new_tokens_first_two_context_prompts: number[][] }>('llama-tiny');
  const base = await CausalLM.load(llm);
  const prompts = [...ref.context_prompts, 'Short prompt.', ref.context_prompts[0].slice(0, 300), 'Another one, a bit longer than the short one.'];
  const alone: number[][] = [];
  for (const p of prompts) alone.push((await base.generate([p], { maxNewTokens: 12 })).tokenIds[0]);
  assert.deepEqual(alone.slice(0, 2).map((s) => s.slice(0, 8)), ref.greedy_new_tokens_first_two_context_prompts);
  // A stop token that ends some answers early and leaves others to run to the limit.
  const stop = alone[0][2];
  const expected = cutAt(alone, stop);
  const lengths = expected.map((s) => s.length);
  assert.ok(Math.min(...lengths) < 12 && Math.max(...lengths) === 12, `mixed lengths: ${lengths}`);
  const d = mkdtempSync(path.join(tmp, 'eos-'));
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) symlinkSync(path.join(llm, f), path.join(d, f));
  writeFileSync(path.join(d, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, stop] }));
  const two = await CausalLM.load(d, { maxRows: 2 });
  const r = await two.generate(prompts, { maxNewTokens: 12 });
  assert.deepEqual(r.tokenIds, expected);
  for (let i = 0; i < prompts.length; i++) assert.deepEqual((await two.generate([prompts[i]], { maxNewTokens: 12 })).tokenIds[0], expected[i]);
  // Steps with 2 slots refilled as soon as one frees (the prefill gives each answer's first
  // token), against static pairs that wait for their longer member.
  const all = await two.generate(prompts, { maxNewTokens: 12 });
  let steps = 0;
  let next = 0;
  let active: number[] = [];
  for (;;) {
    while (active.length < 2 && next < lengths.length) if (lengths[next++] > 1) active.push(lengths[next - 1] - 1);
    if (active.length === 0) break;
    steps++;
    active = active.map((x) => x - 1).filter((x) => x > 0);
  }
  let staticSteps = 0;
  for (let i = 0; i < lengths.length; i += 2) staticSteps += Math.max(...lengths.slice(i, i + 2)) - 1;
  assert.deepEqual(all.tokenIds, expected);
  assert.equal(two.lastStats!.decodeSteps, steps);
  assert.ok(steps < staticSteps, `${steps} continuous vs ${staticSteps} static steps`);
  assert.equal(two.lastStats!.generatedTokens, lengths.reduce((a, b) => a + b, 0));
});

function squadRecords(n: number) {
  const passages = new Map<string, { title: string; text: string }>();
  for (const line of readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'), 'utf8').trim().split('\n')) {
    const p = JSON.parse(line) as { id: string; title: string; text: string };
    passages.set(p.id, p);
  }
  const ids = [...passages.keys()];
  const lines = readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'), 'utf8').trim().split('\n').slice(0, n);
  return lines.map((l, i) => {
    const q = JSON.parse(l) as { id: string; question: string; answers: string[]; gold_passage_ids: string[] };
    const gold = passages.get(q.gold_passage_ids[0])!;
    const other = passages.get(ids[(i * 37 + 11) % ids.length])!;
    return { id: q.id, question: q.question, answers: q.answers, ctxs: [{ id: q.gold_passage_ids[0], ...gold, hasanswer: true }, { id: 'x', ...other, hasanswer: false }, { id: 'y', ...other }] };
  });
}

function cli(args: string[]) {
  return spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', env: { ...process.env, GAINRAG_THREADS: '1' } });
}

test('CLI end to end on the fixture LLM: --json summary, evidence cut to fit, --resume gives a byte-identical file', () => {
  const data = writeJsonl('squad.jsonl', squadRecords(6));
  const out = path.join(tmp, 'squad.out.jsonl');
  const common = ['generate', '--data', data, '--llm', llm, '--k-docs', '2', '--max-new-tokens', '6', '--batch-questions', '4', '--json'];
  const r = cli([...common, '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  const rows = readJsonl(out);
  assert.equal(rows.length, 6);
  assert.equal(s.written, 6);
  assert.ok(s.generatedTokens > 0 && s.generatedTokens <= 36 && s.tokensPerSecond > 0);
  for (const row of rows) assert.ok(typeof row.generated === 'string' && (row.EM === 0 || row.EM === 1) && row.F1 >= 0 && row.F1 <= 1);
  assert.ok(Math.abs(s.EM - (100 * rows.reduce((a, b) => a + b.EM, 0)) / 6) < 1e-9);
  assert.ok(Math.abs(s.F1 - (100 * rows.reduce((a, b) => a + b.F1, 0)) / 6) < 1e-9);
  assert.equal(s.recall['1'], 1, 'gold passage first: recall@1 = 1');
  // Two SQuAD passages exceed the fixture's 512 positions: the evidence is cut and marked.
  assert.ok(s.truncated > 0 && s.truncated === rows.filter((x) => x.truncated).length, `truncated ${s.truncated}`);
  // An interrupted run (the partial file ends at a batch boundary) resumed to the same bytes.
  const resumed = path.join(tmp, 'squad.resumed.jsonl');
  writeFileSync(`${resumed}.partial`, readFileSync(out, 'utf8').split('\n').slice(0, 4).join('\n') + '\n');
  const r2 = cli([...common, '--out', resumed, '--resume']);
  assert.equal(r2.status, 0, r2.stderr);
  assert.equal(JSON.parse(r2.stdout).resumed, 4);
  assert.equal(readFileSync(resumed, 'utf8'), readFileSync(out, 'utf8'));
  assert.equal(existsSync(`${resumed}.partial`), false);
  // --no-retrieval: the question alone, so no evidence to cut.
  const r4 = cli(['generate', '--data', data, '--llm', llm, '--no-retrieval', '--max-new-tokens', '4', '--json', '--out', path.join(tmp, 'squad.none.jsonl')]);
  assert.equal(r4.status, 0, r4.stderr);
  assert.equal(JSON.parse(r4.stdout).truncated, 0);
  assert.equal(readJsonl(path.join(tmp, 'squad.none.jsonl')).length, 6);
  // Neither --llm nor --generate-url: a usage error before any work.
  const r3 = cli(['generate', '--data', data, '--out', path.join(tmp, 'none.jsonl')]);
  assert.notEqual(r3.status, 0);
  assert.match(r3.stderr, /--llm DIR or --generate-url URL/);
});

test('AbortSignal stops at a batch boundary with E_CANCELLED; --resume then writes what an uninterrupted run writes', async () => {
  const records = Array.from({ length: 5 }, (_, i) => {
    answersByQuestion.set(`abort question ${i}?`, `answer ${i}`);
    return { question: `abort question ${i}?`, answers: [`answer ${i}`], ctxs: [ctx(`t${i}`, `text ${i}`)] };
  });
  const data = writeJsonl('abort.jsonl', records);
  const whole = path.join(tmp, 'abort.whole.jsonl');
  await generateAnswers({ data, out: whole, generateUrl: url, generateModel: 'fake', batchQuestions: 2 });
  const out = path.join(tmp, 'abort.out.jsonl');
  const controller = new AbortController();
  const run = generateAnswers({
    data, out, generateUrl: url, generateModel: 'fake', batchQuestions: 2, signal: controller.signal,
    onProgress: (_done, _total, note) => note === 'written' && controller.abort(),
  });
  await assert.rejects(run, (e: Error & { code?: string }) => e.code === 'E_CANCELLED');
  assert.equal(existsSync(out), false);
  assert.equal(readJsonl(`${out}.partial`).length, 2);
  const s = await generateAnswers({ data, out, generateUrl: url, generateModel: 'fake', batchQuestions: 2, resume: true });
  assert.equal(s.resumed, 2);
  assert.equal(s.written, 3);
  assert.equal(readFileSync(out, 'utf8'), readFileSync(whole, 'utf8'));
  // Resuming with other settings is refused rather than mixing two kinds of records.
  const other = path.join(tmp, 'abort.other.jsonl');
  const c2 = new AbortController();
  await assert.rejects(generateAnswers({ data, out: other, generateUrl: url, generateModel: 'fake', batchQuestions: 2, signal: c2.signal, onProgress: (_d, _t, note) => note === 'written' && c2.abort() }));
  await assert.rejects(generateAnswers({ data, out: other, generateUrl: url, generateModel: 'fake', batchQuestions: 2, kDocs: 2, resume: true }), (e: Error & { code?: string }) => e.code === 'E_INVALID_ARG' && /kDocs/.test(e.message));
});
