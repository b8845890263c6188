// gainrag's Encoder (BERT, mean pooling) and CrossEncoder (XLM-R sequence classification) against
// ONNX Runtime for Node on the same weights and the same inputs, in one process, interleaved:
//   node dist/bench/onnx-peer.js [--rows 256] [--rounds 5] [--base-rounds 2] [--no-base]
//                                [--base-passages] [--base-max-length 128] [--xlmr-base]
//                                [--no-padded] [--no-dnnl] [--base-ort-sorted-only]
// With a oneDNN build (engineInfo().backends has 'dnnl') four more gainrag rows run in the same
// interleaved rounds: gemm 'dnnl' at float32, float32 with matmulPrecision 'high' (bf16x3
// products), bfloat16 and dynamic int8 (token budget); the
// "default" row is gemm 'torch' (LibTorch's BLAS, the default before issue #19); --no-dnnl
// drops the dnnl rows, --no-int8 only the int8 one, --no-bf16 the bfloat16 one (which on a CPU
// without bf16 units runs widened: bf16-rounded weights, float32 products).
// --no-padded drops "gainrag one padded batch" (minutes a round at the base shape);
// --base-ort-sorted-only drops "ORT one padded batch" at the two base shapes (there the
// length-sorted way was the faster ORT in every earlier run, and the padded one costs minutes).
// Shapes: the bundled tiny models (models/bert-tiny, models/xlmr-tiny-reranker) and a BERT-base
// shape (768 hidden, 12 layers, 12 heads, 3072 intermediate; random weights written as safetensors
// to a temp directory, bert-tiny's tokenizer). --xlmr-base adds an XLM-R-base cross-encoder shape
// (same layer sizes, XLM-R position ids, a RoBERTa classification head, random weights, the
// xlmr-tiny-reranker tokenizer: no XLM-R-base checkpoint is bundled, and its 250k-row embedding
// table would only change a lookup, not the products timed here).
// Inputs: SQuAD v1.1 dev (test/data/squad_v1.1_dev_open): passages for bert-tiny, questions for
// BERT-base (--base-passages: passages cut at --base-max-length), (question, gold passage) pairs
// for the cross-encoder.
//
// The ONNX files are exported from the same model directories by bench/onnx/export.py (Debian's
// python3-torch + python3-onnx; a plain-torch forward, no transformers). onnxruntime-node is not a
// dependency of the package: it is installed on demand into bench/.ort (git-ignored) with
// ONNXRUNTIME_NODE_INSTALL=skip (the CPU binaries ship in the npm tarball).
//
// Fairness: ORT gets the same number of intra-op threads as gainrag (engineInfo().threads, i.e.
// GAINRAG_THREADS or all cores), one inter-op thread, sequential execution, all graph
// optimisations. Tokenisation is INCLUDED on both sides: gainrag's embed()/score() tokenise inside
// the call, and the ORT side calls the same Tokenizer (encodeBatch / encodePairs) and pads the ids
// inside its timed call. ORT is run two ways and the faster is the baseline: one padded batch of
// all rows, and rows sorted by length in batches of --ort-rows (default 32), each padded to its
// own maximum (what a careful user of ORT would write).
// Agreement: max relative diff = max |gainrag - ort| / max |ort| over all output values (embeddings
// or logits), gainrag default path vs ORT one padded batch.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeSafetensors, type F32Tensor } from '../lib/convert/llama2c.js';
import { engineInfo } from '../lib/engine.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { Encoder, type BatchOptions } from '../lib/models/encoder.js';
import { native } from '../lib/native.js';
import type { TokenBatch } from '../lib/tokenizer.js';
import { uniformF32 } from './random.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
const rows = arg('rows', 256);
const rounds = arg('rounds', 5);
const baseRounds = arg('base-rounds', 2);
const baseMaxLength = arg('base-max-length', 128);
const ortRows = arg('ort-rows', 32);
const withPadded = !flag('no-padded');
let ortPadded = true; // cleared for the base shapes by --base-ort-sorted-only
const withDnnl = !flag('no-dnnl') && engineInfo().backends.includes('dnnl');
// bf16 (and 'high', its bf16x3 products) needs AVX512-BF16 or AMX, int8 AVX2 (7-bit input codes without
// VNNI, engineInfo().int8InputBits): oneDNN's kernel per
// precision is in engineInfo().dnnlKernels ("f32 K, bf16 K, int8 K", "none" where it has none).
function dnnlHas(kind: 'bf16' | 'int8'): boolean {
  const m = new RegExp(`\\b${kind} ([^\\s,]+)`).exec(engineInfo().dnnlKernels);
  return !!m && m[1] !== 'none';
}
const withBf16 = withDnnl && dnnlHas('bf16');
// dtype 'bfloat16' also runs where oneDNN has only float32 kernels (AVX2): bf16-rounded weights
// packed widened, float32 products, so about float32's speed (the column says it is widened).
const withBf16Weights = withDnnl && !flag('no-bf16');
const bf16Label = withBf16 ? 'gainrag dnnl bfloat16 (token budget)' : 'gainrag dnnl bfloat16, widened (token budget)';
const withInt8 = withDnnl && dnnlHas('int8') && !flag('no-int8');

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const models = path.join(repoRoot, 'models');
const ortPrefix = path.join(repoRoot, 'bench', '.ort');

