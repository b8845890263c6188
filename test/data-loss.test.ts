// No run may destroy data it did not write, or publish a file two runs wrote into (issue #13,
// item 2): index directories are replaced only when they are gainrag indexes, outputs are
// locked, --resume refuses files that are not that stage's output for that input, a killed
// training run never leaves an old model looking final, and links/FIFOs/directories/'' at
// --out are refused before any work.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { buildIndex } from '../lib/retrieval/build.js';
import { acquireOutputLock, validateOutput } from '../lib/io/output.js';
import { AtomicJsonlWriter } from '../lib/io/jsonl.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { synthesize } from '../lib/pipeline/synthesize.js';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { select } from '../lib/pipeline/select.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { SelectorTrainer } from '../lib/training/selector-trainer.js';
import { cliPath, dataDir, fixture } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-dataloss-'));
after(() => rmSync(work, { recursive: true, force: true }));

const passages = path.join(work, 'passages.jsonl');
writeFileSync(passages, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'), 'utf8').split('\n').slice(0, 12).join('\n') + '\n');

function cli(args: string[]) {
  return spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work });
}

const build = (out: string) => buildIndex({ passages, encoder: fixture('bert-tiny'), out });

test('index build refuses a directory that merely holds a file named manifest.json, and a foreign OUT.partial', async () => {
  const d = path.join(work, 'user-dir');
  mkdirSync(d);
  writeFileSync(path.join(d, 'manifest.json'), '{"name": "my web app"}\n');
  writeFileSync(path.join(d, 'thesis.tex'), 'years of work');
  await assert.rejects(build(d), { code: 'E_INVALID_ARG', message: /not a gainrag index/ });
  assert.deepEqual(readdirSync(d).sort(), ['manifest.json', 'thesis.tex']);

  const d2 = path.join(work, 'idx2');
  mkdirSync(`${d2}.partial`);
  writeFileSync(path.join(`${d2}.partial`, 'notes.txt'), 'mine');
  await assert.rejects(build(d2), { code: 'E_INVALID_ARG', message: /not a partial gainrag index/ });
  assert.equal(readFileSync(path.join(`${d2}.partial`, 'notes.txt'), 'utf8'), 'mine');
  assert.equal(existsSync(d2), false);
});

test('index build replaces its own index and its own leftover partial directory', async () => {
  const d = path.join(work, 'idx-own');
  assert.equal(await build(d), 12);
  writeFileSync(path.join(d, 'stale-extra'), 'x'); // replaced as a whole
  assert.equal(await build(d), 12);
  assert.equal(existsSync(path.join(d, 'stale-extra')), false);
  assert.ok(existsSync(path.join(d, 'manifest.json')));
  assert.equal(existsSync(`${d}.partial`), false);
  assert.equal(existsSync(`${d}.lock`), false, 'the lock is released');
});

// Every one of these outputs is refused before anything is read or written.
test('outputs that are links, FIFOs, directories, /proc/self/fd/1 or empty are refused up front', () => {
  const target = path.join(work, 'precious.txt');
  writeFileSync(target, 'keep me');
  const link = path.join(work, 'link.jsonl');
  symlinkSync(target, link);
  assert.throws(() => validateOutput(link, 'file'), { code: 'E_INVALID_ARG', message: /symbolic link/ });
  assert.throws(() => validateOutput('/proc/self/fd/1', 'file'), { code: 'E_INVALID_ARG' });
  assert.throws(() => validateOutput(work, 'file'), { code: 'E_INVALID_ARG', message: /directory/ });
  assert.throws(() => validateOutput(`${work}/`, 'file'), { code: 'E_INVALID_ARG' });
  assert.throws(() => validateOutput('', 'file'), { code: 'E_INVALID_ARG' });
  assert.throws(() => validateOutput(target, 'dir'), { code: 'E_INVALID_ARG' });
  assert.throws(() => validateOutput(path.join(target, 'x.jsonl'), 'file'), { code: 'E_INVALID_ARG', message: /not a directory/ });
  const fifo = path.join(work, 'fifo.jsonl');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  assert.throws(() => AtomicJsonlWriter.open(fifo), { code: 'E_INVALID_ARG', message: /FIFO/ });

  // Through the CLI: retrieve checks --out before it opens the index or loads the encoder.
  const q = path.join(work, 'q.jsonl');
  writeFileSync(q, '{"question": "who", "answers": ["x"]}\n');
  for (const out of [link, fifo, work, '']) {
    const r = cli(['retrieve', '--index', path.join(work, 'no-such-index'), '--encoder', fixture('bert-tiny'), '--data', q, '--out', out]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /E_INVALID_ARG/, `--out ${out}: ${r.stderr}`);
  }
  assert.equal(readlinkSync(link), target);
  assert.equal(readFileSync(target, 'utf8'), 'keep me');
  // filter --out equal to --data would truncate its own input.
  const r = cli(['filter', '--data', q, '--out', q]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /E_INVALID_ARG/);
  assert.equal(readFileSync(q, 'utf8'), '{"question": "who", "answers": ["x"]}\n');
});

