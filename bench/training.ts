// CPU training throughput of the selector (pairs/s through forward + backward + AdamW):
//   node dist/bench/training.js [--steps 5] [--base-steps 1] [--no-base] [--bf16] [--memory]
// --memory: peak resident memory (VmHWM) of one base-size step (2 x 8 pairs of 256 tokens),
// each setting in a fresh child process (VmHWM never goes down), with and without gradient
// checkpointing; only the memory columns are the point (the time is one cold step).
// Models: the xlmr-tiny-reranker fixture, and an XLM-R-base-shaped cross-encoder (hidden 768,
// 12 layers, 12 heads, 3072 intermediate) with random weights written to a temp directory,
// using the fixture's tokenizer and vocabulary (1500 rows: the transformer body is base-size;
// the real 250k-row embedding would add AdamW work over 192M more parameters).
// There is no Python torch here, so the baseline measured in the same run is the engine's own
// forward-only scoring (CrossEncoder.score) of the same pairs: a training step costs ~3
// forwards in theory, so train/forward pairs-per-second near 1/3 means little overhead.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeSafetensors, type F32Tensor } from '../lib/convert/llama2c.js';
import { engineInfo } from '../lib/engine.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { SelectorTrainer, type TrainDType } from '../lib/training/selector-trainer.js';
import { Rng } from '../lib/training/prng.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const steps = arg('steps', 5);
const baseSteps = arg('base-steps', 1);
const withBase = !process.argv.includes('--no-base');
const withBf16 = process.argv.includes('--bf16');
const withMemory = process.argv.includes('--memory');

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = path.join(repoRoot, 'test', 'fixtures');
const tiny = path.join(fixtures, 'xlmr-tiny-reranker');

function writeBaseModel(dir: string): void {
  const H = 768, L = 12, I = 3072, V = 1500, P = 514;
  const rng = new Rng(1);
  const t = (name: string, shape: number[], init: 'normal' | 'zero' | 'one' = 'normal'): F32Tensor => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (init === 'one') data.fill(1);
    // uniform with std 0.02, as HF's initializer_range (shape of the distribution does not matter here)
    if (init === 'normal') for (let i = 0; i < data.length; i++) data[i] = (rng.nextUint32() / 4294967296 - 0.5) * 0.0693;
    return { name, shape, data };
  };
  const ts: F32Tensor[] = [
    t('roberta.embeddings.word_embeddings.weight', [V, H]), t('roberta.embeddings.position_embeddings.weight', [P, H]),
    t('roberta.embeddings.token_type_embeddings.weight', [1, H]),
    t('roberta.embeddings.LayerNorm.weight', [H], 'one'), t('roberta.embeddings.LayerNorm.bias', [H], 'zero'),
  ];
  for (let l = 0; l < L; l++) {
    const p = `roberta.encoder.layer.${l}.`;
    for (const n of ['query', 'key', 'value']) ts.push(t(`${p}attention.self.${n}.weight`, [H, H]), t(`${p}attention.self.${n}.bias`, [H], 'zero'));
    ts.push(t(`${p}attention.output.dense.weight`, [H, H]), t(`${p}attention.output.dense.bias`, [H], 'zero'),
      t(`${p}attention.output.LayerNorm.weight`, [H], 'one'), t(`${p}attention.output.LayerNorm.bias`, [H], 'zero'),
      t(`${p}intermediate.dense.weight`, [I, H]), t(`${p}intermediate.dense.bias`, [I], 'zero'),
      t(`${p}output.dense.weight`, [H, I]), t(`${p}output.dense.bias`, [H], 'zero'),
      t(`${p}output.LayerNorm.weight`, [H], 'one'), t(`${p}output.LayerNorm.bias`, [H], 'zero'));
  }
  ts.push(t('classifier.dense.weight', [H, H]), t('classifier.dense.bias', [H], 'zero'), t('classifier.out_proj.weight', [1, H]), t('classifier.out_proj.bias', [1], 'zero'));
  writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(ts));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    architectures: ['XLMRobertaForSequenceClassification'], model_type: 'xlm-roberta', vocab_size: V, hidden_size: H,
    num_hidden_layers: L, num_attention_heads: 12, intermediate_size: I, max_position_embeddings: P, type_vocab_size: 1,
    pad_token_id: 1, bos_token_id: 0, eos_token_id: 2, hidden_act: 'gelu', layer_norm_eps: 1e-5, num_labels: 1,
    hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1,
  }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(tiny, f), path.join(dir, f));
}