// ---- onnxruntime-node, installed on demand outside package.json ----------------------------------

// The few pieces of the onnxruntime-node API used here (typed locally: the package is not a dependency).
interface OrtTensor { data: unknown; dims: readonly number[] }
interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release?(): Promise<void>;
}
interface Ort {
  Tensor: new (type: 'int64', data: BigInt64Array, dims: number[]) => OrtTensor;
  InferenceSession: { create(file: string, options: Record<string, unknown>): Promise<OrtSession> };
  env: { versions?: Record<string, string> };
}

function loadOrt(): Ort {
  const req = createRequire(path.join(ortPrefix, 'loader.js'));
  const attempt = (): Ort | undefined => {
    try {
      return req('onnxruntime-node') as Ort;
    } catch {
      return undefined;
    }
  };
  let ort = attempt();
  if (ort) return ort;
  console.log(`installing onnxruntime-node into ${path.relative(repoRoot, ortPrefix)} (not a package dependency) ...`);
  mkdirSync(ortPrefix, { recursive: true });
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const r = spawnSync(npm, ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', ortPrefix, 'onnxruntime-node'], {
    stdio: 'inherit', env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip', ONNXRUNTIME_NODE_INSTALL_CUDA: 'skip' },
  });
  ort = r.status === 0 ? attempt() : undefined;
  if (!ort) {
    console.error('onnxruntime-node is not available: could not install or load it from bench/.ort.\n' +
      'Install it by hand and rerun:\n  ONNXRUNTIME_NODE_INSTALL=skip npm install --no-save --prefix bench/.ort onnxruntime-node');
    process.exit(2);
  }
  return ort;
}

// ---- ONNX export through Debian's torch ----------------------------------------------------------

function findPython(): string {
  const candidates = [process.env.GAINRAG_PYTHON, '/usr/bin/python3', 'python3'].filter((c): c is string => !!c);
  for (const c of candidates) {
    const r = spawnSync(c, ['-c', 'import torch, onnx'], { stdio: 'ignore' });
    if (r.status === 0) return c;
  }
  console.error('no Python with torch and onnx found (tried ' + candidates.join(', ') + ').\n' +
    'On Debian: apt-get install -y python3-torch python3-onnx (or set GAINRAG_PYTHON).');
  process.exit(2);
}

