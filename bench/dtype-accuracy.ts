// Accuracy of the reduced-precision encoder modes against our float32 on the bundled data
// (issue #19: embedding cosine to fp32, Recall@10 and top-10 agreement, rerank top-K agreement):
//   node dist/bench/dtype-accuracy.js [--questions 1000] [--rerank-questions 100] [--candidates 30]
// Retrieval: models/bert-tiny (mean pooling) embeds the 1023 SQuAD v1.1 dev passages of
// test/data/squad_v1.1_dev_open and the first --questions questions; exact inner-product search
// over L2-normalised embeddings. Recall@10: the gold passage among the top 10; top-10 agreement:
// |top10(mode) ∩ top10(fp32)| / 10, averaged over questions.
// Reranking: models/xlmr-tiny-reranker scores, for each of --rerank-questions questions, the
// --candidates passages fp32 retrieval ranked highest (gold added when missing); top-K agreement
// as above for K = 1, 5, 10 between each mode's ordering and fp32's.
// fp32 is gemm 'torch' (the LibTorch path the HF parity tests pin); the modes are gemm 'dnnl' at
// float32, float32 with bf16x3 products (matmulPrecision 'high'), bfloat16 and int8.
// int8 codes its inputs in engineInfo().int8InputBits bits (8 with VNNI, 7 without). On a VNNI
// CPU, GAINRAG_INT8_INPUT_BITS=7 node dist/bench/dtype-accuracy.js measures what a CPU without it
// computes (the integer sums are exact on both).
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { engineInfo } from '../lib/engine.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { Encoder, type EncoderDType } from '../lib/models/encoder.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const squad = path.join(repoRoot, 'test', 'data', 'squad_v1.1_dev_open');
const readJsonl = <T>(f: string): T[] => readFileSync(f, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);
const passages = readJsonl<{ id: string; text: string }>(path.join(squad, 'passages.jsonl'));
const questions = readJsonl<{ question: string; gold_passage_ids: string[] }>(path.join(squad, 'questions.jsonl')).slice(0, arg('questions', 1000));
const rerankQ = Math.min(arg('rerank-questions', 100), questions.length);
const candidates = arg('candidates', 30);
const pid = new Map(passages.map((p, i) => [p.id, i]));

