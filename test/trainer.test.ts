// SelectorTrainer: parity of three KD steps with transformers + torch.optim.AdamW (fixture),
// learning on a generated task, checkpoints that CrossEncoder reloads, the schedule, gradient
// accumulation, gradient checkpointing, data validation, group sampling and bad input. Expected numbers come from the
// fixture or from the task's own definition, never from the code under test.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { CrossEncoder, GainragError, hasCode, loadTrainingData, readSafetensors, SelectorTrainer, type TrainRecord } from '../lib/index.js';
import { Rng } from '../lib/training/prng.js';
import { epochOrder, sampleBatch, sampleGroup } from '../lib/training/sampling.js';
import { fixture, maxRelDiff, readReference } from './helpers.js';

interface KdRef {
  pairs: [string, string][];
  group_size: number;
  batch_size: number;
  teacher_scores: number[][];
  losses_per_step: number[];
  scores_after_3_steps: number[][];
}

const kd = readReference<{ kd_training: KdRef }>('xlmr-tiny-reranker').kd_training;
const model = fixture('xlmr-tiny-reranker');
const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-trainer-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

// The fixture's optimizer: AdamW lr 1e-3, wd 0.01 (not biases/LayerNorm), no warmup/decay, no clipping.
const fixtureOptions = { lr: 1e-3, weightDecay: 0.01, schedule: 'constant' as const, maxGradNorm: 0, maxLength: 64 };

function fixtureGroups() {
  const G = kd.group_size;
  return Array.from({ length: kd.batch_size }, (_, i) => ({
    query: kd.pairs[i * G][0],
    passages: kd.pairs.slice(i * G, (i + 1) * G).map((p) => p[1]),
    teacherScores: kd.teacher_scores[i],
  }));
}

const centred = (rows: number[][]) => rows.flatMap((r) => r.map((x) => x - r.reduce((a, b) => a + b, 0) / r.length));
const chunk = (a: ArrayLike<number>, n: number) => Array.from({ length: a.length / n }, (_, i) => Array.from(a).slice(i * n, (i + 1) * n));

test('KD parity: 3 AdamW steps match transformers (losses; scores after 3 steps)', async () => {
  const t = await SelectorTrainer.create(model, fixtureOptions);
  const groups = fixtureGroups();
  const losses: number[] = [];
  for (let s = 0; s < 3; s++) {
    const r = await t.step(groups);
    assert.equal(r.updated, true);
    assert.equal(r.lr, 1e-3);
    assert.ok(r.gradNorm !== null && r.gradNorm > 0);
    losses.push(r.loss);
  }
  assert.ok(maxRelDiff(losses, kd.losses_per_step) < 1e-4, `losses ${losses} vs ${kd.losses_per_step}`);
  const scores = await t.score(kd.pairs.map((p) => p[0]), kd.pairs.map((p) => p[1]));
  const got = chunk(scores, kd.group_size);
  // The loss is invariant to a shift of all scores, so the classifier's output bias has an
  // exactly-zero true gradient; what it receives is float rounding (~1e-8), which Adam
  // normalises into a ~lr-sized step whose sign depends on summation order. Its value after 3
  // steps therefore differs between any two implementations (here by ~8e-4, equal for every
  // pair). Everything the loss determines (scores within each group) must match.
  const shift = got.flat().map((x, i) => x - kd.scores_after_3_steps.flat()[i]);
  const spread = Math.max(...shift) - Math.min(...shift);
  assert.ok(spread < 1e-5, `raw differences are not a common shift: ${shift}`);
  assert.ok(Math.abs(shift[0]) < 3e-3, `common shift ${shift[0]} larger than 3 Adam steps of lr 1e-3`);
  const rel = maxRelDiff(centred(got), centred(kd.scores_after_3_steps));
  assert.ok(rel < 1e-4, `group-centred scores differ by ${rel} relative`);
  console.log(`kd parity: losses max rel diff ${maxRelDiff(losses, kd.losses_per_step).toExponential(2)}, centred scores ${rel.toExponential(2)}, output-bias shift ${shift[0].toExponential(2)}`);
});