function exportOnnx(python: string, modelDir: string, out: string, head: 'encoder' | 'cross'): void {
  const script = path.join(repoRoot, 'bench', 'onnx', 'export.py');
  const t = Date.now();
  const r = spawnSync(python, ['-W', 'ignore', script, modelDir, out, head], { encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(r.stdout, r.stderr);
    throw new Error(`ONNX export of ${modelDir} failed`);
  }
  console.log(`  exported ${path.basename(modelDir)} -> ONNX in ${((Date.now() - t) / 1000).toFixed(1)} s`);
}

// ---- a base-size random checkpoint (layout as in bench/encoder.ts and bench/training.ts) ---------

function writeBaseModel(kind: 'bert' | 'xlm-roberta', dir: string): void {
  const H = 768, I = 3072, L = 12;
  const bert = kind === 'bert';
  const tokDir = path.join(models, bert ? 'bert-tiny' : 'xlmr-tiny-reranker');
  const vocab = bert ? 1200 : 1500;
  const positions = bert ? 512 : 514;
  const p = bert ? '' : 'roberta.';
  let seed = 11;
  const t = (name: string, shape: number[], init: 'rand' | 'zero' | 'one' = 'rand'): F32Tensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (init === 'rand') {
      data = uniformF32(n, seed++);
      for (let i = 0; i < n; i++) data[i] *= 0.0693; // std 0.02, like HF's initializer_range
    } else {
      data = new Float32Array(n).fill(init === 'one' ? 1 : 0);
    }
    return { name, shape, data };
  };
  const ts: F32Tensor[] = [
    t(`${p}embeddings.word_embeddings.weight`, [vocab, H]), t(`${p}embeddings.position_embeddings.weight`, [positions, H]),
    t(`${p}embeddings.token_type_embeddings.weight`, [bert ? 2 : 1, H]),
    t(`${p}embeddings.LayerNorm.weight`, [H], 'one'), t(`${p}embeddings.LayerNorm.bias`, [H], 'zero'),
  ];
  for (let l = 0; l < L; l++) {
    const q = `${p}encoder.layer.${l}.`;
    for (const m of ['query', 'key', 'value']) ts.push(t(`${q}attention.self.${m}.weight`, [H, H]), t(`${q}attention.self.${m}.bias`, [H]));
    ts.push(t(`${q}attention.output.dense.weight`, [H, H]), t(`${q}attention.output.dense.bias`, [H]),
      t(`${q}attention.output.LayerNorm.weight`, [H], 'one'), t(`${q}attention.output.LayerNorm.bias`, [H], 'zero'),
      t(`${q}intermediate.dense.weight`, [I, H]), t(`${q}intermediate.dense.bias`, [I]),
      t(`${q}output.dense.weight`, [H, I]), t(`${q}output.dense.bias`, [H]),
      t(`${q}output.LayerNorm.weight`, [H], 'one'), t(`${q}output.LayerNorm.bias`, [H], 'zero'));
  }
  if (!bert) ts.push(t('classifier.dense.weight', [H, H]), t('classifier.dense.bias', [H]), t('classifier.out_proj.weight', [1, H]), t('classifier.out_proj.bias', [1]));
  writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(ts));
  const config: Record<string, unknown> = {
    model_type: kind, architectures: [bert ? 'BertModel' : 'XLMRobertaForSequenceClassification'],
    vocab_size: vocab, hidden_size: H, num_hidden_layers: L, num_attention_heads: 12, intermediate_size: I,
    max_position_embeddings: positions, type_vocab_size: bert ? 2 : 1, pad_token_id: bert ? 0 : 1,
    layer_norm_eps: bert ? 1e-12 : 1e-5, hidden_act: 'gelu', hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1,
  };
  if (!bert) config.id2label = { 0: 'LABEL_0' };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(tokDir, f), path.join(dir, f));
}

// ---- inputs ----------------------------------------------------------------------------------------

interface Question { question: string; gold_passage_ids: string[] }
function readJsonl<T>(file: string): T[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);
}
const squad = path.join(repoRoot, 'test', 'data', 'squad_v1.1_dev_open');
const allPassages = readJsonl<{ id: string; text: string }>(path.join(squad, 'passages.jsonl'));
const allQuestions = readJsonl<Question>(path.join(squad, 'questions.jsonl'));
/** n items spread evenly over the list (not just the first article). */
function spread<T>(xs: T[], n: number): T[] {
  return Array.from({ length: n }, (_, i) => xs[Math.floor((i * xs.length) / n) % xs.length]);
}
const passageText = new Map(allPassages.map((p) => [p.id, p.text]));
const passages = spread(allPassages, rows).map((p) => p.text);
const pickedQuestions = spread(allQuestions, rows);
const questions = pickedQuestions.map((q) => q.question);
const goldPassages = pickedQuestions.map((q) => passageText.get(q.gold_passage_ids[0]) ?? '');

// ---- ORT side: pad, run, put rows back in order ---------------------------------------------------

