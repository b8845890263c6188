// CausalLM (native Llama decoder) against transformers' outputs for the llama-tiny fixture:
// token ids, last-position logits, contrastive perplexity, greedy tokens; plus the work
// counters behind the efficiency claims, reduced precision, and bad inputs.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Field, Int32, List, Table, Utf8, vectorFromArray, type Vector } from 'apache-arrow';
import { CausalLM, type ContrastiveItem } from '../lib/models/causal-lm.js';
import { readSafetensors } from '../lib/safetensors.js';
import { encodeSafetensors, type F32Tensor } from '../lib/convert/llama2c.js';
import { fixture, maxRelDiff, readReference } from './helpers.js';

interface LlamaRef {
  alpha: number;
  answers: string[];
  standard_prompt: string;
  context_prompts: string[];
  prompt_ids: { standard: number[]; contexts: number[][] };
  answer_ids: Record<string, number[]>;
  contrastive_ppl_per_answer: Record<string, number[]>;
  contrastive_ppl_min_over_answers: number[];
  greedy_new_tokens_first_two_context_prompts: number[][];
  last3_logits_context_prompt0: number[][];
}

const ref = readReference<LlamaRef>('llama-tiny');
const dir = fixture('llama-tiny');
let lm: CausalLM;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'gainrag-causal-lm-'));

function item(answers = ref.answers): ContrastiveItem {
  return { standardPrompt: ref.standard_prompt, contextPrompts: ref.context_prompts, answers };
}

/** A model directory beside the fixture: its files linked, with `changes` written over them. */
function variant(name: string, changes: Record<string, string | Buffer>): string {
  const out = mkdtempSync(path.join(tmp, `${name}-`));
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
    if (!(f in changes)) symlinkSync(path.join(dir, f), path.join(out, f));
  }
  for (const [f, content] of Object.entries(changes)) writeFileSync(path.join(out, f), content);
  return out;
}

before(async () => {
  lm = await CausalLM.load(dir);
});

after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

test('prompt and answer token ids match transformers exactly', async () => {
  const tok = lm.tokenizer;
  assert.deepEqual(await tok.encodeRaw([ref.standard_prompt]), [ref.prompt_ids.standard]);
  assert.deepEqual(await tok.encodeRaw(ref.context_prompts), ref.prompt_ids.contexts);
  for (const a of ref.answers) assert.deepEqual((await tok.encodeRaw([a]))[0], ref.answer_ids[a]);
});

test('last 3 position logits match within 1e-4 relative', async () => {
  const out = await lm.lastLogits([ref.context_prompts[0]], 3);
  const expected = ref.last3_logits_context_prompt0.flat();
  assert.equal(out.length, expected.length);
  // Relative to the logit scale (max |logit|), so that logits near zero do not blow the ratio up.
  const scale = Math.max(...expected.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(out[i] - expected[i]) / scale);
  assert.ok(worst < 1e-4, `max |diff| / max |logit| = ${worst}`);
  // Floor 0.1: logits near zero differ by ~1e-6 absolute between products summed in different
  // orders (oneDNN's AVX2 kernel measured 1.03e-4 with a floor of 1e-2 on a logit of ~1e-2).
  assert.ok(maxRelDiff(out, expected, 0.1) < 1e-4, `elementwise relative (floor 0.1) ${maxRelDiff(out, expected, 0.1)}`);
});

test('contrastive perplexity per answer and min match within 1e-4 relative; one prefill per prompt', async () => {
  const [r] = await lm.contrastivePerplexity([item()], { alpha: ref.alpha });
  ref.answers.forEach((a, j) => {
    const d = maxRelDiff(r.perAnswer[j], ref.contrastive_ppl_per_answer[a]);
    assert.ok(d < 1e-4, `answer ${a}: relative diff ${d}`);
  });
  assert.ok(maxRelDiff(r.min, ref.contrastive_ppl_min_over_answers) < 1e-4);
  const s = lm.lastStats!;
  assert.equal(s.promptPrefills, 1 + ref.context_prompts.length);
  // lm_head rows: each prompt's last position plus every answer token but the last.
  const inner = ref.answers.reduce((n, a) => n + ref.answer_ids[a].length - 1, 0);
  assert.equal(s.lmHeadRows, (1 + ref.context_prompts.length) * (1 + inner));
});

