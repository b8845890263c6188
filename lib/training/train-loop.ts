// The epoch loop behind SelectorTrainer.train(): group sampling over FlagEmbedding data,
// checkpoints every N optimizer steps (with the state a resumed run needs), resume from the
// newest complete checkpoint, the JSONL log, progress and cancellation. Every random draw is a
// function of (seed, epoch, batch), so the saved state is just a position.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';
import { acquireOutputLock, validateOutput, writeFileAtomic } from '../io/output.js';
import { loadTrainingData, type TrainRecord } from './data.js';
import { stringifyJson } from '../io/json-values.js';
import { batchesPerEpoch, epochOrder, sampleBatch } from './sampling.js';
import type { SelectorTrainerOptions, StepResult, Trainable, TrainOptions, TrainSummary } from './types.js';

const STATE_FILE = 'trainer_state.json';
const LOG_FILE = 'train_log.jsonl';

interface SavedState {
  format: 'gainrag-trainer-state-1';
  epoch: number;
  batch: number;
  micro: number;
  optimizerStep: number;
  run: Record<string, number | string>;
}

/** Throws RangeError unless `v` is undefined or a finite number >= min (an integer if asked). */
export function checkNumber(name: string, v: unknown, min: number, integer = false): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    throw new RangeError(`${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got ${String(v)}`);
  }
}

/** Newest `checkpoint-N` in `outDir` that holds a complete trainer state. */
export function latestCheckpoint(outDir: string): string | null {
  if (!existsSync(outDir)) return null;
  let best: { n: number; dir: string } | null = null;
  for (const name of readdirSync(outDir)) {
    const m = /^checkpoint-(\d+)$/.exec(name);
    if (!m) continue;
    const dir = path.join(outDir, name);
    if (!existsSync(path.join(dir, STATE_FILE)) || !existsSync(path.join(dir, 'optimizer.safetensors'))) continue;
    const n = Number(m[1]);
    if (!best || n > best.n) best = { n, dir };
  }
  return best?.dir ?? null;
}

export async function runTraining(t: Trainable, o: TrainOptions, created: SelectorTrainerOptions): Promise<TrainSummary> {
  const epochs = o.epochs ?? 2;
  const batchSize = o.batchSize ?? 8;
  const groupSize = o.groupSize ?? 16;
  const saveSteps = o.saveSteps ?? 0;
  checkNumber('epochs', epochs, 1, true);
  checkNumber('batchSize', batchSize, 1, true);
  checkNumber('groupSize', groupSize, 2, true);
  checkNumber('saveSteps', saveSteps, 0, true);
  checkNumber('queryMaxLength', o.queryMaxLength, 1, true);
  checkNumber('passageMaxLength', o.passageMaxLength, 1, true);
  if (typeof o.outDir !== 'string' || o.outDir.length === 0) throw new TypeError('outDir must be a non-empty string');
  // Before reading data: a bad --out fails now, not at the first checkpoint.
  validateOutput(o.outDir, 'dir', { inputs: [t.modelDir, ...(typeof o.data === 'string' ? [o.data] : [])], label: 'outDir' });
  const maxLength = Math.min(t.maxLength, (o.queryMaxLength ?? 512) + (o.passageMaxLength ?? 512));
  const records = typeof o.data === 'string' ? await loadTrainingData(o.data) : o.data;
  if (records.length === 0) throw new GainragError('E_DATA', 'no training records');
  await checkQueryLengths(t, records, maxLength, typeof o.data === 'string' ? o.data : 'data');
  const seed = created.seed ?? 42;
  const gradAccum = created.gradAccum ?? 1;
  const dropLast = o.dropLast ?? true;
  if (typeof dropLast !== 'boolean') throw new TypeError('dropLast must be a boolean');
  const perEpoch = batchesPerEpoch(records.length, batchSize, dropLast);
  if (perEpoch === 0) {
    throw new GainragError('E_DATA', `${records.length} training records make no full batch of ${batchSize} (drop-last is on): use a smaller batch size or turn drop-last off`);
  }
  const totalMicro = perEpoch * epochs;
  const totalSteps = Math.max(1, Math.floor(totalMicro / gradAccum));
  if (created.totalSteps === undefined) {
    const warmup = created.warmupSteps ?? Math.ceil((created.warmupRatio ?? 0.1) * totalSteps);
    t.setSchedule(warmup, totalSteps);
  }
  // What must match for a checkpoint to continue this run.
  const run: Record<string, number | string> = { seed, batchSize, groupSize, epochs, gradAccum, records: records.length, maxLength, dropLast: String(dropLast) };
  const outDir = path.resolve(o.outDir);
  const lock = acquireOutputLock(outDir); // one training run per --out
  try {
    return await trainLocked(t, o, { outDir, run, records, epochs, batchSize, groupSize, saveSteps, maxLength, perEpoch, totalMicro, totalSteps, seed });
  } finally {
    lock.release();
  }
}

