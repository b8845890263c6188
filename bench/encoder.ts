// CPU throughput of the Encoder (embeddings/s) and CrossEncoder (pairs/s):
//   node dist/bench/encoder.js [--rounds 3] [--base-rounds 1] [--base-texts 8] [--tiny-texts 512] [--no-base]
// Models: the tiny fixtures, and base-size shapes (BERT-base / XLM-R-base: hidden 768, 12
// layers, 12 heads, 3072 intermediate) with random weights written to a temp directory (the
// fixtures' tokenizers and a small vocabulary: the vocabulary size does not change the work).
// There is no Python transformers here, so the baselines are the same engine run naively, in
// the same process, round-robin with the default run:
//   padded  - all rows in one batch padded to the global maximum length
//   batch-1 - one row per forward pass (no padding, no batching)
// Times include tokenisation (end to end, as a user sees it). The load average is printed
// because other processes on a small machine move every number; the ratios come from
// interleaved runs and hold up better than the absolute rates.
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { engineInfo } from '../lib/engine.js';
import { CrossEncoder, type ScoreOptions } from '../lib/models/cross-encoder.js';
import { Encoder, type BatchOptions } from '../lib/models/encoder.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const rounds = arg('rounds', 3);
const baseRounds = arg('base-rounds', 1);
const baseTexts = arg('base-texts', 8);
const tinyTexts = arg('tiny-texts', 512);
const withBase = !process.argv.includes('--no-base');

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = path.join(repoRoot, 'test', 'fixtures');

// Deterministic pseudo-random numbers (xorshift32).
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

const WORDS = ('the norman conquest of england began in with battle hastings paris is capital and most populous city ' +
  'france pride prejudice novel manners written by jane austen who wrote what when did').split(' ');

/** n texts of lengthMin..lengthMax words, uniformly spread. */
function texts(n: number, lengthMin: number, lengthMax: number, seed: number): string[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => {
    const len = lengthMin + Math.floor(r() * (lengthMax - lengthMin + 1));
    return Array.from({ length: len }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' ');
  });
}

// A base-size checkpoint with random weights (uniform, scaled like an initialiser).
function writeBaseModel(kind: 'bert' | 'xlm-roberta', dir: string): void {
  const H = 768, I = 3072, L = 12;
  const tokDir = path.join(fixtures, kind === 'bert' ? 'bert-tiny' : 'xlmr-tiny-reranker');
  const vocab = kind === 'bert' ? 1200 : 1500;
  const positions = kind === 'bert' ? 512 : 514;
  const config: Record<string, unknown> = {
    model_type: kind, architectures: [kind === 'bert' ? 'BertModel' : 'XLMRobertaForSequenceClassification'],
    vocab_size: vocab, hidden_size: H, num_hidden_layers: L, num_attention_heads: 12, intermediate_size: I,
    max_position_embeddings: positions, type_vocab_size: kind === 'bert' ? 2 : 1, pad_token_id: kind === 'bert' ? 0 : 1,
    layer_norm_eps: kind === 'bert' ? 1e-12 : 1e-5, hidden_act: 'gelu', hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1,
  };
  if (kind === 'xlm-roberta') config.id2label = { 0: 'LABEL_0' };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(tokDir, f), path.join(dir, f));
  const shapes: [string, number[]][] = [];
  const p = kind === 'bert' ? '' : 'roberta.';
  shapes.push([`${p}embeddings.word_embeddings.weight`, [vocab, H]], [`${p}embeddings.position_embeddings.weight`, [positions, H]],
    [`${p}embeddings.token_type_embeddings.weight`, [kind === 'bert' ? 2 : 1, H]],
    [`${p}embeddings.LayerNorm.weight`, [H]], [`${p}embeddings.LayerNorm.bias`, [H]]);
  for (let l = 0; l < L; l++) {
    const q = `${p}encoder.layer.${l}.`;
    for (const m of ['query', 'key', 'value']) shapes.push([`${q}attention.self.${m}.weight`, [H, H]], [`${q}attention.self.${m}.bias`, [H]]);
    shapes.push([`${q}attention.output.dense.weight`, [H, H]], [`${q}attention.output.dense.bias`, [H]],
      [`${q}attention.output.LayerNorm.weight`, [H]], [`${q}attention.output.LayerNorm.bias`, [H]],
      [`${q}intermediate.dense.weight`, [I, H]], [`${q}intermediate.dense.bias`, [I]],
      [`${q}output.dense.weight`, [H, I]], [`${q}output.dense.bias`, [H]],
      [`${q}output.LayerNorm.weight`, [H]], [`${q}output.LayerNorm.bias`, [H]]);
  }
  if (kind === 'xlm-roberta') {
    shapes.push(['classifier.dense.weight', [H, H]], ['classifier.dense.bias', [H]], ['classifier.out_proj.weight', [1, H]], ['classifier.out_proj.bias', [1]]);
  }
  // One random block, reused for every matrix: the values do not matter for speed.
  const r = rng(7);
  const block = new Float32Array(I * H).map(() => (r() - 0.5) * 0.06);
  const ones = new Float32Array(I).fill(1);
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape] of shapes) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 4;
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const fd = openSync(path.join(dir, 'model.safetensors'), 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, len);
  writeSync(fd, json);
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const src = name.includes('LayerNorm.weight') ? ones : block;
    for (let done = 0; done < n; done += src.length) {
      const part = src.subarray(0, Math.min(src.length, n - done));
      writeSync(fd, new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
    }
  }
  closeSync(fd);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