function normalize(x: Float32Array, dim: number): Float32Array {
  for (let r = 0; r < x.length / dim; r++) {
    let n = 0;
    for (let j = r * dim; j < (r + 1) * dim; j++) n += x[j] * x[j];
    n = Math.sqrt(n) || 1;
    for (let j = r * dim; j < (r + 1) * dim; j++) x[j] /= n;
  }
  return x;
}
function cosines(a: Float32Array, b: Float32Array, dim: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < a.length / dim; r++) {
    let d = 0, na = 0, nb = 0;
    for (let j = r * dim; j < (r + 1) * dim; j++) { d += a[j] * b[j]; na += a[j] * a[j]; nb += b[j] * b[j]; }
    out.push(d / Math.sqrt(na * nb));
  }
  return out;
}
/** Indices of the k largest of xs, best first. */
const topK = (xs: ArrayLike<number>, k: number) => Array.from(xs, (v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, k).map((p) => p[1]);
function search(q: Float32Array, p: Float32Array, dim: number, k: number): number[][] {
  const np = p.length / dim;
  const out: number[][] = [];
  const s = new Float32Array(np);
  for (let r = 0; r < q.length / dim; r++) {
    for (let c = 0; c < np; c++) {
      let d = 0;
      for (let j = 0; j < dim; j++) d += q[r * dim + j] * p[c * dim + j];
      s[c] = d;
    }
    out.push(topK(s, k));
  }
  return out;
}
const agreement = (a: number[][], b: number[][], k: number) =>
  a.reduce((acc, row, i) => acc + row.slice(0, k).filter((x) => b[i].slice(0, k).includes(x)).length / k, 0) / a.length;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

const info = engineInfo();
console.log(`gainrag ${info.version}; dnnl kernels: ${info.dnnlKernels || 'none'}; threads ${info.threads}; load average ${loadavg()[0].toFixed(1)} (${cpus().length} cores)`);
console.log(`retrieval: bert-tiny, ${passages.length} passages, ${questions.length} questions; rerank: xlmr-tiny-reranker, ${rerankQ} questions x ${candidates} candidates`);

interface Mode { label: string; gemm: 'torch' | 'dnnl'; dtype: EncoderDType; matmulPrecision?: 'high' }
const modes: Mode[] = [
  { label: 'fp32 (torch, reference)', gemm: 'torch', dtype: 'float32' },
  { label: 'dnnl float32', gemm: 'dnnl', dtype: 'float32' },
  { label: 'dnnl float32 high (bf16x3)', gemm: 'dnnl', dtype: 'float32', matmulPrecision: 'high' },
  { label: 'dnnl bfloat16', gemm: 'dnnl', dtype: 'bfloat16' },
  { label: `dnnl int8 (${info.int8InputBits || '?'}-bit input codes)`, gemm: 'dnnl', dtype: 'int8' },
];
const bert = path.join(repoRoot, 'models', 'bert-tiny');
const xlmr = path.join(repoRoot, 'models', 'xlmr-tiny-reranker');
const qText = questions.map((q) => q.question);
const gold = questions.map((q) => pid.get(q.gold_passage_ids[0]) ?? -1);

let refP: Float32Array | undefined, refQ: Float32Array | undefined, refTop: number[][] | undefined, refRerank: number[][] | undefined;
let refScores: Float32Array | undefined;
let pairs: { q: string[]; p: string[]; cand: number[][] } | undefined;
console.log('\n| mode | passage 1 - cosine to fp32 (max / mean) | question 1 - cosine (max) | Recall@10 | top-10 agreement | rerank top-1 / top-5 / top-10 agreement | rerank max abs score diff |');
console.log('|---|---|---|---|---|---|---|');
for (const m of modes) {
  // A mode this CPU has no kernel for (bf16x3 without bf16 units, int8 in a build without oneDNN) is a row
  // saying so, not the end of the run.
  let enc: Encoder;
  try {
    enc = await Encoder.load(bert, { gemm: m.gemm, dtype: m.dtype, matmulPrecision: m.matmulPrecision });
  } catch (err) {
    if ((err as { code?: string }).code !== 'E_UNSUPPORTED') throw err;
    console.log(`| ${m.label} | refused here (E_UNSUPPORTED): ${(err as Error).message.replace(/\|/g, '/')} | | | | | |`);
    continue;
  }
  const P = normalize(await enc.embed(passages.map((p) => p.text)), enc.dim);
  const Q = normalize(await enc.embed(qText), enc.dim);
  const top = search(Q, P, enc.dim, Math.max(10, candidates));
  await enc.dispose();
  refP ??= P; refQ ??= Q; refTop ??= top;
  const recall = mean(top.map((t, i) => (t.slice(0, 10).includes(gold[i]) ? 1 : 0)));
  pairs ??= (() => {
    const cand = refTop!.slice(0, rerankQ).map((t, i) => (t.slice(0, candidates).includes(gold[i]) || gold[i] < 0 ? t.slice(0, candidates) : [...t.slice(0, candidates - 1), gold[i]]));
    return { q: cand.flatMap((c, i) => c.map(() => qText[i])), p: cand.flatMap((c) => c.map((j) => passages[j].text)), cand };
  })();
  const ce = await CrossEncoder.load(xlmr, { gemm: m.gemm, dtype: m.dtype, matmulPrecision: m.matmulPrecision });
  const scores = await ce.score(pairs.q, pairs.p, { maxLength: 128 });
  await ce.dispose();
  const order = pairs.cand.map((c, i) => topK(scores.subarray(i * c.length, (i + 1) * c.length), c.length));
  refRerank ??= order;
  refScores ??= scores;
  let maxDiff = 0;
  for (let i = 0; i < scores.length; i++) maxDiff = Math.max(maxDiff, Math.abs(scores[i] - refScores[i]));
  const pc = cosines(P, refP, enc.dim), qc = cosines(Q, refQ, enc.dim);
  const gap = (cs: number[]) => cs.map((c) => Math.max(0, 1 - c));
  console.log(`| ${m.label} | ${Math.max(...gap(pc)).toExponential(1)} / ${mean(gap(pc)).toExponential(1)} | ${Math.max(...gap(qc)).toExponential(1)} | ${recall.toFixed(3)} | ` +
    `${(100 * agreement(top, refTop, 10)).toFixed(1)}% | ${[1, 5, 10].map((k) => `${(100 * agreement(order, refRerank!, k)).toFixed(1)}%`).join(' / ')} | ${maxDiff.toExponential(1)} |`);
}
if (refScores) {
  const mu = mean(Array.from(refScores));
  const sd = Math.sqrt(mean(Array.from(refScores, (x) => (x - mu) ** 2)));
  console.log(`fp32 rerank scores: mean ${mu.toExponential(2)}, standard deviation ${sd.toExponential(2)} (the score diffs above are against this spread)`);
}
console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