interface Plan {
  outDir: string;
  run: Record<string, number | string>;
  records: TrainRecord[];
  epochs: number;
  batchSize: number;
  groupSize: number;
  saveSteps: number;
  maxLength: number;
  perEpoch: number;
  totalMicro: number;
  totalSteps: number;
  seed: number;
}

async function trainLocked(t: Trainable, o: TrainOptions, plan: Plan): Promise<TrainSummary> {
  const { outDir, run, records, epochs, batchSize, groupSize, saveSteps, maxLength, perEpoch, totalMicro, totalSteps, seed } = plan;
  try {
    mkdirSync(outDir, { recursive: true });
  } catch (err) {
    throw ioError(err, `cannot create ${outDir}`);
  }
  // Only an empty directory or an earlier run's output (it has the log) is ours to write into:
  // --out pointing at some project directory must not lose its config.json to this run.
  const entries = readdirSync(outDir);
  if (entries.length > 0 && !entries.includes(LOG_FILE)) {
    throw new GainragError('E_INVALID_ARG', `${outDir} is not empty and holds no ${LOG_FILE}: not a gainrag training directory; choose a new or empty --out`);
  }
  // config.json at the top of outDir means "the last run finished": a new run removes it first,
  // so a run killed half-way never leaves the previous model looking final next to its log.
  rmSync(path.join(outDir, 'config.json'), { force: true });
  const logPath = path.join(outDir, LOG_FILE);
  removeStaleTemporaries(outDir);

  let epoch = 0;
  let batch = 0;
  let micro = 0;
  let resumedFrom: string | null = null;
  if (o.resume) {
    const ckpt = latestCheckpoint(outDir);
    if (ckpt) {
      const state = JSON.parse(readFileSync(path.join(ckpt, STATE_FILE), 'utf8')) as SavedState;
      for (const [k, v] of Object.entries(run)) {
        if (state.run?.[k] !== v) {
          throw new GainragError('E_DATA', `${ckpt} was written by a different run (${k}: ${String(state.run?.[k])} there, ${v} now); resume with the same data and options or use a new --out`);
        }
      }
      await t.loadState(ckpt);
      ({ epoch, batch, micro } = state);
      resumedFrom = ckpt;
      trimLog(logPath, micro);
      o.onLog?.(`resuming from ${ckpt} (step ${state.optimizerStep}, epoch ${epoch + 1}, batch ${batch})`);
    } else {
      o.onLog?.(`no checkpoint in ${outDir}; starting from the beginning`);
    }
  }
  if (!resumedFrom) writeFileAtomic(logPath, '');

  const started = Date.now();
  let pairsDone = 0;
  let lastLoss: number | null = null;
  let step = t.optimizerStep;
  const startMicro = micro;
  while (epoch < epochs) {
    const order = epochOrder(records.length, seed, epoch);
    for (; batch < perEpoch; batch++) {
      if (o.signal?.aborted) throw new GainragError('E_CANCELLED', `training was cancelled at step ${step}`);
      const groups = sampleBatch(records, order, seed, epoch, batch, batchSize, groupSize);
      // Over-long queries were rejected up front (checkQueryLengths), with their file:line.
      const r: StepResult = await t.step(groups, { maxLength, signal: o.signal });
      micro++;
      step = r.optimizerStep;
      lastLoss = r.loss;
      pairsDone += groups.length * groupSize;
      const elapsed = (Date.now() - started) / 1000;
      const pairsPerSec = pairsDone / Math.max(elapsed, 1e-3);
      const etaSec = ((totalMicro - micro) * (elapsed / Math.max(1, micro - startMicro)));
      const entry = { step, micro, epoch: epoch + 1, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm, pairsPerSec, elapsedSec: elapsed };
      writeFileSync(logPath, `${stringifyJson(entry)}\n`, { flag: 'a' }); // an infinite grad norm stays 1e999, not null
      o.onProgress?.({ epoch: epoch + 1, epochs, micro, totalMicro, step, totalSteps, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm, pairsPerSec, etaSec });
      if (saveSteps > 0 && r.updated && step % saveSteps === 0) {
        // The state names the next batch to run, so resuming continues right after this one.
        const next = batch + 1 < perEpoch ? { epoch, batch: batch + 1 } : { epoch: epoch + 1, batch: 0 };
        const state: SavedState = { format: 'gainrag-trainer-state-1', ...next, micro, optimizerStep: step, run };
        const dir = path.join(outDir, `checkpoint-${step}`);
        await t.save(dir, { withState: true, files: { [STATE_FILE]: `${JSON.stringify(state, null, 2)}\n` } });
        o.onLog?.(`saved ${dir}`);
      }
    }
    batch = 0;
    epoch++;
  }
  await t.save(outDir, { merge: true });
  const seconds = (Date.now() - started) / 1000;
  return {
    outDir,
    records: records.length,
    epochs,
    optimizerSteps: step,
    microSteps: micro,
    resumedFrom,
    finalLoss: lastLoss,
    seconds,
    pairsPerSec: pairsDone / Math.max(seconds, 1e-3),
  };
}

