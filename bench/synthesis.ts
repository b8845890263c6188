// Gain-scored questions per second through the synthesize pipeline (prompt building, passage
// truncation, tokenisation, contrastive perplexity, JSONL output), on CPU with the llama-tiny
// fixture and real SQuAD questions/passages, versus the same pipeline with the reference
// scoring method (one full forward per prompt per answer, logits everywhere, batch size 1), in
// one run, on the same questions. Answer generation is stubbed out (it is the same work for both;
// this measures the gain signal). Then the number of gold answers grows 1 -> 10: the engine
// prefills every prompt once whatever the count (its prefill counter stays flat), the reference
// scales with it. At 1 answer both do the same model work (the engine runs the answer inside the
// prefill) except the lm_head over every prompt position, so expect a ratio a little above 1 there.
// Last, shared-prefix prefill: the same pipeline with a Llama-3-style chat template (header +
// system prompt before every prompt) and top-20 passages, sharing on vs off on the same
// questions: prefill tokens per question and q/s, for the fixture and for a 512-wide random
// Llama (where per-token GEMM work dominates).
//   node dist/bench/synthesis.js [--questions 8] [--scaling-questions 4] [--top-k 5] [--repeats 3]
//                                [--share-questions 4] [--share-top-k 20] [--no-wide] [--only-sharing]
// Kernel-level numbers for a Llama-shaped random model are in bench/causal-lm.ts.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CausalLM } from '../lib/models/causal-lm.js';
import { synthesize, type SynthesisModel } from '../lib/pipeline/synthesize.js';
import type { TextGenerator } from '../lib/pipeline/openai-generate.js';
import { engineInfo } from '../lib/engine.js';
import { dataDir, fixture } from '../test/helpers.js';
import { encodeSafetensors, type F32Tensor } from '../lib/convert/llama2c.js';
import { uniformF32 } from './random.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const questions = arg('questions', 8);
const scalingQuestions = arg('scaling-questions', 4);
const topK = arg('top-k', 5);
const repeats = arg('repeats', 3);
const shareQuestions = arg('share-questions', 4);
const shareTopK = arg('share-top-k', 20);

const noGeneration: TextGenerator = { description: 'none', generate: async (prompts) => prompts.map(() => '') };

function readJsonl(file: string): any[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  return readFileSync(file, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l));
}

