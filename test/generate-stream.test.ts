// CausalLM.generateIds' token stream (onTokens, through a thread-safe function from the native
// decoding loop) and per-prompt stopping (rowSignals): the streamed tokens are the result's, in
// order; a stopped prompt ends early while the others of its continuous batch decode on,
// unchanged; the engine counts the stopped rows.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { CausalLM } from '../lib/models/causal-lm.js';
import { repoRoot } from './helpers.js';

let lm: CausalLM;
before(async () => {
  lm = await CausalLM.load(path.join(repoRoot, 'models', 'llama-tiny'));
});
after(() => lm?.dispose());

async function batchOf(prompts: string[]) {
  const ids = await lm.tokenizer.encodeRaw(prompts);
  const offsets = new Int32Array(ids.length + 1);
  ids.forEach((p, i) => (offsets[i + 1] = offsets[i] + p.length));
  const flat = new Int32Array(offsets[ids.length]);
  ids.forEach((p, i) => flat.set(p, offsets[i]));
  return { ids: flat, offsets };
}

const prompts = ['The capital of France is', 'Once upon a time', 'Question: who wrote Hamlet? Answer:', 'a b c d'];

test('onTokens streams every token of every prompt in order, before the call resolves', async () => {
  const batch = await batchOf(prompts);
  const want = await lm.generateIds(batch, 24);
  const got: number[][] = prompts.map(() => []);
  let calls = 0;
  let resolved = false;
  const out = await lm.generateIds(batch, 24, {
    onTokens: (rows, tokens) => {
      assert.equal(resolved, false, 'no token after the call resolved');
      assert.equal(rows.length, tokens.length);
      calls++;
      rows.forEach((r, k) => got[r].push(tokens[k]));
    },
  });
  resolved = true;
  assert.deepEqual(out, want, 'streaming does not change the answer');
  assert.deepEqual(got, want, 'the streamed tokens are the answer, in order');
  assert.ok(calls > 1, `tokens came in steps (${calls} calls)`);
});

test('rowSignals: aborting one prompt stops it alone; the others finish as without it', async () => {
  const batch = await batchOf(prompts);
  const max = 120;
  const want = await lm.generateIds(batch, max);
  assert.equal(want[0].length, max, 'precondition: prompt 0 runs to max_tokens without EOS');
  const stop0 = new AbortController();
  const before = lm.stats().stoppedRows;
  const out = await lm.generateIds(batch, max, {
    rowSignals: [stop0.signal, undefined, new AbortController().signal],
    // Stop prompt 0 as soon as its first token is out.
    onTokens: (rows) => {
      if (rows.includes(0)) stop0.abort();
    },
  });
  assert.ok(out[0].length < max, `prompt 0 stopped early (${out[0].length} of ${max} tokens)`);
  assert.deepEqual(out[0], want[0].slice(0, out[0].length), 'what it has is its answer so far');
  assert.deepEqual(out.slice(1), want.slice(1), 'the other prompts are unchanged');
  assert.equal(lm.stats().stoppedRows - before, 1, 'the engine counts the stopped row');
  // A prompt stopped before the call never starts.
  const pre = new AbortController();
  pre.abort();
  const skipped = await lm.generateIds(batch, 8, { rowSignals: [undefined, pre.signal] });
  assert.deepEqual(skipped[1], []);
  assert.deepEqual(skipped[0], want[0].slice(0, 8));
  await assert.rejects(lm.generateIds(batch, 8, { rowSignals: [1 as never] }), TypeError);
});