test('the reference method (full forward per prompt and answer) gives the same numbers', async () => {
  const [fast] = await lm.contrastivePerplexity([item()]);
  const [slow] = await lm.contrastivePerplexity([item()], { method: 'reference' });
  fast.perAnswer.forEach((row, j) => assert.ok(maxRelDiff(row, slow.perAnswer[j]) < 1e-5));
  assert.equal(lm.lastStats!.promptPrefills, ref.answers.length * (1 + ref.context_prompts.length));
});

test('prefills stay one per prompt as answers grow from 1 to 10; results do not depend on batching', async () => {
  const pool = ['Jane Austen', 'Austen', 'J. Austen', 'Miss Austen', 'Jane', 'an English novelist', 'Austen, Jane', 'Charlotte Bronte', 'she', 'A lady'];
  const [two] = await lm.contrastivePerplexity([item(pool.slice(0, 2))]);
  for (const n of [1, 3, 10]) {
    const [r] = await lm.contrastivePerplexity([item(pool.slice(0, n))]);
    assert.equal(lm.lastStats!.promptPrefills, 1 + ref.context_prompts.length, `${n} answers`);
    assert.equal(r.perAnswer.length, n);
    for (let j = 0; j < Math.min(n, 2); j++) assert.ok(maxRelDiff(r.perAnswer[j], two.perAnswer[j]) < 1e-5);
  }
  // Several items in one call: each prompt still prefilled once, same numbers as alone.
  const items = [item(pool.slice(0, 2)), item(pool.slice(2, 5)), item(pool.slice(0, 2))];
  const many = await lm.contrastivePerplexity(items);
  assert.equal(lm.lastStats!.promptPrefills, items.length * (1 + ref.context_prompts.length));
  assert.ok(maxRelDiff(many[0].perAnswer[1], two.perAnswer[1]) < 1e-5);
  assert.ok(maxRelDiff(many[2].min, two.min) < 1e-5);
});

test('greedy generation reproduces transformers tokens, batched and alone', async () => {
  const prompts = ref.context_prompts.slice(0, 2);
  const batched = await lm.generate(prompts, { maxNewTokens: 8 });
  assert.deepEqual(batched.tokenIds, ref.greedy_new_tokens_first_two_context_prompts);
  assert.equal(batched.texts.length, 2);
  for (let i = 0; i < 2; i++) {
    const alone = await lm.generate([prompts[i]], { maxNewTokens: 8 });
    assert.deepEqual(alone.tokenIds[0], ref.greedy_new_tokens_first_two_context_prompts[i]);
  }
});

test('bfloat16 agrees with float32: PPL within 5% relative, last logits within 0.05 of the logit scale', async () => {
  const bf = await CausalLM.load(dir, { dtype: 'bfloat16' });
  assert.equal(bf.info.dtype, 'bfloat16');
  const [r] = await bf.contrastivePerplexity([item()]);
  ref.answers.forEach((a, j) => {
    const d = maxRelDiff(r.perAnswer[j], ref.contrastive_ppl_per_answer[a]);
    assert.ok(d < 0.05, `bf16 answer ${a}: relative diff ${d}`);
  });
  const out = await bf.lastLogits([ref.context_prompts[0]], 3);
  const expected = ref.last3_logits_context_prompt0.flat();
  const scale = Math.max(...expected.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(out[i] - expected[i]) / scale);
  assert.ok(worst < 0.05, `bf16 logits: max |diff| / scale = ${worst}`);
});

test('float16 either runs close to float32 or is refused with E_UNSUPPORTED', async () => {
  try {
    const h = await CausalLM.load(dir, { dtype: 'float16' });
    const [r] = await h.contrastivePerplexity([item()]);
    assert.ok(maxRelDiff(r.min, ref.contrastive_ppl_min_over_answers) < 0.05);
  } catch (err) {
    assert.equal((err as { code?: string }).code, 'E_UNSUPPORTED', String(err));
  }
});

