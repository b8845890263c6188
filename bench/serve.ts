// `gainrag serve` under load (issue #21): autocannon on loopback against /rerank and /embed with
// 1, 8 and 64 concurrent connections, next to the offline batch throughput of the same inputs
// (one library call over all of them) measured in the same run on the same machine:
//   node dist/bench/serve.js [--duration 12] [--slices 3] [--connections 1,8,64] [--texts 20] [--embed-texts 8]
//     [--bodies 64] [--reranker DIR] [--encoder DIR] [--device cpu] [--soak N] [--no-load] [--out bench/results/serve.md]
// The server is the CLI (`gainrag serve`, its own process, default flags but --max-queue), so the
// load generator's JavaScript does not share its event loop. Each request body is one of
// `--bodies` distinct ones (bundled SQuAD questions, pseudo-randomly drawn bundled passages cut
// to 400 characters, truncate: true), cycled by every connection. pairs/s counts (query, text)
// pairs for /rerank and texts for /embed. The ratio is server pairs/s over offline pairs/s.
// `--soak N` also sends N small /embed requests at 64 connections and reports the server's RSS
// before and after (memory must stay flat). The table goes to --out (written atomically).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { Encoder, type Device } from '../lib/models/encoder.js';
import { validateOutput, writeFileAtomic } from '../lib/io/output.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const duration = Number(arg('duration', '12'));
const slices = Number(arg('slices', '3'));
const connections = arg('connections', '1,8,64').split(',').map(Number);
const perRerank = Number(arg('texts', '20'));
const perEmbed = Number(arg('embed-texts', '8'));
const bodies = Number(arg('bodies', '64'));
const soak = Number(arg('soak', '0'));
// --no-load: only the soak (and the offline numbers are not measured).
const load = !process.argv.includes('--no-load');
const device = arg('device', 'cpu') as Device;
const rerankerDir = arg('reranker', path.join(repoRoot, 'models', 'xlmr-tiny-reranker'));
const encoderDir = arg('encoder', path.join(repoRoot, 'models', 'bert-tiny'));
const out = validateOutput(arg('out', path.join(repoRoot, 'bench', 'results', 'serve.md')), 'file', { label: '--out' });

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
}
const passages = lines(path.join(repoRoot, 'data', 'demo', 'passages.jsonl')).map((l) => (JSON.parse(l) as { text: string }).text.slice(0, 400));
const questions = lines(path.join(repoRoot, 'data', 'demo', 'questions.jsonl')).map((l) => (JSON.parse(l) as { question: string }).question);
let seed = 12345;
const next = () => {
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed;
};
const rerankBodies = Array.from({ length: bodies }, (_, i) => ({
  query: questions[i % questions.length],
  texts: Array.from({ length: perRerank }, () => passages[next() % passages.length]),
  raw_scores: true,
  truncate: true,
}));
const embedBodies = Array.from({ length: bodies }, () => ({ inputs: Array.from({ length: perEmbed }, () => passages[next() % passages.length]), truncate: true }));

/**
 * Offline batch throughput of the same inputs: one library call over every body's inputs
 * (the engine packs its own batches), best of `rounds`; the rows call it between their load
 * slices, so the ratio compares runs under the same machine load.
 */
async function offlineMeter(): Promise<{ rerank: (rounds: number) => Promise<number>; embed: (rounds: number) => Promise<number>; dispose(): Promise<void> }> {
  const reranker = await CrossEncoder.load(rerankerDir, { device });
  const encoder = await Encoder.load(encoderDir, { device });
  const qs = rerankBodies.flatMap((b) => b.texts.map(() => b.query));
  const ts = rerankBodies.flatMap((b) => b.texts);
  const es = embedBodies.flatMap((b) => b.inputs);
  const best = async (f: () => Promise<unknown>, n: number, rounds: number) => {
    let top = 0;
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      await f();
      top = Math.max(top, n / ((performance.now() - t0) / 1000));
    }
    return top;
  };
  await reranker.score(qs, ts); // warm-up
  await encoder.embed(es, { normalize: true });
  return {
    rerank: (rounds) => best(() => reranker.score(qs, ts), qs.length, rounds),
    embed: (rounds) => best(() => encoder.embed(es, { normalize: true }), es.length, rounds),
    dispose: async () => {
      await Promise.all([reranker.dispose(), encoder.dispose()]);
    },
  };
}