test('a checkpoint reloads in CrossEncoder.load with identical scores; re-saving replaces it atomically', async () => {
  const t = await SelectorTrainer.create(model, fixtureOptions);
  await t.step(fixtureGroups());
  const dir = path.join(scratch, 'ckpt');
  await t.save(dir);
  await t.save(dir, { withState: true, files: { 'note.json': '{}' } });
  assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors', 'note.json', 'optimizer.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  assert.deepEqual(readdirSync(scratch).filter((n) => n.includes('.tmp-') || n.includes('.old-')), []);
  const q = kd.pairs.map((p) => p[0]);
  const p = kd.pairs.map((x) => x[1]);
  const expected = await t.score(q, p);
  const ce = await CrossEncoder.load(dir);
  const got = await ce.score(q, p, { maxLength: 64 });
  // Same weights, two code paths: the trainer scores with its unfused training modules,
  // CrossEncoder with the fused inference encoder. Summation order differs, so the scores agree
  // to float32 rounding (~1e-7 measured), not bitwise; 1e-5 relative is far below the training
  // change checked next (> 1e-3).
  assert.equal(got.length, expected.length);
  assert.ok(maxRelDiff(got, expected, 1e-3) < 1e-5, `max rel diff ${maxRelDiff(got, expected, 1e-3)}`);
  const untrained = await (await CrossEncoder.load(model)).score(q, p, { maxLength: 64 });
  assert.ok(maxRelDiff(got, untrained) > 1e-3, 'the saved weights are the trained ones');
});

test('loadState restores weights and optimizer: continuing matches an uninterrupted run bitwise', async () => {
  const groups = fixtureGroups();
  const a = await SelectorTrainer.create(model, fixtureOptions);
  for (let s = 0; s < 2; s++) await a.step(groups);
  const dir = path.join(scratch, 'state');
  await a.save(dir, { withState: true });
  const third = (await a.step(groups)).loss;
  const b = await SelectorTrainer.create(model, fixtureOptions);
  await b.loadState(dir);
  assert.equal(b.optimizerStep, 2);
  const resumed = await b.step(groups);
  assert.equal(resumed.loss, third);
  const pairsQ = kd.pairs.map((p) => p[0]);
  const pairsP = kd.pairs.map((p) => p[1]);
  assert.deepEqual(Array.from(await b.score(pairsQ, pairsP)), Array.from(await a.score(pairsQ, pairsP)));
});

test('linear warmup then linear decay (HF get_linear_schedule_with_warmup)', async () => {
  const t = await SelectorTrainer.create(model, { lr: 1e-3, warmupSteps: 2, totalSteps: 6, maxLength: 64 });
  const lrs: number[] = [];
  for (let s = 0; s < 6; s++) lrs.push((await t.step(fixtureGroups())).lr);
  // lambda(s) = s/2 for s < 2, else (6 - s)/4
  const expected = [0, 0.5, 1, 0.75, 0.5, 0.25].map((m) => m * 1e-3);
  assert.ok(maxRelDiff(lrs, expected, 1e-12) < 1e-12, `lrs ${lrs}`);
});

test('gradient accumulation over 2 micro-batches of 1 group equals one batch of 2 groups', async () => {
  const groups = fixtureGroups();
  const whole = await SelectorTrainer.create(model, fixtureOptions);
  await whole.step(groups);
  const accum = await SelectorTrainer.create(model, { ...fixtureOptions, gradAccum: 2 });
  const first = await accum.step([groups[0]]);
  assert.equal(first.updated, false);
  assert.equal(first.gradNorm, null);
  const second = await accum.step([groups[1]]);
  assert.equal(second.updated, true);
  assert.equal(second.optimizerStep, 1);
  const q = kd.pairs.map((p) => p[0]);
  const p = kd.pairs.map((x) => x[1]);
  // Centred per group: the output bias only receives rounding noise (see the parity test).
  const [a, w] = [await accum.score(q, p), await whole.score(q, p)].map((x) => centred(chunk(x, kd.group_size)));
  const diff = maxRelDiff(a, w, 1e-3);
  assert.ok(diff < 1e-4, `accumulated vs whole-batch scores differ by ${diff}`);
});

test('bfloat16 compute with fp32 master weights: first loss near fp32, training proceeds, checkpoint stays F32', async () => {
  const t = await SelectorTrainer.create(model, { ...fixtureOptions, dtype: 'bfloat16' });
  const losses: number[] = [];
  for (let s = 0; s < 3; s++) losses.push((await t.step(fixtureGroups())).loss);
  // bf16 keeps ~3 significant digits
  assert.ok(Math.abs(losses[0] - kd.losses_per_step[0]) / kd.losses_per_step[0] < 2e-2, `bf16 loss ${losses[0]}`);
  assert.ok(losses[2] < losses[0], `losses ${losses}`);
  const dir = path.join(scratch, 'bf16');
  await t.save(dir);
  const file = await readSafetensors(path.join(dir, 'model.safetensors'));
  assert.ok(file.tensors().every((x) => x.dtype === 'F32'));
  const fp32 = await (await CrossEncoder.load(dir)).score(kd.pairs.map((p) => p[0]), kd.pairs.map((p) => p[1]), { maxLength: 64 });
  const bf16 = await t.score(kd.pairs.map((p) => p[0]), kd.pairs.map((p) => p[1]));
  // 8e-2: bf16 forward against the float32 forward of the saved masters. Where the CPU has no
  // bf16 dot products (an AVX2-only EPYC) LibTorch 1.13's bf16 path measured 5.8e-2; with
  // AVX512-BF16 it stays under 5e-2. A score from other weights is off by far more.
  assert.ok(maxRelDiff(bf16, fp32, 0.1) < 8e-2, `bf16 scores track the fp32 masters: ${maxRelDiff(bf16, fp32, 0.1)} (${Array.from(bf16).slice(0, 4)} vs ${Array.from(fp32).slice(0, 4)})`);
});

