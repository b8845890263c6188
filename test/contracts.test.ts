// Contracts from the second reliability probe (issue #20 item 6): Arrow inputs for evaluate,
// filter and to-selector; options given twice; alpha bounds in the library; proper codes instead
// of E_INTERNAL; invalid UTF-8; an empty question; float32-overflowing teacher scores.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs, { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { AtomicArrowWriter } from '../lib/io/arrow-records.js';
import { readRecords } from '../lib/io/jsonl.js';
import { evaluate } from '../lib/pipeline/evaluate.js';
import { filterSynthesized } from '../lib/pipeline/filter.js';
import { toSelector } from '../lib/pipeline/to-selector.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { retrieve } from '../lib/retrieval/retrieve.js';
import { loadTrainingData } from '../lib/training/data.js';
import { cliPath, repoRoot } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-contracts-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const model = (name: string) => path.join(repoRoot, 'models', name);
type Coded = Error & { code?: string; errno?: string };

function cli(args: string[]) {
  return spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: tmp });
}

function jsonl(name: string, records: unknown[]): string {
  const file = path.join(tmp, name);
  writeFileSync(file, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

function arrow(name: string, records: unknown[]): string {
  const file = path.join(tmp, name);
  const w = new AtomicArrowWriter(file, 'json');
  for (const r of records) w.write(r);
  w.flush();
  w.close();
  return file;
}

const psg = (title: string, ppl: number, em: boolean) => ({ title, text: `text ${title}`, PPL_CD: ppl, retrieved_ppl: ppl, EM_with_retrieval: em });
const synthesized = [
  { question: 'q1', answers: ['a'], passages: [psg('A', 3, true), psg('B', 2, true)] },
  { question: 'q2', answers: ['b'], passages: [psg('C', 1, false), psg('D', 5, true)] },
];
const answered = [
  { question: 'q1', answers: ['Paris'], generated: 'Paris', ctxs: [{ title: 't', text: 'in Paris' }] },
  { question: 'q2', answers: ['Rome'], generated: 'Milan', ctxs: [{ title: 't', text: 'nothing' }] },
];

test('evaluate, filter and to-selector read Arrow inputs exactly as the same JSONL', async () => {
  const ev = await evaluate({ data: arrow('answers.arrow', answered) });
  const evJ = await evaluate({ data: jsonl('answers.jsonl', answered) });
  assert.deepEqual({ ...ev, input: '' }, { ...evJ, input: '' });
  assert.equal(ev.evaluated, 2);
  const fA = await filterSynthesized({ data: arrow('synth.arrow', synthesized), out: path.join(tmp, 'fa.jsonl') });
  const fJ = await filterSynthesized({ data: jsonl('synth.jsonl', synthesized), out: path.join(tmp, 'fj.jsonl') });
  assert.deepEqual(fA, fJ);
  assert.equal(readFileSync(path.join(tmp, 'fa.jsonl'), 'utf8'), readFileSync(path.join(tmp, 'fj.jsonl'), 'utf8'));
  const tA = await toSelector({ data: path.join(tmp, 'synth.arrow'), out: path.join(tmp, 'ta.jsonl') });
  const tJ = await toSelector({ data: path.join(tmp, 'synth.jsonl'), out: path.join(tmp, 'tj.jsonl') });
  assert.deepEqual(tA, tJ);
  assert.equal(tA.written, 2);
  assert.equal(readFileSync(path.join(tmp, 'ta.jsonl'), 'utf8'), readFileSync(path.join(tmp, 'tj.jsonl'), 'utf8'));
});

test('an option given twice is E_INVALID_ARG naming it, for every command; array options still repeat', () => {
  const data = jsonl('twice.jsonl', answered);
  for (const args of [
    ['evaluate', '--data', data, '--field', 'generated', '--field', 'x'],
    ['select', '--data', data, '--selector', model('xlmr-tiny-reranker'), '--k-docs', '1', '--k-docs', '2', '--out', path.join(tmp, 's.jsonl')],
    ['compare', '--data', data, '--llm', model('llama-tiny'), '--k-docs', '1', '--k-docs', '2', '--out', path.join(tmp, 'cmp')],
    ['retrieve', '--index', tmp, '--encoder', model('bert-tiny'), '--data', data, '--top-k', '3', '--top-k', '4', '--out', path.join(tmp, 'r.jsonl')],
  ]) {
    const r = cli(args);
    assert.equal(r.status, 1, `${args.join(' ')}\n${r.stderr}`);
    assert.match(r.stderr, /--(field|k-docs|top-k) was given 2 times .*\(E_INVALID_ARG\)/, args.join(' '));
  }
  // what follows a bare -- is a list by design (cluster submit's stage flags): it reaches the
  // stage's own checks (here: no Redis listens on port 1)
  const submit = cli(['cluster', 'submit', '--stage', 'synthesize', '--data', data, '--out', path.join(tmp, 'c.jsonl'), '--redis', 'redis://127.0.0.1:1',
    '--', '--llm', model('llama-tiny'), '--top-k', '2']);
  assert.doesNotMatch(submit.stderr, /given \d+ times/, submit.stderr);
  assert.match(submit.stderr, /cannot reach Redis .*\(E_IO\)/);
  const out = path.join(tmp, 'merged.jsonl');
  const r = cli(['merge', jsonl('m0.jsonl', [{ a: 1 }]), jsonl('m1.jsonl', [{ a: 2 }]), '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(out, 'utf8'), '{"a":1}\n{"a":2}\n');
});

test('CausalLM contrastive scoring refuses alpha outside [0, 100] instead of returning NaN', async () => {
  const lm = await CausalLM.load(model('llama-tiny'));
  try {
    const item = { standardPrompt: 'Q: where?\nA:', contextPrompts: ['ctx one\nQ: where?\nA:'], answers: ['here'] };
    for (const alpha of [1e300, 101, -1, NaN]) {
      await assert.rejects(lm.contrastivePerplexity([item], { alpha }), (err: Error) => err instanceof RangeError && /alpha must be a number in \[0, 100\]/.test(err.message), String(alpha));
    }
    const [ok] = await lm.contrastivePerplexity([item], { alpha: 100 });
    assert.ok(ok.min.every((x: number) => !Number.isNaN(x)));
  } finally {
    lm.dispose();
  }
});

test('E_IO (errno ENOSPC) when the disk fills up during index build', { skip: !fs.existsSync('/proc/self/fd') }, async () => {
  const passages = jsonl('passages.jsonl', [{ id: '1', title: 'A', text: 'alpha passage' }, { id: '2', title: 'B', text: 'beta passage' }]);
  const real = fs.writeSync;
  // The disk fills while the passage store is written (the index's own files are native).
  (fs as { writeSync: unknown }).writeSync = (fd: number, ...rest: unknown[]) => {
    if (fs.readlinkSync(`/proc/self/fd/${fd}`).endsWith('passages.jsonl')) {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
    }
    return (real as (...a: unknown[]) => number)(fd, ...rest);
  };
  syncBuiltinESMExports();
  try {
    await assert.rejects(buildIndex({ passages, encoder: model('bert-tiny'), out: path.join(tmp, 'full-index') }),
      (err: Coded) => err.code === 'E_IO' && err.errno === 'ENOSPC' && /no space left/.test(err.message));
  } finally {
    (fs as { writeSync: unknown }).writeSync = real;
    syncBuiltinESMExports();
  }
  assert.ok(!fs.existsSync(path.join(tmp, 'full-index')));
});

test('retrieve refuses a record whose question is empty (E_DATA naming FILE:LINE)', async () => {
  const passages = jsonl('p2.jsonl', [{ id: '1', title: 'A', text: 'alpha passage' }, { id: '2', title: 'B', text: 'beta passage' }]);
  const index = path.join(tmp, 'index');
  await buildIndex({ passages, encoder: model('bert-tiny'), out: index });
  const data = jsonl('empty-q.jsonl', [{ question: 'where is alpha?', answers: ['alpha'] }, { question: '  ', answers: ['beta'] }]);
  await assert.rejects(retrieve({ index, encoder: model('bert-tiny'), data, out: path.join(tmp, 'r-empty.jsonl'), topK: 1 }),
    (err: Coded) => err.code === 'E_DATA' && /empty-q\.jsonl:2: 'question' is empty/.test(err.message));
});

test('CLI codes: a directory as --data or as a merge shard, a file as compare --out, generate without --llm', () => {
  const data = jsonl('codes.jsonl', answered);
  const dir = path.join(tmp, 'a-dir');
  mkdirSync(dir);
  const file = path.join(tmp, 'a-file');
  writeFileSync(file, 'keep me\n');
  const cases: [string[], RegExp][] = [
    [['evaluate', '--data', dir], /a-dir is a directory, not a regular file/],
    [['filter', '--data', dir, '--out', path.join(tmp, 'x.jsonl')], /a-dir is a directory/],
    [['merge', data, dir, '--out', path.join(tmp, 'y.jsonl')], /a-dir is a directory/],
    [['compare', '--data', data, '--llm', model('llama-tiny'), '--out', file], /a-file/],
    [['generate', '--data', data, '--out', path.join(tmp, 'g.jsonl')], /give --llm DIR or --generate-url URL/],
  ];
  for (const [args, message] of cases) {
    const r = cli(args);
    assert.equal(r.status, 1, `${args.join(' ')}\n${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.match(r.stderr, /\(E_INVALID_ARG\)/, args.join(' '));
  }
  assert.equal(readFileSync(file, 'utf8'), 'keep me\n');
});

test('a reranker whose model_max_length is 0 fails to load with E_MODEL_CONFIG', async () => {
  const dir = path.join(tmp, 'reranker-maxlen0');
  mkdirSync(dir);
  for (const f of fs.readdirSync(model('xlmr-tiny-reranker'))) copyFileSync(path.join(model('xlmr-tiny-reranker'), f), path.join(dir, f));
  const cfg = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, model_max_length: 0 }));
  await assert.rejects(CrossEncoder.load(dir), (err: Coded) => err.code === 'E_MODEL_CONFIG' && /model_max_length must be a positive integer, got 0/.test(err.message));
});

async function drain(file: string): Promise<number> {
  let n = 0;
  for await (const _ of readRecords(file)) n++;
  return n;
}

test('invalid UTF-8 in an input is E_DATA naming FILE:LINE; characters split across chunks read fine', async () => {
  const bad = path.join(tmp, 'latin1.jsonl');
  writeFileSync(bad, Buffer.concat([Buffer.from('{"q": "one"}\n{"q": "two"}\n{"q": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
  await assert.rejects(drain(bad), (err: Coded) => err.code === 'E_DATA' && /latin1\.jsonl:3: invalid UTF-8 \(byte 0xe9\)/.test(err.message));
  const arr = path.join(tmp, 'latin1.json');
  writeFileSync(arr, Buffer.concat([Buffer.from('[\n{"q": "one"},\n{"q": "x'), Buffer.from([0xff]), Buffer.from('"}\n]')]));
  await assert.rejects(drain(arr), (err: Coded) => err.code === 'E_DATA' && /latin1\.json:3: invalid UTF-8/.test(err.message));
  const cut = path.join(tmp, 'cut.jsonl');
  writeFileSync(cut, Buffer.concat([Buffer.from('{"q": "a"}\n'), Buffer.from('é').subarray(0, 1)]));
  await assert.rejects(drain(cut), (err: Coded) => err.code === 'E_DATA' && /cut\.jsonl:2: invalid UTF-8/.test(err.message));
  // a multi-byte character on every possible chunk boundary (chunks are 1 MiB)
  const long = path.join(tmp, 'split.jsonl');
  const pad = (n: number) => JSON.stringify({ q: `${'a'.repeat(n)}é€😀` });
  writeFileSync(long, [pad((1 << 20) - 9), pad((1 << 20) - 11), pad(3)].join('\n') + '\n');
  const texts: string[] = [];
  for await (const { record } of readRecords(long)) texts.push(record.q as string);
  assert.equal(texts.length, 3);
  for (const t of texts) assert.ok(t.endsWith('é€😀'));
});

test('train data: a teacher score beyond float32 range (1e308) is E_DATA with FILE:LINE up front', async () => {
  const rec = (pos: number[], neg: number[]) => ({ query: 'q', pos: ['p'], neg: ['n1', 'n2'], pos_scores: pos, neg_scores: neg });
  const file = jsonl('train.jsonl', [rec([1], [0, -1]), rec([1e308], [0, -1]), rec([1], [-1e300, -Infinity])]);
  await assert.rejects(loadTrainingData(file), (err: Coded) =>
    err.code === 'E_DATA' && /train\.jsonl:2: .*"pos_scores\[0\]" must be a finite number, got 1e\+308 \(beyond float32 range/.test(err.message) && /train\.jsonl:3: .*neg_scores\[0\]/.test(err.message));
});
