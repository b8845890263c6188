// Wikipedia scale on this machine (issue #17 item 4), everything in one run:
//  A. recall on real embeddings: every passage in the repository's data (test/data, data/)
//     embedded by the bundled encoder (or --encoder), Recall@1/10/100 of each approximate type
//     against exact search through `index eval`'s code path (evalIndex);
//  B. speed and memory on a synthetic corpus of DPR's shape (21,015,324 x 768, float16 on disk,
//     generated in chunks by bench/wiki-corpus.ts and written by DenseIndexWriter): FAISS PQ64
//     and IVF<nlist>,PQ64 built and searched by gainrag and by Python FAISS (the peer, same
//     libfaiss, same rows, same training sample) on a prefix of --ann-rows rows, alternating;
//     exact search at Q=--q on that prefix; then the whole corpus written and searched exactly
//     (out of core) at Q=--exact-q. Random vectors have no structure: no recall on them.
// Each measured step runs in its own child process (peak RSS = that process's VmHWM / ru_maxrss).
// Usage: node dist/bench/wiki-scale.js [--scale 1] [--ann-rows 1000000] [--nlist 4096] [--nprobe 16]
//        [--train-size 65536] [--q 1000] [--exact-q 100] [--rounds 3] [--dir /tmp] [--encoder DIR]
//        [--python /usr/bin/python3] [--skip real,ann,full]
// The temp directory it creates under --dir is deleted at the end, on failure and on SIGINT/SIGTERM.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { DenseIndexWriter } from '../lib/retrieval/index-writer.js';
import { buildAnn } from '../lib/retrieval/ann.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { evalIndex } from '../lib/retrieval/eval-ann.js';
import { writeNpyFloat32 } from '../lib/retrieval/npy.js';
import { Encoder } from '../lib/models/encoder.js';
import { engineInfo } from '../lib/engine.js';
import { DPR_DIM, DPR_ROWS, syntheticRows } from './wiki-corpus.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const num = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const str = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const K = 100;
const CORPUS_SEED = 21;
const QUERY_SEED = 7;
const WRITE_CHUNK = 16384;
const mib = (b: number) => b / 2 ** 20;
const load = () => loadavg().map((x) => x.toFixed(1)).join(' ');
const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// ---------------------------------------------------------------- children

function vmHwmMiB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function readF32(file: string): Float32Array {
  const b = readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

// A gainrag searcher kept alive: answers each "search" line with {seconds}, writing the ids.
async function childSearch(dir: string, queryFile: string, k: number, nprobe: number, exact: boolean, idsOut: string): Promise<void> {
  const q = readF32(queryFile);
  const index = await DenseIndex.open(dir, { verify: 'header' });
  process.stdout.write(`${JSON.stringify({ ready: true, type: index.approximate?.type ?? 'exact', rss: vmHwmMiB() })}\n`);
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() !== 'search') break;
    const t = performance.now();
    const r = await index.search(q, k, exact ? { exact: true } : { nprobe: nprobe || undefined });
    const seconds = (performance.now() - t) / 1000;
    writeFileSync(idsOut, r.ids);
    process.stdout.write(`${JSON.stringify({ seconds, peakRssMiB: vmHwmMiB() })}\n`);
  }
  await index.dispose();
}

async function childBuild(dir: string, factory: string, trainSize: number): Promise<void> {
  const t = performance.now();
  await buildAnn(dir, { factory, trainSize });
  process.stdout.write(`${JSON.stringify({ seconds: (performance.now() - t) / 1000, peakRssMiB: vmHwmMiB() })}\n`);
}

