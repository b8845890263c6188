// `gainrag train` end to end: a run on generated FlagEmbedding data, a run killed (SIGKILL)
// after a checkpoint and resumed, which must end with the same weights as the uninterrupted
// run, and bad input rejected before training starts.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { CrossEncoder } from '../lib/index.js';
import { Rng } from '../lib/training/prng.js';
import { cliPath, fixture } from './helpers.js';

const model = fixture('xlmr-tiny-reranker');
const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-train-cli-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const WORDS = ['license', 'software', 'copyright', 'warranty', 'program', 'source', 'code', 'free', 'work', 'public'];
const FILLER = ['the', 'of', 'and', 'to', 'a', 'in', 'or', 'any', 'this', 'that'];

// Queries "find KW" with one positive containing KW and 5 negatives; gain-style scores.
function writeData(file: string, queries: number): void {
  const rng = new Rng(11);
  const text = (kw?: string) => {
    const w = Array.from({ length: 8 }, () => FILLER[rng.int(FILLER.length)]);
    if (kw) w[rng.int(8)] = kw;
    return w.join(' ');
  };
  const lines = Array.from({ length: queries }, () => {
    const kw = WORDS[rng.int(WORDS.length)];
    const neg = Array.from({ length: 5 }, () => text(rng.next() < 0.5 ? WORDS[rng.int(WORDS.length)] : undefined));
    return JSON.stringify({ query: `find ${kw}`, pos: [text(kw)], neg, pos_scores: [-Math.log(2)], neg_scores: neg.map((_, i) => -Math.log(10 + i)), prompt: 'unused' });
  });
  writeFileSync(file, `${lines.join('\n')}\n`);
}

const data = path.join(scratch, 'train.jsonl');
writeData(data, 120);
const args = (out: string) => [cliPath, 'train', '--model', model, '--data', data, '--out', out, '--group-size', '4', '--batch-size', '4',
  '--epochs', '2', '--lr', '5e-4', '--save-steps', '5', '--seed', '3', '--query-max-len', '16', '--passage-max-len', '48', '--json'];
const env = { ...process.env };

function run(argv: string[]) {
  return spawnSync(process.execPath, argv, { encoding: 'utf8', env });
}

const full = path.join(scratch, 'full');

test('train: checkpoints, final HF model, JSONL log, summary on stdout', async () => {
  const r = run(args(full));
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(summary.records, 120);
  assert.equal(summary.microSteps, 60);
  assert.equal(summary.optimizerSteps, 60);
  assert.ok(summary.pairsPerSec > 0);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'train_log.jsonl']) assert.ok(existsSync(path.join(full, f)), f);
  const checkpoints = readdirSync(full).filter((n) => n.startsWith('checkpoint-'));
  assert.equal(checkpoints.length, 12);
  for (const f of ['config.json', 'model.safetensors', 'optimizer.safetensors', 'trainer_state.json']) assert.ok(existsSync(path.join(full, 'checkpoint-30', f)), f);
  assert.deepEqual(readdirSync(full).filter((n) => n.startsWith('.')), [], 'no temporary directories left');
  const log = readFileSync(path.join(full, 'train_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(log.length, 60);
  assert.deepEqual(log.map((e) => e.micro), Array.from({ length: 60 }, (_, i) => i + 1));
  // warmup over ceil(0.1 * 60) = 6 steps, then linear decay to 0
  assert.equal(log[0].lr, 0);
  assert.ok(Math.abs(log[6].lr - 5e-4) < 1e-12);
  assert.ok(Math.abs(log[59].lr - 5e-4 / 54) < 1e-12);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(log.slice(0, 10).map((e) => e.loss));
  const last = mean(log.slice(-10).map((e) => e.loss));
  assert.ok(last < first, `loss went down: ${first} -> ${last}`);
  const ce = await CrossEncoder.load(full);
  assert.equal((await ce.score(['find license'], ['the license of this'])).length, 1);
});

test('train --resume after SIGKILL reproduces the uninterrupted run bitwise', async () => {
  assert.ok(existsSync(path.join(full, 'model.safetensors')), 'needs the previous test');
  const out = path.join(scratch, 'killed');
  const child = spawn(process.execPath, args(out), { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += String(d)));
  const killedAt = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      if (existsSync(path.join(out, 'checkpoint-20', 'trainer_state.json'))) {
        clearInterval(timer);
        child.kill('SIGKILL');
        resolve(readdirSync(out).filter((n) => n.startsWith('checkpoint-')).join(','));
      }
    }, 2);
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      if (signal !== 'SIGKILL') reject(new Error(`run ended (${code}) before it could be killed: ${stderr}`));
    });
  });
  await new Promise((r) => child.once('close', r));
  assert.ok(!existsSync(path.join(out, 'model.safetensors')), `killed before the end (checkpoints then: ${killedAt})`);
  const r = run([...args(out), '--resume']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /resuming from .*checkpoint-\d+/);
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.ok(summary.resumedFrom);
  assert.equal(summary.optimizerSteps, 60);
  const a = readFileSync(path.join(full, 'model.safetensors'));
  const b = readFileSync(path.join(out, 'model.safetensors'));
  assert.ok(a.equals(b), 'final weights identical to the uninterrupted run');
  const log = readFileSync(path.join(out, 'train_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(log.map((e) => e.micro), Array.from({ length: 60 }, (_, i) => i + 1), 'log has each step once');
  assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('.')), [], 'the killed run\'s temporaries were cleaned up');
});

test('train --gradient-checkpointing: same final weights as the run without it', () => {
  assert.ok(existsSync(path.join(full, 'model.safetensors')), 'needs the first test');
  const out = path.join(scratch, 'checkpointed');
  const r = run([...args(out), '--gradient-checkpointing']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout.trim().split('\n').pop()!).optimizerSteps, 60);
  // Recomputing layers in the backward pass is a memory trade, not a different computation
  // (the fixture has dropout 0; the replay of dropout masks is tested in trainer.test.ts).
  assert.ok(readFileSync(path.join(full, 'model.safetensors')).equals(readFileSync(path.join(out, 'model.safetensors'))));
});

test('train: bad input is rejected before training, with codes and line numbers', () => {
  const bad = path.join(scratch, 'bad.jsonl');
  writeFileSync(bad, '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1], "neg_scores": [0]}\n{"query": "q", "pos": ["p"]\n{"query": "q", "pos": ["p"], "neg": [], "pos_scores": [1], "neg_scores": []}\n');
  const out = path.join(scratch, 'bad-out');
  let r = run([cliPath, 'train', '--model', model, '--data', bad, '--out', out]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bad\.jsonl:2: malformed JSON/);
  assert.match(r.stderr, /bad\.jsonl:3: "neg" is empty/);
  assert.match(r.stderr, /\(E_DATA\)/);
  assert.ok(!existsSync(path.join(out, 'model.safetensors')));
  r = run([cliPath, 'train', '--model', model, '--data', data, '--out', out, '--dtype', 'float16']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /CUDA.*\(E_UNSUPPORTED\)/);
  // a checkpoint from a run with other options cannot be resumed
  r = run([...args(full).map((a) => (a === '3' ? '4' : a)), '--resume']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /different run \(seed.*\(E_DATA\)/);
});