// ---- gradient checkpointing ----
// Recomputing each layer in the backward pass must not change the mathematics: the same
// losses, gradient norms and resulting weights as keeping the activations.
async function threeSteps(dir: string, options: Parameters<typeof SelectorTrainer.create>[1]) {
  const t = await SelectorTrainer.create(dir, { ...fixtureOptions, ...options });
  const losses: number[] = [];
  const norms: (number | null)[] = [];
  for (let s = 0; s < 3; s++) {
    const r = await t.step(fixtureGroups());
    losses.push(r.loss);
    norms.push(r.gradNorm);
  }
  const scores = Array.from(await t.score(kd.pairs.map((p) => p[0]), kd.pairs.map((p) => p[1])));
  return { losses, norms, scores };
}

test('gradient checkpointing, dropout off: 3 steps equal 3 steps without (fp32 and bf16)', async () => {
  const plain = await threeSteps(model, {});
  const ckpt = await threeSteps(model, { gradientCheckpointing: true });
  assert.ok(maxRelDiff(ckpt.losses, plain.losses, 1e-12) <= 1e-6, `losses ${ckpt.losses} vs ${plain.losses}`);
  assert.ok(maxRelDiff(ckpt.norms as number[], plain.norms as number[], 1e-12) <= 1e-6, `grad norms ${ckpt.norms} vs ${plain.norms}`);
  assert.ok(maxRelDiff(ckpt.scores, plain.scores, 1e-6) <= 1e-6, 'scores after 3 steps');
  // and both still match transformers (the fixture)
  assert.ok(maxRelDiff(ckpt.losses, kd.losses_per_step) < 1e-4);
  const bf16 = await threeSteps(model, { dtype: 'bfloat16' });
  const bf16Ckpt = await threeSteps(model, { dtype: 'bfloat16', gradientCheckpointing: true });
  assert.ok(maxRelDiff(bf16Ckpt.losses, bf16.losses, 1e-12) <= 1e-6, `bf16 losses ${bf16Ckpt.losses} vs ${bf16.losses}`);
  assert.ok(maxRelDiff(bf16Ckpt.scores, bf16.scores, 1e-6) <= 1e-6, 'bf16 scores after 3 steps');
});

test('gradient checkpointing, dropout 0.1: the recompute replays the forward\'s dropout masks', async () => {
  // The fixture has dropout 0; a copy whose config turns it on.
  const dir = path.join(scratch, 'dropout-model');
  rmSync(dir, { recursive: true, force: true });
  const src = fixture('xlmr-tiny-reranker');
  const config = JSON.parse(readFileSync(path.join(src, 'config.json'), 'utf8'));
  mkdirSync(dir);
  for (const f of readdirSync(src)) if (f !== 'config.json') copyFileSync(path.join(src, f), path.join(dir, f));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1 }));

  const noDropout = await threeSteps(model, {});
  const plain = await threeSteps(dir, { seed: 5 });
  const ckpt = await threeSteps(dir, { seed: 5, gradientCheckpointing: true });
  const other = await threeSteps(dir, { seed: 6, gradientCheckpointing: true });
  // dropout is really on: the first loss (same weights) differs from the dropout-free one and
  // depends on the seed
  assert.ok(Math.abs(plain.losses[0] - noDropout.losses[0]) > 1e-4, `dropout changes the loss: ${plain.losses[0]} vs ${noDropout.losses[0]}`);
  assert.ok(Math.abs(other.losses[0] - plain.losses[0]) > 1e-5, 'another seed, other masks');
  // Same seed: identical forward masks give the first loss; identical *gradients* (first grad
  // norm, later losses, final weights) need the backward's recompute to draw those masks again.
  assert.ok(maxRelDiff(ckpt.losses, plain.losses, 1e-12) <= 1e-6, `losses ${ckpt.losses} vs ${plain.losses}`);
  assert.ok(maxRelDiff(ckpt.norms as number[], plain.norms as number[], 1e-12) <= 1e-6, `grad norms ${ckpt.norms} vs ${plain.norms}`);
  assert.ok(maxRelDiff(ckpt.scores, plain.scores, 1e-6) <= 1e-6, 'scores after 3 steps');
});

