// Cost as the work grows (issue #11), all measured in this one run:
//  1. streaming N synthetic questions (default 1M) through `retrieve` (fixture bert-tiny encoder,
//     bundled SQuAD passages) into an Arrow stream: q/s and RSS sampled along the way; bounded
//     memory shows as an RSS that stops growing while the output does;
//  2. BullMQ/Redis queue overhead per chunk against the chunk's compute time (one worker, a local
//     redis-server): the submitter's wall time per chunk minus the worker's time inside the chunk
//     (both measured in the same run; the difference is enqueue, hand-over, polling and merge);
//  3. output bytes per question, JSONL vs Arrow (IPC file) vs Parquet, at top-10 and top-100;
//  4. reading a stage input (synthesize's checks) through records or through the typed columns;
//  5. four stages (retrieve -> synthesize -> select -> generate, tiny bundled models) over the
//     same questions in each format (Arrow/Parquet also --no-text): seconds and output bytes per
//     question of every stage, formats taking turns for R rounds (medians).
// Usage: node dist/bench/scale.js [--questions N] [--chunks K] [--chunk-size C] [--pipeline-questions P]
//        [--rounds R] [--formats-only 1] (sections 3-5 only; they are written to bench/results/scale.md)
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildIndex } from '../lib/retrieval/build.js';
import { retrieve } from '../lib/retrieval/retrieve.js';
import { runWorker, submit } from '../lib/scale/cluster.js';
import { synthesize } from '../lib/pipeline/synthesize.js';
import { select } from '../lib/pipeline/select.js';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { nativeGenerator } from '../lib/pipeline/text-backend.js';
import { validate, validateColumns } from '../lib/pipeline/synthesize-input.js';
import { readStageRows } from '../lib/io/stage-input.js';
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
const R = arg('rounds', 3);
const resultsFile = path.join(root, 'bench', 'results', 'scale.md');
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
  const load0 = loadavg().map((x) => x.toFixed(1)).join(' ');
  const sizeRows = ['| retrieve output | JSONL | Arrow (IPC file) | Parquet (zstd) | Arrow --no-text | Parquet --no-text |', '|---|---|---|---|---|---|'];
  for (const k of [10, 100]) {
    const sizes: Record<string, number> = {};
    for (const format of FORMATS) {
      for (const noText of format === 'jsonl' ? [false] : [false, true]) {
        const out = path.join(work, `sample-${k}${noText ? '-nt' : ''}.${format}`);
        await retrieve({ index, encoder, data: sample, out, topK: k, batchSize: 256, format, noText });
        sizes[`${format}${noText ? '-nt' : ''}`] = statSync(out).size / 2000;
      }
    }
    const x = (key: string) => `${sizes[key].toFixed(0)} B (${(sizes.jsonl / sizes[key]).toFixed(1)}x)`;
    sizeRows.push(`| top-${k}, 2000 questions | ${sizes.jsonl.toFixed(0)} B | ${x('arrow')} | ${x('parquet')} | ${x('arrow-nt')} | ${x('parquet-nt')} |`);
  }
  console.log(`retrieve output bytes per question:\n${sizeRows.join('\n')}`);

  // How synthesize reads its input (top-100 files above, its first 20 ctxs per question).
  const reading = await readCost();

  // 4. four stages per format.
  const table = await pipeline(index);
  const command = `node dist/bench/scale.js ${process.argv.slice(2).join(' ')}`.trim();
  writeFileSync(resultsFile, [
    `# Stage outputs by format: bytes and seconds per question (${new Date().toISOString().slice(0, 10)})`, '',
    `\`${command}\` (bench/scale.ts) on the shared 2-core development VM (no GPU); load average (1, 5, 15 min) ${load0} when it started.`, '',
    '## Retrieve output bytes per question', '', ...sizeRows, '',
    '## Reading a stage input: records or columns', '', reading, '',
    '## retrieve -> synthesize -> select -> generate', '', table, '',
  ].join('\n'));
  console.log(`\nwritten to ${resultsFile}`);
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
// stage's output in the same format (Arrow and Parquet also with retrieve --no-text: the stages
// after read passage text from the index): seconds and bytes per question, a row per stage.
// The machine is shared, so the formats take turns: R rounds, each running every format once
// (in a rotated order), and the table gives the median over the rounds.
const VARIANTS = [
  { name: 'JSONL', format: 'jsonl', noText: false },
  { name: 'Arrow', format: 'arrow', noText: false },
  { name: 'Parquet', format: 'parquet', noText: false },
  { name: 'Arrow --no-text', format: 'arrow', noText: true },
  { name: 'Parquet --no-text', format: 'parquet', noText: true },
] as const;
const STAGES = ['retrieve', 'synthesize', 'select', 'generate'] as const;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// synthesize's input checks (validate / validateColumns: question, answers, the first 20 ctxs'
// title, text, hasanswer, score) over the 2000 top-100 retrieval outputs of section 3, through
// the records (every row decoded, as stages read before issue #18) and through the columns; the
// variants take turns for R rounds, median ms per question.
async function readCost(): Promise<string> {
  const summary = { droppedPassages: 0, droppedAnswers: 0 };
  const quiet = () => undefined;
  const variants = [
    { name: 'JSONL, records', file: 'sample-100.jsonl', columns: false },
    { name: 'Arrow, records', file: 'sample-100.arrow', columns: false },
    { name: 'Arrow, columns', file: 'sample-100.arrow', columns: true },
    { name: 'Parquet, records', file: 'sample-100.parquet', columns: false },
    { name: 'Parquet, columns', file: 'sample-100.parquet', columns: true },
    { name: 'Arrow --no-text, columns (text from the store)', file: 'sample-100-nt.arrow', columns: true },
  ];
  const ms: Record<string, number[]> = {};
  let passages = 0;
  for (let round = 0; round < R; round++) {
    for (let i = 0; i < variants.length; i++) {
      const v = variants[(i + round) % variants.length];
      passages = 0;
      const t0 = performance.now();
      for await (const row of readStageRows(path.join(work, v.file))) {
        const c = v.columns ? row.columns : undefined;
        const q = (c && validateColumns(c.batch, c.row, 'x:1', 20, true, quiet, summary)) || validate(row.record(), 'x:1', 20, true, quiet, summary);
        passages += q.passages.length;
      }
      (ms[v.name] ??= []).push((performance.now() - t0) / 2000);
    }
  }
  const base = median(ms['JSONL, records']);
  const lines = [
    `synthesize's input checks over 2000 top-100 retrieval outputs (${passages / 2000} passages per question taken), median of ${R} rounds taken in turn; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')} at the end.`,
    '',
    '| input, read through | ms per question | vs JSONL |',
    '|---|---|---|',
    ...variants.map((v) => `| ${v.name} | ${median(ms[v.name]).toFixed(3)} (${Math.min(...ms[v.name]).toFixed(3)}-${Math.max(...ms[v.name]).toFixed(3)}) | ${(base / median(ms[v.name])).toFixed(1)}x |`),
  ];
  console.log(`\n${lines.join('\n')}`);
  return lines.join('\n');
}

