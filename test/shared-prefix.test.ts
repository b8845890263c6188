// Shared-prefix prefill (native/models/llama_prefix.*): prompts of a batch that begin with the
// same tokens have that prefix run once. The numbers must not change (PPL_CD and the plain
// perplexity within 1e-5 relative, fp32) while the engine's prefill-token counter drops. Also the
// plain perplexity (`retrieved_ppl`) against an independent computation from last-position
// logits of prompt + answer.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { CausalLM, type ContrastiveItem, type ContrastiveResult } from '../lib/models/causal-lm.js';
import { retrievedPrompt, standardPrompt, taskInstruction } from '../lib/pipeline/prompts.js';
import { dataDir, fixture, maxRelDiff, readReference } from './helpers.js';

let lm: CausalLM;
const instruction = taskInstruction();
// The fixture has no chat template: a fixed header plays the part of chat header + system prompt.
const header = '<|system|>\nYou are a careful assistant. Use the passage when it helps; answer in a few words.\n<|user|>\n';

interface Q { question: string; answers: string[]; gold_passage_ids: string[] }
interface P { id: string; title: string; text: string }
const readJsonl = <T>(f: string): T[] => readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);

/** Real SQuAD questions, each with `k` passages (several of the same article: same title). */
function squadItems(n: number, k: number): ContrastiveItem[] {
  const qs = readJsonl<Q>(path.join(dataDir, 'squad_v1.1_dev_open', 'questions.jsonl'));
  const ps = readJsonl<P>(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl'));
  const at = new Map(ps.map((p, i) => [p.id, i]));
  const items: ContrastiveItem[] = [];
  for (let i = 0; items.length < n; i += 97) {
    const q = qs[i];
    const g = at.get(q.gold_passage_ids[0])!;
    const passages = Array.from({ length: k }, (_, r) => ps[(g + (r < k / 2 ? r : r * 37)) % ps.length]);
    items.push({
      standardPrompt: header + standardPrompt(instruction, q.question),
      contextPrompts: passages.map((p) => header + retrievedPrompt(instruction, q.question, p.title, p.text.slice(0, 500))),
      answers: q.answers,
    });
  }
  return items;
}

async function both(items: ContrastiveItem[]) {
  const off = await lm.contrastivePerplexity(items, { sharePrefix: false });
  const offStats = lm.lastStats!;
  const on = await lm.contrastivePerplexity(items, { sharePrefix: true });
  return { off, on, offStats, onStats: lm.lastStats! };
}

function assertSame(on: ContrastiveResult[], off: ContrastiveResult[], tol = 1e-5) {
  assert.equal(on.length, off.length);
  on.forEach((r, i) => {
    assert.equal(r.perAnswer.length, off[i].perAnswer.length);
    r.perAnswer.forEach((row, j) => {
      assert.ok(row.every(Number.isFinite), `item ${i} answer ${j}: finite`);
      assert.ok(maxRelDiff(row, off[i].perAnswer[j]) < tol, `item ${i} answer ${j}: PPL_CD ${maxRelDiff(row, off[i].perAnswer[j])}`);
      assert.ok(maxRelDiff(r.plainPerAnswer[j], off[i].plainPerAnswer[j]) < tol, `item ${i} answer ${j}: plain PPL`);
    });
    assert.ok(maxRelDiff(r.min, off[i].min) < tol);
    assert.ok(maxRelDiff(r.plainMin, off[i].plainMin) < tol);
  });
}

before(async () => {
  lm = await CausalLM.load(fixture('llama-tiny'));
});

test('shared-prefix prefill: same PPL_CD and plain PPL as the unshared path, fewer prefill tokens', async () => {
  const items = squadItems(3, 6);
  const { off, on, offStats, onStats } = await both(items);
  assertSame(on, off);
  assert.equal(onStats.promptPrefills, offStats.promptPrefills, 'every prompt still counts as prefilled once');
  assert.equal(onStats.answerTokens, offStats.answerTokens);
  // Every prompt starts with the header: at the least it is not run again for every row.
  const headerTokens = (await lm.tokenizer.encodeRaw([header]))[0].length;
  assert.ok(headerTokens > 10);
  assert.ok(onStats.prefillTokens < offStats.prefillTokens - headerTokens, `${onStats.prefillTokens} vs ${offStats.prefillTokens}`);
  // The unshared count is every prompt token (answers are counted apart).
  const prompts = items.flatMap((it) => [it.standardPrompt, ...it.contextPrompts]);
  const total = (await lm.tokenizer.encodeRaw(prompts)).reduce((n, t) => n + t.length, 0);
  assert.equal(offStats.prefillTokens, total);
});

test('a title several passages share is run once per group as well (fewer tokens than the header alone saves)', async () => {
  const p = readJsonl<P>(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl')).slice(0, 4);
  assert.ok(p.every((x) => x.title === p[0].title), 'the first passages are of one article');
  const q = 'Who won Super Bowl 50?';
  // The other item's passages have distinct titles: only the header is common to all rows.
  const other = readJsonl<P>(path.join(dataDir, 'squad_v1.1_dev_open', 'passages.jsonl')).filter((_, i) => i % 150 === 75).slice(0, 4);
  const mk = (ps: P[]): ContrastiveItem => ({
    standardPrompt: header + standardPrompt(instruction, q),
    contextPrompts: ps.map((x) => header + retrievedPrompt(instruction, q, x.title, x.text.slice(0, 300))),
    answers: ['Denver Broncos', 'the Broncos'],
  });
  const { off, on, offStats, onStats } = await both([mk(p), mk(other)]);
  assertSame(on, off);
  // What sharing only the prefix common to a whole batch would save (standard prompts and context
  // prompts are batched apart): the title groups must save more than that.
  const lcp = (rows: number[][]) => {
    let n = Math.min(...rows.map((r) => r.length - 1)); // the last prompt token is always run
    for (const r of rows) for (let k = 0; k < n; k++) if (r[k] !== rows[0][k]) n = k;
    return n;
  };
  const std = await lm.tokenizer.encodeRaw([mk(p).standardPrompt, mk(other).standardPrompt]);
  const ctx = await lm.tokenizer.encodeRaw([...mk(p).contextPrompts, ...mk(other).contextPrompts]);
  const globalOnly = offStats.prefillTokens - (std.length - 1) * lcp(std) - (ctx.length - 1) * lcp(ctx);
  assert.ok(lcp(ctx) >= 8, 'the rows share at least the header');
  assert.ok(onStats.prefillTokens < globalOnly, `${onStats.prefillTokens} should be < ${globalOnly}`);
});

test('edge cases: identical prompts, a prompt that is a prefix of another, short prompts, many answers', async () => {
  const base = header + retrievedPrompt(instruction, 'Who wrote Pride and Prejudice?', 'Pride and Prejudice', 'A novel by Jane Austen.');
  const items: ContrastiveItem[] = [
    // The same prompt three times: all but its last token could be shared.
    { standardPrompt: header + 'Q?', contextPrompts: [base, base, base], answers: ['Jane Austen', 'Austen', 'J. Austen'] },
    // One prompt a prefix of the next; a very short one.
    { standardPrompt: 'Q', contextPrompts: [base, `${base} More text follows here.`, 'x'], answers: ['Austen'] },
  ];
  const { off, on, offStats, onStats } = await both(items);
  assertSame(on, off);
  // Identical context prompts score identically.
  assert.ok(maxRelDiff(on[0].perAnswer[0], Array(3).fill(on[0].perAnswer[0][0])) < 1e-5);
  assert.ok(onStats.prefillTokens < offStats.prefillTokens);
});

test('sharing on by default: the default call equals sharePrefix true; bad option rejected', async () => {
  const items = squadItems(1, 3);
  const [d] = await lm.contrastivePerplexity(items);
  const dStats = lm.lastStats!;
  const [t] = await lm.contrastivePerplexity(items, { sharePrefix: true });
  assert.deepEqual(d.perAnswer, t.perAnswer);
  assert.equal(dStats.prefillTokens, lm.lastStats!.prefillTokens);
  await assert.rejects(lm.contrastivePerplexity(items, { sharePrefix: 'yes' as unknown as boolean }), TypeError);
});

test('plain perplexity (retrieved_ppl) equals exp(mean NLL) from last-position logits of prompt + answer', async () => {
  const ref = readReference<{ context_prompts: string[]; standard_prompt: string; answers: string[] }>('llama-tiny');
  const [r] = await lm.contrastivePerplexity([{ standardPrompt: ref.standard_prompt, contextPrompts: ref.context_prompts, answers: ref.answers }]);
  const prompts = await lm.tokenizer.encodeRaw(ref.context_prompts);
  const answers = await lm.tokenizer.encodeRaw(ref.answers);
  const vocab = lm.info.vocabSize;
  for (let a = 0; a < answers.length; a++) {
    for (let c = 0; c < prompts.length; c++) {
      // Prompt + answer without its last token: the last |answer| positions predict the answer.
      const seq = [...prompts[c], ...answers[a].slice(0, -1)];
      const n = answers[a].length;
      const logits = await lm.lastLogitsIds({ ids: Int32Array.from(seq), offsets: Int32Array.from([0, seq.length]) }, n);
      let nll = 0;
      for (let t = 0; t < n; t++) {
        const row = logits.subarray(t * vocab, (t + 1) * vocab);
        let max = -Infinity;
        for (const x of row) max = Math.max(max, x);
        let sum = 0;
        for (const x of row) sum += Math.exp(x - max);
        nll -= row[answers[a][t]] - max - Math.log(sum);
      }
      const expected = Math.exp(nll / n);
      const got = r.plainPerAnswer[a][c];
      assert.ok(Math.abs(got - expected) / expected < 1e-5, `answer ${a} context ${c}: ${got} vs ${expected}`);
    }
  }
  for (let c = 0; c < prompts.length; c++) assert.equal(r.plainMin[c], Math.min(...r.plainPerAnswer.map((row) => row[c])));
  // Plain PPL is PPL_CD at alpha 0, and the reference method computes the same.
  const [a0] = await lm.contrastivePerplexity([{ standardPrompt: ref.standard_prompt, contextPrompts: ref.context_prompts, answers: ref.answers }], { alpha: 0 });
  const [slow] = await lm.contrastivePerplexity([{ standardPrompt: ref.standard_prompt, contextPrompts: ref.context_prompts, answers: ref.answers }], { method: 'reference' });
  r.plainPerAnswer.forEach((row, j) => {
    assert.ok(maxRelDiff(row, a0.perAnswer[j]) < 1e-5);
    assert.ok(maxRelDiff(row, slow.plainPerAnswer[j]) < 1e-5);
    // With alpha 0.5 the contrast changes the number: plain is not PPL_CD.
    assert.ok(maxRelDiff(row, r.perAnswer[j]) > 1e-3);
  });
});

test('columns form returns the plain perplexity too, as Arrow vectors', async () => {
  const items = squadItems(2, 3);
  const rows = await lm.contrastivePerplexity(items);
  const cols = await lm.contrastivePerplexityColumns({
    standardPrompts: items.map((i) => i.standardPrompt), contextPrompts: items.map((i) => i.contextPrompts), answers: items.map((i) => i.answers),
  });
  for (let i = 0; i < items.length; i++) {
    const got = Array.from(cols.plainMin.get(i)!.toArray() as Float64Array);
    assert.ok(maxRelDiff(got, rows[i].plainMin) < 1e-9);
    const per = cols.plainPerAnswer.get(i)!;
    assert.equal(per.length, items[i].answers.length);
  }
});

// Greedy generation (native/models/llama_generate.cpp): the prefix every prompt shares runs once
// per call, also when slots are refilled one prompt at a time.
describeGeneration();
function describeGeneration() {
  /** Leading tokens all rows share, each capped at its length - 1 (the last token is always run). */
  const lcp = (rows: number[][]) => {
    let n = Math.min(...rows.map((r) => r.length - 1));
    for (const r of rows) for (let k = 0; k < n; k++) if (r[k] !== rows[0][k]) n = k;
    return n;
  };
  const prompts = squadItems(6, 1).map((it) => it.contextPrompts[0]);

  test('greedy generation: same tokens as without sharing; the prefix all prompts share runs once per call', async () => {
    const off = await lm.generate(prompts, { maxNewTokens: 12, sharePrefix: false });
    const offStats = lm.lastStats!;
    const on = await lm.generate(prompts, { maxNewTokens: 12, sharePrefix: true });
    const onStats = lm.lastStats!;
    assert.deepEqual(on.tokenIds, off.tokenIds);
    assert.ok(on.tokenIds.every((t) => t.length > 0));
    const rows = await lm.tokenizer.encodeRaw(prompts);
    const total = rows.reduce((n, r) => n + r.length, 0);
    const common = lcp(rows);
    assert.ok(common >= 20, `the prompts share the header and the instruction (${common} tokens)`);
    assert.equal(offStats.prefillTokens, total);
    assert.equal(onStats.promptPrefills, offStats.promptPrefills);
    assert.ok(onStats.prefillTokens <= total - (prompts.length - 1) * common, `${onStats.prefillTokens} vs ${total} - 5 x ${common}`);
    // The default on CPU is on.
    await lm.generate(prompts, { maxNewTokens: 12 });
    assert.equal(lm.lastStats!.prefillTokens, onStats.prefillTokens);
    await assert.rejects(lm.generate(prompts, { maxNewTokens: 4, sharePrefix: 1 as unknown as boolean }), TypeError);
  });

  test('greedy generation with one slot (every prompt its own refill): the shared prefix still runs once', async () => {
    const one = await CausalLM.load(fixture('llama-tiny'), { maxRows: 1 });
    try {
      const off = await one.generate(prompts, { maxNewTokens: 8, sharePrefix: false });
      const offStats = one.lastStats!;
      const on = await one.generate(prompts, { maxNewTokens: 8, sharePrefix: true });
      const onStats = one.lastStats!;
      assert.deepEqual(on.tokenIds, off.tokenIds);
      const rows = await one.tokenizer.encodeRaw(prompts);
      const total = rows.reduce((n, r) => n + r.length, 0);
      // Exactly: the prefix once, then each prompt's own tokens (single-row batches share nothing more).
      assert.equal(offStats.prefillTokens, total);
      assert.equal(onStats.prefillTokens, total - (prompts.length - 1) * lcp(rows));
      // The same tokens as the many-slot model's (the continuous batching is unchanged).
      const many = await lm.generate(prompts, { maxNewTokens: 8 });
      assert.deepEqual(on.tokenIds, many.tokenIds);
    } finally {
      one.dispose();
    }
  });

  test('greedy generation: prompts with no common prefix, or a single prompt, run as before', async () => {
    const mixed = [prompts[0], 'Q: who?', prompts[1]];
    const off = await lm.generate(mixed, { maxNewTokens: 6, sharePrefix: false });
    const offStats = lm.lastStats!;
    const on = await lm.generate(mixed, { maxNewTokens: 6, sharePrefix: true });
    assert.deepEqual(on.tokenIds, off.tokenIds);
    // One batch: the two long prompts still share their beginning within it.
    assert.ok(lm.lastStats!.prefillTokens < offStats.prefillTokens);
    const single = await lm.generate([prompts[2]], { maxNewTokens: 6, sharePrefix: true });
    assert.deepEqual(single.tokenIds[0], (await lm.generate([prompts[2]], { maxNewTokens: 6, sharePrefix: false })).tokenIds[0]);
  });
}