test('bad model directories: E_MODEL_CONFIG for config problems, E_SHAPE for tensors', async () => {
  await assert.rejects(CausalLM.load(tmp), (e: { code?: string }) => e.code === 'E_MODEL_CONFIG');
  await assert.rejects(CausalLM.load(dir, { dtype: 'int4' as never }), RangeError);
  await assert.rejects(CausalLM.load(dir, { device: 'tpu' }), RangeError);
  await assert.rejects(CausalLM.load(dir, { tokenBudget: 0 }), RangeError);
  const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const gpt2 = variant('gpt2', { 'config.json': JSON.stringify({ ...config, model_type: 'gpt2' }) });
  await assert.rejects(CausalLM.load(gpt2), (e: { code?: string; message: string }) => e.code === 'E_MODEL_CONFIG' && /gpt2/.test(e.message));
  const badRope = variant('rope', { 'config.json': JSON.stringify({ ...config, rope_parameters: { rope_type: 'yarn', rope_theta: 1e4 } }) });
  await assert.rejects(CausalLM.load(badRope), (e: { code?: string }) => e.code === 'E_MODEL_CONFIG');
  const wider = variant('wider', { 'config.json': JSON.stringify({ ...config, intermediate_size: 256 }) });
  await assert.rejects(CausalLM.load(wider), (e: { code?: string; message: string }) => e.code === 'E_SHAPE' && /mlp/.test(e.message));

  const st = await readSafetensors(path.join(dir, 'model.safetensors'));
  const missing = 'model.layers.1.self_attn.k_proj.weight';
  const kept: F32Tensor[] = st.tensors().filter((t) => t.name !== missing)
    .map((t) => ({ name: t.name, shape: t.shape, data: Float32Array.from(st.tensor(t.name) as Float32Array) }));
  const noK = variant('nok', { 'model.safetensors': encodeSafetensors(kept) });
  await assert.rejects(CausalLM.load(noK), (e: { code?: string; message: string }) => e.code === 'E_SHAPE' && e.message.includes(missing));
});

test('bad calls: empty answers, over-long prompts, bad options are RangeErrors naming the item', async () => {
  await assert.rejects(lm.contrastivePerplexity([item(), item([])]), (e: Error) => e instanceof RangeError && /items\[1\]/.test(e.message));
  await assert.rejects(lm.contrastivePerplexity([item(['Austen', ''])]), (e: Error) => e instanceof RangeError && /items\[0\]\.answers\[1\]/.test(e.message));
  const long = { ...item(), contextPrompts: [ref.context_prompts[0], 'word '.repeat(600)] };
  await assert.rejects(lm.contrastivePerplexity([item(), long]), (e: Error) => e instanceof RangeError && /items\[1\]\.contextPrompts\[1\]/.test(e.message));
  await assert.rejects(lm.contrastivePerplexity([{ standardPrompt: 3 } as unknown as ContrastiveItem]), TypeError);
  await assert.rejects(lm.generate(['hi'], { maxNewTokens: 0 }), RangeError);
  await assert.rejects(lm.generate(['hi'], { maxNewTokens: 4, temperature: 0.7 }), RangeError);
  await assert.rejects(lm.generate(['word '.repeat(600)], { maxNewTokens: 4 }), (e: Error) => e instanceof RangeError && /prompts\[0\]/.test(e.message));
  assert.deepEqual(await lm.contrastivePerplexity([]), []);
  assert.deepEqual(await lm.generate([], { maxNewTokens: 3 }), { texts: [], tokenIds: [] });
});

test('cancellation: an aborted signal rejects with E_CANCELLED, before or during the run', async () => {
  const pre = new AbortController();
  pre.abort();
  await assert.rejects(lm.contrastivePerplexity([item()], { signal: pre.signal }), (e: { code?: string }) => e.code === 'E_CANCELLED');
  const ac = new AbortController();
  const items = Array.from({ length: 40 }, () => item());
  let calls = 0;
  await assert.rejects(
    lm.contrastivePerplexity(items, { signal: ac.signal, onProgress: () => { if (++calls === 1) ac.abort(); } }),
    (e: { code?: string }) => e.code === 'E_CANCELLED',
  );
  // The model stays usable afterwards.
  const [r] = await lm.contrastivePerplexity([item()]);
  assert.ok(maxRelDiff(r.min, ref.contrastive_ppl_min_over_answers) < 1e-4);
});

