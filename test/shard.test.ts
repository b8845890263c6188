// --shard I/N + `gainrag merge`: the merged shard outputs equal the unsharded output byte for
// byte, for every wired stage and both formats; plus the partition, counting and range reading
// they stand on, and merge's refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chunkRanges, countRecords, parseShard, readStageInput, shardRange } from '../lib/io/records.js';
import { readRecords } from '../lib/io/jsonl.js';
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
  const passages = path.join(work, 'passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').trim().split('\n').slice(-96).join('\n') + '\n');
  const questions = path.join(work, 'questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(5300, 5340).join('\n') + '\n');
  const index = path.join(work, 'index');
  cli(['index', 'build', '--passages', passages, '--encoder', model('bert-tiny'), '--out', index, '--batch-size', '48']);
  const rArgs = ['--index', index, '--encoder', model('bert-tiny'), '--data', questions, '--top-k', '4', '--batch-size', '8'];

  for (const ext of ['jsonl', 'arrow']) {
    const whole = path.join(work, `r.${ext}`);
    cli(['retrieve', ...rArgs, '--out', whole]);
    const shards = [0, 1, 2].map((i) => path.join(work, `r${i}.${ext}`));
    shards.forEach((s, i) => cli(['retrieve', ...rArgs, '--out', s, '--shard', `${i}/3`]));
    const sizes = await Promise.all(shards.map((s) => countRecords(s)));
    assert.deepEqual(sizes, [8, 16, 16], 'shards are whole batches of 8');
    const merged = path.join(work, `r-merged.${ext}`);
    const m = cli(['merge', ...shards, '--out', merged, '--json']);
    assert.equal(JSON.parse(m.stdout).records, 40);
    assert.ok(readFileSync(merged).equals(readFileSync(whole)), `retrieve ${ext}: merged shards differ from the unsharded output`);
  }

  // synthesize on the first 8 retrieved questions, batches of 2, 2 shards; the shards read the
  // Arrow retrieval output, the unsharded run the JSONL one: the same records either way.
  const r8 = path.join(work, 'r8.jsonl');
  writeFileSync(r8, readFileSync(path.join(work, 'r.jsonl'), 'utf8').split('\n').slice(0, 8).join('\n') + '\n');
  const sArgs = ['--llm', model('llama-tiny'), '--top-k', '2', '--batch-questions', '2', '--max-new-tokens', '3', '--pseudo-max-new-tokens', '8'];
  const whole = path.join(work, 's.jsonl');
  cli(['synthesize', '--data', r8, '--out', whole, ...sArgs]);
  const rArrow = path.join(work, 'r.arrow');
  // Shard 0/5 of the 40 Arrow records (aligned to 2) is records 0-7: the same questions.
  const s0 = path.join(work, 's-from-arrow.jsonl');
  cli(['synthesize', '--data', rArrow, '--out', s0, '--shard', '0/5', ...sArgs]);
  assert.ok(readFileSync(s0).equals(readFileSync(whole)), 'synthesize from Arrow input equals synthesize from JSONL input');
  const shards = [0, 1].map((i) => path.join(work, `s${i}.arrow`));
  shards.forEach((s, i) => cli(['synthesize', '--data', r8, '--out', s, '--shard', `${i}/2`, ...sArgs]));
  const wholeArrow = path.join(work, 's.arrow');
  cli(['synthesize', '--data', r8, '--out', wholeArrow, ...sArgs]);
  const merged = path.join(work, 's-merged.arrow');
  cli(['merge', ...shards, '--out', merged]);
  assert.ok(readFileSync(merged).equals(readFileSync(wholeArrow)), 'synthesize arrow: merged shards differ from the unsharded output');
  const records = [];
  for await (const r of readStageInput(merged)) records.push(JSON.stringify(r.record));
  const jsonl = [];
  for await (const r of readRecords(whole)) jsonl.push(JSON.stringify(r.record));
  assert.deepEqual(records, jsonl, 'synthesize Arrow output holds the JSONL records');

  // select (reranker, no pseudo-passage) and generate: JSONL shards from the Arrow retrieval output,
  // Arrow shards from the JSONL one; each merged equals its unsharded run.
  const selArgs = ['--selector', model('xlmr-tiny-reranker'), '--no-pseudo-passage', '--batch-questions', '8', '--candidates', '4', '--k-docs', '2'];
  const genArgs = ['--llm', model('llama-tiny'), '--batch-questions', '4', '--max-new-tokens', '3'];
  for (const [stage, args, input, n] of [['select', selArgs, 'r', 2], ['generate', genArgs, 'sel8', 2]] as const) {
    if (stage === 'generate') writeFileSync(path.join(work, 'sel8.jsonl'), readFileSync(path.join(work, 'sel.jsonl'), 'utf8').split('\n').slice(0, 8).join('\n') + '\n');
    for (const [ext, from] of [['jsonl', 'arrow'], ['arrow', 'jsonl']] as const) {
      const src = stage === 'select' ? path.join(work, `${input}.${from}`) : path.join(work, `${input}.jsonl`);
      const whole = path.join(work, stage === 'select' && ext === 'jsonl' ? 'sel.jsonl' : `${stage}-whole.${ext}`);
      cli([stage, ...args, '--data', path.join(work, `${input}.jsonl`), '--out', whole]);
      const parts = Array.from({ length: n }, (_, i) => path.join(work, `${stage}-${i}.${ext}`));
      parts.forEach((p, i) => cli([stage, ...args, '--data', src, '--out', p, '--shard', `${i}/${n}`]));
      const joined = path.join(work, `${stage}-merged.${ext}`);
      cli(['merge', ...parts, '--out', joined]);
      assert.ok(readFileSync(joined).equals(readFileSync(whole)), `${stage} ${ext}: merged shards differ from the unsharded output`);
    }
  }

  // merge refuses what cannot be one job's shards.
  const bad = cli(['merge', path.join(work, 'r0.jsonl'), path.join(work, 'r1.arrow'), '--out', path.join(work, 'x.jsonl')], false);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /is arrow but .* is jsonl.*\(E_DATA\)/);
  const mixed = cli(['merge', path.join(work, 'r0.arrow'), path.join(work, 's0.arrow'), '--out', path.join(work, 'x.arrow')], false);
  assert.match(mixed.stderr, /schema differs.*\(E_DATA\)/);
  assert.equal(existsSync(path.join(work, 'x.arrow')), false);
  assert.equal(existsSync(path.join(work, 'x.arrow.partial')), false);
  const self = cli(['merge', path.join(work, 'r0.jsonl'), '--out', path.join(work, 'r0.jsonl')], false);
  assert.match(self.stderr, /E_INVALID_ARG/);
  const shardBad = cli(['retrieve', ...rArgs, '--out', path.join(work, 'y.jsonl'), '--shard', '3/3'], false);
  assert.match(shardBad.stderr, /out of range.*\(E_INVALID_ARG\)/);
});
