// Greedy generation throughput (new tokens/s) on CPU: continuous batching (every prompt in one
// engine call: a pool of slots, a finished answer's slot refilled at once) against one prompt at
// a time through the same engine, in one run, on the same prompts; the tokens must be equal.
//   node dist/bench/generate.js [--prompts 48] [--max-new-tokens 64] [--story-tokens 320] [--repeats 3]
//                               [--share-prefix-only] [--no-llama-155m] [--prefix-new-tokens 16]
// Then shared-prefix prefill on vs off (CausalLM.generate's sharePrefix, native/models/llama_prefix.h)
// on SQuAD dev questions, each with its own gold passage (one question per passage: the prompts
// share only the system header and the instruction), behind a chat-style system header, alternating, on llama-tiny and on the
// random 155.7M Llama of bench/llama-cpp-peer.ts (bench/random-llama.ts): prefill tokens the
// engine ran, wall time, and whether the tokens are equal.
// Models: stories260K (a real, trained llama2.c model converted here: its answers stop at EOS
// after varying lengths, which is what continuous batching is for) and the llama-tiny fixture
// (random weights: every answer runs to the limit). Prompts: the reference's evaluation prompt
// over each bundled demo question's gold passage, and for stories260K (512 positions, a
// 512-token vocabulary) story openings built from the questions.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CausalLM } from '../lib/models/causal-lm.js';
import { convertLlama2c } from '../lib/convert/llama2c.js';
import { engineInfo } from '../lib/engine.js';
import { evaluationPrompt, taskInstruction } from '../lib/pipeline/prompts.js';
import { fixture, repoRoot } from '../test/helpers.js';
import { ISSUE_SHAPE, writeRandomLlama } from './random-llama.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
const count = arg('prompts', 48);
const maxNewTokens = arg('max-new-tokens', 64);
// stories260K tells stories of ~100-300 tokens: a limit past that lets EOS decide.
const storyTokens = arg('story-tokens', 320);
const repeats = arg('repeats', 3);