test('a live lock on --out is E_LOCKED; a dead owner\'s lock is taken over', () => {
  const data = path.join(work, 'syn.jsonl');
  writeFileSync(data, '{"question": "q", "answers": ["a"], "passages": [{"title": "", "text": "t", "PPL_CD": 1.5, "EM_with_retrieval": true}]}\n');
  const out = path.join(work, 'filtered.jsonl');
  const lock = acquireOutputLock(out); // held by this (live) test process
  try {
    const r = cli(['filter', '--data', data, '--out', out]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /E_LOCKED/);
    assert.equal(existsSync(out), false);
    assert.throws(() => AtomicJsonlWriter.open(out), { code: 'E_LOCKED' }); // also within one process
  } finally {
    lock.release();
  }
  // A lock left by a killed run: its pid has exited.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(dead.stdout);
  writeFileSync(`${out}.lock`, JSON.stringify({ format: 'gainrag-output-lock-1', pid, host: hostname(), token: 'old' }));
  const r = cli(['filter', '--data', data, '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(out));
  assert.equal(existsSync(`${out}.lock`), false);
});

test('two processes with the same --out never publish an interleaved file', async () => {
  // Enough records that both runs overlap in time; whatever the interleaving, the result must be
  // one run's complete output, and a process that lost the race says E_LOCKED.
  const data = path.join(work, 'many.jsonl');
  const rec = (i: number) => JSON.stringify({ question: `q${i}`, answers: ['a'], passages: [{ title: '', text: `t${i}`, PPL_CD: 1 + (i % 7), EM_with_retrieval: true }, { title: '', text: 'u', PPL_CD: 9, EM_with_retrieval: false }] });
  writeFileSync(data, Array.from({ length: 20000 }, (_, i) => rec(i)).join('\n') + '\n');
  const out = path.join(work, 'race.jsonl');
  const runOne = () =>
    new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [cliPath, 'filter', '--data', data, '--out', out], { cwd: work });
      let stderr = '';
      child.stderr.on('data', (b) => (stderr += b));
      child.on('close', (status) => resolve({ status, stderr }));
    });
  const results = await Promise.all([runOne(), runOne(), runOne()]);
  for (const r of results) {
    if (r.status !== 0) assert.match(r.stderr, /E_LOCKED/, r.stderr);
  }
  assert.ok(results.some((r) => r.status === 0));
  const lines = readFileSync(out, 'utf8').split('\n').filter(Boolean);
  assert.equal(lines.length, 20000);
  lines.forEach((l, i) => assert.equal(JSON.parse(l).question, `q${i}`));
  assert.equal(existsSync(`${out}.lock`), false);
});

test('synthesize --resume refuses --out equal to --data or a file that is not its output for this input', async () => {
  const lm = await CausalLM.load(fixture('llama-tiny'));
  const data = path.join(work, 'retrieved.jsonl');
  const original = '{"question": "who wrote it", "answers": ["Austen"], "ctxs": [{"id": "1", "title": "", "text": "Jane Austen wrote it."}]}\n';
  writeFileSync(data, original);
  await assert.rejects(synthesize(lm, { data, out: data, resume: true }), { code: 'E_INVALID_ARG', message: /input/ });
  assert.equal(readFileSync(data, 'utf8'), original);
  // An unrelated file (here: the retrieval input's format, not synthesize output).
  const other = path.join(work, 'other.jsonl');
  writeFileSync(other, original);
  await assert.rejects(synthesize(lm, { data, out: other, resume: true }), { code: 'E_INVALID_ARG', message: /not a synthesize output/ });
  // A synthesize output of another input.
  const foreign = path.join(work, 'foreign.jsonl');
  writeFileSync(foreign, '{"question": "another question", "answers": ["x"], "passages": [{"title": "", "text": "t", "PPL_CD": 2, "EM_with_retrieval": false}]}\n');
  await assert.rejects(synthesize(lm, { data, out: foreign, resume: true }), { code: 'E_DATA', message: /not in/ });
  assert.equal(readFileSync(other, 'utf8'), original);
});

