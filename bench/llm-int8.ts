// Dynamic int8 for the LLM (CausalLM dtype 'int8', opt-in) against float32 and bfloat16 in one run:
//   node dist/bench/llm-int8.js [--rounds 3] [--reference-prompts 8] [--no-speed]
// Accuracy:
// - stories260K (the bundled llama2.c model, trained on TinyStories, converted here): perplexity of
//   the continuation of hand-written TinyStories-style stories given their first sentence
//   (contrastivePerplexity's plain perplexity), per dtype;
// - the random Llama 155.7M of bench/llama-cpp-peer.ts (bench/random-llama.ts): max abs difference
//   of last-position log-probs from a float64 forward (bench/llama-reference.ts) on the reference's
//   top 20 tokens, per 32-token prompt (worst / mean), and the greedy tokens' agreement with fp32.
// Speed on the 155.7M model, modes alternating per round (medians): prefill 16 x 512 tokens, one
// sequence decoding 128 tokens, 8 sequences decoding 64 each, tokens/s.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { convertLlama2c } from '../lib/convert/llama2c.js';
import { engineInfo } from '../lib/engine.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { repoRoot } from '../test/helpers.js';
import { referenceLogProbs } from './llama-reference.js';
import { uniformF32 } from './random.js';
import { ISSUE_SHAPE, writeRandomLlama } from './random-llama.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const flag = (name: string) => process.argv.includes(`--${name}`);
const rounds = Number(arg('rounds', '3'));
const refPrompts = Number(arg('reference-prompts', '8'));
const dtypes = ['float32', 'bfloat16', 'int8'] as const;
type Dtype = (typeof dtypes)[number];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;

// Written for this bench in the style of TinyStories (simple words, short sentences).
const STORIES = [
  'Once upon a time, there was a little girl named Lily. She loved to play in the park with her red ball. One day, the ball rolled under a big tree. Lily looked and looked, and then she saw it behind a rock. She was very happy and ran home to tell her mom.',
  'Tom had a small dog called Max. Max liked to run and jump in the garden. One morning, Max found a stick and brought it to Tom. Tom threw the stick far away, and Max ran to get it. They played all day until the sun went down.',
  'There was a big bear who lived in the forest. The bear was hungry, so he went to look for honey. He found a tree with many bees. The bees were angry and the bear ran away. Then he found some berries and ate them all.',
  'One day, Sue and her brother went to the beach. They made a big sand castle with a tall tower. A wave came and knocked the tower down. Sue was sad, but her brother said they could build it again. They built a new castle that was even bigger.',
  'Ben wanted to fly like a bird. He made wings out of paper and jumped off a small box. He fell down on the soft grass and laughed. His mom came and gave him a hug. She said that birds are good at flying and boys are good at running.',
  'A little cat named Mia lived in a house with a kind old man. Every day, the man gave Mia a bowl of milk. One night, Mia heard a noise in the kitchen. It was a tiny mouse. Mia and the mouse became friends and shared the milk.',
];

function ragged(prompts: number[][]): { ids: Int32Array; offsets: Int32Array } {
  const offsets = new Int32Array(prompts.length + 1);
  prompts.forEach((p, i) => (offsets[i + 1] = offsets[i] + p.length));
  const ids = new Int32Array(offsets[prompts.length]);
  prompts.forEach((p, i) => ids.set(p, offsets[i]));
  return { ids, offsets };
}
function promptIds(count: number, length: number, vocab: number, seed: number): number[][] {
  const u = uniformF32(count * length, seed);
  return Array.from({ length: count }, (_, r) => Array.from({ length }, (_, i) => 3 + Math.floor((u[r * length + i] + 0.5) * (vocab - 3))));
}

