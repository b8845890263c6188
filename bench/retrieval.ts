// Exact CPU search: gainrag DenseIndex vs FAISS IndexFlatIP on the same vectors, in one run.
//   node dist/bench/retrieval.js [--n 200000] [--dim 768] [--q 1000] [--k 100] [--rounds 3]
//                                [--corpus-block B] [--query-block B] [--dtype float32|float16|bfloat16]
//                                [--python /usr/bin/python3]
// --dtype sets gainrag's storage type (FAISS's flat index is always float32).
//
// Out-of-core mode (issue #10): an on-disk index larger than the memory it may use, searched with
// resident memory bounded by the block size. No FAISS (its flat index lives in RAM).
//   node dist/bench/retrieval.js --out-of-core [--n 4000000] [--dim 768] [--q 512] [--k 100]
//                                [--dir /tmp] [--keep] [--released-only]
// writes an N x dim float16 index with DenseIndexWriter, evicts it from the page cache, then
// searches it in fresh child processes (so each peak RSS is that search's own): cold with block
// release (GAINRAG_MAPPED_RESIDENT_MAX=0), warm with release, and warm with the whole mapping
// kept (the behaviour below the limit). Reports q/s, peak RSS (VmHWM) and the mapped-file part
// of RSS after the search, and checks the three searches return the same ids. Deletes the index
// unless --keep.
// FAISS runs in a Python subprocess kept alive for the whole run; the two engines take turns
// (round-robin) so that load from other processes hits both alike. Each side reports its own
// search time (no process start or data loading). Prints medians, best times and the ratio.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { DenseIndex, type IndexDType } from '../lib/retrieval/dense-index.js';
import { readNpyFloat32, writeNpyFloat32 } from '../lib/retrieval/npy.js';
import { DenseIndexWriter } from '../lib/retrieval/index-writer.js';
import { engineInfo } from '../lib/engine.js';
import { uniformF32 } from './random.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
function argString(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const outOfCoreMode = process.argv.includes('--out-of-core');
const n = arg('n', outOfCoreMode ? 4_000_000 : 200_000);
const dim = arg('dim', 768);
const nq = arg('q', outOfCoreMode ? 512 : 1000);
const k = arg('k', 100);
const rounds = arg('rounds', 3);
const corpusBlock = arg('corpus-block', 0) || undefined;
const queryBlock = arg('query-block', 0) || undefined;
const python = argString('python', '/usr/bin/python3');
const dtype = argString('dtype', 'float32') as IndexDType;

function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  return uniformF32(rows * cols, seed);
}