// Groups of synthetic pairs; passages long enough to be cut at maxLength.
function makeGroups(groups: number, size: number, passageWords = 80) {
  const rng = new Rng(5);
  const words = ['license', 'software', 'copyright', 'warranty', 'program', 'source', 'code', 'free', 'work', 'public', 'the', 'of', 'and', 'to', 'any'];
  const text = (n: number) => Array.from({ length: n }, () => words[rng.int(words.length)]).join(' ');
  return Array.from({ length: groups }, () => ({
    query: `what is ${text(4)}`,
    passages: Array.from({ length: size }, () => text(passageWords)),
    teacherScores: Array.from({ length: size }, () => -Math.log(1 + 20 * rng.next())),
  }));
}

async function measure(label: string, dir: string, groups: number, size: number, maxLength: number, n: number, dtype: TrainDType) {
  const trainer = await SelectorTrainer.create(dir, { lr: 1e-5, maxLength, dtype });
  const batch = makeGroups(groups, size);
  await trainer.step(batch); // warm-up (allocations, first-touch of the weights)
  const pairs = groups * size;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) await trainer.step(batch);
  const trainSec = (performance.now() - t0) / 1000 / n;
  const ce = await CrossEncoder.load(dir, { maxLength, dtype });
  const q = batch.flatMap((g) => g.passages.map(() => g.query));
  const p = batch.flatMap((g) => g.passages);
  await ce.score(q, p);
  t0 = performance.now();
  for (let i = 0; i < n; i++) await ce.score(q, p);
  const fwdSec = (performance.now() - t0) / 1000 / n;
  const row = {
    model: label, dtype, shape: `${groups}x${size} pairs, ${maxLength} tokens`, params: trainer.parameters,
    secPerStep: +trainSec.toFixed(4), trainPairsPerSec: +(pairs / trainSec).toFixed(1),
    forwardPairsPerSec: +(pairs / fwdSec).toFixed(1), trainOverForward: +(fwdSec / trainSec).toFixed(3),
  };
  console.log(JSON.stringify(row));
}

function peakRssMiB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

// Child of --memory: one step of the model in `dir`, reporting the peak RSS before and after.
async function memoryChild(dir: string, checkpointing: boolean) {
  const maxLength = 256;
  const trainer = await SelectorTrainer.create(dir, { lr: 1e-5, maxLength, gradientCheckpointing: checkpointing });
  const batch = makeGroups(2, 8, 400);  // passages longer than 256 tokens: every pair is cut to 256
  const loaded = peakRssMiB();
  const t0 = performance.now();
  await trainer.step(batch);
  const sec = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ gradientCheckpointing: checkpointing, peakRssAfterLoadMiB: loaded, peakRssAfterStepMiB: peakRssMiB(), secFirstStep: +sec.toFixed(2) }));
}

function measureMemory(dir: string) {
  const self = fileURLToPath(import.meta.url);
  for (const gc of [false, true]) {
    const r = spawnSync(process.execPath, [self, '--memory-child', dir, gc ? '1' : '0'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`memory child failed: ${r.stderr}`);
    const row = JSON.parse(r.stdout.trim().split('\n').pop()!);
    console.log(JSON.stringify({ model: 'xlmr-base-shape (random)', shape: '2x8 pairs, 256 tokens', ...row }));
  }
}

async function main() {
  const child = process.argv.indexOf('--memory-child');
  if (child >= 0) return memoryChild(process.argv[child + 1], process.argv[child + 2] === '1');
  const info = engineInfo();
  console.log(JSON.stringify({ bench: 'selector training (CPU)', torch: info.torch, threads: info.threads, blas: info.blas }));
  await measure('xlmr-tiny-reranker', tiny, 8, 16, 128, steps, 'float32');
  if (withBf16) await measure('xlmr-tiny-reranker', tiny, 8, 16, 128, steps, 'bfloat16');
  if (withBase || withMemory) {
    const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-bench-train-'));
    try {
      writeBaseModel(dir);
      if (withBase) await measure('xlmr-base-shape (random)', dir, 2, 8, 64, baseSteps, 'float32');
      if (withMemory) measureMemory(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
