// Chat-template behaviour that must match the reference (issue #20 item 4): Mistral-family models
// get no system message by name, and --double-bos reproduces vLLM 0.7.3's two BOS tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import yargs from 'yargs';
import { promptWrapper } from '../lib/pipeline/prompts.js';
import { configTemplater, dropsSystemMessage } from '../lib/models/chat-template.js';
import { OpenAIGenerator } from '../lib/pipeline/openai-generate.js';
import { backendFlagOptions, withBackendFlags } from '../lib/stages/backend-flags.js';
import { Tokenizer } from '../lib/tokenizer.js';
import { repoRoot } from './helpers.js';

// A template that accepts a system role (as some Mistral fine-tunes' do), so only the name rule
// can keep the system message out.
const ANY_ROLES =
  "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}" +
  '{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}';
// Mistral's own: a system role raises.
const MISTRAL_RAISES =
  "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}" +
  "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}";
const specials = { bosToken: '<s>', eosToken: '</s>' };

test('dropsSystemMessage: any name or path containing "mistral", any case', () => {
  assert.equal(dropsSystemMessage('/models/Mistral-7B-Instruct-v0.2'), true);
  assert.equal(dropsSystemMessage('mistralai/mistral-small'), true);
  assert.equal(dropsSystemMessage('/models/MISTRAL'), true);
  assert.equal(dropsSystemMessage('/models/Llama-2-7b-chat-hf'), false);
  assert.equal(dropsSystemMessage(undefined), false);
});

test('a Mistral-named model gets no system message even when its template accepts one', () => {
  const mistral = configTemplater({ ...specials, chatTemplate: ANY_ROLES }, '/models/Mistral-7B-Instruct-v0.3');
  const wrapped = promptWrapper(mistral, 'auto', true, 'SYSTEM TEXT')('the question');
  assert.equal(wrapped, '<s><|start_header_id|>user<|end_header_id|>\n\nthe question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
  // The old rule (only when the template raises) on request, and for other names by default.
  assert.match(promptWrapper(mistral, 'auto', true, 'SYSTEM TEXT', { systemByName: false })('q'), /system<\|end_header_id\|>\n\nSYSTEM TEXT/);
  const llama = configTemplater({ ...specials, chatTemplate: ANY_ROLES }, '/models/Llama-3-8B-Instruct');
  assert.match(promptWrapper(llama, 'auto', true, 'SYSTEM TEXT')('q'), /SYSTEM TEXT/);
  // modelName overrides the directory (a served model's id, say).
  assert.doesNotMatch(promptWrapper(llama, 'auto', true, 'SYSTEM TEXT', { modelName: 'mistral-7b' })('q'), /SYSTEM TEXT/);
});

test('a template that rejects the system role still gets the user message alone', () => {
  const t = configTemplater({ ...specials, chatTemplate: MISTRAL_RAISES }, '/models/some-finetune');
  assert.equal(promptWrapper(t, 'auto', true, 'SYSTEM TEXT')('q'), '<s>[INST] q [/INST]');
});

test('doubleBos: BOS once more in front, the token ids vLLM 0.7.3 fed the model', async () => {
  const dir = path.join(repoRoot, 'models', 'llama-tiny');
  const tok = Tokenizer.load(dir);
  const t = configTemplater({ ...tok.config, chatTemplate: ANY_ROLES }, dir);
  const single = promptWrapper(t, 'auto', true, 'sys')('Who wrote Emma?');
  const double = promptWrapper(t, 'auto', true, 'sys', { doubleBos: true })('Who wrote Emma?');
  assert.equal(double, `${tok.config.bosToken}${single}`);
  const bos = tok.tokenToId(tok.config.bosToken as string);
  const [one, two] = await tok.encodeRaw([single, double]);
  assert.deepEqual(one.slice(0, 2).map((id) => id === bos), [true, false]);
  assert.deepEqual(two.slice(0, 3).map((id) => id === bos), [true, true, false]);
});

test('the chat endpoint sends no system message for a Mistral model id', async () => {
  const bodies: { model: string; messages: { role: string }[] }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      bodies.push(JSON.parse(body));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ choices: [{ message: { content: 'ok' } }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;
    for (const model of ['mistralai/Mistral-7B-Instruct-v0.2', 'meta-llama/Llama-2-7b-chat-hf']) {
      await new OpenAIGenerator({ url, model, systemPrompt: 'sys' }).generate([{ raw: 'q', wrapped: 'q' }], { maxNewTokens: 4 });
    }
    assert.deepEqual(bodies.map((b) => b.messages.map((m) => m.role)), [['user'], ['system', 'user']]);
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test('--double-bos maps onto doubleBos', async () => {
  assert.equal(backendFlagOptions(await withBackendFlags(yargs(['--double-bos'])).parseAsync()).doubleBos, true);
  assert.equal(backendFlagOptions(await withBackendFlags(yargs([])).parseAsync()).doubleBos, false);
});
