// Memory of `gainrag serve` over many requests (issue #21: "memory stays flat over 100k
// requests"), in one process so the heap can be measured after a forced GC:
//   node --expose-gc dist/bench/serve-memory.js [--route rerank|embed|mixed|engine] [--requests 100000] [--every 10000]
// Small requests of one route at 64 connections (autocannon, in this process too); after every
// `every` requests: V8 heap used after GC, external memory, RSS, and glibc's view of the heap
// (mallinfo2 through /proc is not reachable from JS, so the malloc arena count is set from the
// environment: run once with MALLOC_ARENA_MAX=2 to see how much of the RSS is per-thread arena
// caches). A leak shows as heap, external or RSS that keeps growing sample after sample; an
// allocator warming up grows in the first samples and then stays within a band.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { startServer } from '../lib/serve/server.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const total = Number(arg('requests', '100000'));
const every = Number(arg('every', '10000'));
const route = arg('route', 'mixed');
// engine: the same rerank inputs straight to CrossEncoder.score, 8 requests' pairs a call (what the
// server packs), no HTTP: what is left of RSS growth there is the engine's (or its allocator's).
if (!['rerank', 'embed', 'mixed', 'engine'].includes(route)) throw new Error(`--route rerank|embed|mixed|engine, got ${route}`);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  process.stderr.write('run with node --expose-gc\n');
  process.exit(2);
}
const models = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'models');
const server = await startServer({ encoder: path.join(models, 'bert-tiny'), reranker: path.join(models, 'xlmr-tiny-reranker'), port: 0, maxQueue: 4096 });
const requests = Array.from({ length: 64 }, (_, i) => {
  const embed = route === 'embed' || (route === 'mixed' && i % 2 === 1);
  return {
    method: 'POST',
    path: embed ? '/embed' : '/rerank',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(embed ? { inputs: `text number ${i} about things` } : { query: `q ${i}`, texts: ['a b', `c d ${i}`] }),
  };
});
const mib = (x: number) => (x / 1048576).toFixed(1);
const rows: string[] = [];
const sample = (done: number, ok: number, rps: number) => {
  gc();
  gc();
  const m = process.memoryUsage();
  const row = `| ${done} | ${ok} | ${rps.toFixed(0)} | ${mib(m.heapUsed)} | ${mib(m.external)} | ${mib(m.rss)} |`;
  rows.push(row);
  process.stdout.write(`${row}\n`);
};
process.stdout.write(`route ${route}, ${total} requests (engine: request-equivalents), 64 connections, MALLOC_ARENA_MAX=${process.env.MALLOC_ARENA_MAX ?? '(default)'}\n`);
process.stdout.write('| requests | 2xx in slice | req/s | heap used MiB | external MiB | RSS MiB |\n|---|---|---|---|---|---|\n');
try {
  sample(0, 0, 0);
  for (let done = 0; done < total; ) {
    const n = Math.min(every, total - done);
    if (route === 'engine') {
      const reranker = server.context.models.reranker!;
      const t0 = performance.now();
      for (let k = 0; k < n; k += 8) {
        const q = Array.from({ length: 16 }, (_, j) => `q ${(k + (j >> 1)) % 64}`);
        await reranker.score(q, q.map((_, j) => (j % 2 ? `c d ${k % 64}` : 'a b')));
      }
      done += n;
      sample(done, n, n / ((performance.now() - t0) / 1000));
      continue;
    }
    const r = await autocannon({ url: server.url, connections: 64, amount: n, requests });
    done += n;
    sample(done, r['2xx'], r.requests.average);
  }
} finally {
  await server.close();
}