/** Retrieval-format input: real SQuAD questions, gold passage first plus topK-1 others. */
function writeInput(dir: string, n: number, answersPerQuestion?: number, k = topK, stride = 7): string {
  const qs = readJsonl(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'));
  const ps = readJsonl(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'));
  const at = new Map(ps.map((p, i) => [p.id as string, i]));
  const lines: string[] = [];
  for (let i = 0; lines.length < n; i += stride) {
    const q = qs[i];
    const gold = at.get(q.gold_passage_ids[0])!;
    const ctxs = Array.from({ length: k }, (_, r) => {
      const p = ps[(gold + r * 3) % ps.length];
      return { id: p.id, title: p.title, text: p.text, score: k - r, hasanswer: r === 0 };
    });
    let answers: string[] = q.answers;
    if (answersPerQuestion !== undefined) {
      // Aliases: the gold answers, then answers of the following questions (distinct strings).
      const pool = new Set<string>(q.answers);
      for (let j = i + 1; pool.size < answersPerQuestion; j++) for (const a of qs[j].answers) pool.add(a);
      answers = [...pool].slice(0, answersPerQuestion);
    }
    lines.push(JSON.stringify({ question: q.question, answers, ctxs }));
  }
  const file = path.join(dir, `in-${n}-${answersPerQuestion ?? 'gold'}-${k}-${stride}.jsonl`);
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

function withMethod(lm: CausalLM, method: 'cached' | 'reference', sharePrefix = true): SynthesisModel {
  return {
    contextLength: lm.contextLength,
    tokenizer: lm.tokenizer,
    applyChatTemplate: (m, o) => lm.applyChatTemplate(m, o),
    generate: (p, o) => lm.generate(p, o),
    contrastivePerplexity: (items, o) => lm.contrastivePerplexity(items, { ...o, method, sharePrefix }),
  };
}

// A Llama-3-style template (header tokens, system turn, user turn, assistant header), written
// here: the fixture has none, and real synthesis runs chat-templated prompts.
const CHAT_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}" +
  '{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}';

/** A model directory: `weights` (a dir with config.json + model.safetensors) and the fixture's tokenizer with a chat template. */
function templatedModel(dir: string, name: string, weights: string): string {
  const out = path.join(dir, name);
  mkdirSync(out);
  for (const f of ['config.json', 'model.safetensors']) symlinkSync(path.join(weights, f), path.join(out, f));
  const tok = fixture('llama-tiny');
  symlinkSync(path.join(tok, 'tokenizer.json'), path.join(out, 'tokenizer.json'));
  const config = JSON.parse(readFileSync(path.join(tok, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(path.join(out, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: CHAT_TEMPLATE }));
  return out;
}

/** Random Llama weights, hidden 512, 4 layers, 8/2 heads, vocab 32000 (token ids < 1000 are used). */
function writeWideWeights(dir: string): string {
  const out = path.join(dir, 'wide-weights');
  mkdirSync(out);
  const h = 512, f = 1376, layers = 4, heads = 8, kv = 2, vocab = 32000, hd = h / heads;
  let seed = 1;
  const rand = (name: string, shape: number[], scale: number): F32Tensor => {
    const data = uniformF32(shape.reduce((a, b) => a * b, 1), seed++);
    for (let i = 0; i < data.length; i++) data[i] *= 2 * scale;
    return { name, shape, data };
  };
  const ones = (name: string): F32Tensor => ({ name, shape: [h], data: new Float32Array(h).fill(1) });
  const t = [rand('model.embed_tokens.weight', [vocab, h], 0.5), rand('lm_head.weight', [vocab, h], 0.05), ones('model.norm.weight')];
  const s = 0.5 / Math.sqrt(h);
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`;
    t.push(ones(`${p}input_layernorm.weight`), ones(`${p}post_attention_layernorm.weight`),
      rand(`${p}self_attn.q_proj.weight`, [h, h], s), rand(`${p}self_attn.k_proj.weight`, [kv * hd, h], s),
      rand(`${p}self_attn.v_proj.weight`, [kv * hd, h], s), rand(`${p}self_attn.o_proj.weight`, [h, h], s),
      rand(`${p}mlp.gate_proj.weight`, [f, h], s), rand(`${p}mlp.up_proj.weight`, [f, h], s), rand(`${p}mlp.down_proj.weight`, [h, f], 0.5 / Math.sqrt(f)));
  }
  writeFileSync(path.join(out, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: h, intermediate_size: f, num_hidden_layers: layers,
    num_attention_heads: heads, num_key_value_heads: kv, vocab_size: vocab, max_position_embeddings: 2048, rms_norm_eps: 1e-5,
    rope_theta: 500000, tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 2,
  }));
  writeFileSync(path.join(out, 'model.safetensors'), encodeSafetensors(t));
  return out;
}

// Sharing on vs off through the whole pipeline (chat template on), alternating, best of
// `repeats` each; the outputs must agree (PPL_CD and retrieved_ppl within float rounding).
async function compareSharing(lm: CausalLM, data: string, dir: string) {
  const run = async (share: boolean) => {
    const before = lm.stats();
    const out = path.join(dir, `out-share-${share}.jsonl`);
    const t = process.hrtime.bigint();
    const s = await synthesize(withMethod(lm, 'cached', share), {
      data, out, topK: shareTopK, pseudoPassage: false, chatTemplate: 'auto', generator: noGeneration, batchQuestions: 8,
    });
    const seconds = Number(process.hrtime.bigint() - t) / 1e9;
    const after = lm.stats();
    const scores: number[] = readJsonl(out).flatMap((r) => r.passages.flatMap((p: { PPL_CD: number; retrieved_ppl: number }) => [p.PPL_CD, p.retrieved_ppl]));
    return { qps: s.written / seconds, seconds, questions: s.written, prefillTokensPerQuestion: (after.prefillTokens - before.prefillTokens) / s.written, scores };
  };
  let on: Awaited<ReturnType<typeof run>> | undefined;
  let off: typeof on;
  for (let i = 0; i < repeats; i++) {
    const a = await run(false);
    if (!off || a.qps > off.qps) off = a;
    const b = await run(true);
    if (!on || b.qps > on.qps) on = b;
  }
  let worst = 0;
  on!.scores.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - off!.scores[i]) / Math.abs(off!.scores[i]))));
  return { on: on!, off: off!, maxRelDiff: worst };
}

// Engine and reference method on the same questions, runs alternating, best of `repeats` each
// (short runs repeat until they have had ~2 s): the machine is shared, and the best run is the
// least disturbed one.
async function compare(lm: CausalLM, data: string, dir: string) {
  let cached: Awaited<ReturnType<typeof runOnce>> | undefined;
  let reference: typeof cached;
  let spent = 0;
  for (let i = 0; i < repeats || (spent < 2 && i < 20); i++) {
    const c = await runOnce(lm, 'cached', data, dir);
    if (!cached || c.qps > cached.qps) cached = c;
    const r = await runOnce(lm, 'reference', data, dir);
    if (!reference || r.qps > reference.qps) reference = r;
    spent += c.seconds + r.seconds;
  }
  return { cached: cached!, reference: reference! };
}

async function runOnce(lm: CausalLM, method: 'cached' | 'reference', data: string, dir: string) {
  const before = lm.stats();
  const t = process.hrtime.bigint();
  const s = await synthesize(withMethod(lm, method), {
    data, out: path.join(dir, `out-${method}.jsonl`), topK, pseudoPassage: false, chatTemplate: 'none', generator: noGeneration, batchQuestions: 8,
  });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  const after = lm.stats();
  return {
    questions: s.written, seconds, qps: s.written / seconds,
    prefillsPerQuestion: (after.promptPrefills - before.promptPrefills) / s.written,
    lmHeadRowsPerQuestion: (after.lmHeadRows - before.lmHeadRows) / s.written,
    truncated: s.truncatedPassages,
  };
}

async function main(): Promise<void> {
  const info = engineInfo();
  const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-bench-synth-'));
  try {
    const lm = await CausalLM.load(fixture('llama-tiny'));
    process.stdout.write(`synthesize pipeline, PPL part, CPU (libtorch ${info.torch}, ${info.threads} threads); llama-tiny fixture, ` +
      `SQuAD questions, top-${topK} passages (+1 standard prompt), context 512 (long passages truncated)\n`);
    let cached, reference;
    const scaling = [];
    if (!process.argv.includes('--only-sharing')) {
      await runOnce(lm, 'cached', writeInput(dir, 2), dir); // warm-up (threads, allocator)
      await runOnce(lm, 'reference', writeInput(dir, 2), dir);
      ({ cached, reference } = await compare(lm, writeInput(dir, questions), dir));
      process.stdout.write(
        `gold answers     engine ${cached.qps.toFixed(2)} q/s | reference method ${reference.qps.toFixed(2)} q/s ` +
          `(same ${cached.questions} q) | x${(cached.qps / reference.qps).toFixed(2)} | prefills/q ${cached.prefillsPerQuestion.toFixed(1)} vs ` +
          `${reference.prefillsPerQuestion.toFixed(1)}\n`,
      );
      for (const answers of [1, 5, 10]) {
        const { cached: c, reference: r } = await compare(lm, writeInput(dir, scalingQuestions, answers), dir);
        scaling.push({ answers, engineQps: +c.qps.toFixed(3), referenceQps: +r.qps.toFixed(3), speedup: +(c.qps / r.qps).toFixed(2),
          enginePrefillsPerQuestion: c.prefillsPerQuestion, referencePrefillsPerQuestion: r.prefillsPerQuestion });
        process.stdout.write(
          `${String(answers).padStart(2)} answers/q    engine ${c.qps.toFixed(2).padStart(7)} q/s, ${c.prefillsPerQuestion.toFixed(0)} prefills/q | ` +
            `reference ${r.qps.toFixed(3).padStart(7)} q/s, ${r.prefillsPerQuestion.toFixed(0)} prefills/q | x${(c.qps / r.qps).toFixed(2)}\n`,
        );
      }
    }
    const sharing = [];
    // Questions far apart (other articles): no passage recurs across questions, so what is
    // shared is the chat header, system prompt, labels and titles, not whole passages.
    const shareData = writeInput(dir, shareQuestions, undefined, shareTopK, 1201);
    const models: [string, string][] = [['llama-tiny fixture (hidden 64)', templatedModel(dir, 'tiny', fixture('llama-tiny'))]];
    if (!process.argv.includes('--no-wide')) models.push(['random Llama (hidden 512, 4 layers)', templatedModel(dir, 'wide', writeWideWeights(dir))]);
    for (const [label, modelDir] of models) {
      const m = await CausalLM.load(modelDir);
      await compareSharing(m, writeInput(dir, 1, undefined, 3), dir); // warm-up
      const { on, off, maxRelDiff } = await compareSharing(m, shareData, dir);
      sharing.push({ label, questions: on.questions, prefillTokensPerQuestionUnshared: +off.prefillTokensPerQuestion.toFixed(1),
        prefillTokensPerQuestionShared: +on.prefillTokensPerQuestion.toFixed(1), qpsUnshared: +off.qps.toFixed(3), qpsShared: +on.qps.toFixed(3),
        speedup: +(on.qps / off.qps).toFixed(2), maxRelDiff });
      process.stdout.write(
        `shared prefix, ${label}, chat template, top-${shareTopK}: prefill tokens/q ${off.prefillTokensPerQuestion.toFixed(0)} -> ` +
          `${on.prefillTokensPerQuestion.toFixed(0)} (x${(off.prefillTokensPerQuestion / on.prefillTokensPerQuestion).toFixed(2)} fewer) | ` +
          `${off.qps.toFixed(2)} -> ${on.qps.toFixed(2)} q/s (x${(on.qps / off.qps).toFixed(2)}, same ${on.questions} q) | max rel diff ${maxRelDiff.toExponential(1)}\n`,
      );
    }
    process.stdout.write(`${JSON.stringify({ bench: 'synthesis', topK, cached, reference, scaling, sharing })}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