test('generate and select --resume refuse a finished --out that is not their output for this input', async () => {
  const data = path.join(work, 'retrieved-2.jsonl');
  const original = '{"question": "who wrote it", "answers": ["Austen"], "ctxs": [{"id": "1", "title": "", "text": "Jane Austen wrote it."}]}\n';
  writeFileSync(data, original);
  const other = path.join(work, 'other-2.jsonl');
  writeFileSync(other, original);
  await assert.rejects(generateAnswers({ data, out: other, llm: fixture('llama-tiny'), resume: true }), { code: 'E_INVALID_ARG', message: /not a generate output/ });
  const foreignAnswers = path.join(work, 'foreign-answers.jsonl');
  writeFileSync(foreignAnswers, '{"question": "another question", "answers": ["x"], "generated": "y", "EM": 0, "F1": 0}\n');
  await assert.rejects(generateAnswers({ data, out: foreignAnswers, llm: fixture('llama-tiny'), resume: true }), { code: 'E_DATA', message: /not in/ });
  const selector = await CrossEncoder.load(fixture('xlmr-tiny-reranker'));
  try {
    await assert.rejects(select(selector, { data, out: other, resume: true, pseudoPassage: false }), { code: 'E_INVALID_ARG', message: /not a select output/ });
  } finally {
    await selector.dispose();
  }
  assert.equal(readFileSync(other, 'utf8'), original);
});

test('train: a run killed into a finished --out does not leave the old model looking final', async () => {
  const out = path.join(work, 'selector');
  const data = path.join(work, 'train.jsonl');
  const line = JSON.stringify({ query: 'find code', pos: ['the source code of the program'], neg: ['a b c', 'd e f', 'g h i'], pos_scores: [-0.7], neg_scores: [-2.3, -2.4, -2.5] });
  writeFileSync(data, Array.from({ length: 8 }, () => line).join('\n') + '\n');
  const opts = { data, outDir: out, epochs: 1, batchSize: 2, groupSize: 4, queryMaxLength: 16, passageMaxLength: 32 };
  const t1 = await SelectorTrainer.create(fixture('xlmr-tiny-reranker'), { lr: 1e-4 });
  await t1.train(opts);
  assert.ok(existsSync(path.join(out, 'config.json')), 'the finished run is final');
  // A second run, stopped after its first step (triggered by the progress event, not a timer).
  const t2 = await SelectorTrainer.create(fixture('xlmr-tiny-reranker'), { lr: 1e-4 });
  const ac = new AbortController();
  await assert.rejects(t2.train({ ...opts, signal: ac.signal, onProgress: () => ac.abort() }), { code: 'E_CANCELLED' });
  assert.equal(existsSync(path.join(out, 'config.json')), false, 'old config.json would make the old weights look like this run');
  assert.equal(readFileSync(path.join(out, 'train_log.jsonl'), 'utf8').trim().split('\n').length, 1);
  // A directory that is not a training output (someone's project) is refused, its files kept.
  const project = path.join(work, 'project');
  mkdirSync(project);
  writeFileSync(path.join(project, 'config.json'), '{"mine": true}');
  await assert.rejects(t2.train({ ...opts, outDir: project }), { code: 'E_INVALID_ARG', message: /not a gainrag training directory/ });
  assert.equal(readFileSync(path.join(project, 'config.json'), 'utf8'), '{"mine": true}');
  // --out equal to the model directory is refused before anything is touched.
  await assert.rejects(t2.train({ ...opts, outDir: fixture('xlmr-tiny-reranker') }), { code: 'E_INVALID_ARG' });
  assert.ok(existsSync(path.join(fixture('xlmr-tiny-reranker'), 'config.json')));
});
