// Gain-signal synthesis end to end through the CLI, with the tiny Llama fixture: parity of PPL_CD,
// prompts and greedy answers with the transformers reference; resume after a kill; the
// OpenAI-compatible generation client against a local server; chat-template wrapping; bad input;
// filter and to-selector on hand-written records.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cliPath, dataDir, fixture, maxRelDiff, readReference } from './helpers.js';
import { Tokenizer } from '../lib/tokenizer.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { DEFAULT_SYSTEM_PROMPT } from '../lib/pipeline/prompts.js';

interface Reference {
  question: string;
  answers: string[];
  standard_prompt: string;
  context_prompts: string[];
  contrastive_ppl_min_over_answers: number[];
  greedy_new_tokens_first_two_context_prompts: number[][];
}

const ref = readReference<Reference>('llama-tiny');
const llm = fixture('llama-tiny');
const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-synth-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

// The fixture's passages, recovered from make_fixtures.py: PASSAGES[0], PASSAGES[1], PASSAGES[3][:200].
const P0 = 'Pride and Prejudice is an 1813 novel of manners written by Jane Austen.';
const P1 = 'Paris is the capital and most populous city of France, with 2.1 million residents.';
const P3 = 'Unrelated text about licenses, warranties and the conditions of redistribution. '.repeat(12).slice(0, 200);

function fixtureRecord(extra: Record<string, unknown> = {}) {
  return {
    question: ref.question,
    answers: ref.answers,
    ctxs: [P0, P1, P3].map((text, i) => ({ id: String(i), title: '', text, score: 10 - i, hasanswer: i === 0 })),
    ...extra,
  };
}

function writeJsonl(name: string, records: unknown[]): string {
  const file = path.join(tmp, name);
  writeFileSync(file, records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
  return file;
}

function readJsonl(file: string): any[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI asynchronously (a test HTTP server must keep serving meanwhile). */
function cli(args: string[], onSpawn?: (child: ReturnType<typeof spawn>) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    onSpawn?.(child);
  });
}

const base = (data: string, out: string) => ['synthesize', '--data', data, '--llm', llm, '--out', out, '--json'];

test('fixture question: PPL_CD, prompts and greedy answers match the transformers reference', async () => {
  const data = writeJsonl('fixture.jsonl', [fixtureRecord()]);
  const out = path.join(tmp, 'fixture.out.jsonl');
  const r = await cli([...base(data, out), '--no-pseudo-passage', '--chat-template', 'none', '--max-new-tokens', '8']);
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.written, 1);
  assert.equal(existsSync(`${out}.partial`), false);
  const [rec] = readJsonl(out);
  assert.equal(rec.question, ref.question);
  assert.deepEqual(rec.answers, ref.answers);
  assert.equal(rec.prompt_standard, ref.standard_prompt);
  assert.deepEqual(rec.passages.map((p: { prompt_retrieved: string }) => p.prompt_retrieved), ref.context_prompts);
  const ppl = rec.passages.map((p: { PPL_CD: number }) => p.PPL_CD);
  assert.ok(maxRelDiff(ppl, ref.contrastive_ppl_min_over_answers) < 1e-4, `PPL_CD ${ppl} vs ${ref.contrastive_ppl_min_over_answers}`);
  // retrieved_ppl: the plain perplexity given the passage, min over answers = PPL_CD at alpha 0
  // (computed here by the library with alpha 0, a different formula path through the engine).
  const plain = rec.passages.map((p: { retrieved_ppl: number }) => p.retrieved_ppl);
  const lm = await CausalLM.load(llm);
  const [a0] = await lm.contrastivePerplexity([{ standardPrompt: ref.standard_prompt, contextPrompts: ref.context_prompts, answers: ref.answers }], { alpha: 0 });
  assert.ok(maxRelDiff(plain, a0.min) < 1e-5, `retrieved_ppl ${plain} vs ${a0.min}`);
  assert.ok(maxRelDiff(plain, ppl) > 1e-3, 'retrieved_ppl is not PPL_CD');
  assert.deepEqual(rec.passages.map((p: { has_answer: boolean }) => p.has_answer), [true, false, false]);
  assert.deepEqual(rec.passages.map((p: { retrieval_score: number }) => p.retrieval_score), [10, 9, 8]);
  // transformers' greedy tokens for the first two prompts, decoded, are the recorded answers
  const tok = Tokenizer.load(llm);
  for (let i = 0; i < 2; i++) {
    assert.equal(rec.passages[i].generated, await tok.decode(ref.greedy_new_tokens_first_two_context_prompts[i]));
    assert.equal(typeof rec.passages[i].EM_with_retrieval, 'boolean');
    assert.equal(typeof rec.passages[i].F1_with_retrieval, 'number');
  }
});