// ---- learning on a generated task ----
const KEYWORDS = ['license', 'software', 'copyright', 'warranty', 'program', 'source', 'code', 'free', 'work', 'public',
  'terms', 'notice', 'file', 'permission', 'distribute', 'modify', 'author', 'library', 'version', 'document'];
const FILLER = ['the', 'of', 'and', 'to', 'a', 'in', 'or', 'any', 'this', 'that', 'is', 'for', 'be', 'by', 'with', 'as', 'on', 'not', 'are', 'such'];

// Query "find KW"; the teacher prefers the one passage that contains KW. Half the negatives
// carry a different keyword, so "contains some keyword" is not enough: the pair matters.
function keywordGroup(rng: Rng, size: number) {
  const kw = KEYWORDS[rng.int(KEYWORDS.length)];
  const others = KEYWORDS.filter((w) => w !== kw);
  const pos = rng.int(size);
  const passages = Array.from({ length: size }, (_, i) => {
    const words = Array.from({ length: 6 }, () => FILLER[rng.int(FILLER.length)]);
    if (rng.next() < 0.5) words[rng.int(6)] = others[rng.int(others.length)];
    if (i === pos) words[rng.int(6)] = kw;
    return words.join(' ');
  });
  return { query: `find ${kw}`, passages, teacherScores: passages.map((_, i) => (i === pos ? 2 : 0)), pos };
}

test('learning: top-1 agreement with a keyword teacher on held-out groups rises well above the untrained model', async () => {
  const size = 4;
  const heldRng = new Rng(2024);
  const held = Array.from({ length: 200 }, () => keywordGroup(heldRng, size));
  const t = await SelectorTrainer.create(model, { lr: 1e-3, weightDecay: 0.01, schedule: 'constant', maxGradNorm: 1, maxLength: 64 });
  const agreement = async () => {
    const s = await t.score(held.flatMap((g) => g.passages.map(() => g.query)), held.flatMap((g) => g.passages));
    let hits = 0;
    held.forEach((g, i) => {
      let best = 0;
      for (let j = 1; j < size; j++) if (s[i * size + j] > s[i * size + best]) best = j;
      if (best === g.pos) hits++;
    });
    return hits / held.length;
  };
  const before = await agreement();
  const rng = new Rng(7);
  for (let s = 0; s < 300; s++) await t.step(Array.from({ length: 8 }, () => keywordGroup(rng, size)));
  const trained = await agreement();
  console.log(`learning: held-out top-1 agreement ${before.toFixed(3)} untrained -> ${trained.toFixed(3)} after 300 steps (chance 0.25)`);
  assert.ok(trained >= 0.75 && trained >= before + 0.4, `top-1 agreement ${before} -> ${trained}`);
});

// ---- data, sampling, bad input ----
function writeJsonl(name: string, lines: string[]): string {
  const file = path.join(scratch, name);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

const good = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ query: 'q', pos: ['p'], neg: ['n1', 'n2'], pos_scores: [0], neg_scores: [-1, -2], ...extra });

test('training data: every malformed line is reported with FILE:LINE before training starts', async () => {
  const file = writeJsonl('bad.jsonl', [
    good(),
    '{"query": "q", "pos": ["p"],',
    good({ pos: undefined }),
    good({ neg_scores: undefined }),
    good({ neg_scores: [-1, 'x'] }),
    good({ neg: [], neg_scores: [] }),
    good({ neg_scores: [-1] }),
    '',
    good({ pos_scores: [null] }),
  ]);
  await assert.rejects(loadTrainingData(file), (err: GainragError) => {
    assert.equal(err.code, 'E_DATA');
    const m = err.message;
    assert.match(m, /bad\.jsonl:2: malformed JSON/);
    assert.match(m, /bad\.jsonl:3: missing "pos"/);
    assert.match(m, /bad\.jsonl:4: missing "neg_scores"/);
    assert.match(m, /bad\.jsonl:5: "neg_scores\[1\]" must be a finite number/);
    assert.match(m, /bad\.jsonl:6: "neg" is empty/);
    assert.match(m, /bad\.jsonl:7: "neg_scores" has 1 scores but "neg" has 2 passages/);
    assert.match(m, /bad\.jsonl:9: "pos_scores\[0\]" must be a finite number/);
    assert.doesNotMatch(m, /jsonl:1:|jsonl:8:/);
    return true;
  });
  const ok = await loadTrainingData(writeJsonl('good.jsonl', [good(), '', good({ prompt: 'x' })]));
  assert.deepEqual(ok.map((r) => r.line), [1, 3]);
  await assert.rejects(loadTrainingData(writeJsonl('empty.jsonl', [''])), (e: GainragError) => e.code === 'E_DATA');
  await assert.rejects(loadTrainingData(path.join(scratch, 'missing.jsonl')), (e: GainragError) => e.code === 'E_IO');
});