// The peer: the same libfaiss through its Python binding, reading the same vectors.bin.
const PY_PEER = String.raw`
import sys, json, time, resource, numpy as np, faiss
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
mode = sys.argv[1]
if mode == "build":
    vec, n, d, factory, train, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7]
    x = np.memmap(vec, dtype="<f2", mode="r", shape=(n, d))
    t = time.perf_counter()
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    # As gainrag's BuildFaissAnn (native/index/faiss_ann.cpp): no polysemous training (plain ADC
    # search does not use it), and k-means on one OpenMP thread (libgomp's spinning team thread
    # slows it several-fold on this shared 2-core machine).
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False
    if not index.is_trained:
        want = min(n, train)
        rows = (np.arange(want, dtype=np.int64) * n) // want  # gainrag's evenly spaced sample
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        index.train(np.ascontiguousarray(x[rows], dtype=np.float32))
        faiss.omp_set_num_threads(threads)
    for b in range(0, n, 16384):
        index.add(np.ascontiguousarray(x[b:b + 16384], dtype=np.float32))
    faiss.write_index(index, out)
    print(json.dumps({"seconds": time.perf_counter() - t, "peakRssMiB": rss()}), flush=True)
else:
    file, qfile, d, k, nprobe, ids_out = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    index = faiss.read_index(file)
    if nprobe > 0:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    q = np.fromfile(qfile, dtype="<f4").reshape(-1, d)
    print(json.dumps({"ready": True, "threads": faiss.omp_get_max_threads(), "version": faiss.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "search":
            break
        t = time.perf_counter()
        D, I = index.search(q, k)
        dt = time.perf_counter() - t
        I.astype("<i8").tofile(ids_out)
        print(json.dumps({"seconds": dt, "peakRssMiB": rss()}), flush=True)
`;

// ---------------------------------------------------------------- parent helpers

const python = str('python', '/usr/bin/python3');
const children = new Set<ChildProcess>();

function self(args: string[], env: NodeJS.ProcessEnv = process.env): ReturnType<typeof spawnSync> {
  return spawnSync(process.execPath, [process.argv[1], ...args], { encoding: 'utf8', env, maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'] });
}

function lastJson(r: ReturnType<typeof spawnSync>, what: string): Record<string, number> {
  if (r.status !== 0) throw new Error(`${what} failed (status ${String(r.status)} ${String(r.signal ?? '')})`);
  return JSON.parse(String(r.stdout).trim().split('\n').pop()!) as Record<string, number>;
}

/** A line-protocol child (our searcher or the Python one): start, wait for ready, then `search()` rounds. */
async function searcher(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'], env });
  children.add(proc);
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await lines.next();
    if (r.done) throw new Error(`${path.basename(cmd)} searcher ended early`);
    return JSON.parse(r.value) as Record<string, number | string>;
  };
  const ready = await next();
  return {
    ready,
    async search() {
      proc.stdin!.write('search\n');
      return (await next()) as Record<string, number>;
    },
    async close() {
      proc.stdin!.end();
      await new Promise((r) => proc.once('exit', r));
      children.delete(proc);
    },
  };
}

/** Fraction of `b`'s top-k ids per query that `a` also has. */
function agreement(a: BigInt64Array, b: BigInt64Array, nq: number, k: number): number {
  let common = 0;
  for (let i = 0; i < nq; i++) {
    const s = new Set(a.subarray(i * k, (i + 1) * k));
    for (const id of b.subarray(i * k, (i + 1) * k)) if (id >= 0n && s.has(id)) common++;
  }
  return common / (nq * k);
}

function readI64(file: string): BigInt64Array {
  const b = readFileSync(file);
  return new BigInt64Array(b.buffer, b.byteOffset, b.byteLength / 8);
}

async function writeSynthetic(dir: string, rows: number): Promise<{ seconds: number; gib: number }> {
  const t = performance.now();
  const w = DenseIndexWriter.create(dir, DPR_DIM, { dtype: 'float16' });
  try {
    for (let r = 0; r < rows; r += WRITE_CHUNK) {
      await w.append(syntheticRows(r, Math.min(WRITE_CHUNK, rows - r), DPR_DIM, CORPUS_SEED));
      if (r % (WRITE_CHUNK * 128) === 0 && r > 0) log(`  wrote ${r} rows (load ${load()})`);
    }
    await w.finish();
  } catch (err) {
    w.abort();
    throw err;
  }
  return { seconds: (performance.now() - t) / 1000, gib: (rows * DPR_DIM * 2) / 2 ** 30 };
}

// ---------------------------------------------------------------- A. real embeddings

interface RealRow { factory: string; param: string; recall: Record<string, number>; annQps: number; exactQps: number; annMiB: number }

function repositoryPassages(): { passages: string[]; sources: string[] } {
  const seen = new Set<string>();
  const out: string[] = [];
  const sources: string[] = [];
  const add = (title: string, text: string) => {
    const key = `${title}\u0000${text}`;
    if (text.trim() === '' || seen.has(key)) return;
    seen.add(key);
    out.push(JSON.stringify({ id: `p${out.length}`, title, text }));
  };
  const count = (name: string, f: () => void) => {
    const before = out.length;
    f();
    sources.push(`${name}: ${out.length - before}`);
  };
  const jsonl = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const f of ['test/data/squad_v1.1_dev_open/passages.jsonl', 'data/demo/passages.jsonl']) {
    count(f, () => jsonl(path.join(root, f)).forEach((p) => add(String(p.title ?? ''), String(p.text))));
  }
  count('test/data/nq_open_gold_passages (ctxs)', () => {
    const lines = gunzipSync(readFileSync(path.join(root, 'test/data/nq_open_gold_passages/nq-open-oracle.subset.jsonl.gz'))).toString('utf8').trim().split('\n');
    for (const l of lines) for (const c of (JSON.parse(l) as { ctxs: { title: string; text: string }[] }).ctxs) add(c.title, c.text);
  });
  for (const f of ['test/data/datasets/hotpotqa_train.slice.json', 'test/data/datasets/2wikimultihopqa_format.sample.json']) {
    count(`${f} (context)`, () => {
      for (const ex of JSON.parse(readFileSync(path.join(root, f), 'utf8')) as { context: [string, string[]][] }[]) for (const [title, sents] of ex.context) add(title, sents.join(' '));
    });
  }
  return { passages: out, sources };
}