test('chat template: rendered with bos/eos tokens; a model without one gets E_MODEL_CONFIG', async () => {
  assert.throws(() => lm.applyChatTemplate([{ role: 'user', content: 'hi' }]), (e: { code?: string }) => e.code === 'E_MODEL_CONFIG');
  // Llama 3 Instruct's template (abridged to its message loop).
  const template =
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
  const cfg = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  const d = variant('chat', { 'tokenizer_config.json': JSON.stringify({ ...cfg, chat_template: template }) });
  const chat = await CausalLM.load(d);
  const text = chat.applyChatTemplate([{ role: 'user', content: ' Who wrote it? ' }]);
  assert.equal(text, '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWho wrote it?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
  const noPrompt = chat.applyChatTemplate([{ role: 'user', content: 'x' }], { addGenerationPrompt: false });
  assert.ok(noPrompt.endsWith('<|eot_id|>'));
  // The template already holds BOS as text: generation must not add another.
  const ids = await chat.tokenizer.encodeRaw([text]);
  assert.equal(ids[0].filter((t) => t === 0).length, 1);
});

test('EOS ids from generation_config.json stop a row; the rest of the batch decodes as alone', async () => {
  const [g0, g1] = ref.greedy_new_tokens_first_two_context_prompts;
  // Make the second token of prompt 0 a stop token (it never occurs in prompt 1's output).
  const d = variant('eos', { 'generation_config.json': JSON.stringify({ eos_token_id: [2, g0[1]] }) });
  const m = await CausalLM.load(d);
  assert.deepEqual(m.info.eosTokenIds, [2, g0[1]]);
  const r = await m.generate(ref.context_prompts.slice(0, 2), { maxNewTokens: 8 });
  assert.deepEqual(r.tokenIds, [g0.slice(0, 2), g1]);
  assert.equal(m.lastStats!.generatedTokens, 10);
});

test('small token budgets (many small batches) give the same results as one batch', async () => {
  const small = await CausalLM.load(dir, { tokenBudget: 150, maxRows: 2 });
  const pool = ['Jane Austen', 'Austen', 'J. Austen'];
  const items = [item(pool), item(pool.slice(1)), item(pool.slice(0, 1))];
  const [a, b] = await Promise.all([lm.contrastivePerplexity(items), small.contrastivePerplexity(items)]);
  for (let i = 0; i < items.length; i++) a[i].perAnswer.forEach((row, j) => assert.ok(maxRelDiff(row, b[i].perAnswer[j]) < 1e-5));
  assert.ok(small.lastStats!.forwardCalls > lm.lastStats!.forwardCalls, 'the small budget must have split the work');
  const g = await small.generate(ref.context_prompts.slice(0, 2), { maxNewTokens: 8 });
  assert.deepEqual(g.tokenIds, ref.greedy_new_tokens_first_two_context_prompts);
});

const nums = (v: Vector | null | undefined): number[] => Array.from(v!.toArray() as ArrayLike<number>);
const utf8List = (rows: string[][]) => vectorFromArray(rows, new List(new Field('item', new Utf8(), true))) as Vector<List<Utf8>>;

test('Arrow: Utf8 prompts in, Utf8 texts and List<Int32> token ids out, same tokens as the string path', async () => {
  const prompts = ref.context_prompts.slice(0, 2);
  const fromArrow = await lm.generate(vectorFromArray(prompts, new Utf8()), { maxNewTokens: 8 });
  assert.deepEqual(fromArrow.tokenIds, ref.greedy_new_tokens_first_two_context_prompts);
  const plain = await lm.generate(prompts, { maxNewTokens: 8 });
  const arrow = await lm.generate(prompts, { maxNewTokens: 8, asArrow: true });
  assert.ok(arrow.texts.type instanceof Utf8 && arrow.tokenIds.type instanceof List);
  assert.deepEqual(arrow.texts.toArray(), plain.texts);
  assert.deepEqual([...arrow.tokenIds].map(nums), ref.greedy_new_tokens_first_two_context_prompts);
  // The ids column is the engine's buffer, not a copy.
  const ids = arrow.tokenIds.data[0].children[0].values as Int32Array;
  assert.ok(ids instanceof Int32Array && ids.length === ref.greedy_new_tokens_first_two_context_prompts.flat().length);
  const empty = await lm.generate(vectorFromArray([] as string[], new Utf8()), { maxNewTokens: 3, asArrow: true });
  assert.equal(empty.texts.length, 0);
  assert.equal(empty.tokenIds.length, 0);
  await assert.rejects(lm.generate(vectorFromArray([1, 2], new Int32()) as never, { maxNewTokens: 2 }), TypeError);
  await assert.rejects(lm.generate(vectorFromArray(['a', null], new Utf8()), { maxNewTokens: 2 }), TypeError);
});

test('Arrow: columnar contrastive scoring from a Table gives the string path numbers, as List vectors', async () => {
  const answers = [ref.answers, ref.answers.slice(0, 1), ref.answers.slice(1)];
  const rows = answers.map((a) => item(a));
  rows[1] = { ...rows[1], contextPrompts: ref.context_prompts.slice(1) };
  const expected = await lm.contrastivePerplexity(rows);
  const table = new Table({
    standard: vectorFromArray(rows.map((r) => r.standardPrompt), new Utf8()),
    contexts: utf8List(rows.map((r) => r.contextPrompts)),
    answers: utf8List(rows.map((r) => r.answers)),
  });
  const out = await lm.contrastivePerplexityColumns({
    standardPrompts: table.getChild('standard')!, contextPrompts: table.getChild('contexts')!, answers: table.getChild('answers')!,
  });
  assert.equal(lm.lastStats!.promptPrefills, rows.reduce((n, r) => n + 1 + r.contextPrompts.length, 0));
  assert.equal(out.perAnswer.length, rows.length);
  assert.equal(out.min.length, rows.length);
  rows.forEach((r, i) => {
    const per = [...out.perAnswer.get(i)!].map(nums);
    assert.equal(per.length, r.answers.length);
    per.forEach((row, j) => assert.ok(maxRelDiff(row, expected[i].perAnswer[j]) < 1e-5, `item ${i} answer ${j}`));
    assert.ok(maxRelDiff(nums(out.min.get(i)), expected[i].min) < 1e-5);
  });
  // Against transformers too: item 0 is the fixture's item.
  assert.ok(maxRelDiff(nums(out.min.get(0)), ref.contrastive_ppl_min_over_answers) < 1e-4);
  // {asArrow: true} on the row API gives the same vectors; JS arrays of arrays work as columns.
  const viaRows = await lm.contrastivePerplexity(rows, { asArrow: true });
  assert.deepEqual(nums(viaRows.min.get(2)), nums(out.min.get(2)));
  const viaArrays = await lm.contrastivePerplexityColumns({
    standardPrompts: rows.map((r) => r.standardPrompt), contextPrompts: rows.map((r) => r.contextPrompts), answers,
  });
  assert.deepEqual(nums(viaArrays.min.get(1)), nums(out.min.get(1)));
});

test('Arrow: sliced and multi-chunk list columns are read at their offsets', async () => {
  const rows = [item(['Paris']), item(ref.answers), item(ref.answers.slice(0, 2))];
  const expected = await lm.contrastivePerplexity(rows.slice(1));
  const ctx = utf8List(rows.map((r) => r.contextPrompts)).slice(1);
  const first = utf8List([rows[1].answers]);
  const ans = first.concat(utf8List([rows[2].answers]));
  assert.equal(ans.data.length, 2);
  const out = await lm.contrastivePerplexityColumns({
    standardPrompts: vectorFromArray(rows.map((r) => r.standardPrompt), new Utf8()).slice(1), contextPrompts: ctx, answers: ans,
  });
  for (let i = 0; i < 2; i++) {
    const per = [...out.perAnswer.get(i)!].map(nums);
    per.forEach((row, j) => assert.ok(maxRelDiff(row, expected[i].perAnswer[j]) < 1e-5, `item ${i} answer ${j}`));
  }
});

test('Arrow: bad columns are TypeErrors/RangeErrors naming the row', async () => {
  const std = vectorFromArray([ref.standard_prompt, ref.standard_prompt], new Utf8());
  const ctx = utf8List([ref.context_prompts, ref.context_prompts]);
  await assert.rejects(lm.contrastivePerplexityColumns({ standardPrompts: std, contextPrompts: ctx, answers: utf8List([ref.answers]) }), RangeError);
  await assert.rejects(lm.contrastivePerplexityColumns({ standardPrompts: std, contextPrompts: ctx, answers: utf8List([ref.answers, []]) }),
    (e: Error) => e instanceof RangeError && /row 1 has no answers/.test(e.message));
  await assert.rejects(lm.contrastivePerplexityColumns({ standardPrompts: std, contextPrompts: ctx, answers: utf8List([ref.answers, ['Austen', '']]) }),
    (e: Error) => e instanceof RangeError && /answers\[1\]\[1\]/.test(e.message));
  await assert.rejects(lm.contrastivePerplexityColumns({ standardPrompts: std, contextPrompts: std as never, answers: utf8List([ref.answers, ref.answers]) }), TypeError);
  await assert.rejects(lm.contrastivePerplexityColumns({ standardPrompts: std, contextPrompts: ctx, answers: utf8List([ref.answers, [null as never]]) }), TypeError);
  const none = await lm.contrastivePerplexityColumns({ standardPrompts: [], contextPrompts: [], answers: [] });
  assert.equal(none.min.length, 0);
});
