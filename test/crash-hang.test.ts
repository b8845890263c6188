// Crashes and hangs from the second reliability probe (issue #20 item 6): a cyclic record in the
// JSON writer, FIFOs and devices where a file is expected (model tokenizer files, --data), and an
// input without newlines. What could hang runs in a child process, so a regression fails the
// test (killed by the guard below) instead of stalling the runner.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { stringifyJson } from '../lib/io/json-values.js';
import { MAX_RECORD_CHARS, readRecords } from '../lib/io/jsonl.js';
import { countRecords, readStageInput } from '../lib/io/records.js';
import { Tokenizer } from '../lib/tokenizer.js';
import { cliPath, repoRoot } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-crash-hang-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function fifo(file: string): string {
  execFileSync('mkfifo', [file]);
  return file;
}

async function drain(records: AsyncIterable<unknown>): Promise<number> {
  let n = 0;
  for await (const _ of records) n++;
  return n;
}

// A hang guard, not a timing assertion: a child that is still blocked after a minute has hung.
function cli(args: string[]) {
  return spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
}

test('stringifyJson throws a TypeError naming the cycle for a cyclic record', () => {
  const a: Record<string, unknown> = { question: 'q', score: 1 };
  a.self = a;
  assert.throws(() => stringifyJson(a), (err: Error) => err instanceof TypeError && /circular/i.test(err.message) && /self/.test(err.message));
  // with a non-finite number, which takes the other (replacer) path
  const b: Record<string, unknown> = { ppl: Infinity, inner: { list: [] as unknown[] } };
  ((b.inner as { list: unknown[] }).list).push(b);
  assert.throws(() => stringifyJson(b), (err: Error) => err instanceof TypeError && /circular/i.test(err.message));
  // an object shared by two fields is no cycle
  const shared = { x: -Infinity };
  assert.equal(stringifyJson({ a: shared, b: shared }), '{"a":{"x":-1e999},"b":{"x":-1e999}}');
});

test('a FIFO as tokenizer.json or tokenizer_config.json is refused (E_MODEL_CONFIG) without opening it', () => {
  const model = path.join(repoRoot, 'models', 'bert-tiny');
  const a = path.join(tmp, 'fifo-tokenizer');
  mkdirSync(a);
  fifo(path.join(a, 'tokenizer.json'));
  assert.throws(() => Tokenizer.load(a), (err: Error & { code?: string }) => err.code === 'E_MODEL_CONFIG' && err.message.includes(path.join(a, 'tokenizer.json')) && /FIFO/.test(err.message));
  const b = path.join(tmp, 'fifo-config');
  mkdirSync(b);
  copyFileSync(path.join(model, 'tokenizer.json'), path.join(b, 'tokenizer.json'));
  fifo(path.join(b, 'tokenizer_config.json'));
  assert.throws(() => Tokenizer.load(b), (err: Error & { code?: string }) => err.code === 'E_MODEL_CONFIG' && err.message.includes('tokenizer_config.json'));
});

test('a tokenizer_config.json whose model_max_length is 0 is E_MODEL_CONFIG', () => {
  const model = path.join(repoRoot, 'models', 'xlmr-tiny-reranker');
  for (const bad of [0, -5, 3.5, 'long']) {
    const dir = path.join(tmp, `maxlen-${String(bad)}`);
    mkdirSync(dir);
    copyFileSync(path.join(model, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    const cfg = JSON.parse(readFileSync(path.join(model, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, model_max_length: bad }));
    assert.throws(() => Tokenizer.load(dir), (err: Error & { code?: string }) => err.code === 'E_MODEL_CONFIG' && /model_max_length/.test(err.message), String(bad));
  }
  // transformers' "no limit" sentinel stays accepted
  const dir = path.join(tmp, 'maxlen-huge');
  mkdirSync(dir);
  copyFileSync(path.join(model, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 1e30 }));
  assert.equal(Tokenizer.load(dir).config.modelMaxLength, undefined);
});

test('a FIFO, a directory or a device as an input is E_INVALID_ARG naming it, before any open()', async () => {
  const pipe = fifo(path.join(tmp, 'data.fifo'));
  for (const file of [pipe, tmp, '/dev/zero']) {
    const refused = (err: Error & { code?: string }) => err.code === 'E_INVALID_ARG' && err.message.includes(file);
    await assert.rejects(drain(readRecords(file)), refused, file);
    await assert.rejects(drain(readStageInput(file)), refused, file);
    await assert.rejects(countRecords(file), refused, file);
  }
  // a missing file stays an I/O error
  await assert.rejects(drain(readRecords(path.join(tmp, 'missing.jsonl'))), (err: Error & { code?: string }) => err.code === 'E_IO');
});

test('CLI: --data FIFO and evaluate --data /dev/zero exit 1 with E_INVALID_ARG instead of blocking or growing', () => {
  const pipe = fifo(path.join(tmp, 'cli.fifo'));
  for (const args of [['evaluate', '--data', '/dev/zero'], ['evaluate', '--data', pipe], ['filter', '--data', pipe, '--out', path.join(tmp, 'f.jsonl')]]) {
    const r = cli(args);
    assert.equal(r.signal, null, `${args.join(' ')} hung`);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /not a regular file.*\(E_INVALID_ARG\)/, args.join(' '));
  }
});

test('a record longer than MAX_RECORD_CHARS is E_DATA naming FILE:LINE, in JSONL and in a JSON array', async () => {
  assert.equal(MAX_RECORD_CHARS, 64 * 1024 * 1024);
  const big = 'x'.repeat(MAX_RECORD_CHARS + 10);
  const jsonl = path.join(tmp, 'long.jsonl');
  writeFileSync(jsonl, `{"question": "ok"}\n${big}\n`);
  await assert.rejects(drain(readRecords(jsonl)), (err: Error & { code?: string }) => err.code === 'E_DATA' && /long\.jsonl:2: record is longer than 64 Mi/.test(err.message));
  const noNewline = path.join(tmp, 'nonl.jsonl');
  writeFileSync(noNewline, big);
  await assert.rejects(drain(readRecords(noNewline)), (err: Error & { code?: string }) => err.code === 'E_DATA' && /nonl\.jsonl:1: record is longer/.test(err.message));
  const array = path.join(tmp, 'long.json');
  writeFileSync(array, `[\n{"question": "ok"},\n{"question": "${big}"}\n]`);
  await assert.rejects(drain(readRecords(array)), (err: Error & { code?: string }) => err.code === 'E_DATA' && /long\.json:3: record is longer/.test(err.message));
  // just under the limit still reads
  const edge = path.join(tmp, 'edge.jsonl');
  writeFileSync(edge, `{"q": "${'y'.repeat(MAX_RECORD_CHARS - 20)}"}\n{"q": 1}\n`);
  assert.equal(await drain(readRecords(edge)), 2);
});
