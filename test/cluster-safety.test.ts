// `cluster submit` keeps the output guarantees (issue #20, item 6): --work-dir DIR is a
// directory it writes into, not one it owns (DIR and what was there survive a successful run);
// --out is checked like any output (not the input, not a link); a second submit onto the same
// --out while the first runs is E_LOCKED. Submitter and worker run in this process, against a
// redis-server started here.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runWorker, submit, type SubmitOptions } from '../lib/scale/cluster.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { dataDir, fixture } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-cluster-safety-'));
let redis: ChildProcess | undefined;
after(() => {
  redis?.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});
const f = (name: string) => path.join(work, name);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', work, '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let text = '';
    child.on('error', reject);
    child.stdout!.on('data', (b: Buffer) => {
      text += b.toString();
      if (/Ready to accept connections/.test(text)) resolve();
    });
  });
  return child;
}

const questions = f('questions.jsonl');
writeFileSync(questions, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'), 'utf8').split('\n').slice(0, 4).join('\n') + '\n');

test('cluster submit: --out equal to --data, or a symlink, is refused before anything is queued', async () => {
  const dead = await freePort(); // nothing listens: a refusal must come before connecting
  const base = { stage: 'retrieve', args: ['--index', 'i', '--encoder', 'e'], redis: `redis://127.0.0.1:${dead}`, chunkSize: 2, connectTimeoutMs: 500 };
  const before = readFileSync(questions, 'utf8');
  await assert.rejects(submit({ ...base, data: questions, out: questions }), { code: 'E_INVALID_ARG', message: /input/ });
  const target = f('precious.jsonl');
  writeFileSync(target, 'keep\n');
  symlinkSync(target, f('link.jsonl'));
  await assert.rejects(submit({ ...base, data: questions, out: f('link.jsonl') }), { code: 'E_INVALID_ARG', message: /symbolic link/ });
  assert.equal(readFileSync(questions, 'utf8'), before);
  assert.equal(readFileSync(target, 'utf8'), 'keep\n');
  // The failed connection leaves no chunk directory behind.
  await assert.rejects(submit({ ...base, data: questions, out: f('never.jsonl') }), { code: 'E_IO' });
  assert.equal(existsSync(f('never.jsonl.chunks')), false);
});

test('cluster submit: --work-dir and its files survive; a second submit onto one --out is E_LOCKED', async () => {
  const port = await freePort();
  redis = await startRedis(port);
  const url = `redis://127.0.0.1:${port}`;
  const passages = f('passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'), 'utf8').split('\n').slice(0, 16).join('\n') + '\n');
  const index = f('index');
  await buildIndex({ passages, encoder: fixture('bert-tiny'), out: index });
  const opts = (out: string, extra: Partial<SubmitOptions> = {}): SubmitOptions => ({
    stage: 'retrieve', args: ['--index', index, '--encoder', fixture('bert-tiny'), '--top-k', '2', '--batch-size', '2'],
    data: questions, out, redis: url, chunkSize: 2, pollMs: 50, connectTimeoutMs: 5000, queue: 'safety', ...extra,
  });

  // No worker yet: the first submit queues its chunks and waits, holding --out.
  const out = f('out.jsonl');
  let queued!: () => void;
  const isQueued = new Promise<void>((r) => (queued = r));
  const first = submit(opts(out, { log: (l) => /queued/.test(l) && queued() }));
  await isQueued;
  await assert.rejects(submit(opts(out)), { code: 'E_LOCKED' });

  // A worker finishes it; the user's work directory and files are untouched.
  const ac = new AbortController();
  const worker = runWorker({ redis: url, queue: 'safety', signal: ac.signal });
  try {
    assert.equal((await first).records, 4);
    const dir = f('shared-work');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'thesis.tex'), 'years of work');
    const out2 = f('out2.jsonl');
    assert.equal((await submit(opts(out2, { workDir: dir }))).records, 4);
    assert.deepEqual(readdirSync(dir), ['thesis.tex'], 'only what the run made is removed');
    assert.equal(readFileSync(path.join(dir, 'thesis.tex'), 'utf8'), 'years of work');
    assert.ok(readFileSync(out2).equals(readFileSync(out)));
    // A work directory the run made is removed with it.
    assert.equal(existsSync(`${out}.chunks`), false);
    const made = f('made/work');
    await submit(opts(f('out3.jsonl'), { workDir: made }));
    assert.equal(existsSync(f('made')), false);
  } finally {
    ac.abort();
    await worker;
  }
});