const FAISS_SCRIPT = `
import sys, time, json, numpy as np, faiss
x = np.load(sys.argv[1]); q = np.load(sys.argv[2]); k = int(sys.argv[3])
index = faiss.IndexFlatIP(x.shape[1]); index.add(x); del x
print(json.dumps({"ready": True, "threads": faiss.omp_get_max_threads(), "version": faiss.__version__}), flush=True)
for line in sys.stdin:
    if line.strip() != "search": break
    t = time.perf_counter(); D, I = index.search(q, k); dt = time.perf_counter() - t
    np.save(sys.argv[4], I.astype("<f4"))
    print(json.dumps({"seconds": dt}), flush=True)
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-bench-'));
  try {
    const corpusPath = path.join(dir, 'corpus.npy');
    const queryPath = path.join(dir, 'queries.npy');
    const faissIdsPath = path.join(dir, 'faiss_ids.npy');
    writeNpyFloat32(corpusPath, randomMatrix(n, dim, 12345), n, dim);
    const queries = randomMatrix(nq, dim, 777);
    writeNpyFloat32(queryPath, queries, nq, dim);

    const proc = spawn(python, ['-c', FAISS_SCRIPT, corpusPath, queryPath, String(k), faissIdsPath], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
    const next = async (): Promise<Record<string, unknown>> => {
      const r = await lines.next();
      if (r.done) throw new Error(`FAISS subprocess (${python}) ended early`);
      return JSON.parse(r.value) as Record<string, unknown>;
    };
    const index = await DenseIndex.fromNpy(corpusPath, { dtype });
    const ready = await next();
    const info = engineInfo();
    process.stderr.write(`N=${n} dim=${dim} Q=${nq} k=${k} gainrag dtype=${dtype}; gainrag threads=${info.threads} (LibTorch ${info.torch}), faiss ${String(ready.version)} threads=${String(ready.threads)}\n`);

    const ours: number[] = [];
    const theirs: number[] = [];
    let result = await index.search(queries, k, { corpusBlock, queryBlock }); // warm-up (page faults, allocator)
    for (let r = 0; r < rounds; r++) {
      proc.stdin!.write('search\n');
      theirs.push((await next()).seconds as number);
      const t0 = performance.now();
      result = await index.search(queries, k, { corpusBlock, queryBlock });
      ours.push((performance.now() - t0) / 1000);
      process.stderr.write(`round ${r + 1}: gainrag ${ours[r].toFixed(3)} s, faiss ${theirs[r].toFixed(3)} s\n`);
    }
    proc.stdin!.end();

    // Agreement: the fraction of FAISS's top-k ids that gainrag also returns (1.0 up to float ties).
    const faissIds = readNpyFloat32(faissIdsPath).data;
    let common = 0;
    for (let i = 0; i < nq; i++) {
      const mine = new Set<number>();
      for (let j = 0; j < k; j++) mine.add(Number(result.ids[i * k + j]));
      for (let j = 0; j < k; j++) if (mine.has(faissIds[i * k + j])) common++;
    }
    const ourMedian = median(ours);
    const theirMedian = median(theirs);
    const summary = {
      n, dim, q: nq, k, rounds, dtype,
      gainrag: { medianSeconds: ourMedian, bestSeconds: Math.min(...ours), qps: nq / ourMedian },
      faiss: { medianSeconds: theirMedian, bestSeconds: Math.min(...theirs), qps: nq / theirMedian },
      speedupVsFaiss: theirMedian / ourMedian,
      agreementWithFaiss: common / (nq * k),
    };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    process.stderr.write(
      `gainrag ${summary.gainrag.qps.toFixed(0)} q/s, faiss IndexFlatIP ${summary.faiss.qps.toFixed(0)} q/s: ` +
        `gainrag is ${summary.speedupVsFaiss.toFixed(2)}x FAISS (median of ${rounds}); top-k agreement ${(summary.agreementWithFaiss * 100).toFixed(3)}%\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- out-of-core mode ----

// kB fields of /proc/self/status (Linux), in MiB.
function procStatus(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync('/proc/self/status', 'utf8').split('\n')) {
    const m = /^(VmHWM|VmRSS|RssAnon|RssFile):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]] = Number(m[2]) / 1024;
  }
  return out;
}

// Child: open (header check only: a full check reads the whole file once), search once, report.
async function outOfCoreChild(dir: string, queryFile: string): Promise<void> {
  const buf = readFileSync(queryFile);
  const queries = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const index = await DenseIndex.open(dir, { verify: 'header' });
  const before = procStatus();
  const t0 = performance.now();
  const result = await index.search(queries, k);
  const sec = (performance.now() - t0) / 1000;
  const after = procStatus();
  let h = 0;
  for (let i = 0; i < result.ids.length; i++) h = (h * 31 + Number(result.ids[i])) % 1_000_000_007;
  process.stdout.write(`${JSON.stringify({ sec, qps: nq / sec, before, after, idsHash: h })}\n`);
}