interface Variant { label: string; options: BatchOptions & ScoreOptions }

/** Runs every variant `rounds` times, round-robin; returns the median seconds per variant. */
async function measure(run: (o: Variant['options']) => Promise<unknown>, warmUp: () => Promise<unknown>, variants: Variant[],
  repeats: number): Promise<number[]> {
  await warmUp();
  const times: number[][] = variants.map(() => []);
  for (let r = 0; r < repeats; r++) {
    for (let v = 0; v < variants.length; v++) {
      const t = process.hrtime.bigint();
      await run(variants[v].options);
      times[v].push(Number(process.hrtime.bigint() - t) / 1e9);
    }
  }
  return times.map(median);
}

function report(title: string, unit: string, count: number, tokens: number, variants: Variant[], seconds: number[], repeats: number): void {
  console.log(`\n${title}: ${count} ${unit}, ${tokens} tokens (mean ${(tokens / count).toFixed(0)}/row), median of ${repeats}`);
  for (let v = 0; v < variants.length; v++) {
    const ratio = v === 0 ? '' : `   default is ${(seconds[v] / seconds[0]).toFixed(2)}x faster`;
    console.log(`  ${variants[v].label.padEnd(34)} ${seconds[v].toFixed(3)} s  ${(count / seconds[v]).toFixed(1).padStart(9)} ${unit}/s${ratio}`);
  }
}

async function benchEncoder(title: string, dir: string, input: string[], repeats: number): Promise<void> {
  const enc = await Encoder.load(dir);
  const batch = await enc.tokenizer.encodeBatch(input, { maxLength: enc.maxLength });
  const variants: Variant[] = [
    { label: 'default (token budget by device)', options: {} },
    { label: 'padded (one batch, global max)', options: { batchTokens: 2 ** 40, maxRows: input.length } },
    { label: 'batch-1 (one row per forward)', options: { batchTokens: 1 } },
  ];
  const seconds = await measure((o) => enc.embed(input, o), () => enc.embed(input.slice(0, 2)), variants, repeats);
  report(title, 'embeddings', input.length, batch.ids.length, variants, seconds, repeats);
}

async function benchCross(title: string, dir: string, queries: string[], passages: string[], maxLength: number, repeats: number): Promise<void> {
  const ce = await CrossEncoder.load(dir);
  const batch = await ce.tokenizer.encodePairs(queries, passages, { maxLength });
  const variants: Variant[] = [
    { label: 'default (token budget by device)', options: { maxLength } },
    { label: 'padded (one batch, global max)', options: { maxLength, batchTokens: 2 ** 40, maxRows: queries.length } },
    { label: 'batch-1 (one row per forward)', options: { maxLength, batchTokens: 1 } },
  ];
  const warm = () => ce.score(queries.slice(0, 2), passages.slice(0, 2), { maxLength });
  const seconds = await measure((o) => ce.score(queries, passages, o), warm, variants, repeats);
  report(title, 'pairs', queries.length, batch.ids.length, variants, seconds, repeats);
}

const info = engineInfo();
console.log(`gainrag ${info.version}, LibTorch ${info.torch}, ${info.threads} threads, BLAS ${info.blas}, load average ${loadavg()[0].toFixed(1)} on ${cpus().length} cores`);
await benchEncoder('bert-tiny fixture, mean pooling', path.join(fixtures, 'bert-tiny'), texts(tinyTexts, 4, 100, 1), rounds);
{
  const q = texts(tinyTexts, 3, 12, 2);
  await benchCross('xlmr-tiny-reranker fixture', path.join(fixtures, 'xlmr-tiny-reranker'), q, texts(tinyTexts, 10, 110, 3), 128, rounds);
}
if (withBase) {
  const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-bench-encoder-'));
  try {
    const bertDir = path.join(scratch, 'bert-base');
    const xlmrDir = path.join(scratch, 'xlmr-base');
    mkdirSync(bertDir);
    mkdirSync(xlmrDir);
    writeBaseModel('bert', bertDir);
    writeBaseModel('xlm-roberta', xlmrDir);
    await benchEncoder('BERT-base shape (random weights), mean pooling', bertDir, texts(baseTexts, 30, 126, 4), baseRounds);
    await benchCross('XLM-R-base shape (random weights), cross-encoder', xlmrDir, texts(baseTexts, 4, 12, 5), texts(baseTexts, 20, 116, 6), 128, baseRounds);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