/** Runs `batch` through `session`, in padded chunks of `chunk` rows (rows sorted by length when chunking). */
async function ortRun(ort: Ort, session: OrtSession, batch: TokenBatch, padId: number, chunk: number, output: string): Promise<Float32Array> {
  const n = batch.offsets.length - 1;
  const len = (i: number) => batch.offsets[i + 1] - batch.offsets[i];
  const order = Array.from({ length: n }, (_, i) => i);
  if (chunk < n) order.sort((a, b) => len(b) - len(a));
  let out: Float32Array | undefined;
  let width = 0;
  for (let start = 0; start < n; start += chunk) {
    const part = order.slice(start, start + chunk);
    const seq = Math.max(...part.map(len));
    const ids = new BigInt64Array(part.length * seq).fill(BigInt(padId));
    const mask = new BigInt64Array(part.length * seq);
    part.forEach((row, r) => {
      const from = batch.offsets[row];
      for (let j = 0; j < len(row); j++) {
        ids[r * seq + j] = BigInt(batch.ids[from + j]);
        mask[r * seq + j] = 1n;
      }
    });
    const res = await session.run({
      input_ids: new ort.Tensor('int64', ids, [part.length, seq]),
      attention_mask: new ort.Tensor('int64', mask, [part.length, seq]),
    });
    const y = res[output];
    const data = y.data as Float32Array;
    width = y.dims[1];
    out ??= new Float32Array(n * width);
    part.forEach((row, r) => out!.set(data.subarray(r * width, (r + 1) * width), row * width));
  }
  return out ?? new Float32Array(0);
}

// ---- measuring ----------------------------------------------------------------------------------------

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
interface Variant { label: string; run: () => Promise<Float32Array>; engine: 'gainrag' | 'ort'; role?: 'default' | 'padded' | 'dnnl-f32' | 'dnnl-f32-high' | 'dnnl-bf16' | 'dnnl-int8' }

/** One warm-up call each, then `repeats` interleaved rounds; median seconds per variant and the last outputs. */
async function measure(variants: Variant[], repeats: number): Promise<{ seconds: number[]; outputs: Float32Array[] }> {
  const outputs: Float32Array[] = [];
  for (const v of variants) outputs.push(await v.run());
  const times: number[][] = variants.map(() => []);
  for (let r = 0; r < repeats; r++) {
    for (let v = 0; v < variants.length; v++) {
      const t = process.hrtime.bigint();
      await variants[v].run();
      times[v].push(Number(process.hrtime.bigint() - t) / 1e9);
    }
  }
  return { seconds: times.map(median), outputs };
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let diff = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / (scale || 1);
}

interface DnnlSummary { ratio: number; vsDefault: number; diff: number; cos: number }
interface Summary {
  title: string; unit: string; gainrag: number; ort: number; ortLabel: string; ratio: number; diff: number; budgetVsPadded: number;
  dnnl: { 'dnnl-f32'?: DnnlSummary; 'dnnl-f32-high'?: DnnlSummary; 'dnnl-bf16'?: DnnlSummary; 'dnnl-int8'?: DnnlSummary };
}

/** Lowest cosine between matching rows of two n x dim matrices. */
function minCosine(a: Float32Array, b: Float32Array, dim: number): number {
  let worst = 1;
  for (let r = 0; r < a.length / dim; r++) {
    let dot = 0, na = 0, nb = 0;
    for (let j = r * dim; j < (r + 1) * dim; j++) { dot += a[j] * b[j]; na += a[j] * a[j]; nb += b[j] * b[j]; }
    worst = Math.min(worst, dot / Math.sqrt(na * nb));
  }
  return worst;
}
const summaries: Summary[] = [];

/** Median seconds of the tokenisation alone (it is inside every timed call, on both sides). */
async function tokenizeSeconds(tokenize: () => Promise<TokenBatch>): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t = process.hrtime.bigint();
    await tokenize();
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return median(times);
}

// The machine's fp32 FMA peak on the engine's threads (register-resident vfmadd loop, the one
// bench/ffn-gemm.ts reports), measured before and after each shape: the ceiling any engine has.
async function fp32PeakGflops(): Promise<number> {
  const r = await native().testing.gemmSeconds('peak-f32', 1024, 768, 3072, true, 3);
  return median(r.seconds.map((sec) => r.flops / sec / 1e9));
}

// Multiply-adds x 2 of the encoder layers over the real tokens only (what has to be computed,
// whatever an engine pads): per token 4H^2 (Q, K, V, attention output) + 2HI (FFN), per row
// 2 n^2 H (scores and context); embeddings, LayerNorm, softmax and the head are left out (< 1%).
function encoderFlops(dir: string, lengths: number[]): number {
  const c = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as { hidden_size: number; intermediate_size: number; num_hidden_layers: number };
  const H = c.hidden_size, I = c.intermediate_size;
  let macs = 0;
  for (const n of lengths) macs += n * (4 * H * H + 2 * H * I) + 2 * n * n * H;
  return 2 * macs * c.num_hidden_layers;
}