function squadInput(n: number): string {
  // Real questions with their gold passage plus two other passages of the same split.
  const questions = readJsonl(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'));
  const passages = readJsonl(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'));
  const at = new Map(passages.map((p, i) => [p.id as string, i]));
  const records = [];
  for (let i = 0; records.length < n; i += 10) {
    const q = questions[i];
    const k = at.get(q.gold_passage_ids[0])!;
    const ctxs = [k, (k + 1) % passages.length, (k + 7) % passages.length].map((j, rank) => ({
      id: passages[j].id, title: passages[j].title, text: passages[j].text, score: 3 - rank, hasanswer: rank === 0,
    }));
    records.push({ id: q.id, question: q.question, answers: q.answers, ctxs });
  }
  return writeJsonl('squad.jsonl', records);
}

test('a run killed mid-way resumes to the same file as an uninterrupted run', async () => {
  const data = squadInput(24);
  const args = ['--top-k', '3', '--pseudo-max-new-tokens', '16', '--max-new-tokens', '8', '--batch-questions', '4'];
  const full = path.join(tmp, 'full.jsonl');
  const r1 = await cli([...base(data, full), ...args]);
  assert.equal(r1.code, 0, r1.stderr);
  assert.ok(JSON.parse(r1.stdout).truncatedPassages > 0, 'long SQuAD passages are cut to the 512-token context');
  assert.match(r1.stderr, /squad\.jsonl:\d+: passage ".*" cut to \d+ of \d+ tokens/);

  const out = path.join(tmp, 'resumed.jsonl');
  const partial = `${out}.partial`;
  const killed = await cli([...base(data, out), ...args], (child) => {
    const poll = setInterval(() => {
      if (existsSync(partial) && readFileSync(partial, 'utf8').split('\n').length > 8) {
        clearInterval(poll);
        child.kill('SIGKILL');
      }
    }, 20);
    child.on('close', () => clearInterval(poll));
  });
  assert.equal(killed.signal, 'SIGKILL');
  assert.equal(existsSync(out), false, 'no final file after a kill');
  const doneBefore = readJsonl(partial).length;
  assert.ok(doneBefore >= 8 && doneBefore < 24, `partial has ${doneBefore} records`);

  // resuming with other settings is refused, and loses nothing
  const wrong = await cli([...base(data, out), ...args.map((x, i) => (args[i - 1] === '--top-k' ? '2' : x)), '--resume']);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /--resume with settings that differ from the interrupted run \(topK: 3 -> 2\).*\(E_INVALID_ARG\)/);
  assert.equal(readJsonl(partial).length, doneBefore);

  const r2 = await cli([...base(data, out), ...args, '--resume']);
  assert.equal(r2.code, 0, r2.stderr);
  const s2 = JSON.parse(r2.stdout);
  assert.equal(s2.resumed, doneBefore);
  assert.equal(s2.written, 24 - doneBefore);
  assert.equal(existsSync(partial), false);
  assert.equal(existsSync(`${partial}.settings.json`), false);
  assert.equal(readFileSync(out, 'utf8'), readFileSync(full, 'utf8'));

  // resuming a finished run recomputes nothing
  const r3 = await cli([...base(data, out), ...args, '--resume']);
  assert.equal(r3.code, 0, r3.stderr);
  assert.deepEqual([JSON.parse(r3.stdout).written, JSON.parse(r3.stdout).resumed], [0, 24]);
  assert.match(r3.stderr, /already complete; nothing to resume/);
  assert.equal(readFileSync(out, 'utf8'), readFileSync(full, 'utf8'));

  // Ctrl-C: stops cleanly with exit code 130 and keeps the partial file
  const sigOut = path.join(tmp, 'sigint.jsonl');
  const interrupted = await cli([...base(data, sigOut), ...args], (child) => {
    const poll = setInterval(() => {
      if (existsSync(`${sigOut}.partial`) && readFileSync(`${sigOut}.partial`, 'utf8').length > 0) {
        clearInterval(poll);
        child.kill('SIGINT');
      }
    }, 20);
    child.on('close', () => clearInterval(poll));
  });
  assert.equal(interrupted.code, 130, interrupted.stderr);
  assert.match(interrupted.stderr, /interrupted; finished questions are in .*sigint\.jsonl\.partial, continue with --resume/);
  assert.ok(readJsonl(`${sigOut}.partial`).length >= 4);
  assert.equal(existsSync(sigOut), false);
});

function startServer(handler: (body: any, req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; close: () => Promise<void> }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => handler(body ? JSON.parse(body) : undefined, req, res));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      resolve({ url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) });
    });
  });
}

