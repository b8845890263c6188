// Memory of `gainrag serve` over many requests (issue #21: "memory stays flat over 100k
// requests"), in one process so the heap can be measured after a forced GC:
//   node --expose-gc dist/bench/serve-memory.js [--requests 125000] [--parts 5]
// Mixed small /embed and /rerank requests at 64 connections (autocannon, in this process too);
// after each part: V8 heap used after GC, external memory, RSS. A leak shows as heap or
// external memory that keeps growing part after part; RSS also holds allocator caches.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { startServer } from '../lib/serve/server.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const total = arg('requests', 125_000);
const parts = arg('parts', 5);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  process.stderr.write('run with node --expose-gc\n');
  process.exit(2);
}
const models = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'models');
const server = await startServer({ encoder: path.join(models, 'bert-tiny'), reranker: path.join(models, 'xlmr-tiny-reranker'), port: 0 });
const requests = Array.from({ length: 64 }, (_, i) => ({
  method: 'POST',
  path: i % 2 ? '/embed' : '/rerank',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(i % 2 ? { inputs: `text number ${i} about things` } : { query: `q ${i}`, texts: ['a b', `c d ${i}`] }),
}));
const mib = (x: number) => (x / 1048576).toFixed(1);
try {
  for (let part = 1; part <= parts; part++) {
    const r = await autocannon({ url: server.url, connections: 64, amount: Math.ceil(total / parts), requests });
    gc();
    gc();
    const m = process.memoryUsage();
    process.stdout.write(`after ${part * Math.ceil(total / parts)} requests (${r['2xx']} 2xx in this part): heap used ${mib(m.heapUsed)} MiB, external ${mib(m.external)} MiB, RSS ${mib(m.rss)} MiB\n`);
  }
} finally {
  await server.close();
}
