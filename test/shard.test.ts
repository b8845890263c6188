// --shard I/N + `gainrag merge`: the merged shard outputs equal the unsharded output byte for
// byte, for every wired stage and both formats; plus the partition, counting and range reading
// they stand on, and merge's refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chunkRanges, countRecords, parseShard, readStageInput, shardRange, type RecordFormat, type Shard } from '../lib/io/records.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { openRetrieveResources, retrieve } from '../lib/retrieval/retrieve.js';
import { synthesize } from '../lib/pipeline/synthesize.js';
import { select } from '../lib/pipeline/select.js';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { mergeOutputs } from '../lib/scale/merge.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { cliPath, dataDir, repoRoot } from './helpers.js';

// The bundled tiny models (the same as test/fixtures), read only.
const model = (name: string) => path.join(repoRoot, 'models', name);

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-shard-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const squad = path.join(dataDir, 'squad_v1.1_dev_open');
const env = { ...process.env, GAINRAG_THREADS: '2' };

function cli(args: string[], expectOk = true) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: work, env });
  if (expectOk) assert.equal(r.status, 0, `gainrag ${args.join(' ')} failed:\n${r.stderr}`);
  return r;
}

test('parseShard: I/N, Slurm and Kubernetes variables, clear errors', () => {
  assert.deepEqual(parseShard('2/5'), { index: 2, count: 5 });
  assert.equal(parseShard(undefined), undefined);
  assert.deepEqual(parseShard('env', { SLURM_ARRAY_TASK_ID: '7', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_COUNT: '8' }), { index: 6, count: 8 });
  assert.deepEqual(parseShard('env', { JOB_COMPLETION_INDEX: '3', GAINRAG_SHARD_COUNT: '4' }), { index: 3, count: 4 });
  for (const bad of ['5/5', '1/0', '-1/3', 'a/b', '1of3']) assert.throws(() => parseShard(bad), { code: 'E_INVALID_ARG' }, bad);
  assert.throws(() => parseShard('env', {}), { code: 'E_INVALID_ARG', message: /SLURM_ARRAY_TASK_ID/ });
  assert.throws(() => parseShard('env', { JOB_COMPLETION_INDEX: '0' }), { code: 'E_INVALID_ARG' }, 'no shard count');
});

test('shardRange: contiguous, covering, batch-aligned; chunkRanges likewise', () => {
  for (const [total, n, align] of [[0, 3, 4], [5, 8, 1], [40, 3, 8], [1001, 7, 16], [17, 1, 512]]) {
    let next = 0;
    for (let i = 0; i < n; i++) {
      const r = shardRange(total, { index: i, count: n }, align);
      assert.equal(r.start, next, `shard ${i}/${n} of ${total} starts where the previous ended`);
      assert.ok(r.start % align === 0 || r.start === total);
      assert.ok(r.end >= r.start);
      next = r.end;
    }
    assert.equal(next, total);
  }
  assert.deepEqual(shardRange(40, { index: 1, count: 3 }, 8), { start: 8, end: 24 });
  assert.deepEqual(chunkRanges(10, 4), [{ start: 0, end: 4 }, { start: 4, end: 8 }, { start: 8, end: 10 }]);
});

test('countRecords and readStageInput ranges: JSONL with blank lines and CRLF, JSON arrays', async () => {
  const f = path.join(work, 'blank.jsonl');
  writeFileSync(f, '\n{"i":0}\n  \n{"i":1}\r\n{"i":2}\n\n{"i":3}\n{"i":4}');
  assert.equal(await countRecords(f), 5);
  const read = async (file: string, start: number, end: number) => {
    const out = [];
    for await (const r of readStageInput(file, { range: { start, end } })) out.push([r.record.i, r.line, r.position]);
    return out;
  };
  assert.deepEqual(await read(f, 0, 2), [[0, 2, 0], [1, 4, 1]]);
  assert.deepEqual(await read(f, 2, 4), [[2, 5, 2], [3, 7, 3]], 'line numbers stay those of the file');
  assert.deepEqual(await read(f, 4, 99), [[4, 8, 4]]);
  assert.deepEqual(await read(f, 7, 9), []);
  const a = path.join(work, 'array.json');
  writeFileSync(a, ' [{"i":0},\n{"i":1},\n{"i":2}]');
  assert.equal(await countRecords(a), 3);
  assert.deepEqual((await read(a, 1, 3)).map((x) => x[0]), [1, 2]);
  // A damaged line inside the range is reported with its file line; one outside is never parsed.
  writeFileSync(f, '{"i":0}\n{"i":\n{"i":2}\n');
  assert.equal(await countRecords(f), 3);
  assert.deepEqual((await read(f, 2, 3)).map((x) => x[0]), [2]);
  await assert.rejects(read(f, 0, 3), { code: 'E_DATA', message: /blank\.jsonl:2:/ });
});