async function startServe(): Promise<{ child: ChildProcess; url: string }> {
  const cli = path.join(repoRoot, 'dist', 'lib', 'cli', 'main.js');
  const child = spawn(process.execPath, [cli, 'serve', '--reranker', rerankerDir, '--encoder', encoderDir, '--device', device, '--port', '0', '--max-queue', '4096', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (d) => {
      text += d;
      if (text.includes('\n')) resolve((JSON.parse(text.split('\n')[0]) as { url: string }).url);
    });
    child.once('exit', (code) => reject(new Error(`gainrag serve exited with ${code}`)));
  });
  return { child, url };
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function batchStats(url: string, queue: string): Promise<{ batches: number; requests: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^${name}\\{queue="${queue}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  return { batches: read('gainrag_batch_requests_count'), requests: read('gainrag_batch_requests_sum') };
}

interface Row { route: string; connections: number; rps: number; pairsPerSec: number; offline: number; p50: number; p99: number; perBatch: number; ratio: number; failed: number; rss: number }

async function main(): Promise<void> {
  const meter = await offlineMeter();
  const { child, url } = await startServe();
  const rows: Row[] = [];
  let soakLine = '';
  try {
    for (const [route, list, perRequest, measure] of !load ? [] : [
      ['/rerank', rerankBodies, perRerank, meter.rerank],
      ['/embed', embedBodies, perEmbed, meter.embed],
    ] as const) {
      const requests = list.map((b) => ({ method: 'POST', path: route, body: JSON.stringify(b), headers: { 'content-type': 'application/json' } }));
      await autocannon({ url, connections: 8, duration: 2, requests }); // warm-up
      for (const c of connections) {
        // Slices of load alternate with offline calls, so both see the same machine load.
        const before = await batchStats(url, route.slice(1));
        let ok = 0, seconds = 0, offlinePairs = 0, offlineSeconds = 0, failed = 0;
        const p50s: number[] = [];
        const p99s: number[] = [];
        for (let slice = 0; slice < slices; slice++) {
          const rate = await measure(1);
          offlinePairs += list.length * perRequest;
          offlineSeconds += (list.length * perRequest) / rate;
          const r = await autocannon({ url, connections: c, duration: duration / slices, requests, timeout: 60 });
          ok += r['2xx'];
          seconds += r.duration;
          failed += r.non2xx + r.errors;
          p50s.push(r.latency.p50);
          p99s.push(r.latency.p99);
        }
        const after = await batchStats(url, route.slice(1));
        const rps = ok / seconds;
        const offlineRate = offlinePairs / offlineSeconds;
        rows.push({
          route, connections: c, rps, pairsPerSec: rps * perRequest, offline: offlineRate,
          p50: p50s.sort((a, b) => a - b)[Math.floor(p50s.length / 2)], p99: Math.max(...p99s),
          perBatch: (after.requests - before.requests) / Math.max(1, after.batches - before.batches),
          ratio: (rps * perRequest) / offlineRate, failed, rss: rssMiB(child.pid!),
        });
        const r = { latency: { p50: rows.at(-1)!.p50, p99: rows.at(-1)!.p99 } };
        process.stderr.write(`${route} x${c}: ${rps.toFixed(0)} req/s, ${(rps * perRequest).toFixed(0)} pairs/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, ratio ${rows.at(-1)!.ratio.toFixed(2)}\n`);
      }
    }
    if (soak > 0) {
      const small = passages.slice(0, 64).map((t) => ({ method: 'POST', path: '/embed', body: JSON.stringify({ inputs: t.slice(0, 60) }), headers: { 'content-type': 'application/json' } }));
      await autocannon({ url, connections: 64, amount: 2000, requests: small }); // warm-up
      // RSS after each quarter: growth that does not level off is a leak; V8 heap growth levels off.
      const rss = [rssMiB(child.pid!)];
      let ok = 0;
      let seconds = 0;
      for (let part = 0; part < 4; part++) {
        const r = await autocannon({ url, connections: 64, amount: Math.ceil(soak / 4), requests: small, timeout: 60 });
        ok += r['2xx'];
        seconds += r.duration;
        rss.push(rssMiB(child.pid!));
      }
      soakLine = `Soak: ${ok} of ${4 * Math.ceil(soak / 4)} small /embed requests (1 text of 60 characters) answered 2xx at 64 connections (${(ok / seconds).toFixed(0)} req/s); server RSS after the warm-up and after each quarter: ${rss.map((x) => x.toFixed(0)).join(' / ')} MiB.`;
      process.stderr.write(`${soakLine}\n`);
    }
  } finally {
    await meter.dispose();
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  const table = [
    `# gainrag serve under load (bench/serve.ts), ${new Date().toISOString().slice(0, 10)}`,
    '',
    `Machine: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), load average ${loadavg()[0].toFixed(1)} at the end, device ${device}.`,
    `Models: reranker ${path.basename(rerankerDir)}, encoder ${path.basename(encoderDir)}. Server: \`gainrag serve\` defaults (max-batch-tokens 16384, max-wait-ms 2), --max-queue 4096.`,
    `Load: autocannon on loopback, ${duration} s per row in ${slices} slices, ${bodies} distinct bodies cycled; /rerank: 1 query + ${perRerank} texts per request; /embed: ${perEmbed} texts per request (passages cut to 400 characters, truncate: true).`,
    `Offline: one library call over all ${bodies} bodies' inputs (${bodies * perRerank} pairs / ${bodies * perEmbed} texts) in the bench process while the server idles. Each row alternates ${slices} offline calls with ${slices} load slices of ${(duration / slices).toFixed(1)} s (both see the same machine load); ratio = the row's pairs/s over the offline pairs/s of its calls; p50 is the median of the slices', p99 the largest.`,
    '',
    '| route | clients | requests/s | pairs/s | p50 ms | p99 ms | requests per engine call | offline pairs/s | ratio to offline | failed | server RSS MiB |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.route} | ${r.connections} | ${r.rps.toFixed(0)} | ${r.pairsPerSec.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.perBatch.toFixed(1)} | ${r.offline.toFixed(0)} | ${r.ratio.toFixed(2)} | ${r.failed} | ${r.rss.toFixed(0)} |`),
    '',
    ...(soakLine ? [soakLine, ''] : []),
  ].join('\n');
  writeFileAtomic(out, table);
  process.stdout.write(`${table}\nwritten to ${out}\n`);
}

await main();