function json(res: ServerResponse, status: number, obj: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(obj));
}

test('--generate-url: answers and pseudo-passage from an OpenAI-compatible server, PPL stays native', async () => {
  const seen: any[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  const server = await startServer((body, req, res) => {
    if (req.url === '/v1/models') return json(res, 200, { data: [{ id: 'tiny-served' }] });
    if (req.url !== '/v1/completions') return json(res, 404, { error: 'no such route' });
    seen.push(body);
    const background = body.prompt.startsWith('Please provide background');
    json(res, 200, { choices: [{ index: 0, text: background ? 'Austen wrote novels.' : ' The author is Jane Austen.' }] });
  });
  try {
    const data = writeJsonl('url.jsonl', [fixtureRecord()]);
    const out = path.join(tmp, 'url.out.jsonl');
    const r = await cli([...base(data, out), '--chat-template', 'none', '--max-new-tokens', '8', '--pseudo-max-new-tokens', '16', '--generate-url', server.url]);
    assert.equal(r.code, 0, r.stderr);
    const [rec] = readJsonl(out);
    assert.equal(rec.passages.length, 4);
    const pseudo = rec.passages[3];
    assert.equal(pseudo.pseudo, true);
    assert.equal(pseudo.title, '');
    assert.equal(pseudo.text, 'Austen wrote novels.');
    assert.ok(rec.passages.every((p: { EM_with_retrieval: boolean; F1_with_retrieval: number }) => p.EM_with_retrieval === true));
    assert.ok(Math.abs(rec.passages[0].F1_with_retrieval - 2 / 3) < 1e-12); // "author is jane austen" vs "jane austen"
    assert.ok(maxRelDiff(rec.passages.slice(0, 3).map((p: { PPL_CD: number }) => p.PPL_CD), ref.contrastive_ppl_min_over_answers) < 1e-4);
    const bg = seen.filter((b) => b.prompt.startsWith('Please provide background'));
    assert.equal(bg.length, 1);
    assert.equal(bg[0].prompt, `Please provide background for the question below in 100 words. Do not respond with anything other than background. If you do not know or are unsure, please generate "N/A" directly. \n\n Question: ${ref.question}`);
    assert.equal(bg[0].max_tokens, 16);
    const answers = seen.filter((b) => !b.prompt.startsWith('Please provide background'));
    assert.deepEqual(answers.map((b) => b.prompt).sort(), rec.passages.map((p: { prompt_retrieved: string }) => p.prompt_retrieved).sort());
    for (const b of seen) {
      assert.equal(b.model, 'tiny-served');
      assert.equal(b.temperature, 0);
    }
    assert.ok(answers.every((b) => b.max_tokens === 8));
  } finally {
    await server.close();
  }
});

test('--generate-url failures are clear errors (HTTP status, timeout), not hangs', async () => {
  const server = await startServer((body, req, res) => {
    if (req.url === '/v1/chat/completions') return json(res, 503, { error: 'overloaded' });
    // /slow/v1/completions: never answers
  });
  try {
    const data = writeJsonl('url-err.jsonl', [fixtureRecord()]);
    const common = [...base(data, path.join(tmp, 'url-err.out.jsonl')), '--no-pseudo-passage', '--generate-model', 'm', '--max-new-tokens', '4'];
    const r = await cli([...common, '--generate-url', `${server.url}/v1/chat/completions`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /HTTP 503.*overloaded.*\(gave up after 4 attempts; --retries 3\) \(E_IO\)/);
    const t = await cli([...common, '--generate-url', `${server.url}/slow/v1/completions`, '--generate-timeout', '0.3']);
    assert.equal(t.code, 1);
    assert.match(t.stderr, /slow\/v1\/completions: no answer within 300 ms.*\(E_IO\)/);
  } finally {
    await server.close();
  }
});

test('--chat-template auto wraps prompts in the model template with the reference system prompt; none leaves them raw', async () => {
  const chatDir = mkdtempSync(path.join(tmp, 'llama-chat-'));
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) symlinkSync(path.join(llm, f), path.join(chatDir, f));
  const cfg = JSON.parse(readFileSync(path.join(llm, 'tokenizer_config.json'), 'utf8'));
  cfg.chat_template =
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}" +
    '{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}';
  writeFileSync(path.join(chatDir, 'tokenizer_config.json'), JSON.stringify(cfg));
  const prompts: string[] = [];
  const server = await startServer((body, req, res) => {
    prompts.push(body.prompt);
    json(res, 200, { choices: [{ text: 'x' }] });
  });
  try {
    const data = writeJsonl('chat.jsonl', [fixtureRecord()]);
    const run = (mode: string) => cli(['synthesize', '--data', data, '--llm', chatDir, '--out', path.join(tmp, `chat-${mode}.jsonl`), '--json',
      '--no-pseudo-passage', '--chat-template', mode, '--generate-url', server.url, '--generate-model', 'm', '--max-new-tokens', '4']);
    const auto = await run('auto');
    assert.equal(auto.code, 0, auto.stderr);
    assert.equal(prompts.length, 3);
    // the user message is the raw reference prompt (the template trims it)
    assert.deepEqual(prompts.map((p) => p.split('<|start_header_id|>user<|end_header_id|>\n\n')[1].split('<|eot_id|>')[0]).sort(), ref.context_prompts.map((c) => c.trim()).sort());
    for (const p of prompts) {
      assert.ok(p.startsWith(`<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n${DEFAULT_SYSTEM_PROMPT}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n`), p);
      assert.ok(p.endsWith('<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n'));
    }
    const [withTemplate] = readJsonl(path.join(tmp, 'chat-auto.jsonl'));
    // stored prompts stay the raw reference prompts; the scores differ from the raw-prompt ones
    assert.equal(withTemplate.prompt_standard, ref.standard_prompt);
    assert.ok(maxRelDiff(withTemplate.passages.map((p: { PPL_CD: number }) => p.PPL_CD), ref.contrastive_ppl_min_over_answers) > 1e-3);
    prompts.length = 0;
    const none = await run('none');
    assert.equal(none.code, 0, none.stderr);
    assert.deepEqual(prompts.sort(), [...ref.context_prompts].sort());
  } finally {
    await server.close();
  }
});