function reportArithmetic(dir: string, lengths: number[], variants: Variant[], seconds: number[], peaks: number[]): void {
  const flops = encoderFlops(dir, lengths);
  const peak = Math.max(...peaks); // the loop's best reading: a lower one means something else ran
  const rate = (i: number) => flops / seconds[i] / 1e9;
  const parts = variants.map((v, i) => `${v.label.replace(/ \(token budget\)| \d+ rows\/batch/g, '')} ${rate(i).toFixed(0)} (${((100 * rate(i)) / peak).toFixed(0)}%)`);
  console.log(`  arithmetic: ${(flops / 1e9).toFixed(1)} GFLOP over real tokens; GFLOP/s (share of the fp32 peak ${peak.toFixed(0)}, the best of ${peaks.map((x) => x.toFixed(0)).join(', ')}): ${parts.join('; ')}`);
  const ortIdx = variants.map((v, i) => (v.engine === 'ort' ? i : -1)).filter((i) => i >= 0);
  const bestOrt = ortIdx.reduce((a, b) => (seconds[b] < seconds[a] ? b : a));
  console.log(`  fp32 ceiling: an engine at 100% of the fp32 peak would be ${(peak / rate(bestOrt)).toFixed(2)}x the best ORT`);
}

const rowLengths = (batch: TokenBatch) => Array.from({ length: batch.offsets.length - 1 }, (_, i) => batch.offsets[i + 1] - batch.offsets[i]);

function report(title: string, unit: string, count: number, batch: TokenBatch, variants: Variant[], seconds: number[], outputs: Float32Array[], repeats: number,
  tokSeconds: number): void {
  const n = batch.offsets.length - 1;
  const lens = Array.from({ length: n }, (_, i) => batch.offsets[i + 1] - batch.offsets[i]);
  console.log(`\n${title}: ${count} ${unit}, ${batch.ids.length} tokens (${Math.min(...lens)}..${Math.max(...lens)}, mean ${(batch.ids.length / n).toFixed(0)}), ` +
    `median of ${repeats}, load average ${loadavg()[0].toFixed(1)}; tokenisation alone ${tokSeconds.toFixed(3)} s (in every row)`);
  for (let v = 0; v < variants.length; v++) {
    console.log(`  ${variants[v].label.padEnd(44)} ${seconds[v].toFixed(3).padStart(8)} s  ${(count / seconds[v]).toFixed(1).padStart(9)} ${unit}/s`);
  }
  const g = variants.findIndex((v) => v.role === 'default');
  const padded = variants.findIndex((v) => v.role === 'padded');
  const ortIdx = variants.map((v, i) => (v.engine === 'ort' ? i : -1)).filter((i) => i >= 0);
  const bestOrt = ortIdx.reduce((a, b) => (seconds[b] < seconds[a] ? b : a));
  const bestG = variants.map((v, i) => (v.engine === 'gainrag' ? i : -1)).filter((i) => i >= 0).reduce((a, b) => (seconds[b] < seconds[a] ? b : a));
  const diff = maxRelDiff(outputs[g], outputs[ortIdx[0]]);
  const ratio = seconds[bestOrt] / seconds[g];
  console.log(`  gainrag default vs best ORT (${variants[bestOrt].label.trim()}): ${ratio.toFixed(2)}x` +
    `   [best gainrag variant vs best ORT: ${(seconds[bestOrt] / seconds[bestG]).toFixed(2)}x]`);
  console.log(`  max relative diff gainrag vs ORT: ${diff.toExponential(2)}`);
  let bp = Number.NaN;
  if (padded >= 0) {
    console.log(`  gainrag padded vs token budget: ${maxRelDiff(outputs[padded], outputs[g]).toExponential(2)}`);
    bp = seconds[padded] / seconds[g];
    console.log(`  token budget vs one padded batch: ${bp >= 1 ? `token budget faster (${bp.toFixed(2)}x)` : `ONE PADDED BATCH faster (${(1 / bp).toFixed(2)}x)`}`);
  }
  const dnnl: Summary['dnnl'] = {};
  for (const role of ['dnnl-f32', 'dnnl-f32-high', 'dnnl-bf16', 'dnnl-int8'] as const) {
    const i = variants.findIndex((v) => v.role === role);
    if (i < 0) continue;
    const cos = unit === 'embeddings' ? minCosine(outputs[i], outputs[g], outputs[g].length / count) : Number.NaN;
    dnnl[role] = { ratio: seconds[bestOrt] / seconds[i], vsDefault: seconds[g] / seconds[i], diff: maxRelDiff(outputs[i], outputs[g]), cos };
    console.log(`  ${role} vs best ORT: ${dnnl[role]!.ratio.toFixed(2)}x, vs gainrag default: ${dnnl[role]!.vsDefault.toFixed(2)}x; ` +
      `max rel diff to default ${dnnl[role]!.diff.toExponential(2)}${Number.isNaN(cos) ? '' : `, lowest cosine to default ${cos.toFixed(6)}`}`);
  }
  summaries.push({ title, unit, gainrag: count / seconds[g], ort: count / seconds[bestOrt], ortLabel: variants[bestOrt].label.trim(), ratio, diff, budgetVsPadded: bp, dnnl });
}