test('group sampling: positive first, negatives without replacement, repeated only when too few; deterministic', () => {
  const rec: TrainRecord = { query: 'q', pos: ['P'], neg: ['a', 'b', 'c', 'd', 'e'], posScores: [9], negScores: [1, 2, 3, 4, 5], line: 1 };
  const score = (p: string) => (p === 'P' ? 9 : 'abcde'.indexOf(p) + 1);
  for (let seed = 0; seed < 50; seed++) {
    const g = sampleGroup(rec, 4, new Rng(seed));
    assert.equal(g.passages[0], 'P');
    assert.equal(new Set(g.passages).size, 4, 'enough negatives: no repeats');
    assert.deepEqual(g.teacherScores, g.passages.map(score));
    const few = sampleGroup({ ...rec, neg: ['a', 'b'], negScores: [1, 2] }, 6, new Rng(seed));
    // 5 negatives from 2: each at most ceil(5/2) = 3 times
    for (const n of ['a', 'b']) assert.ok(few.passages.filter((x) => x === n).length <= 3);
    assert.equal(few.passages.length, 6);
  }
  assert.deepEqual(sampleGroup(rec, 4, new Rng(5)), sampleGroup(rec, 4, new Rng(5)));
  const records = Array.from({ length: 10 }, (_, i) => ({ ...rec, query: `q${i}` }));
  const o0 = epochOrder(10, 1, 0);
  assert.deepEqual([...o0].sort((a, b) => a - b), [...Array(10).keys()]);
  assert.notDeepEqual(o0, epochOrder(10, 1, 1), 'reshuffled each epoch');
  assert.deepEqual(sampleBatch(records, o0, 1, 0, 2, 4, 3), sampleBatch(records, o0, 1, 0, 2, 4, 3));
  assert.equal(sampleBatch(records, o0, 1, 0, 2, 4, 3).length, 2, 'last batch keeps the remainder');
});

test('bad input: clear errors with codes, no crash', async () => {
  await assert.rejects(SelectorTrainer.create(model, { dtype: 'float16' }), (e: Error) => hasCode(e, 'E_UNSUPPORTED') && /CUDA/.test(e.message));
  await assert.rejects(SelectorTrainer.create(model, { gradientCheckpointing: 'yes' as unknown as boolean }), TypeError);
  await assert.rejects(SelectorTrainer.create(fixture('bert-tiny')), (e: Error) => hasCode(e, 'E_MODEL_CONFIG'));
  await assert.rejects(SelectorTrainer.create(path.join(scratch, 'nope')), (e: Error) => hasCode(e, 'E_TOKENIZER') || hasCode(e, 'E_MODEL_CONFIG') || hasCode(e, 'E_IO'));
  await assert.rejects(SelectorTrainer.create(model, { lr: -1 }), RangeError);
  await assert.rejects(SelectorTrainer.create(model, { gradAccum: 0.5 }), RangeError);
  const t = await SelectorTrainer.create(model, fixtureOptions);
  const g = fixtureGroups();
  await assert.rejects(t.step([]), TypeError);
  await assert.rejects(t.step([g[0], { ...g[1], passages: g[1].passages.slice(0, 3), teacherScores: g[1].teacherScores.slice(0, 3) }]), RangeError);
  await assert.rejects(t.step([{ ...g[0], teacherScores: [0, NaN, 0, 0] }]), TypeError);
  await assert.rejects(t.step([{ query: 'q', passages: ['only one'], teacherScores: [1] }]), RangeError);
  await assert.rejects(t.loadState(path.join(scratch, 'nope')), (e: Error) => hasCode(e, 'E_IO'));
  const ctl = new AbortController();
  ctl.abort();
  await assert.rejects(t.step(g, { signal: ctl.signal }), (e: Error) => hasCode(e, 'E_CANCELLED'));
  assert.equal((await t.step(g)).optimizerStep, 1, 'the trainer still works after rejected calls');
  assert.ok(!existsSync(path.join(scratch, 'nope')));
});
