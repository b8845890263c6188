// `gainrag cluster submit|worker` against a real redis-server on 127.0.0.1 (Debian's package,
// started here on a free port with append-only persistence): two workers and a submitter over a
// held-apart slice of the SQuAD data. One worker is SIGKILLed mid-chunk (when it says the chunk
// started), Redis is restarted mid-run; the merged output must still be byte-identical to one
// single-process run, holding every question once. A chunk with corrupt input must be reported
// by id, with nothing final written.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cliPath, dataDir, repoRoot } from './helpers.js';

// The bundled tiny models (the same as test/fixtures), read only.
const model = (name: string) => path.join(repoRoot, 'models', name);

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-cluster-'));
const squad = path.join(dataDir, 'squad_v1.1_dev_open');
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

// Child processes run single-threaded: two workers + a submitter share two cores.
const env = { ...process.env, GAINRAG_THREADS: '1' };

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work, env });
  assert.equal(r.status, 0, `gainrag ${args.join(' ')} failed:\n${r.stderr}`);
  return r;
}

/** A child whose stderr+stdout is collected; waitFor resolves on the first line matching. */
function watched(cmd: string, args: string[]) {
  const child = spawn(cmd, args, { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let text = '';
  const waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  const onData = (b: Buffer) => {
    text += b.toString('utf8');
    for (const w of [...waiters]) {
      const m = text.match(w.re);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    exited,
    text: () => text,
    // The timeout only turns a hang into a failure with the log attached.
    waitFor(re: RegExp, what: string, ms = 60_000): Promise<RegExpMatchArray> {
      const m = text.match(re);
      if (m) return Promise.resolve(m);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; output so far:\n${text}`)), ms);
        waiters.push({ re, resolve: (x) => (clearTimeout(timer), resolve(x)) });
      });
    },
  };
}

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

const redisDir = path.join(work, 'redis');
mkdirSync(redisDir);
let port = 0;
async function startRedis() {
  const r = watched('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', redisDir, '--appendonly', 'yes', '--save', '', '--daemonize', 'no']);
  r.child.on('error', (err) => assert.fail(`redis-server could not start (apt-get install redis-server): ${err.message}`));
  await r.waitFor(/Ready to accept connections/, 'redis-server to start');
  return r;
}

test('cluster: kill a worker mid-chunk and restart Redis; merged output equals one run (JSONL and Parquet); a corrupt chunk is reported', async () => {
  port = await freePort();
  let redis = await startRedis();
  const url = `redis://127.0.0.1:${port}`;

  // Held apart: the last 128 passages and the last 24 questions of the bundled SQuAD slice
  // (other suites use the first lines).
  const passages = path.join(work, 'passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').trim().split('\n').slice(-128).join('\n') + '\n');
  const questionLines = readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(-24);
  const questions = path.join(work, 'questions.jsonl');
  writeFileSync(questions, questionLines.join('\n') + '\n');
  const index = path.join(work, 'index');
  cli(['index', 'build', '--passages', passages, '--encoder', model('bert-tiny'), '--out', index, '--batch-size', '64']);
  const retrieved = path.join(work, 'retrieved.jsonl');
  cli(['retrieve', '--index', index, '--encoder', model('bert-tiny'), '--data', questions, '--top-k', '3', '--batch-size', '4', '--out', retrieved]);

  // The single-process reference for the stage the cluster runs.
  const synthArgs = ['--llm', model('llama-tiny'), '--top-k', '2', '--batch-questions', '3', '--max-new-tokens', '4', '--pseudo-max-new-tokens', '24'];
  const reference = path.join(work, 'reference.jsonl');
  cli(['synthesize', '--data', retrieved, '--out', reference, ...synthArgs]);

  const workerArgs = [cliPath, 'cluster', 'worker', '--redis', url, '--lock-ms', '3000', '--stalled-ms', '1000'];
  const a = watched(process.execPath, workerArgs);
  const b = watched(process.execPath, workerArgs);
  await Promise.all([a.waitFor(/ready on/, 'worker A'), b.waitFor(/ready on/, 'worker B')]);
  const out = path.join(work, 'cluster.jsonl');
  const submitter = watched(process.execPath, [cliPath, 'cluster', 'submit', '--stage', 'synthesize', '--data', retrieved, '--out', out, '--redis', url, '--chunk-size', '3', '--', ...synthArgs]);

  // Kill A as soon as it starts a chunk: that chunk must be redone by B after the stalled check.
  const started = await a.waitFor(/chunk (\d+) started/, 'worker A to start a chunk');
  a.child.kill('SIGKILL');
  await a.exited;
  const killedChunk = Number(started[1]);

  // Restart Redis (it rewrites nothing: append-only file) once another chunk has completed.
  await submitter.waitFor(/chunks done \([1-9]/, 'a completed chunk');
  redis.child.kill('SIGTERM');
  await redis.exited;
  redis = await startRedis();

  const code = await submitter.exited;
  assert.equal(code, 0, `submitter failed:\n${submitter.text()}\nworker B:\n${b.text()}`);
  assert.match(b.text(), new RegExp(`chunk ${killedChunk} done`), 'the killed worker\'s chunk was finished by the other worker');
  assert.ok(readFileSync(out).equals(readFileSync(reference)), 'cluster output is byte-identical to the single-process run');
  const got = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l).question);
  assert.deepEqual(got, questionLines.map((l) => JSON.parse(l).question), 'every question exactly once, in input order');
  assert.equal(existsSync(`${out}.chunks`), false, 'chunk directory removed after the merge');

  // Parquet out, Parquet in: chunks in Parquet, merged into the single-process Parquet output byte for byte.
  const retrievedParquet = path.join(work, 'retrieved.parquet');
  cli(['retrieve', '--index', index, '--encoder', model('bert-tiny'), '--data', questions, '--top-k', '3', '--batch-size', '4', '--out', retrievedParquet]);
  const referenceParquet = path.join(work, 'reference.parquet');
  cli(['synthesize', '--data', retrievedParquet, '--out', referenceParquet, ...synthArgs]);
  const outParquet = path.join(work, 'cluster.parquet');
  const pq = watched(process.execPath, [cliPath, 'cluster', 'submit', '--stage', 'synthesize', '--data', retrievedParquet, '--out', outParquet, '--redis', url, '--chunk-size', '6', '--', ...synthArgs]);
  assert.equal(await pq.exited, 0, pq.text());
  assert.ok(readFileSync(outParquet).equals(readFileSync(referenceParquet)), 'cluster Parquet output is byte-identical to the single-process run');

  // A chunk whose input is damaged: retried, then reported by id; no final file.
  const bad = questionLines.slice(0, 12);
  bad[7] = '{"question": "damaged record", "answers": [';
  const badQuestions = path.join(work, 'bad.jsonl');
  writeFileSync(badQuestions, bad.join('\n') + '\n');
  const badOut = path.join(work, 'bad-out.arrow');
  const failing = watched(process.execPath, [
    cliPath, 'cluster', 'submit', '--stage', 'retrieve', '--data', badQuestions, '--out', badOut, '--redis', url, '--chunk-size', '4', '--attempts', '2',
    '--', '--index', index, '--encoder', model('bert-tiny'), '--top-k', '3', '--batch-size', '4',
  ]);
  const failCode = await failing.exited;
  assert.equal(failCode, 1, failing.text());
  assert.match(failing.text(), /chunk 1 \(records 4-7\) failed after 2 attempt\(s\): .*bad\.jsonl:8: invalid JSON.*\(E_DATA\)/);
  assert.doesNotMatch(failing.text(), /chunk [02] \(/, 'only the damaged chunk is reported');
  assert.equal(existsSync(badOut), false, 'no final file');
  assert.equal(existsSync(`${badOut}.partial`), false);

  b.child.kill('SIGTERM');
  assert.equal(await b.exited, 0, 'worker stops cleanly on SIGTERM');
  redis.child.kill('SIGTERM');
  await redis.exited;
});

test('cluster submit: unreachable Redis is an E_IO error, not a hang; bad stage flags fail before anything is queued', async () => {
  const { submit } = await import('../lib/scale/cluster.js');
  const data = path.join(work, 'one.jsonl');
  writeFileSync(data, '{"question": "q", "answers": ["a"]}\n');
  const dead = await freePort(); // nothing listens there
  const base = { stage: 'retrieve', data, out: path.join(work, 'never.jsonl'), redis: `redis://127.0.0.1:${dead}`, chunkSize: 4, connectTimeoutMs: 500 };
  await assert.rejects(submit({ ...base, args: ['--index', 'i', '--encoder', 'e'] }), { code: 'E_IO', message: /cannot reach Redis/ });
  await assert.rejects(submit({ ...base, args: ['--index', 'i'] }), { code: 'E_INVALID_ARG', message: /encoder/ });
  await assert.rejects(submit({ ...base, args: ['--index', 'i', '--encoder', 'e', '--shard', '0/2'] }), { code: 'E_INVALID_ARG', message: /set by the runner/ });
  await assert.rejects(submit({ ...base, stage: 'train', args: [] }), { code: 'E_INVALID_ARG', message: /--stage must be one of/ });
  assert.equal(existsSync(base.out), false);
});