function padId(dir: string): number {
  const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as { pad_token_id?: number };
  return cfg.pad_token_id ?? 0;
}

const ortOptions = (threads: number) => ({
  intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
});

async function benchEncoder(ort: Ort, python: string, scratch: string, title: string, dir: string, input: string[], maxLength: number | undefined, repeats: number): Promise<void> {
  const file = path.join(scratch, `${path.basename(dir)}.encoder.onnx`);
  exportOnnx(python, dir, file, 'encoder');
  const enc = await Encoder.load(dir, { ...(maxLength ? { maxLength } : {}), gemm: 'torch' });
  const f32 = withDnnl ? await Encoder.load(dir, { ...(maxLength ? { maxLength } : {}), gemm: 'dnnl' }) : undefined;
  const high = withBf16 ? await Encoder.load(dir, { ...(maxLength ? { maxLength } : {}), gemm: 'dnnl', matmulPrecision: 'high' }) : undefined;
  const b16 = withBf16Weights ? await Encoder.load(dir, { ...(maxLength ? { maxLength } : {}), gemm: 'dnnl', dtype: 'bfloat16' }) : undefined;
  const i8 = withInt8 ? await Encoder.load(dir, { ...(maxLength ? { maxLength } : {}), gemm: 'dnnl', dtype: 'int8' }) : undefined;
  const session = await ort.InferenceSession.create(file, ortOptions(engineInfo().threads));
  const pad = padId(dir);
  const n = input.length;
  const ortCall = (chunk: number) => async () => ortRun(ort, session, await enc.tokenizer.encodeBatch(input, { maxLength: enc.maxLength }), pad, chunk, 'embeddings');
  const padded: BatchOptions = { batchTokens: 2 ** 40, maxRows: n };
  const variants: Variant[] = [
    { label: 'gainrag torch (token budget)', engine: 'gainrag', role: 'default', run: () => enc.embed(input) },
    ...(withPadded ? [{ label: 'gainrag one padded batch', engine: 'gainrag', role: 'padded', run: () => enc.embed(input, padded) } as Variant] : []),
    ...(f32 ? [{ label: 'gainrag dnnl float32 (token budget)', engine: 'gainrag', role: 'dnnl-f32', run: () => f32.embed(input) } as Variant] : []),
    ...(high ? [{ label: 'gainrag dnnl float32 high (bf16x3)', engine: 'gainrag', role: 'dnnl-f32-high', run: () => high.embed(input) } as Variant] : []),
    ...(b16 ? [{ label: bf16Label, engine: 'gainrag', role: 'dnnl-bf16', run: () => b16.embed(input) } as Variant] : []),
    ...(i8 ? [{ label: 'gainrag dnnl int8 (token budget)', engine: 'gainrag', role: 'dnnl-int8', run: () => i8.embed(input) } as Variant] : []),
    ...(ortPadded ? [{ label: `ORT one padded batch (${n} rows)`, engine: 'ort', run: ortCall(n) } as Variant] : []),
    { label: `ORT length-sorted, ${ortRows} rows/batch`, engine: 'ort', run: ortCall(ortRows) },
  ];
  const peaks = [await fp32PeakGflops()];
  const { seconds, outputs } = await measure(variants, repeats);
  peaks.push(await fp32PeakGflops());
  const tokenize = () => enc.tokenizer.encodeBatch(input, { maxLength: enc.maxLength });
  const batch = await tokenize();
  report(title, 'embeddings', n, batch, variants, seconds, outputs, repeats, await tokenizeSeconds(tokenize));
  reportArithmetic(dir, rowLengths(batch), variants, seconds, peaks);
  await session.release?.();
  await enc.dispose();
  await f32?.dispose();
  await high?.dispose();
  await b16?.dispose();
  await i8?.dispose();
}