// vectors.bin as random finite float16 bit patterns (|x| in [2^-5, 2^-1)), ids.bin 0..n-1 and a
// manifest in the pre-checksum form that DenseIndex.open still reads (index files format:
// native/index/dense_index.h).
function writeRawIndex(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const rowsPerChunk = 16384;
  const bits = new Uint16Array(rowsPerChunk * dim);
  let s = 12345;
  const fd = openSync(path.join(dir, 'vectors.bin'), 'w');
  for (let r = 0; r < n; r += rowsPerChunk) {
    const rows = Math.min(rowsPerChunk, n - r);
    for (let i = 0; i < rows * dim; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      bits[i] = (s & 0x83ff) | ((10 + ((s >>> 10) & 3)) << 10);
    }
    writeSync(fd, bits, 0, rows * dim * 2);
  }
  closeSync(fd);
  const ids = new BigInt64Array(n);
  for (let i = 0; i < n; i++) ids[i] = BigInt(i);
  writeFileSync(path.join(dir, 'ids.bin'), ids);
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ format: 'gainrag-dense-index', version: 1, dim, dtype: 'float16', count: n, metric: 'ip' }));
}

async function outOfCore(): Promise<void> {
  const root = mkdtempSync(path.join(argString('dir', tmpdir()), 'gainrag-ooc-'));
  const dir = path.join(root, 'index');
  const queryFile = path.join(root, 'queries.f32');
  try {
    const t0 = performance.now();
    if (n <= 200_000) {
      // Small runs go through the engine's writer (converts, checks and checksums each row)...
      const writer = DenseIndexWriter.create(dir, dim, { dtype: 'float16' });
      for (let r = 0; r < n; r += 32768) await writer.append(randomMatrix(Math.min(32768, n - r), dim, 12345 + r));
      await writer.finish();
    } else {
      writeRawIndex(dir); // ...large ones as raw float16 bits (the writer's conversion takes minutes per GB here)
    }
    writeFileSync(queryFile, randomMatrix(nq, dim, 777));
    const gib = (n * dim * 2) / 2 ** 30;
    process.stderr.write(`wrote ${n} x ${dim} float16 (${gib.toFixed(2)} GiB) in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
    // Evict this file (only) from the page cache, so the first search reads the disk.
    const evict = spawnSync('python3', ['-c', 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)', path.join(dir, 'vectors.bin')]);
    // --released-only: one cold run with the default limit (for an index larger than RAM, where
    // a warm run does not exist and keeping the whole mapping would only fill memory).
    const runs: Array<[string, string | undefined]> = process.argv.includes('--released-only')
      ? [['cold, default limit (half of RAM)', undefined]]
      : [['cold, blocks released', '0'], ['warm, blocks released', '0'], ['warm, whole mapping kept', String(2 ** 62)]];
    const results: Record<string, unknown>[] = [];
    for (const [label, limit] of runs) {
      const child = spawnSync(process.execPath, [process.argv[1], '--ooc-child', dir, queryFile, '--q', String(nq), '--k', String(k)], {
        env: limit === undefined ? process.env : { ...process.env, GAINRAG_MAPPED_RESIDENT_MAX: limit }, encoding: 'utf8', maxBuffer: 1 << 20,
      });
      if (child.status !== 0) throw new Error(`search child failed: ${child.stderr}`);
      const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as { sec: number; qps: number; idsHash: number; before: Record<string, number>; after: Record<string, number> };
      results.push({ label, ...r });
      process.stderr.write(`${label}: ${r.qps.toFixed(1)} q/s, peak RSS ${r.after.VmHWM.toFixed(0)} MiB (before search ${r.before.VmRSS.toFixed(0)} MiB), mapped file in RSS after ${r.after.RssFile.toFixed(0)} MiB\n`);
    }
    const sameIds = results.every((r) => r.idsHash === results[0].idsHash);
    process.stdout.write(`${JSON.stringify({ mode: 'out-of-core', n, dim, dtype: 'float16', q: nq, k, indexGiB: gib, evicted: evict.status === 0, sameIds, runs: results })}\n`);
    if (!sameIds) throw new Error('the searches returned different ids');
  } finally {
    if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
  }
}

const childAt = process.argv.indexOf('--ooc-child');
const entry = childAt >= 0 ? () => outOfCoreChild(process.argv[childAt + 1], process.argv[childAt + 2])
  : outOfCoreMode ? outOfCore : main;
entry().catch((err: Error) => {
  process.stderr.write(`bench/retrieval: ${err.message}\n`);
  process.exit(1);
});
