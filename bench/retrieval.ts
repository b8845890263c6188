// Exact CPU search: gainrag DenseIndex vs FAISS IndexFlatIP on the same vectors, in one run.
//   node dist/bench/retrieval.js [--n 200000] [--dim 768] [--q 1000] [--k 100] [--rounds 3]
//                                [--corpus-block B] [--query-block B] [--dtype float32|float16|bfloat16]
//                                [--python /usr/bin/python3]
// --dtype sets gainrag's storage type (FAISS's flat index is always float32).
// FAISS runs in a Python subprocess kept alive for the whole run; the two engines take turns
// (round-robin) so that load from other processes hits both alike. Each side reports its own
// search time (no process start or data loading). Prints medians, best times and the ratio.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { DenseIndex, type IndexDType } from '../lib/retrieval/dense-index.js';
import { readNpyFloat32, writeNpyFloat32 } from '../lib/retrieval/npy.js';
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

const n = arg('n', 200_000);
const dim = arg('dim', 768);
const nq = arg('q', 1000);
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

main().catch((err: Error) => {
  process.stderr.write(`bench/retrieval: ${err.message}\n`);
  process.exit(1);
});
