// GPU results against the CPU path on the same inputs, for every class that runs on CUDA, plus
// throughput on shapes the reference numbers use. Run on the GPU machine (no timings are
// asserted; each section prints its numbers as one JSON line and never stops the others).
//   GAINRAG_ADDON=build-gpu/Release/gainrag.node node dist/bench/gpu-check.js FIXTURES_DIR
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { engineInfo } from '../lib/engine.js';
import { Encoder } from '../lib/models/encoder.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { DenseIndex } from '../lib/retrieval/dense-index.js';
import { SelectorTrainer } from '../lib/training/selector-trainer.js';
import { uniformF32 } from './random.js';

const fixtures = process.argv[2] ?? path.resolve('..', 'shared', 'fixtures');
const ref = (name: string) => JSON.parse(readFileSync(path.join(fixtures, `${name}.reference.json`), 'utf8'));

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-3): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), floor));
  return worst;
}

async function section(name: string, fn: () => Promise<Record<string, unknown>>): Promise<void> {
  const t0 = performance.now();
  try {
    const r = await fn();
    console.log(JSON.stringify({ section: name, ok: true, ms: Math.round(performance.now() - t0), ...r }));
  } catch (err) {
    const e = err as Error & { code?: string };
    console.log(JSON.stringify({ section: name, ok: false, code: e.code, error: e.message.slice(0, 400) }));
  }
}

async function main(): Promise<void> {
  await section('engineInfo', async () => ({ ...engineInfo() }));

  await section('encoder bert-tiny cuda vs cpu', async () => {
    const r = ref('bert-tiny');
    const cpu = await (await Encoder.load(path.join(fixtures, 'bert-tiny'))).embed(r.queries);
    const out: Record<string, unknown> = {};
    for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
      const gpu = await (await Encoder.load(path.join(fixtures, 'bert-tiny'), { device: 'cuda', dtype })).embed(r.queries);
      out[`maxRel_${dtype}`] = maxRel(gpu, cpu);
    }
    out.maxRel_cpu_vs_hf = maxRel(cpu, (r.mean_pooled as number[][]).flat());
    return out;
  });

  await section('cross-encoder xlmr-tiny cuda vs cpu', async () => {
    const r = ref('xlmr-tiny-reranker');
    const q = (r.pairs as string[][]).map((p) => p[0]);
    const p = (r.pairs as string[][]).map((x) => x[1]);
    const cpu = await (await CrossEncoder.load(path.join(fixtures, 'xlmr-tiny-reranker'))).score(q, p, { maxLength: 64 });
    const out: Record<string, unknown> = { maxRel_cpu_vs_hf: maxRel(cpu, r.scores) };
    for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
      const gpu = await (await CrossEncoder.load(path.join(fixtures, 'xlmr-tiny-reranker'), { device: 'cuda', dtype })).score(q, p, { maxLength: 64 });
      out[`maxRel_${dtype}`] = maxRel(gpu, cpu);
    }
    return out;
  });

  await section('causal-lm llama-tiny cuda vs cpu', async () => {
    const r = ref('llama-tiny');
    const item = { standardPrompt: r.standard_prompt, contextPrompts: r.context_prompts, answers: r.answers };
    const cpuLm = await CausalLM.load(path.join(fixtures, 'llama-tiny'));
    const gpuLm = await CausalLM.load(path.join(fixtures, 'llama-tiny'), { device: 'cuda' });
    const [cpu] = await cpuLm.contrastivePerplexity([item]);
    const [gpu] = await gpuLm.contrastivePerplexity([item]);
    const gc = await cpuLm.generate(r.context_prompts.slice(0, 2), { maxNewTokens: 8 });
    const gg = await gpuLm.generate(r.context_prompts.slice(0, 2), { maxNewTokens: 8 });
    return {
      maxRel_ppl: maxRel(gpu.min, cpu.min),
      maxRel_cpu_vs_hf: maxRel(cpu.min, r.contrastive_ppl_min_over_answers),
      greedy_equal: JSON.stringify(gc.tokenIds) === JSON.stringify(gg.tokenIds),
    };
  });

  await section('dense index cuda vs cpu (N=200k, d=768, Q=256, k=100)', async () => {
    const n = 200_000, d = 768, q = 256, k = 100;
    const vectors = uniformF32(n * d, 1);
    const queries = uniformF32(q * d, 2);
    const out: Record<string, unknown> = {};
    const cpu = await DenseIndex.fromVectors(vectors, d);
    const t0 = performance.now();
    const rc = await cpu.search(queries, k);
    out.cpu_qps = q / ((performance.now() - t0) / 1000);
    for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
      const gpu = await DenseIndex.fromVectors(vectors, d, { dtype });
      gpu.setDevice('cuda');
      await gpu.search(queries, k); // warm-up
      const t1 = performance.now();
      const rg = await gpu.search(queries, k);
      const sec = (performance.now() - t1) / 1000;
      let same = 0;
      for (let i = 0; i < rc.ids.length; i++) if (rc.ids[i] === rg.ids[i]) same++;
      out[`${dtype}_id_agreement`] = same / rc.ids.length;
      out[`${dtype}_score_maxRel`] = maxRel(rg.scores, rc.scores, 1e-2);
      out[`${dtype}_qps`] = q / sec;
    }
    return out;
  });

  await section('selector training kd parity on cuda', async () => {
    const r = ref('xlmr-tiny-reranker').kd_training;
    const trainer = await SelectorTrainer.create(path.join(fixtures, 'xlmr-tiny-reranker'), {
      lr: 1e-3, weightDecay: 0.01, schedule: 'constant', warmupSteps: 0, maxGradNorm: 0, device: 'cuda', maxLength: 64,
    });
    const groups = [0, 1].map((b) => ({
      query: r.pairs[b * r.group_size][0] as string,
      passages: (r.pairs as string[][]).slice(b * r.group_size, (b + 1) * r.group_size).map((p) => p[1]),
      teacherScores: r.teacher_scores[b] as number[],
    }));
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) losses.push((await trainer.step(groups)).loss);
    return { maxRel_losses: maxRel(losses, r.losses_per_step) };
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