function repositoryQuestions(): string[] {
  const qs: string[] = [];
  for (const f of ['test/data/squad_v1.1_dev_open/questions.jsonl', 'data/demo/questions.jsonl']) {
    for (const l of readFileSync(path.join(root, f), 'utf8').trim().split('\n')) qs.push(String((JSON.parse(l) as { question: string }).question));
  }
  const nq = gunzipSync(readFileSync(path.join(root, 'test/data/nq_open_gold_passages/nq-open-oracle.subset.jsonl.gz'))).toString('utf8').trim().split('\n');
  for (const l of nq) qs.push(String((JSON.parse(l) as { question: string }).question));
  return qs;
}

async function realRecall(work: string, encoderDir: string): Promise<{ rows: RealRow[]; n: number; nq: number; dim: number; sources: string[] }> {
  const { passages, sources } = repositoryPassages();
  const pfile = path.join(work, 'real-passages.jsonl');
  writeFileSync(pfile, `${passages.join('\n')}\n`);
  const exactDir = path.join(work, 'real-exact');
  await buildIndex({ passages: pfile, encoder: encoderDir, out: exactDir, batchSize: 128 });
  const questions = repositoryQuestions();
  const enc = await Encoder.load(encoderDir);
  const qv = await enc.embedQueries(questions);
  const dim = enc.dim;
  await enc.dispose();
  const qfile = path.join(work, 'real-queries.npy');
  writeNpyFloat32(qfile, qv, questions.length, dim);
  const n = passages.length;
  // Sizes scaled to the corpus: nlist ~ sqrt(n) (4096 is ~sqrt(21M)/1.1), PQ with 4 dims per sub-quantizer when dim < 256.
  const nlist = Math.max(4, Math.round(Math.sqrt(n)));
  const pqM = dim >= 256 ? 64 : Math.max(1, dim / 4);
  const probes = [1, 4, 16].filter((p) => p <= nlist);
  const plan: [string, { nprobe?: number; efSearch?: number }[]][] = [
    [`PQ${pqM}`, [{}]],
    [`IVF${nlist},PQ${pqM}`, probes.map((nprobe) => ({ nprobe }))],
    ['HNSW32,Flat', [{ efSearch: 16 }, { efSearch: 64 }]],
    [`IVF${nlist},SQ8`, probes.map((nprobe) => ({ nprobe }))],
  ];
  const rows: RealRow[] = [];
  for (const [factory, params] of plan) {
    const dir = path.join(work, `real-${factory.replace(/[^A-Za-z0-9]/g, '_')}`);
    cpSync(exactDir, dir, { recursive: true });
    await buildAnn(dir, { factory, trainSize: n });
    for (const p of params) {
      const s = await evalIndex({ index: dir, against: exactDir, data: qfile, k: K, ...p });
      const param = p.nprobe ? `nprobe ${p.nprobe}` : p.efSearch ? `efSearch ${p.efSearch}` : '-';
      rows.push({ factory, param, recall: s.recall, annQps: s.approximate.queriesPerSecond, exactQps: s.exact.queriesPerSecond, annMiB: mib(s.annBytes ?? 0) });
      log(`  ${factory} ${param}: R@1 ${s.recall['1'].toFixed(3)} R@10 ${s.recall['10'].toFixed(3)} R@100 ${s.recall['100'].toFixed(3)}`);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return { rows, n, nq: questions.length, dim, sources };
}

// ---------------------------------------------------------------- B. synthetic

interface AnnRow {
  factory: string; rows: number; nprobe: number;
  ours: { buildS: number; buildRss: number; qps: number; searchRss: number; load: string };
  peer: { buildS: number; buildRss: number; qps: number; searchRss: number };
  sizeMiB: number; peerSizeMiB: number; agreement: number;
}

async function annPair(dir: string, work: string, factory: string, rows: number, nprobe: number, trainSize: number, rounds: number, queries: string, peerFirst: boolean): Promise<AnnRow> {
  const pyFile = path.join(work, 'peer.faiss');
  const buildOurs = () => lastJson(self(['--child-build', dir, factory, String(trainSize)]), `gainrag build ${factory}`);
  const buildPeer = () => lastJson(spawnSync(python, ['-c', PY_PEER, 'build', path.join(dir, 'vectors.bin'), String(rows), String(DPR_DIM), factory, String(trainSize), pyFile], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }), `python build ${factory}`);
  log(`${factory} on ${rows} rows: building (${peerFirst ? 'peer first' : 'gainrag first'}; load ${load()})`);
  const first = peerFirst ? buildPeer() : buildOurs();
  const second = peerFirst ? buildOurs() : buildPeer();
  const [ob, pb] = peerFirst ? [second, first] : [first, second];
  log(`  build: gainrag ${ob.seconds.toFixed(1)} s, peer ${pb.seconds.toFixed(1)} s`);
  const ourIds = path.join(work, 'ours.ids');
  const peerIds = path.join(work, 'peer.ids');
  const ours = await searcher(process.execPath, [process.argv[1], '--child-search', dir, queries, String(K), String(nprobe), '0', ourIds]);
  const peer = await searcher(python, ['-c', PY_PEER, 'search', pyFile, queries, String(DPR_DIM), String(K), String(nprobe), peerIds]);
  const os: number[] = [];
  const ps: number[] = [];
  let oRss = 0;
  let pRss = 0;
  await ours.search(); // warm-up, both
  await peer.search();
  for (let r = 0; r < rounds; r++) {
    const a = r % 2 === 0 ? await ours.search() : await peer.search();
    const b = r % 2 === 0 ? await peer.search() : await ours.search();
    const [o, p] = r % 2 === 0 ? [a, b] : [b, a];
    os.push(o.seconds);
    ps.push(p.seconds);
    oRss = o.peakRssMiB;
    pRss = p.peakRssMiB;
  }
  await ours.close();
  await peer.close();
  const nq = statSync(queries).size / 4 / DPR_DIM;
  const row: AnnRow = {
    factory, rows, nprobe: factory.startsWith('IVF') ? nprobe : 0,
    ours: { buildS: ob.seconds, buildRss: ob.peakRssMiB, qps: nq / median(os), searchRss: oRss, load: load() },
    peer: { buildS: pb.seconds, buildRss: pb.peakRssMiB, qps: nq / median(ps), searchRss: pRss },
    sizeMiB: mib(statSync(path.join(dir, 'ann.faiss')).size), peerSizeMiB: mib(statSync(pyFile).size),
    agreement: agreement(readI64(ourIds), readI64(peerIds), nq, K),
  };
  log(`  search: gainrag ${row.ours.qps.toFixed(1)} q/s, peer ${row.peer.qps.toFixed(1)} q/s (medians of ${rounds}), ids agree ${(row.agreement * 100).toFixed(2)}%`);
  rmSync(path.join(dir, 'ann.faiss'), { force: true });
  rmSync(path.join(dir, 'ann.json'), { force: true });
  rmSync(pyFile, { force: true });
  return row;
}

function exactOnce(dir: string, queries: string, label: string): Record<string, number> {
  log(`exact search ${label} (load ${load()})`);
  // One search in a fresh process: q/s and VmHWM of the whole process.
  const r = lastJson(self(['--child-exact', dir, queries]), `exact search ${label}`);
  log(`  ${(r.qps).toFixed(2)} q/s, peak RSS ${r.peakRssMiB.toFixed(0)} MiB`);
  return { ...r, load: Number(loadavg()[0].toFixed(1)) };
}

async function childExact(dir: string, queryFile: string): Promise<void> {
  const q = readF32(queryFile);
  const index = await DenseIndex.open(dir, { verify: 'header' });
  const t = performance.now();
  await index.search(q, K, { exact: true });
  const seconds = (performance.now() - t) / 1000;
  process.stdout.write(`${JSON.stringify({ seconds, qps: q.length / DPR_DIM / seconds, peakRssMiB: vmHwmMiB() })}\n`);
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const scale = num('scale', 1);
  const n = Math.max(1000, Math.round(DPR_ROWS * scale));
  const annRows = Math.min(n, num('ann-rows', Math.round(1_000_000 * Math.min(1, scale * 10))));
  const nlist = num('nlist', 4096);
  const nprobe = num('nprobe', 16);
  const trainSize = num('train-size', 65536);
  const nq = num('q', 1000);
  const exactQ = num('exact-q', 100);
  const rounds = num('rounds', 3);
  const skip = new Set(str('skip', '').split(',').filter(Boolean));
  const encoderDir = str('encoder', path.join(root, 'models', 'bert-tiny'));
  const work = mkdtempSync(path.join(str('dir', tmpdir()), 'gainrag-wiki-'));
  const cleanup = () => {
    for (const c of children) c.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
  const info = engineInfo();
  const started = performance.now();
  const out: string[] = [];
  const say = (s: string) => {
    out.push(s);
    process.stdout.write(`${s}\n`);
  };
  say(`command: node dist/bench/wiki-scale.js ${process.argv.slice(2).join(' ')}`);
  say(`engine: threads ${info.threads}, LibTorch ${info.torch}, backends ${info.backends.join(' ')}; load average at start ${load()}; temp dir under ${path.dirname(work)}`);

  if (!skip.has('real')) {
    log('A. real embeddings');
    const real = await realRecall(work, encoderDir);
    say(`\n### Recall on real embeddings: ${real.n} passages x ${real.dim} (${path.basename(encoderDir)}), ${real.nq} questions, k=${K}; load ${load()}`);
    say(`passages: ${real.sources.join('; ')} (duplicates dropped)\n`);
    say('| index | search param | R@1 | R@10 | R@100 | approx q/s | exact q/s | ann.faiss MiB |');
    say('|---|---|---|---|---|---|---|---|');
    for (const r of real.rows) say(`| ${r.factory} | ${r.param} | ${r.recall['1'].toFixed(3)} | ${r.recall['10'].toFixed(3)} | ${r.recall['100'].toFixed(3)} | ${r.annQps.toFixed(0)} | ${r.exactQps.toFixed(0)} | ${r.annMiB.toFixed(2)} |`);
  }

  const queries = path.join(work, 'queries.f32');
  writeFileSync(queries, syntheticRows(0, nq, DPR_DIM, QUERY_SEED));
  const exactQueries = path.join(work, 'queries-exact.f32');
  writeFileSync(exactQueries, syntheticRows(0, exactQ, DPR_DIM, QUERY_SEED));

  if (!skip.has('ann')) {
    const dir = path.join(work, 'prefix');
    log(`B1. synthetic prefix: ${annRows} x ${DPR_DIM} float16`);
    const w = await writeSynthetic(dir, annRows);
    say(`\n### Synthetic prefix: first ${annRows} rows of the corpus (${w.gib.toFixed(2)} GiB fp16), written in ${w.seconds.toFixed(0)} s (${(annRows / w.seconds).toFixed(0)} rows/s) by DenseIndexWriter; Q=${nq}, k=${K}, train sample ${Math.min(trainSize, annRows)} rows`);
    const ex = exactOnce(dir, queries, `on ${annRows} rows, Q=${nq}`);
    const ivf = `IVF${nlist},PQ64`;
    const pq = await annPair(dir, work, 'PQ64', annRows, 0, trainSize, rounds, queries, false);
    const iv = await annPair(dir, work, ivf, annRows, nprobe, trainSize, rounds, queries, true);
    say(`\nexact streaming search (gainrag, fp16 rows): ${ex.qps.toFixed(1)} q/s, peak RSS ${ex.peakRssMiB.toFixed(0)} MiB (load ${ex.load})\n`);
    say('| index | nprobe | build s gainrag / peer (ratio peer/ours) | build peak RSS MiB gainrag / peer | size MiB gainrag / peer | q/s gainrag / peer (ratio) | search peak RSS MiB gainrag / peer | top-100 ids agree | load |');
    say('|---|---|---|---|---|---|---|---|---|');
    for (const r of [pq, iv]) {
      say(`| ${r.factory} | ${r.nprobe || '-'} | ${r.ours.buildS.toFixed(1)} / ${r.peer.buildS.toFixed(1)} (${(r.peer.buildS / r.ours.buildS).toFixed(3)}) | ${r.ours.buildRss.toFixed(0)} / ${r.peer.buildRss.toFixed(0)} | ${r.sizeMiB.toFixed(1)} / ${r.peerSizeMiB.toFixed(1)} | ${r.ours.qps.toFixed(1)} / ${r.peer.qps.toFixed(1)} (${(r.ours.qps / r.peer.qps).toFixed(3)}) | ${r.ours.searchRss.toFixed(0)} / ${r.peer.searchRss.toFixed(0)} | ${(r.agreement * 100).toFixed(2)}% | ${r.ours.load} |`);
    }
    rmSync(dir, { recursive: true, force: true });
  }

  if (!skip.has('full')) {
    const dir = path.join(work, 'full');
    log(`B2. full synthetic corpus: ${n} x ${DPR_DIM} float16`);
    const w = await writeSynthetic(dir, n);
    say(`\n### Full synthetic corpus: ${n} x ${DPR_DIM} fp16 (${w.gib.toFixed(2)} GiB on disk), written in ${w.seconds.toFixed(0)} s (${(n / w.seconds).toFixed(0)} rows/s, ${(w.gib * 1024 / w.seconds).toFixed(0)} MiB/s) by DenseIndexWriter (load ${load()})`);
    const ex = exactOnce(dir, exactQueries, `on ${n} rows, Q=${exactQ}`);
    say(`exact streaming search, Q=${exactQ}, k=${K}, one search in a fresh process (open with verify: 'header', default resident limit): ${ex.seconds.toFixed(0)} s, ${ex.qps.toFixed(2)} q/s, peak RSS ${ex.peakRssMiB.toFixed(0)} MiB (load ${ex.load})`);
    rmSync(dir, { recursive: true, force: true });
  }
  say(`\ntotal wall time ${((performance.now() - started) / 1000).toFixed(0)} s; load average at end ${load()}`);
  const report = str('report', '');
  if (report) writeFileSync(report, `${out.join('\n')}\n`);
}

const at = (flag: string) => process.argv.indexOf(flag);
const a = (i: number) => process.argv[i];
let entry: () => Promise<void> = main;
if (at('--child-search') >= 0) {
  const i = at('--child-search');
  entry = () => childSearch(a(i + 1), a(i + 2), Number(a(i + 3)), Number(a(i + 4)), a(i + 5) === '1', a(i + 6));
} else if (at('--child-build') >= 0) {
  const i = at('--child-build');
  entry = () => childBuild(a(i + 1), a(i + 2), Number(a(i + 3)));
} else if (at('--child-exact') >= 0) {
  const i = at('--child-exact');
  entry = () => childExact(a(i + 1), a(i + 2));
}
entry().catch((err: Error) => {
  process.stderr.write(`bench/wiki-scale: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