function demoQuestions(n: number): { question: string; title: string; text: string }[] {
  const read = (f: string) => readFileSync(path.join(repoRoot, 'data', 'demo', f), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const passages = new Map<string, { title: string; text: string }>(read('passages.jsonl').map((p: { id: string; title: string; text: string }) => [p.id, p]));
  return read('questions.jsonl').slice(0, n).map((q: { question: string; gold_passage_ids: string[] }) => ({ question: q.question, ...passages.get(q.gold_passage_ids[0])! }));
}

async function measure(name: string, lm: CausalLM, prompts: string[], maxNewTokens: number) {
  // Prompts must leave room for the new tokens; cut characters until they do (tokens ~ chars here).
  const fitted: string[] = [];
  for (const p of prompts) {
    let s = p;
    for (;;) {
      const [ids] = await lm.tokenizer.encodeRaw([s]);
      if (ids.length + maxNewTokens <= lm.contextLength) break;
      s = s.slice(ids.length + maxNewTokens - lm.contextLength + 8);
    }
    fitted.push(s);
  }
  await lm.generate(fitted.slice(0, 2), { maxNewTokens: 4 }); // warm-up
  let best = { batched: Infinity, single: Infinity, prefillBatched: Infinity, prefillSingle: Infinity };
  let tokens = 0;
  let lengths: number[] = [];
  let equal = true;
  for (let r = 0; r < repeats; r++) {
    let t0 = performance.now();
    const batched = await lm.generate(fitted, { maxNewTokens });
    const tb = (performance.now() - t0) / 1000;
    const steps = lm.lastStats!.decodeSteps;
    t0 = performance.now();
    const single: number[][] = [];
    for (const p of fitted) single.push((await lm.generate([p], { maxNewTokens })).tokenIds[0]);
    const ts = (performance.now() - t0) / 1000;
    // The prefill share: the same calls with one new token (no decode step).
    t0 = performance.now();
    await lm.generate(fitted, { maxNewTokens: 1 });
    const pb = (performance.now() - t0) / 1000;
    t0 = performance.now();
    for (const p of fitted) await lm.generate([p], { maxNewTokens: 1 });
    const ps = (performance.now() - t0) / 1000;
    best = { batched: Math.min(best.batched, tb), single: Math.min(best.single, ts), prefillBatched: Math.min(best.prefillBatched, pb), prefillSingle: Math.min(best.prefillSingle, ps) };
    lengths = batched.tokenIds.map((t) => t.length);
    tokens = lengths.reduce((a, b) => a + b, 0);
    equal &&= JSON.stringify(single) === JSON.stringify(batched.tokenIds);
    if (r === 0) process.stdout.write(`  ${name}: ${fitted.length} prompts, answers ${Math.min(...lengths)}..${Math.max(...lengths)} tokens (mean ${(tokens / lengths.length).toFixed(1)}), ${steps} batched decode steps\n`);
  }
  const rb = tokens / best.batched, rs = tokens / best.single;
  process.stdout.write(`  ${name}: continuous batching ${rb.toFixed(0)} tokens/s, one prompt at a time ${rs.toFixed(0)} tokens/s, ratio ${(rb / rs).toFixed(2)}x, tokens equal: ${equal}\n`);
  // Decode alone: time past the prefill (the prefill is the same work on both paths).
  const db = (tokens - fitted.length) / Math.max(best.batched - best.prefillBatched, 1e-9), ds = (tokens - fitted.length) / Math.max(best.single - best.prefillSingle, 1e-9);
  const decode = best.prefillBatched < 0.9 * best.batched && best.prefillSingle < 0.9 * best.single ? `; decode alone ${db.toFixed(0)} vs ${ds.toFixed(0)} tokens/s, ratio ${(db / ds).toFixed(2)}x` : ' (noisy timings: decode share not shown)';
  process.stdout.write(`  ${name}: prefill ${best.prefillBatched.toFixed(2)} s / ${best.prefillSingle.toFixed(2)} s of ${best.batched.toFixed(2)} s / ${best.single.toFixed(2)} s${decode}\n`);
  return { name, batched: rb, single: rs, ratio: rb / rs, equal };
}

// A system header in front of every prompt, as a chat model's template puts one (the fixture
// models have no chat template of their own).
const SYSTEM_HEADER = '<|system|>\nYou are a careful assistant. Answer the question from the passages below; if they do not ' +
  'contain the answer, say so. Answer in a few words, without explanation.\n<|user|>\n';

/** The header + evaluation prompt per question, each passage cut (at its end) until prompt and answer fit the model. */
async function ragPrompts(lm: CausalLM, qs: { question: string; title: string; text: string }[], maxNew: number): Promise<string[]> {
  const instruction = taskInstruction('QA');
  const out: string[] = [];
  for (const q of qs) {
    let text = q.text;
    for (;;) {
      const p = SYSTEM_HEADER + evaluationPrompt(instruction, q.question, [{ title: q.title, text }]);
      const [ids] = await lm.tokenizer.encodeRaw([p]);
      if (ids.length + maxNew <= lm.contextLength) {
        out.push(p);
        break;
      }
      text = text.slice(0, Math.max(0, text.length - (ids.length + maxNew - lm.contextLength) - 8));
    }
  }
  return out;
}

async function measureSharedPrefix(name: string, lm: CausalLM, qs: { question: string; title: string; text: string }[], maxNew: number) {
  const prompts = await ragPrompts(lm, qs, maxNew);
  await lm.generate(prompts.slice(0, 2), { maxNewTokens: 2 }); // warm-up
  const time = { off: [] as number[], on: [] as number[] };
  const prefill = { off: 0, on: 0 };
  let tokens: Record<'off' | 'on', number[][]> = { off: [], on: [] };
  let equal = true;
  for (let r = 0; r < repeats; r++) {
    for (const mode of r % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
      const t0 = performance.now();
      const out = await lm.generate(prompts, { maxNewTokens: maxNew, sharePrefix: mode === 'on' });
      time[mode].push((performance.now() - t0) / 1000);
      prefill[mode] = lm.lastStats!.prefillTokens;
      tokens[mode] = out.tokenIds;
    }
    equal &&= JSON.stringify(tokens.on) === JSON.stringify(tokens.off);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const off = med(time.off), on = med(time.on);
  process.stdout.write(`  ${name}, shared prefix: ${prompts.length} prompts, ${maxNew} new tokens; prefill tokens run ${prefill.off} off, ` +
    `${prefill.on} on (${((100 * (prefill.off - prefill.on)) / prefill.off).toFixed(0)}% fewer); wall ${off.toFixed(2)} s off, ${on.toFixed(2)} s on ` +
    `(median of ${repeats}), ratio ${(off / on).toFixed(2)}x; tokens equal: ${equal}\n`);
  return equal;
}

/** SQuAD dev questions, one per distinct gold passage (so prompts share the header and the instruction, not a passage). */
function distinctPassageQuestions(n: number): { question: string; title: string; text: string }[] {
  const dir = path.join(repoRoot, 'test', 'data', 'squad_v1.1_dev_open');
  const read = (f: string) => readFileSync(path.join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const passages = new Map<string, { title: string; text: string }>(read('passages.jsonl').map((p: { id: string; title: string; text: string }) => [p.id, p]));
  const seen = new Set<string>();
  const out: { question: string; title: string; text: string }[] = [];
  for (const q of read('questions.jsonl') as { question: string; gold_passage_ids: string[] }[]) {
    const id = q.gold_passage_ids[0];
    if (seen.has(id) || !passages.has(id)) continue;
    seen.add(id);
    out.push({ question: q.question, ...passages.get(id)! });
    if (out.length === n) break;
  }
  return out;
}

const info = engineInfo();
process.stdout.write(`generate bench: ${info.threads} threads, LibTorch ${info.torch}, ${count} prompts, max ${storyTokens} (stories260K) / ${maxNewTokens} (llama-tiny) new tokens, best of ${repeats}\n`);
const qs = demoQuestions(count);
const instruction = taskInstruction('QA');
const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-bench-generate-'));
try {
  const out = path.join(dir, 'stories260K');
  const src = path.join(repoRoot, 'test', 'data', 'tiny_models', 'stories260K');
  await convertLlama2c({ checkpoint: path.join(src, 'stories260K.bin'), tokenizer: path.join(src, 'tok512.bin'), out });
  // llama2.c's run.c ends a story when the model emits BOS (1): make it a stop token here.
  writeFileSync(path.join(out, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 1] }));
  const prefixNew = arg('prefix-new-tokens', 16);
  const distinct = distinctPassageQuestions(count);
  const shareOnly = flag('share-prefix-only');
  const results: { name: string; equal: boolean }[] = [];
  if (!shareOnly) {
  const stories = await CausalLM.load(out);
  // BOS + a story opening; stories260K stops (EOS) when its story ends.
  const openings = qs.map((q, i) => `${['Once upon a time', 'One day', 'Lily wanted to know'][i % 3]}, ${q.question.toLowerCase().replace(/\?$/, '')}.`);
  const withBos = openings.map((s) => `${stories.tokenizer.config.bosToken ?? ''}${s}`);
  results.push(await measure('stories260K', stories, withBos, storyTokens));
  }
  const tiny = await CausalLM.load(fixture('llama-tiny'));
  if (!shareOnly) results.push(await measure('llama-tiny (random weights)', tiny, qs.map((q) => evaluationPrompt(instruction, q.question, [{ title: q.title, text: q.text }])), maxNewTokens));
  results.push({ name: 'llama-tiny shared prefix', equal: await measureSharedPrefix('llama-tiny (random weights)', tiny, distinct, prefixNew) });
  if (!flag('no-llama-155m')) {
    const big = path.join(dir, 'llama-155m');
    mkdirSync(big);
    writeRandomLlama(big, ISSUE_SHAPE);
    const lm = await CausalLM.load(big);
    results.push({ name: 'llama-155m shared prefix', equal: await measureSharedPrefix('random Llama 155.7M (h1024 L8 16/4 ff2816 V32000)', lm, distinct, prefixNew) });
    lm.dispose();
  }
  if (results.some((r) => !r.equal)) {
    process.stderr.write(`generate bench: tokens differ (${results.filter((r) => !r.equal).map((r) => r.name).join(', ')})\n`);
    process.exitCode = 1;
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
