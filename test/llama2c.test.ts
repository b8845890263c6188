// llama2.c import: stories260K (a real model trained on TinyStories) converted to a Hugging Face
// directory must decode greedily, 200 steps from BOS, to llama2.c's documented output.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { CausalLM } from '../lib/models/causal-lm.js';
import { convertLlama2c } from '../lib/convert/llama2c.js';
import { cliPath, dataDir } from './helpers.js';

const src = path.join(dataDir, 'tiny_models', 'stories260K');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'gainrag-llama2c-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('gainrag convert llama2c writes a Hugging Face directory', () => {
  const out = path.join(tmp, 'cli');
  const r = spawnSync(process.execPath, [cliPath, 'convert', 'llama2c', '--checkpoint', path.join(src, 'stories260K.bin'),
    '--tokenizer', path.join(src, 'tok512.bin'), '--out', out, '--json'], { encoding: 'utf8', env: process.env });
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.header.dim, 64);
  assert.equal(summary.header.sharedClassifier, true);
  assert.deepEqual(readdirSync(out).sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const config = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
  assert.equal(config.rope_theta, 10000);
  assert.equal(config.rms_norm_eps, 1e-5);
  assert.equal(config.tie_word_embeddings, true);
  assert.equal(config.num_key_value_heads, 4);
  // No temporary directory is left beside the output.
  assert.deepEqual(readdirSync(tmp).filter((f) => f.includes('.tmp-')), []);
  // A non-empty target is refused unless --overwrite.
  const again = spawnSync(process.execPath, [cliPath, 'convert', 'llama2c', '--checkpoint', path.join(src, 'stories260K.bin'),
    '--tokenizer', path.join(src, 'tok512.bin'), '--out', out], { encoding: 'utf8' });
  assert.notEqual(again.status, 0);
  assert.match(again.stderr, /E_IO/);
});

test('greedy decoding for 200 steps from BOS reproduces llama2.c byte for byte', async () => {
  const out = path.join(tmp, 'api');
  convertLlama2c({ checkpoint: path.join(src, 'stories260K.bin'), tokenizer: path.join(src, 'tok512.bin'), out });
  const lm = await CausalLM.load(out);
  // llama2.c `run stories260K.bin -z tok512.bin -t 0 -n 200`: BOS (id 1) at position 0, then
  // 200 sampled tokens; it prints each piece (dropping the leading space of the first piece
  // after BOS, raw bytes for <0xXX>) and a final newline. The expected file holds exactly the
  // printed pieces, without that final newline: 464 bytes, compared here as bytes.
  const [ids] = await lm.generateIds({ ids: Int32Array.from([1]), offsets: Int32Array.from([0, 1]) }, 200);
  assert.equal(ids.length, 200);
  const text = await lm.tokenizer.decode(ids);
  const expected = readFileSync(path.join(src, 'expected_greedy_t0_200steps.txt'));
  assert.equal(expected.length, 464);
  assert.ok(Buffer.from(text, 'utf8').equals(expected), `got:\n${text}`);
  // The tokenizer encodes the text back into the very ids the model produced (merges ranked
  // like llama2.c's score order, metaspace and byte fallback included).
  const reencoded = await lm.tokenizer.encodeRaw([text]);
  assert.deepEqual(reencoded[0], ids);
});

test('bad llama2.c inputs are clear errors', () => {
  const bad = path.join(tmp, 'bad.bin');
  writeFileSync(bad, Buffer.alloc(10));
  assert.throws(() => convertLlama2c({ checkpoint: bad, tokenizer: path.join(src, 'tok512.bin'), out: path.join(tmp, 'x') }),
    (e: { code?: string }) => e.code === 'E_DATA');
  const truncated = path.join(tmp, 'short.bin');
  writeFileSync(truncated, readFileSync(path.join(src, 'stories260K.bin')).subarray(0, 5000));
  assert.throws(() => convertLlama2c({ checkpoint: truncated, tokenizer: path.join(src, 'tok512.bin'), out: path.join(tmp, 'y') }),
    (e: { code?: string; message: string }) => e.code === 'E_DATA' && /ends early/.test(e.message));
  assert.throws(() => convertLlama2c({ checkpoint: path.join(tmp, 'nope.bin'), tokenizer: path.join(src, 'tok512.bin'), out: path.join(tmp, 'z') }),
    (e: { code?: string }) => e.code === 'E_IO');
  assert.equal(existsSync(path.join(tmp, 'y')), false);
});