test('bad input: records skipped or passages dropped with FILE:LINE warnings; long passages truncated', async () => {
  const ctxs = fixtureRecord().ctxs;
  const data = writeJsonl('bad.jsonl', [
    fixtureRecord(),
    { question: 'no answers', ctxs },
    { question: 'empty answers', answers: [], ctxs },
    { question: 'no ctxs', answers: ['x'] },
    fixtureRecord({ ctxs: [{ title: 't', text: '  ' }, ...ctxs] }),
    fixtureRecord({ ctxs: [{ title: 'long', text: P3.repeat(20), score: 1 }] }),
    fixtureRecord({ answers: ['', 'Jane Austen'] }),
    fixtureRecord({ question: `Who wrote ${'this very long question '.repeat(120)}?` }),
  ]);
  const out = path.join(tmp, 'bad.out.jsonl');
  const r = await cli([...base(data, out), '--no-pseudo-passage', '--max-new-tokens', '2']);
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.written, 4);
  assert.equal(s.skipped, 4);
  assert.deepEqual(s.skippedReasons, { 'no-answers': 2, 'no-ctxs': 1, 'prompt-too-long': 1 });
  assert.equal(s.droppedAnswers, 1);
  assert.equal(s.droppedPassages, 1);
  assert.equal(s.truncatedPassages, 1);
  assert.match(r.stderr, /bad\.jsonl:2: record has no "answers" array/);
  assert.match(r.stderr, /bad\.jsonl:3: "answers" is empty/);
  assert.match(r.stderr, /bad\.jsonl:4: record has no "ctxs" array/);
  assert.match(r.stderr, /bad\.jsonl:5: 1 passage\(s\) with empty or missing text dropped/);
  assert.match(r.stderr, /bad\.jsonl:6: passage "long" cut to \d+ of \d+ tokens to fit the model's context \(512\)/);
  assert.match(r.stderr, /bad\.jsonl:7: 1 empty gold answer\(s\) ignored/);
  assert.match(r.stderr, /bad\.jsonl:8: the question prompt alone \(\d+ tokens\) leaves no room for the answer/);
  const recs = readJsonl(out);
  assert.deepEqual(recs[3].answers, ['', 'Jane Austen'], 'answers are written as given');
  assert.equal(recs[1].passages.length, 3);
  const long = recs[2].passages[0];
  assert.equal(long.truncated, true);
  assert.equal(long.text, P3.repeat(20), 'the stored text stays complete');
  assert.ok(long.prompt_retrieved.length < long.text.length && Number.isFinite(long.PPL_CD));
});