async function benchCross(ort: Ort, python: string, scratch: string, title: string, dir: string, q: string[], p: string[], maxLength: number, repeats: number): Promise<void> {
  const file = path.join(scratch, `${path.basename(dir)}.cross.onnx`);
  exportOnnx(python, dir, file, 'cross');
  const ce = await CrossEncoder.load(dir, { gemm: 'torch' });
  const f32 = withDnnl ? await CrossEncoder.load(dir, { gemm: 'dnnl' }) : undefined;
  const high = withBf16 ? await CrossEncoder.load(dir, { gemm: 'dnnl', matmulPrecision: 'high' }) : undefined;
  const b16 = withBf16Weights ? await CrossEncoder.load(dir, { gemm: 'dnnl', dtype: 'bfloat16' }) : undefined;
  const i8 = withInt8 ? await CrossEncoder.load(dir, { gemm: 'dnnl', dtype: 'int8' }) : undefined;
  const session = await ort.InferenceSession.create(file, ortOptions(engineInfo().threads));
  const pad = padId(dir);
  const n = q.length;
  const tokenize = () => ce.tokenizer.encodePairs(q, p, { maxLength, truncation: 'only_second' });
  const ortCall = (chunk: number) => async () => ortRun(ort, session, await tokenize(), pad, chunk, 'logits');
  const variants: Variant[] = [
    { label: 'gainrag torch (token budget)', engine: 'gainrag', role: 'default', run: () => ce.score(q, p, { maxLength }) },
    ...(withPadded ? [{ label: 'gainrag one padded batch', engine: 'gainrag', role: 'padded', run: () => ce.score(q, p, { maxLength, batchTokens: 2 ** 40, maxRows: n }) } as Variant] : []),
    ...(f32 ? [{ label: 'gainrag dnnl float32 (token budget)', engine: 'gainrag', role: 'dnnl-f32', run: () => f32.score(q, p, { maxLength }) } as Variant] : []),
    ...(high ? [{ label: 'gainrag dnnl float32 high (bf16x3)', engine: 'gainrag', role: 'dnnl-f32-high', run: () => high.score(q, p, { maxLength }) } as Variant] : []),
    ...(b16 ? [{ label: bf16Label, engine: 'gainrag', role: 'dnnl-bf16', run: () => b16.score(q, p, { maxLength }) } as Variant] : []),
    ...(i8 ? [{ label: 'gainrag dnnl int8 (token budget)', engine: 'gainrag', role: 'dnnl-int8', run: () => i8.score(q, p, { maxLength }) } as Variant] : []),
    ...(ortPadded ? [{ label: `ORT one padded batch (${n} rows)`, engine: 'ort', run: ortCall(n) } as Variant] : []),
    { label: `ORT length-sorted, ${ortRows} rows/batch`, engine: 'ort', run: ortCall(ortRows) },
  ];
  const peaks = [await fp32PeakGflops()];
  const { seconds, outputs } = await measure(variants, repeats);
  peaks.push(await fp32PeakGflops());
  const batch = await tokenize();
  report(title, 'pairs', n, batch, variants, seconds, outputs, repeats, await tokenizeSeconds(tokenize));
  reportArithmetic(dir, rowLengths(batch), variants, seconds, peaks);
  await session.release?.();
  await ce.dispose();
  await f32?.dispose();
  await high?.dispose();
  await b16?.dispose();
  await i8?.dispose();
}

const ort = loadOrt();
const python = findPython();
const info = engineInfo();
const torchVersion = spawnSync(python, ['-c', 'import torch, onnx; print(torch.__version__, onnx.__version__)'], { encoding: 'utf8' }).stdout.trim();
console.log(`gainrag ${info.version}, LibTorch ${info.torch}, BLAS ${info.blas}; onnxruntime-node ${ort.env.versions?.node ?? '?'}; ` +
  `export: torch/onnx ${torchVersion}`);
