// GFLOP/s of the BERT-base FFN products on each CPU GEMM path, against the machine's peak
// measured in the same run (issue #19: "≥ 75% of fp32 peak on the BERT-base FFN product"):
//   node dist/bench/ffn-gemm.js [--m 1024,4096,8192] [--rounds 3] [--reps 3] [--paths torch,dnnl-f32,...]
// Products: up  [M, 768] x [768, 3072] with the GELU (erf) epilogue (the encoder's intermediate
// layer), down [M, 3072] x [3072, 768] (its output layer); M = rows x tokens of a batch.
// Paths: torch (at::linear + at::gelu: LibTorch's BLAS, the default encoder path), dnnl-f32,
// dnnl-bf16x3 (float32 layers whose products run as hi·hi + hi·lo + lo·hi on the bf16 units),
// dnnl-bf16, dnnl-int8 (native/backends/dnnl: weights packed once, bias and GELU as post-ops;
// int8 includes quantising the activations per row), dnnl-int8-plain (int8 on W's quantised rows
// where they are, not repacked: the Llama prefill's layout where Int8PlainWeights), and the two register-resident peak loops
// (peak-f32: vfmadd on zmm; peak-bf16: vdpbf16ps), all on engineInfo().threads threads. Each
// round runs every path once (reps timed calls after a warm-up), so the machine's load hits
// them alike; the table gives the median over all rounds. Timing is native (no JS in the loop).
import { cpus, loadavg } from 'node:os';
import { engineInfo } from '../lib/engine.js';
import { native } from '../lib/native.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const ms = arg('m', '1024,4096,8192').split(',').map(Number);
const rounds = Number(arg('rounds', '3'));
const reps = Number(arg('reps', '3'));
const info = engineInfo();
const dnnl = info.backends.includes('dnnl');
const defaultPaths = ['peak-f32', 'torch', ...(dnnl ? ['dnnl-f32', 'dnnl-bf16x3', 'dnnl-bf16', 'dnnl-int8'] : []), 'peak-bf16'];
const paths = arg('paths', defaultPaths.join(',')).split(',');
const t = native().testing;

interface Product { name: string; m: number; k: number; n: number; gelu: boolean }
const products: Product[] = [];
for (const m of ms) {
  products.push({ name: `up [${m}, 768] x [768, 3072] + GELU`, m, k: 768, n: 3072, gelu: true });
  products.push({ name: `down [${m}, 3072] x [3072, 768]`, m, k: 3072, n: 768, gelu: false });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`gainrag ${info.version}, LibTorch ${info.torch}, BLAS ${info.blas}; dnnl kernels: ${info.dnnlKernels || 'none'}`);
console.log(`threads ${info.threads}; ${cpus().length} cores (${cpus()[0]?.model ?? '?'}); load average at start ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);

const gflops = new Map<string, number[]>(); // key: product|path
const kernels = new Map<string, string>();
const unsupported = new Set<string>();
const peakRuns: Record<string, number[]> = { 'peak-f32': [], 'peak-bf16': [] };
for (let r = 0; r < rounds; r++) {
  for (const p of products) {
    for (const path of paths) {
      if (unsupported.has(path)) continue;
      const isPeak = path.startsWith('peak-');
      if (isPeak && !p.gelu) continue; // the peak loops: once per M per round
      try {
        const res = await t.gemmSeconds(path, p.m, p.k, p.n, p.gelu, reps);
        const g = res.seconds.map((s) => res.flops / s / 1e9);
        kernels.set(path, res.kernel);
        if (isPeak) peakRuns[path].push(...g);
        else {
          const key = `${p.name}|${path}`;
          gflops.set(key, [...(gflops.get(key) ?? []), ...g]);
        }
      } catch (err) {
        console.log(`  ${path}: ${(err as Error).message}`);
        unsupported.add(path);
      }
    }
  }
  console.log(`round ${r + 1}/${rounds} done, load average ${loadavg()[0].toFixed(1)}`);
}

const peakF32 = peakRuns['peak-f32'].length ? median(peakRuns['peak-f32']) : NaN;
const peakBf16 = peakRuns['peak-bf16'].length ? median(peakRuns['peak-bf16']) : NaN;
// Without the peak loops in --paths there is no peak to share against: GFLOP/s only.
const hasPeak = Number.isFinite(peakF32);
if (hasPeak || Number.isFinite(peakBf16)) {
  const readings = [
    ...(hasPeak ? [`fp32 FMA ${peakF32.toFixed(0)} GFLOP/s (median of ${peakRuns['peak-f32'].length} runs)`] : []),
    ...(Number.isFinite(peakBf16) ? [`bf16 dot ${peakBf16.toFixed(0)} GFLOP/s (median of ${peakRuns['peak-bf16'].length})`] : []),
  ];
  console.log(`\nmeasured peak on ${info.threads} threads: ${readings.join(', ')}`);
}
const cols = paths.filter((p) => !p.startsWith('peak-') && !unsupported.has(p));
console.log(`\n| product | ${cols.map((c) => `${c} GFLOP/s${hasPeak ? ' (% of fp32 peak)' : ''}`).join(' | ')} |`);
console.log(`|---|${cols.map(() => '---|').join('')}`);
for (const p of products) {
  const cells = cols.map((c) => {
    const g = gflops.get(`${p.name}|${c}`);
    if (!g) return '-';
    const v = median(g);
    return hasPeak ? `${v.toFixed(0)} (${((100 * v) / peakF32).toFixed(0)}%)` : v.toFixed(0);
  });
  console.log(`| ${p.name} | ${cells.join(' | ')} |`);
}
console.log(`\nkernels: ${[...kernels].map(([p, k]) => `${p} ${k}`).join('; ')}`);
console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(1)).join(' ')} (${cpus().length} cores, shared machine)`);