test('invalid JSON stops the run, keeps what was read before it, and --resume continues after the fix', async () => {
  const good = JSON.stringify(fixtureRecord());
  const lines = [good, good, good, good, good, '{"question": "broken", ', good];
  const data = writeJsonl('broken.jsonl', lines);
  const out = path.join(tmp, 'broken.out.jsonl');
  const args = [...base(data, out), '--no-pseudo-passage', '--max-new-tokens', '2', '--batch-questions', '2'];
  const r = await cli(args);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /broken\.jsonl:6: invalid JSON.*\(E_DATA\)/);
  assert.equal(existsSync(out), false);
  // Everything scored before the error is kept. (readRecords parses a read chunk before yielding
  // from it, so with a file this small no record reaches the scorer before the error.)
  const kept = readJsonl(`${out}.partial`).length;
  assert.ok(kept <= 5);
  lines[5] = JSON.stringify(fixtureRecord({ question: 'fixed' }));
  writeJsonl('broken.jsonl', lines);
  const r2 = await cli([...args, '--resume']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(JSON.parse(r2.stdout).resumed, kept);
  assert.deepEqual(readJsonl(out).map((x) => x.question), [...Array(5).fill(ref.question), 'fixed', ref.question]);
});

test('filter keeps questions whose lowest-PPL passage is answered; to-selector builds FlagEmbedding records', async () => {
  const psg = (title: string, ppl: number, em: boolean) => ({ title, text: `text ${title}`, PPL_CD: ppl, EM_with_retrieval: em, F1_with_retrieval: em ? 1 : 0 });
  const r1 = { question: 'q1', answers: ['a'], passages: [psg('A', 5, true), psg('B', 2, false)] };
  const r2 = { question: 'q2', answers: ['a'], passages: [psg('A', 3, true), psg('B', 7, false), psg('C', 3, false)] };
  const r3 = { question: 'q3', answers: ['a'], passages: [psg('D', 4, false), { ...psg('', 1.5, true), text: 'pseudo text', pseudo: true }] };
  const r4 = { question: 'q4', answers: ['a'], passages: [psg('E', 1, true)] };
  const data = writeJsonl('synth.jsonl', [r1, r2, { question: 'no passages' }, r3, r4]);
  const filtered = path.join(tmp, 'filtered.jsonl');
  const f = await cli(['filter', '--data', data, '--out', filtered, '--json']);
  assert.equal(f.code, 0, f.stderr);
  assert.deepEqual(JSON.parse(f.stdout), { output: filtered, records: 5, kept: 3, skipped: 1, badScores: 0 });
  assert.match(f.stderr, /synth\.jsonl:3: record has no "passages"/);
  assert.deepEqual(readJsonl(filtered), [r2, r3, r4]); // r2: tie at 3 goes to the first (A, correct)

  const sel = path.join(tmp, 'selector.jsonl');
  const t = await cli(['to-selector', '--data', filtered, '--out', sel, '--json']);
  assert.equal(t.code, 0, t.stderr);
  assert.deepEqual(JSON.parse(t.stdout), { output: sel, records: 3, written: 2, skipped: 1, droppedPassages: 0, badScores: 0, scoreField: 'PPL_CD' });
  assert.match(t.stderr, /filtered\.jsonl:3: fewer than two scored passages/);
  const prompt = "Given a query A and a passage B, determine whether the passage directly or indirectly contains an answer to the query by providing a prediction of either 'Yes' or 'No'.";
  const got = readJsonl(sel);
  assert.deepEqual(got, [
    { query: 'q2', pos: ['A\ntext A'], neg: ['C\ntext C', 'B\ntext B'], pos_scores: [-Math.log(4)], neg_scores: [-Math.log(4), -Math.log(8)], prompt },
    { query: 'q3', pos: ['\npseudo text'], neg: ['D\ntext D'], pos_scores: [-Math.log(2.5)], neg_scores: [-Math.log(5)], prompt },
  ]);
  assert.ok(Math.abs(got[0].neg_scores[1] - -2.0794415416798357) < 1e-15);
});

