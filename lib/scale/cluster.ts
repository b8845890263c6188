// Cluster runner on BullMQ over Redis: the submitter splits a stage's input into chunks (the
// contiguous, batch-aligned ranges of lib/io/records.ts), enqueues one job per chunk, follows
// them, and merges the chunk outputs in input order; workers (one per GPU or machine) take jobs
// and run the stage on their chunk.
//
// Delivery is at least once. A chunk's output is written under a name of its own
// (`chunk-K.<worker>.tmp.<ext>`, by the stage's atomic writer) and renamed onto
// `<work-dir>/chunk-K.<ext>` when complete, so a duplicate run (a stalled job redone while the
// first worker still finishes) replaces the file with the same bytes, and a worker killed
// mid-chunk leaves only a temporary file behind. BullMQ's stalled-job check gives a dead
// worker's job to another worker once its lock expires. A chunk that fails is retried up to
// `attempts` times, then reported with its id and error; the submitter then exits non-zero and
// writes no final file. The submitter polls job states rather than relying on events, so a
// Redis restart (with append-only persistence) only pauses it.
import { existsSync, mkdirSync, renameSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { Queue, Worker, type ConnectionOptions, type Job } from 'bullmq';
import { GainragError, isErrorCode, type ErrorCode } from '../errors.js';
import { chunkRanges, countRecords, outputFormat, type Range, type RecordFormat } from '../io/records.js';
import { manifestPath } from '../io/manifest.js';
import { acquireOutputLock, validateOutput } from '../io/output.js';
import { mergeOutputs } from './merge.js';
import { checkStageArgs, parseStageArgs, runChunk, stageAlignment, type ChunkTask, type ModelCache, type StageName } from './stages.js';

export const DEFAULT_QUEUE = 'gainrag';

/** ioredis options from redis[s]://[user:password@]host[:port][/db]; rediss:// connects over TLS. */
export function redisConnection(url: string): ConnectionOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new GainragError('E_INVALID_ARG', `--redis must be a URL like redis://127.0.0.1:6379, got ${JSON.stringify(url)}`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new GainragError('E_INVALID_ARG', `--redis must use redis:// or rediss:// (TLS), got ${u.protocol}`);
  return {
    // Managed Redis (ElastiCache, Azure, Upstash) often serves TLS only. tls.connect checks the
    // certificate against the host (and sends it as SNI when it is a name), as for https.
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    username: u.username || undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    // Workers block on Redis; commands wait through a reconnect instead of failing.
    maxRetriesPerRequest: null,
    retryStrategy: (times: number) => Math.min(100 * times, 1000),
  };
}

/** A queued chunk: what runChunk runs (out: the final chunk path, in the shared directory), and where it belongs. */
export interface ChunkJobData extends Omit<ChunkTask, 'device' | 'signal'> {
  runId: string;
  chunk: number;
}

export interface SubmitOptions {
  stage: string;
  args: string[];
  data: string;
  out: string;
  redis: string;
  queue?: string;
  /** Records per chunk, rounded up to a multiple of the stage's batch size. */
  chunkSize: number;
  /**
   * Shared directory for chunk outputs (default OUT.chunks). The run writes into a directory of
   * its own inside it and removes only that (and the work directory itself if the run made it).
   */
  workDir?: string;
  attempts?: number;
  pollMs?: number;
  /** How long the first connection to Redis may take (default 15 s). */
  connectTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface ChunkFailure {
  chunk: number;
  range: Range;
  attempts: number;
  code: ErrorCode;
  error: string;
}

export interface SubmitSummary {
  out: string;
  records: number;
  chunks: number;
  chunkSize: number;
  seconds: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The first connection must succeed within `ms` (later drops are waited out): no silent hang on a wrong URL. */
async function reachable(ready: Promise<unknown>, url: string, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new GainragError('E_IO', `cannot reach Redis at ${url} within ${ms / 1000} s (is redis-server running there?)`)), ms);
  });
  try {
    await Promise.race([ready, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// Errors cross Redis as text: keep the code in front so the submitter can report it.
function encodeError(err: unknown): Error {
  const e = err as { code?: unknown; message?: string };
  const code = isErrorCode(e?.code) ? e.code : 'E_INTERNAL';
  return new Error(`[${code}] ${e?.message ?? String(err)}`);
}

function decodeError(reason: string | undefined): { code: ErrorCode; error: string } {
  const m = /^\[(E_[A-Z_]+)\] ([\s\S]*)$/.exec(reason ?? '');
  if (m && isErrorCode(m[1])) return { code: m[1], error: m[2] };
  return { code: 'E_INTERNAL', error: reason ?? 'unknown failure' };
}

/** Splits, enqueues, follows and merges one stage run. Throws (E_DATA etc.) when a chunk failed for good. */
export async function submit(options: SubmitOptions): Promise<SubmitSummary> {
  const t0 = performance.now();
  const log = options.log ?? (() => undefined);
  const data = path.resolve(options.data);
  const out = path.resolve(options.out);
  const parsed = parseStageArgs(options.stage, options.args, data, out); // bad flags fail here, not in every worker
  // And bad values (--k-docs 0, --alpha 1e300 ...): the stage's own checks, before anything is queued.
  checkStageArgs(options.stage as StageName, parsed);
  // The output's checks and lock, as for any writer, held for the whole run: a second submit
  // onto this --out is E_LOCKED instead of sharing the chunk directory.
  validateOutput(out, 'file', { inputs: [data], label: '--out' });
  const lock = acquireOutputLock(out);
  try {
    return await submitLocked(options, { t0, log, data, out, parsed, lock });
  } finally {
    lock.release();
  }
}

interface SubmitContext {
  t0: number;
  log: (line: string) => void;
  data: string;
  out: string;
  parsed: ReturnType<typeof parseStageArgs>;
  lock: ReturnType<typeof acquireOutputLock>;
}

/** Makes `dir` (and missing parents); returns the directories made, innermost first. */
function makeDirs(dir: string): string[] {
  let st;
  try {
    st = statSync(dir);
  } catch {
    st = undefined;
  }
  if (st && !st.isDirectory()) throw new GainragError('E_INVALID_ARG', `--work-dir ${dir} exists and is not a directory`);
  const first = mkdirSync(dir, { recursive: true });
  const made: string[] = [];
  if (first) for (let d = dir; ; d = path.dirname(d)) {
    made.push(d);
    if (d === first || path.dirname(d) === d) break;
  }
  return made;
}

async function submitLocked(options: SubmitOptions, ctx: SubmitContext): Promise<SubmitSummary> {
  const { t0, log, data, out, parsed, lock } = ctx;
  const stage = options.stage as StageName;
  const format = outputFormat(out, parsed.format);
  const align = stageAlignment(stage, parsed);
  if (!Number.isInteger(options.chunkSize) || options.chunkSize < 1) throw new GainragError('E_INVALID_ARG', `--chunk-size must be a positive integer, got ${options.chunkSize}`);
  const chunkSize = Math.ceil(options.chunkSize / align) * align;
  if (chunkSize !== options.chunkSize) log(`cluster: chunk size ${options.chunkSize} rounded up to ${chunkSize} (a multiple of the stage's batch size ${align}, so chunks batch as one run does)`);
  const attempts = options.attempts ?? 3;
  const total = await countRecords(data);
  const ranges = chunkRanges(total, chunkSize);
  const runId = `${Date.now().toString(36)}-${process.pid.toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  // Everything the run writes is under a directory named for it: the work directory may be a
  // user's (shared) directory, and nothing of theirs is ever replaced or removed.
  const workRoot = path.resolve(options.workDir ?? `${out}.chunks`);
  const madeDirs = makeDirs(workRoot);
  const workDir = path.join(workRoot, `gainrag-run-${runId}`);
  mkdirSync(workDir);
  const ext = format; // the chunks are written in the output's format (merge insists on one)
  const chunkPath = (k: number) => path.join(workDir, `chunk-${String(k).padStart(6, '0')}.${ext}`);
  const jobId = (k: number) => `${runId}.${k}`;
  const queue = new Queue<ChunkJobData>(options.queue ?? DEFAULT_QUEUE, { connection: redisConnection(options.redis) });
  queue.on('error', () => undefined); // connection drops are retried; the poll loop reports them
  try {
    await reachable(queue.waitUntilReady(), options.redis, options.connectTimeoutMs ?? 15_000);
    await queue.addBulk(
      ranges.map((range, k) => ({
        name: `chunk-${k}`,
        data: { runId, chunk: k, stage, args: options.args, data, range, out: chunkPath(k), format },
        opts: { jobId: jobId(k), attempts, backoff: { type: 'fixed', delay: 200 }, removeOnComplete: false, removeOnFail: false },
      })),
    );
    log(`cluster: run ${runId}: ${ranges.length} chunks of up to ${chunkSize} records (${total} in all) queued on ${options.queue ?? DEFAULT_QUEUE}`);
    const done = new Set<number>();
    const failures: ChunkFailure[] = [];
    let lastReport = '';
    let down = false;
    while (done.size + failures.length < ranges.length) {
      try {
        const pending = ranges.map((_, k) => k).filter((k) => !done.has(k) && !failures.some((f) => f.chunk === k));
        const states = await Promise.all(pending.map(async (k) => ({ k, job: await queue.getJob(jobId(k)) })));
        for (const { k, job } of states) {
          if (!job) throw new GainragError('E_INTERNAL', `chunk ${k}: job ${jobId(k)} vanished from Redis (was the queue obliterated, or Redis restarted without persistence?)`);
          const state = await job.getState();
          if (state === 'completed' && existsSync(chunkPath(k))) done.add(k);
          else if (state === 'failed') {
            // Read the job again: the copy above predates getState(), and its last attempt may
            // have failed in between (its attemptsMade and failedReason would be the earlier ones).
            const final = (await queue.getJob(jobId(k))) ?? job;
            failures.push({ chunk: k, range: ranges[k], attempts: final.attemptsMade, ...decodeError(final.failedReason) });
          }
        }
        if (down) log('cluster: redis is back');
        down = false;
      } catch (err) {
        if (err instanceof GainragError) throw err;
        if (!down) log(`cluster: redis unavailable (${(err as Error).message}); waiting`);
        down = true;
      }
      const records = [...done].reduce((n, k) => n + ranges[k].end - ranges[k].start, 0);
      const report = `cluster: ${done.size}/${ranges.length} chunks done (${records}/${total} records)${failures.length ? `, ${failures.length} failed` : ''}`;
      if (report !== lastReport) log(report);
      lastReport = report;
      if (done.size + failures.length < ranges.length) await sleep(options.pollMs ?? 250);
    }
    if (failures.length > 0) {
      failures.sort((a, b) => a.chunk - b.chunk);
      // The run is over: take its jobs out of Redis (chunk outputs stay in the work directory).
      await Promise.all(ranges.map((_, k) => queue.remove(jobId(k)).catch(() => 0)));
      const lines = failures.map((f) => `chunk ${f.chunk} (records ${f.range.start}-${f.range.end - 1}) failed after ${f.attempts} attempt(s): ${f.error} (${f.code})`);
      const err = new GainragError(failures[0].code, `${lines.join('\n  ')}\n  cluster: ${failures.length} of ${ranges.length} chunks failed; no output written`);
      (err as GainragError & { failures?: ChunkFailure[] }).failures = failures;
      throw err;
    }
    const merged = await mergeOutputs(ranges.map((_, k) => chunkPath(k)), out, { lock, warn: log, formatChosen: true });
    rmSync(workDir, { recursive: true, force: true }); // the run's own directory
    await Promise.all(ranges.map((_, k) => queue.remove(jobId(k)).catch(() => 0)));
    return { out, records: merged.records, chunks: ranges.length, chunkSize, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await queue.close().catch(() => undefined);
    // Directories this run made go when empty (a failed run's chunk outputs stay); rmdir never
    // removes a directory someone put something into meanwhile.
    for (const d of [workDir, ...madeDirs]) {
      try {
        rmdirSync(d);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') break;
      }
    }
  }
}

export interface WorkerOptions {
  redis: string;
  queue?: string;
  device?: string;
  /** Job lock (ms): a worker silent this long is considered dead. */
  lockMs?: number;
  /** How often the stalled-job check runs (ms). */
  stalledMs?: number;
  /** How long the first connection to Redis may take (default 15 s). */
  connectTimeoutMs?: number;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

/** Processes chunks until `signal` aborts. Models stay loaded between chunks. */
export async function runWorker(options: WorkerOptions): Promise<{ chunks: number }> {
  const log = options.log ?? (() => undefined);
  const me = `${hostname()}:${process.pid}`;
  const cache: ModelCache = new Map();
  let chunks = 0;
  const processor = async (job: Job<ChunkJobData>) => {
    const d = job.data;
    log(`worker ${me}: chunk ${d.chunk} started (records ${d.range.start}-${d.range.end - 1}, attempt ${job.attemptsMade + 1})`);
    const tmp = d.out.replace(/(\.[^./]+)$/, `.${me.replace(/[^\w-]/g, '_')}-${job.attemptsMade}.tmp$1`);
    try {
      const records = await runChunk({ stage: d.stage, args: d.args, data: d.data, range: d.range, out: tmp, format: d.format, device: options.device }, cache);
      renameSync(tmp, d.out);
      // The chunk's manifest follows it (merge checks the chunks with them).
      if (existsSync(manifestPath(tmp))) renameSync(manifestPath(tmp), manifestPath(d.out));
      chunks++;
      log(`worker ${me}: chunk ${d.chunk} done (${records} records)`);
      return { records, worker: me };
    } catch (err) {
      rmSync(tmp, { force: true });
      rmSync(`${tmp}.partial`, { force: true });
      rmSync(manifestPath(tmp), { force: true });
      log(`worker ${me}: chunk ${d.chunk} failed: ${(err as Error).message}`);
      throw encodeError(err);
    }
  };
  const worker = new Worker<ChunkJobData>(options.queue ?? DEFAULT_QUEUE, processor, {
    connection: redisConnection(options.redis),
    concurrency: 1,
    lockDuration: options.lockMs ?? 30_000,
    stalledInterval: options.stalledMs ?? 30_000,
    maxStalledCount: 3,
  });
  worker.on('error', () => undefined); // reconnects are automatic
  try {
    await reachable(worker.waitUntilReady(), options.redis, options.connectTimeoutMs ?? 15_000);
  } catch (err) {
    await worker.close(true).catch(() => undefined);
    throw err;
  }
  log(`worker ${me}: ready on ${options.queue ?? DEFAULT_QUEUE}`);
  await new Promise<void>((resolve) => {
    if (options.signal?.aborted) resolve();
    options.signal?.addEventListener('abort', () => resolve(), { once: true });
  });
  await worker.close();
  return { chunks };
}
