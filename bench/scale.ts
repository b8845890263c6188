// Cost as the work grows (issue #11), all measured in this one run:
//  1. streaming N synthetic questions (default 1M) through `retrieve` (fixture bert-tiny encoder,
//     bundled SQuAD passages) into an Arrow stream: q/s and RSS sampled along the way; bounded
//     memory shows as an RSS that stops growing while the output does;
//  2. BullMQ/Redis queue overhead per chunk against the chunk's compute time (one worker, a local
//     redis-server): the submitter's wall time per chunk minus the worker's time inside the chunk
//     (both measured in the same run; the difference is enqueue, hand-over, polling and merge);
//  3. output bytes per question, JSONL vs Arrow (IPC file) vs Parquet, at top-10 and top-100;
//  4. four stages (retrieve -> synthesize -> select -> generate, tiny bundled models) over the
//     same questions in each format: seconds and output bytes per question of every stage.
// Usage: node dist/bench/scale.js [--questions N] [--chunks K] [--chunk-size C] [--pipeline-questions P]
//        [--formats-only 1] (sections 3 and 4 only)
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildIndex } from '../lib/retrieval/build.js';
import { retrieve } from '../lib/retrieval/retrieve.js';
import { runWorker, submit } from '../lib/scale/cluster.js';
import { synthesize } from '../lib/pipeline/synthesize.js';
import { select } from '../lib/pipeline/select.js';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { nativeGenerator } from '../lib/pipeline/text-backend.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const N = arg('questions', 1_000_000);
const K = arg('chunks', 16);
const C = arg('chunk-size', 512);
const P = arg('pipeline-questions', 64);
const formatsOnly = arg('formats-only', 0) === 1;
const FORMATS = ['jsonl', 'arrow', 'parquet'] as const;
const work = mkdtempSync(path.join(tmpdir(), 'gainrag-scale-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const encoder = path.join(root, 'models', 'bert-tiny');
const squad = path.join(root, 'test', 'data', 'squad_v1.1_dev_open');
const mb = (b: number) => (b / 2 ** 20).toFixed(0);

// Synthetic questions: real SQuAD questions with a serial number, so every one is distinct.
async function writeQuestions(file: string, n: number): Promise<void> {
  const base = readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  let seed = 11;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32); // LCG: fixed, repeatable
  const out = createWriteStream(file);
  for (let i = 0; i < n; i++) {
    const q = base[Math.floor(rand() * base.length)];
    const line = `${JSON.stringify({ id: `syn-${i}`, question: `${q.question} (${i})`, answers: q.answers })}\n`;
    if (!out.write(line)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((r, j) => out.end((e?: Error) => (e ? j(e) : r())));
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function main() {
  const index = path.join(work, 'index');
  await buildIndex({ passages: path.join(squad, 'passages.jsonl'), encoder, out: index, batchSize: 128 });

  // 3. bytes per question (small N, every format).
  const sample = path.join(work, 'sample.jsonl');
  await writeQuestions(sample, 2000);
  console.log('retrieve output bytes per question (2000 questions, passage text included):');
  for (const k of [10, 100]) {
    const sizes: Record<string, number> = {};
    for (const format of FORMATS) {
      const out = path.join(work, `sample-${k}.${format}`);
      await retrieve({ index, encoder, data: sample, out, topK: k, batchSize: 256, format });
      sizes[format] = statSync(out).size / 2000;
    }
    console.log(`  top-${k}: JSONL ${sizes.jsonl.toFixed(0)} B, Arrow ${sizes.arrow.toFixed(0)} B (${(sizes.jsonl / sizes.arrow).toFixed(1)}x), Parquet ${sizes.parquet.toFixed(0)} B (${(sizes.jsonl / sizes.parquet).toFixed(1)}x)`);
  }

  // 4. four stages per format.
  await pipeline(index);
  if (formatsOnly) return;

  // 1. streaming N questions into Arrow.
  const questions = path.join(work, 'questions.jsonl');
  await writeQuestions(questions, N);
  console.log(`\nstreaming ${N} synthetic questions through retrieve (top-10, batch 512, Arrow out; input ${mb(statSync(questions).size)} MiB):`);
  const out = path.join(work, 'big.arrow');
  const t0 = performance.now();
  let peak = 0;
  const marks: string[] = [];
  let nextMark = N / 10;
  await retrieve({
    index, encoder, data: questions, out, topK: 10, batchSize: 512, format: 'arrow',
    onProgress: (done) => {
      const rss = process.memoryUsage().rss;
      peak = Math.max(peak, rss);
      if (done >= nextMark) {
        marks.push(`${done}: ${mb(rss)} MiB`);
        nextMark += N / 10;
      }
    },
  });
  const secs = (performance.now() - t0) / 1000;
  console.log(`  ${(N / secs).toFixed(0)} q/s (${secs.toFixed(0)} s); RSS by questions done: ${marks.join(', ')}; peak ${mb(peak)} MiB; output ${mb(statSync(out).size)} MiB`);
  rmSync(out, { force: true });

  // 2. queue overhead per chunk.
  const port = await freePort();
  const redisDir = path.join(work, 'redis');
  spawnSync('mkdir', ['-p', redisDir]);
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', redisDir, '--appendonly', 'yes', '--save', ''], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 500));
    const url = `redis://127.0.0.1:${port}`;
    const chunkInput = path.join(work, 'chunks.jsonl');
    await writeQuestions(chunkInput, K * C);
    const args = ['--index', index, '--encoder', encoder, '--top-k', '10', '--batch-size', String(C), '--format', 'arrow'];
    // One in-process worker (models warmed by a first run), one submitter; the worker's log
    // lines mark when each chunk's work starts and ends.
    let inside = 0;
    let startedAt = 0;
    const stop = new AbortController();
    const worker = runWorker({
      redis: url, signal: stop.signal, lockMs: 30_000, stalledMs: 30_000,
      log: (line) => {
        if (/ started /.test(line)) startedAt = performance.now();
        if (/ done /.test(line)) inside += performance.now() - startedAt;
      },
    });
    await submit({ stage: 'retrieve', args, data: chunkInput, out: path.join(work, 'warmup.arrow'), redis: url, chunkSize: C, pollMs: 20 });
    inside = 0;
    const q0 = performance.now();
    await submit({ stage: 'retrieve', args, data: chunkInput, out: path.join(work, 'queued.arrow'), redis: url, chunkSize: C, pollMs: 20 });
    const queued = (performance.now() - q0) / K;
    const compute = inside / K;
    stop.abort();
    await worker;
    console.log(`\nqueue overhead (${K} chunks of ${C} questions, 1 worker, local redis-server):`);
    console.log(`  chunk compute (inside the worker) ${compute.toFixed(0)} ms; submitter wall time ${queued.toFixed(0)} ms per chunk; overhead ${(queued - compute).toFixed(0)} ms per chunk = ${((100 * (queued - compute)) / compute).toFixed(1)}% of compute`);
  } finally {
    redis.kill('SIGTERM');
  }
}

// retrieve -> synthesize -> select -> generate over P questions, each stage reading the previous
// stage's output in the same format: seconds and bytes per question, a table row per stage.
async function pipeline(index: string): Promise<void> {
  const questions = path.join(work, 'pipeline.jsonl');
  await writeQuestions(questions, P);
  const lm = await CausalLM.load(path.join(root, 'models', 'llama-tiny'));
  const selector = await CrossEncoder.load(path.join(root, 'models', 'xlmr-tiny-reranker'));
  const rows: Record<string, Record<string, { s: number; b: number }>> = {};
  // A first JSONL pass warms the models and the JIT; it is not counted.
  let warmed = false;
  for (const format of ['jsonl', ...FORMATS] as const) {
    const out = (stage: string) => path.join(work, `p-${stage}.${format}`);
    const warm = warmed;
    warmed = true;
    const timed = async (stage: string, run: () => Promise<unknown>) => {
      const t0 = performance.now();
      await run();
      if (warm) (rows[stage] ??= {})[format] = { s: (performance.now() - t0) / 1000 / P, b: statSync(out(stage)).size / P };
    };
    await timed('retrieve', () => retrieve({ index, encoder, data: questions, out: out('retrieve'), topK: 10, batchSize: 64, format }));
    await timed('synthesize', () => synthesize(lm, { data: out('retrieve'), out: out('synthesize'), topK: 3, batchQuestions: 8, maxNewTokens: 4, pseudoMaxNewTokens: 8, format }));
    await timed('select', () => select(selector, { data: out('retrieve'), out: out('select'), generator: nativeGenerator(lm), pseudoMaxNewTokens: 8, batchQuestions: 8, candidates: 10, kDocs: 3, format }));
    await timed('generate', () => generateAnswers({ lm, data: out('select'), out: out('generate'), batchQuestions: 8, maxNewTokens: 4, kDocs: 3, format }));
  }
  console.log(`\nfour stages, ${P} questions (tiny models; ms and output bytes per question):`);
  console.log('  stage       ' + FORMATS.map((f) => `${f.padEnd(8)} ms      B`.padEnd(24)).join(''));
  for (const [stage, byFormat] of Object.entries(rows)) {
    console.log(`  ${stage.padEnd(12)}` + FORMATS.map((f) => `${(byFormat[f].s * 1000).toFixed(1).padStart(8)} ${byFormat[f].b.toFixed(0).padStart(8)}`.padEnd(24)).join(''));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