test('synthesis prefills each prompt once, whatever the number of gold answers (engine counters)', async () => {
  const { CausalLM } = await import('../lib/models/causal-lm.js');
  const { synthesize } = await import('../lib/pipeline/synthesize.js');
  const lm = await CausalLM.load(llm);
  const noGeneration = { description: 'none', generate: async (prompts: unknown[]) => prompts.map(() => '') };
  const aliases = ['Jane Austen', 'Austen', 'J. Austen', 'Miss Austen', 'the author', 'a novelist', 'Jane', 'Ms Austen', 'Austen, Jane', 'JA'];
  const prefills: number[] = [];
  for (const n of [1, 10]) {
    const data = writeJsonl(`answers-${n}.jsonl`, [fixtureRecord({ answers: aliases.slice(0, n) }), fixtureRecord({ answers: aliases.slice(0, n) })]);
    const before = lm.stats();
    const s = await synthesize(lm, { data, out: path.join(tmp, `answers-${n}.out.jsonl`), pseudoPassage: false, chatTemplate: 'none', generator: noGeneration });
    assert.equal(s.written, 2);
    const after = lm.stats();
    prefills.push(after.promptPrefills - before.promptPrefills);
    const answerTokens = (await lm.tokenizer.encodeRaw(aliases.slice(0, n))).reduce((k, t) => k + t.length, 0);
    // logits only at answer positions: at most one lm_head row per answer token per prompt (4 prompts
    // per question; the engine shares the last prompt position among answers), none for prompt tokens
    const rows = after.lmHeadRows - before.lmHeadRows;
    assert.ok(rows > 0 && rows <= 2 * 4 * answerTokens, `${rows} lm_head rows for ${answerTokens} answer tokens`);
  }
  assert.deepEqual(prefills, [8, 8], '2 questions x (standard + 3 passages) prompts, each prefilled once');
});