const info = engineInfo();
console.log(`llm-int8 bench: gainrag ${info.version}, ${info.threads} threads, ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ` +
  `dnnl kernels: ${info.dnnlKernels || 'none'}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-llm-int8-'));
try {
  // ---- stories260K perplexity ----
  const stories = path.join(scratch, 'stories260K');
  const src = path.join(repoRoot, 'test', 'data', 'tiny_models', 'stories260K');
  await convertLlama2c({ checkpoint: path.join(src, 'stories260K.bin'), tokenizer: path.join(src, 'tok512.bin'), out: stories });
  writeFileSync(path.join(stories, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 1] }));
  const ppl: Record<Dtype, number[]> = { float32: [], bfloat16: [], int8: [] };
  for (const d of dtypes) {
    const lm = await CausalLM.load(stories, { dtype: d });
    const bos = lm.tokenizer.config.bosToken ?? '';
    const items = STORIES.map((s) => {
      const cut = s.indexOf('. ') + 1;
      return { standardPrompt: bos + s.slice(0, cut), contextPrompts: [bos + s.slice(0, cut)], answers: [s.slice(cut)] };
    });
    const res = await lm.contrastivePerplexity(items, { alpha: 0 });
    ppl[d] = res.map((r) => r.plainPerAnswer[0][0]);
    lm.dispose();
  }
  console.log(`\nstories260K: perplexity of ${STORIES.length} story continuations given their first sentence (mean; per story max |relative change| vs float32)`);
  for (const d of dtypes) {
    const rel = ppl[d].map((p, i) => Math.abs(p / ppl.float32[i] - 1));
    console.log(`  ${d.padEnd(9)} mean perplexity ${mean(ppl[d]).toFixed(4)}; vs float32 ${d === 'float32' ? '-' : `${((mean(ppl[d]) / mean(ppl.float32) - 1) * 100).toFixed(3)}% (worst story ${(Math.max(...rel) * 100).toFixed(3)}%)`}`);
  }

  // ---- the 155.7M random Llama: log-probs against float64, greedy agreement, speed ----
  const big = path.join(scratch, 'llama-155m');
  mkdirSync(big);
  writeRandomLlama(big, ISSUE_SHAPE);
  const prompts = Array.from({ length: refPrompts }, (_, i) => promptIds(1, 32, ISSUE_SHAPE.vocab, 301 + 2 * i)[0]);
  const refs = prompts.map((p) => referenceLogProbs(big, p, false));
  const models: Partial<Record<Dtype, CausalLM>> = {};
  for (const d of dtypes) models[d] = await CausalLM.load(big, { dtype: d });
  console.log(`\nrandom Llama 155.7M (h1024 L8 16/4 ff2816 V32000): last-position log-probs vs a float64 forward (top 20 of the reference), ${refPrompts} prompts of 32 tokens, worst / mean of the per-prompt max`);
  const greedyPrompts = promptIds(4, 8, ISSUE_SHAPE.vocab, 43);
  const fp32Greedy = await models.float32!.generateIds(ragged(greedyPrompts), 32);
  for (const d of dtypes) {
    const lm = models[d]!;
    const errs: number[] = [];
    for (let i = 0; i < prompts.length; i++) {
      const logits = await lm.lastLogitsIds(ragged([prompts[i]]), 1);
      let m = -Infinity, s = 0;
      for (const x of logits) m = Math.max(m, x);
      for (const x of logits) s += Math.exp(x - m);
      const lse = m + Math.log(s);
      const top = Array.from(refs[i].keys()).sort((a, b) => refs[i][b] - refs[i][a]).slice(0, 20);
      errs.push(Math.max(...top.map((t) => Math.abs(logits[t] - lse - refs[i][t]))));
    }
    const g = await lm.generateIds(ragged(greedyPrompts), 32);
    let equal = 0;
    g.forEach((row, r) => { let k = 0; while (k < row.length && row[k] === fp32Greedy[r][k]) k++; equal += k; });
    console.log(`  ${d.padEnd(9)} ${Math.max(...errs).toExponential(2)} / ${mean(errs).toExponential(2)}; greedy leading tokens equal to float32: ${equal}/${4 * 32}`);
  }

  if (!flag('no-speed')) {
    const prefill = promptIds(16, 512, ISSUE_SHAPE.vocab, 41), single = promptIds(1, 8, ISSUE_SHAPE.vocab, 43), batch = promptIds(8, 8, ISSUE_SHAPE.vocab, 47);
    const speed: Record<Dtype, { prefill: number[]; decode1: number[]; decode8: number[] }> = {
      float32: { prefill: [], decode1: [], decode8: [] }, bfloat16: { prefill: [], decode1: [], decode8: [] }, int8: { prefill: [], decode1: [], decode8: [] },
    };
    for (const d of dtypes) await models[d]!.generateIds(ragged(single), 8); // warm-up
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? dtypes : [...dtypes].reverse();
      for (const d of order) {
        const lm = models[d]!;
        let t0 = performance.now();
        await lm.lastLogitsIds(ragged(prefill), 1);
        speed[d].prefill.push((16 * 512) / ((performance.now() - t0) / 1000));
        t0 = performance.now();
        const one = await lm.generateIds(ragged(single), 128);
        speed[d].decode1.push(one[0].length / ((performance.now() - t0) / 1000));
        t0 = performance.now();
        const many = await lm.generateIds(ragged(batch), 64);
        speed[d].decode8.push(many.reduce((a, x) => a + x.length, 0) / ((performance.now() - t0) / 1000));
      }
      console.log(`  round ${r + 1}/${rounds} done, load average ${loadavg()[0].toFixed(2)}`);
    }
    console.log(`\n| tokens/s (median of ${rounds}) | float32 | bfloat16 | int8 | int8 / float32 |`);
    console.log('|---|---|---|---|---|');
    for (const [k, label] of [['prefill', 'prefill 16 x 512'], ['decode1', 'decode, 1 sequence x 128'], ['decode8', 'decode, 8 sequences x 64']] as const) {
      const v = dtypes.map((d) => median(speed[d][k]));
      console.log(`| ${label} | ${v.map((x) => x.toFixed(1)).join(' | ')} | ${(v[2] / v[0]).toFixed(2)}x |`);
    }
  }
  for (const d of dtypes) models[d]!.dispose();
  console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