async function pipeline(index: string): Promise<string> {
  const questions = path.join(work, 'pipeline.jsonl');
  await writeQuestions(questions, P);
  const lm = await CausalLM.load(path.join(root, 'models', 'llama-tiny'));
  const selector = await CrossEncoder.load(path.join(root, 'models', 'xlmr-tiny-reranker'));
  // seconds[variant][stage] per round; bytes are the same every round.
  const seconds: Record<string, Record<string, number[]>> = {};
  const bytes: Record<string, Record<string, number>> = {};
  const loads: string[] = [];
  const runOnce = async (v: (typeof VARIANTS)[number], counted: boolean) => {
    const ext = v.format === 'jsonl' ? 'jsonl' : v.format;
    const out = (stage: string) => path.join(work, `p-${stage}${v.noText ? '-nt' : ''}.${ext}`);
    const format = v.format;
    const timed = async (stage: string, run: () => Promise<unknown>) => {
      rmSync(out(stage), { force: true });
      rmSync(`${out(stage)}.gainrag.json`, { force: true });
      const t0 = performance.now();
      await run();
      if (!counted) return;
      ((seconds[v.name] ??= {})[stage] ??= []).push((performance.now() - t0) / 1000 / P);
      (bytes[v.name] ??= {})[stage] = statSync(out(stage)).size / P;
    };
    await timed('retrieve', () => retrieve({ index, encoder, data: questions, out: out('retrieve'), topK: 10, batchSize: 64, format, noText: v.noText }));
    await timed('synthesize', () => synthesize(lm, { data: out('retrieve'), out: out('synthesize'), topK: 3, batchQuestions: 8, maxNewTokens: 4, pseudoMaxNewTokens: 8, format }));
    await timed('select', () => select(selector, { data: out('retrieve'), out: out('select'), generator: nativeGenerator(lm), pseudoMaxNewTokens: 8, batchQuestions: 8, candidates: 10, kDocs: 3, format }));
    await timed('generate', () => generateAnswers({ lm, data: out('select'), out: out('generate'), batchQuestions: 8, maxNewTokens: 4, kDocs: 3, format }));
  };
  // A first JSONL pass warms the models and the JIT; it is not counted.
  await runOnce(VARIANTS[0], false);
  for (let round = 0; round < R; round++) {
    loads.push(loadavg().map((x) => x.toFixed(1)).join(' '));
    for (let i = 0; i < VARIANTS.length; i++) await runOnce(VARIANTS[(i + round) % VARIANTS.length], true);
  }
  loads.push(loadavg().map((x) => x.toFixed(1)).join(' '));
  const cell = (v: string, stage: string) => {
    const xs = seconds[v][stage];
    return `${(median(xs) * 1000).toFixed(2)} ms (${(Math.min(...xs) * 1000).toFixed(2)}-${(Math.max(...xs) * 1000).toFixed(2)}), ${bytes[v][stage].toFixed(0)} B`;
  };
  const lines = [
    `Four stages over ${P} questions (bert-tiny over the 1023 bundled passages, top-10; llama-tiny, xlmr-tiny-reranker), each stage reading the previous one's output in the same format. ` +
      `Per question: median seconds over ${R} rounds (min-max), output bytes. Load average (1, 5, 15 min) at the start of each round and at the end: ${loads.join(' | ')}.`,
    '',
    `| stage | ${VARIANTS.map((v) => v.name).join(' | ')} |`,
    `|---|${VARIANTS.map(() => '---').join('|')}|`,
    ...STAGES.map((stage) => `| ${stage} | ${VARIANTS.map((v) => cell(v.name, stage)).join(' | ')} |`),
    `| all four | ${VARIANTS.map((v) => {
      const total = (r: number) => STAGES.reduce((a, st) => a + seconds[v.name][st][r], 0);
      const totals = Array.from({ length: R }, (_, r) => total(r));
      return `${(median(totals) * 1000).toFixed(2)} ms, ${STAGES.reduce((a, st) => a + bytes[v.name][st], 0).toFixed(0)} B`;
    }).join(' | ')} |`,
  ];
  console.log(`\n${lines.join('\n')}`);
  return lines.join('\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