test('retrieve, synthesize, select, generate: --shard + merge equals the unsharded output byte for byte (JSONL and Arrow)', async () => {
  // Held-apart slice: questions 5300-5339 and the last 96 passages of the bundled SQuAD data.
  // Stages run in this process with each model loaded once (CLI spawns cost seconds each on a
  // busy machine); the CLI's --shard and merge are checked against them below.
  const passages = path.join(work, 'passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').trim().split('\n').slice(-96).join('\n') + '\n');
  const questions = path.join(work, 'questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(5300, 5340).join('\n') + '\n');
  const index = path.join(work, 'index');
  await buildIndex({ passages, encoder: model('bert-tiny'), out: index, batchSize: 48 });
  const resources = await openRetrieveResources({ index, encoder: model('bert-tiny') });
  const lm = await CausalLM.load(model('llama-tiny'));
  const selector = await CrossEncoder.load(model('xlmr-tiny-reranker'));
  const f = (name: string) => path.join(work, name);
  const same = (a: string, b: string, what: string) => assert.ok(readFileSync(f(a)).equals(readFileSync(f(b))), `${what}: ${a} differs from ${b}`);
  const stages = {
    retrieve: (data: string, out: string, format: RecordFormat, shard?: Shard) =>
      retrieve({ index, encoder: model('bert-tiny'), data: f(data), out: f(out), topK: 4, batchSize: 8, resources, format, shard }),
    synthesize: (data: string, out: string, format: RecordFormat, shard?: Shard) =>
      synthesize(lm, { data: f(data), out: f(out), topK: 2, batchQuestions: 2, maxNewTokens: 3, pseudoMaxNewTokens: 8, format, shard }),
    select: (data: string, out: string, format: RecordFormat, shard?: Shard) =>
      select(selector, { data: f(data), out: f(out), pseudoPassage: false, batchQuestions: 8, candidates: 4, kDocs: 2, format, shard }),
    generate: (data: string, out: string, format: RecordFormat, shard?: Shard) =>
      generateAnswers({ lm, data: f(data), out: f(out), batchQuestions: 4, maxNewTokens: 3, format, shard }),
  };
  // stage, its input (unsharded run), the input its shards read (the other format), shard count
  const plan = [
    ['retrieve', 'questions.jsonl', 'questions.jsonl', 3],
    ['synthesize', 'r8.jsonl', 'r8.arrow', 2],
    ['select', 'retrieve.jsonl', 'retrieve.arrow', 2],
    ['generate', 's8.jsonl', 's8.jsonl', 2],
  ] as const;
  for (const [stage, input, shardInput, n] of plan) {
    if (stage === 'synthesize') {
      writeFileSync(f('r8.jsonl'), readFileSync(f('retrieve.jsonl'), 'utf8').split('\n').slice(0, 8).join('\n') + '\n');
      await stages.retrieve('questions.jsonl', 'r8.arrow', 'arrow', { index: 0, count: 5 }); // records 0-7
    }
    if (stage === 'generate') writeFileSync(f('s8.jsonl'), readFileSync(f('select.jsonl'), 'utf8').split('\n').slice(0, 8).join('\n') + '\n');
    for (const format of ['jsonl', 'arrow'] as const) {
      await stages[stage](input, `${stage}.${format}`, format);
      const parts = Array.from({ length: n }, (_, i) => `${stage}-${i}.${format}`);
      for (const [i, part] of parts.entries()) await stages[stage](shardInput, part, format, { index: i, count: n });
      const merged = await mergeOutputs(parts.map(f), f(`${stage}-merged.${format}`));
      assert.equal(merged.records, await countRecords(f(`${stage}.${format}`)));
      same(`${stage}-merged.${format}`, `${stage}.${format}`, `${stage} ${format}: merged shards vs the unsharded run`);
    }
    // The Arrow output holds the JSONL records.
    const a = [];
    for await (const r of readStageInput(f(`${stage}.arrow`))) a.push(JSON.stringify(r.record));
    assert.equal(a.join('\n') + '\n', readFileSync(f(`${stage}.jsonl`), 'utf8'), `${stage}: Arrow records differ from JSONL`);
  }
  assert.deepEqual(await Promise.all([0, 1, 2].map((i) => countRecords(f(`retrieve-${i}.jsonl`)))), [8, 16, 16], 'shards are whole batches of 8');

  // The CLI: --shard on a stage, and merge, give the same bytes.
  const rArgs = ['--index', index, '--encoder', model('bert-tiny'), '--data', questions, '--top-k', '4', '--batch-size', '8'];
  cli(['retrieve', ...rArgs, '--out', f('cli-1.arrow'), '--shard', '1/3']);
  same('cli-1.arrow', 'retrieve-1.arrow', 'gainrag retrieve --shard 1/3');
  const m = cli(['merge', f('retrieve-0.arrow'), f('cli-1.arrow'), f('retrieve-2.arrow'), '--out', f('cli-merged.arrow'), '--json']);
  assert.equal(JSON.parse(m.stdout).records, 40);
  same('cli-merged.arrow', 'retrieve.arrow', 'gainrag merge');
  const shardBad = cli(['retrieve', ...rArgs, '--out', f('y.jsonl'), '--shard', '3/3'], false);
  assert.match(shardBad.stderr, /out of range.*\(E_INVALID_ARG\)/);

  // merge refuses what cannot be one job's shards, and leaves nothing behind.
  await assert.rejects(mergeOutputs([f('retrieve-0.jsonl'), f('retrieve-1.arrow')], f('x.jsonl')), { code: 'E_DATA', message: /is arrow but .* is jsonl/ });
  await assert.rejects(mergeOutputs([f('retrieve-0.arrow'), f('select-0.arrow')], f('x.arrow')), { code: 'E_DATA', message: /select-0\.arrow is a select output, .*retrieve-0\.arrow a retrieve output; shards of one job share stage/ }); // told by their manifests
  assert.equal(existsSync(f('x.arrow')) || existsSync(f('x.arrow.partial')), false);
  await assert.rejects(mergeOutputs([f('retrieve-0.jsonl')], f('retrieve-0.jsonl')), { code: 'E_INVALID_ARG' });
  resources.store.close();
});