console.log(`threads: gainrag ${info.threads} intra-op, ORT ${info.threads} intra-op + 1 inter-op; ${cpus().length} cores, load average ${loadavg()[0].toFixed(1)}`);
console.log('tokenisation is inside the timed call for both engines (same Tokenizer)');

const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-onnx-peer-'));
try {
  await benchEncoder(ort, python, scratch, 'bert-tiny, mean pooling, SQuAD passages', path.join(models, 'bert-tiny'), passages, undefined, rounds);
  await benchCross(ort, python, scratch, 'xlmr-tiny-reranker, SQuAD (question, gold passage)', path.join(models, 'xlmr-tiny-reranker'), questions, goldPassages, 128, rounds);
  if (flag('base-ort-sorted-only')) ortPadded = false;
  if (!flag('no-base')) {
    const bertDir = path.join(scratch, 'bert-base');
    mkdirSync(bertDir);
    writeBaseModel('bert', bertDir);
    const input = flag('base-passages') ? passages : questions;
    const what = flag('base-passages') ? `SQuAD passages cut at ${baseMaxLength} tokens` : 'SQuAD questions';
    await benchEncoder(ort, python, scratch, `BERT-base shape (random weights), mean pooling, ${what}`, bertDir, input, baseMaxLength, baseRounds);
    rmSync(bertDir, { recursive: true, force: true });
  }
  if (flag('xlmr-base')) {
    const xlmrDir = path.join(scratch, 'xlmr-base');
    mkdirSync(xlmrDir);
    writeBaseModel('xlm-roberta', xlmrDir);
    await benchCross(ort, python, scratch, `XLM-R-base shape (random weights), cross-encoder, cut at ${baseMaxLength}`, xlmrDir, questions, goldPassages, baseMaxLength, baseRounds);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

console.log('\n| shape | gainrag | ORT (best way) | gainrag/ORT | max rel diff | token budget vs one padded batch |');
console.log('|---|---|---|---|---|---|');
for (const s of summaries) {
  const bp = Number.isNaN(s.budgetVsPadded) ? 'not run' : s.budgetVsPadded >= 1 ? `budget ${s.budgetVsPadded.toFixed(2)}x faster` : `padded ${(1 / s.budgetVsPadded).toFixed(2)}x faster`;
  console.log(`| ${s.title} | ${s.gainrag.toFixed(1)} ${s.unit}/s | ${s.ort.toFixed(1)} (${s.ortLabel}) | ${s.ratio.toFixed(2)}x | ${s.diff.toExponential(1)} | ${bp} |`);
}
if (withDnnl) {
  console.log('\n| shape | torch / ORT | dnnl f32 / ORT | dnnl f32 high / ORT | dnnl bf16 / ORT | dnnl int8 / ORT | dnnl f32 / torch | dnnl f32 high / torch | dnnl bf16 / torch | dnnl int8 / torch | f32 max rel diff to torch | f32 high, bf16, int8 lowest cosine (max rel diff) to torch |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
  const acc = (x: DnnlSummary) => (Number.isNaN(x.cos) ? `(${x.diff.toExponential(1)})` : `${x.cos.toFixed(5)} (${x.diff.toExponential(1)})`);
  for (const s of summaries) {
    const f = s.dnnl['dnnl-f32'], h = s.dnnl['dnnl-f32-high'], b = s.dnnl['dnnl-bf16'], i = s.dnnl['dnnl-int8'];
    if (!f) continue;
    // A mode this CPU does not run (bf16 and 'high' need AVX512-BF16 / AMX) is '-'.
    const ratio = (x?: DnnlSummary) => (x ? `${x.ratio.toFixed(2)}x` : '-');
    const vs = (x?: DnnlSummary) => (x ? `${x.vsDefault.toFixed(2)}x` : '-');
    const accuracy = [h, b, i].filter((x): x is DnnlSummary => !!x).map(acc).join(', ') || '-';
    console.log(`| ${s.title} | ${s.ratio.toFixed(2)}x | ${ratio(f)} | ${ratio(h)} | ${ratio(b)} | ${ratio(i)} | ` +
      `${vs(f)} | ${vs(h)} | ${vs(b)} | ${vs(i)} | ${f.diff.toExponential(1)} | ${accuracy} |`);
  }
}
console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(1)).join(' ')} (${cpus().length} cores, shared machine)`);
if (!existsSync(path.join(ortPrefix, 'node_modules'))) console.log('(bench/.ort was not populated)');