/**
 * Every query must leave room for at least one passage token in a pair of maxLength tokens
 * (the trainer truncates only the passage). Checked before the first step, so a long query is
 * an E_DATA naming FILE:LINE instead of a RangeError many steps in.
 */
async function checkQueryLengths(t: Trainable, records: TrainRecord[], maxLength: number, file: string): Promise<void> {
  const budget = maxLength - t.tokenizer.specialTokens.pair;
  const queries = [...new Set(records.map((r) => r.query))];
  const lengths = new Map<string, number>();
  const ids = await t.tokenizer.encodeRaw(queries, { maxTokens: budget });
  queries.forEach((q, i) => lengths.set(q, ids[i].length));
  const bad = records.filter((r) => (lengths.get(r.query) ?? 0) >= budget);
  if (bad.length > 0) {
    const where = bad.slice(0, 10).map((r) => `${file}:${r.line}`).join(', ');
    throw new GainragError('E_DATA', `${bad.length} quer${bad.length === 1 ? 'y is' : 'ies are'} too long: a pair holds ${maxLength} tokens (${budget} after special tokens) and the query must leave room for the passage (${where}${bad.length > 10 ? ', ...' : ''}); shorten them or raise the max length`);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A killed run can leave `.NAME.tmp-PID-N` (a checkpoint being written) or `.NAME.old-PID-N`
 * (a replaced checkpoint not yet removed) behind; those of dead processes are cleaned up
 * (an orphaned `.old-` whose replacement never landed is put back).
 */
function removeStaleTemporaries(outDir: string): void {
  for (const name of readdirSync(outDir)) {
    const m = /^\.(.+)\.(tmp|old)-(\d+)-\d+$/.exec(name);
    if (!m || processAlive(Number(m[3]))) continue;
    const full = path.join(outDir, name);
    const target = path.join(outDir, m[1]);
    if (m[2] === 'old' && !existsSync(target)) renameSync(full, target);
    else rmSync(full, { recursive: true, force: true });
  }
}

/** Keeps the log entries up to micro-step `micro` (those a resumed run does not redo). */
function trimLog(logPath: string, micro: number): void {
  if (!existsSync(logPath) || statSync(logPath).size === 0) return;
  const kept = readFileSync(logPath, 'utf8')
    .split('\n')
    .filter((line) => {
      if (!line.trim()) return false;
      try {
        return (JSON.parse(line) as { micro: number }).micro <= micro;
      } catch {
        return false;
      }
    });
  writeFileAtomic(logPath, kept.map((l) => `${l}\n`).join(''));
}
