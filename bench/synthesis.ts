// Gain-scored questions per second through the synthesize pipeline (prompt building, passage
// truncation, tokenisation, contrastive perplexity, JSONL output), on CPU with the llama-tiny
// fixture and real SQuAD questions/passages, versus the same pipeline with the reference
// scoring method (one full forward per prompt per answer, logits everywhere, batch size 1), in
// one run, on the same questions. Answer generation is stubbed out (it is the same work for both;
// this measures the gain signal). Then the number of gold answers grows 1 -> 10: the engine
// prefills every prompt once whatever the count (its prefill counter stays flat), the reference
// scales with it. At 1 answer both do the same model work (the engine runs the answer inside the
// prefill) except the lm_head over every prompt position, so expect a ratio a little above 1 there.
//   node dist/bench/synthesis.js [--questions 8] [--scaling-questions 4] [--top-k 5] [--repeats 3]
// Kernel-level numbers for a Llama-shaped random model are in bench/causal-lm.ts.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CausalLM } from '../lib/models/causal-lm.js';
import { synthesize, type SynthesisModel } from '../lib/pipeline/synthesize.js';
import type { TextGenerator } from '../lib/pipeline/openai-generate.js';
import { engineInfo } from '../lib/engine.js';
import { dataDir, fixture } from '../test/helpers.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const questions = arg('questions', 8);
const scalingQuestions = arg('scaling-questions', 4);
const topK = arg('top-k', 5);
const repeats = arg('repeats', 3);

const noGeneration: TextGenerator = { description: 'none', generate: async (prompts) => prompts.map(() => '') };

function readJsonl(file: string): any[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  return readFileSync(file, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l));
}

/** Retrieval-format input: real SQuAD questions, gold passage first plus topK-1 others. */
function writeInput(dir: string, n: number, answersPerQuestion?: number): string {
  const qs = readJsonl(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'));
  const ps = readJsonl(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'));
  const at = new Map(ps.map((p, i) => [p.id as string, i]));
  const lines: string[] = [];
  for (let i = 0; lines.length < n; i += 7) {
    const q = qs[i];
    const k = at.get(q.gold_passage_ids[0])!;
    const ctxs = Array.from({ length: topK }, (_, r) => {
      const p = ps[(k + r * 3) % ps.length];
      return { id: p.id, title: p.title, text: p.text, score: topK - r, hasanswer: r === 0 };
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
  const file = path.join(dir, `in-${n}-${answersPerQuestion ?? 'gold'}.jsonl`);
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

function withMethod(lm: CausalLM, method: 'cached' | 'reference'): SynthesisModel {
  return {
    contextLength: lm.contextLength,
    tokenizer: lm.tokenizer,
    applyChatTemplate: (m, o) => lm.applyChatTemplate(m, o),
    generate: (p, o) => lm.generate(p, o),
    contrastivePerplexity: (items, o) => lm.contrastivePerplexity(items, { ...o, method }),
  };
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
    await runOnce(lm, 'cached', writeInput(dir, 2), dir); // warm-up (threads, allocator)
    await runOnce(lm, 'reference', writeInput(dir, 2), dir);
    const { cached, reference } = await compare(lm, writeInput(dir, questions), dir);
    process.stdout.write(
      `gold answers     engine ${cached.qps.toFixed(2)} q/s | reference method ${reference.qps.toFixed(2)} q/s ` +
        `(same ${cached.questions} q) | x${(cached.qps / reference.qps).toFixed(2)} | prefills/q ${cached.prefillsPerQuestion.toFixed(1)} vs ` +
        `${reference.prefillsPerQuestion.toFixed(1)}\n`,
    );
    const scaling = [];
    for (const answers of [1, 5, 10]) {
      const { cached: c, reference: r } = await compare(lm, writeInput(dir, scalingQuestions, answers), dir);
      scaling.push({ answers, engineQps: +c.qps.toFixed(3), referenceQps: +r.qps.toFixed(3), speedup: +(c.qps / r.qps).toFixed(2),
        enginePrefillsPerQuestion: c.prefillsPerQuestion, referencePrefillsPerQuestion: r.prefillsPerQuestion });
      process.stdout.write(
        `${String(answers).padStart(2)} answers/q    engine ${c.qps.toFixed(2).padStart(7)} q/s, ${c.prefillsPerQuestion.toFixed(0)} prefills/q | ` +
          `reference ${r.qps.toFixed(3).padStart(7)} q/s, ${r.prefillsPerQuestion.toFixed(0)} prefills/q | x${(c.qps / r.qps).toFixed(2)}\n`,
      );
    }
    process.stdout.write(`${JSON.stringify({ bench: 'synthesis', topK, cached, reference, scaling })}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
