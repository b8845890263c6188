// The stage table (lib/stages) and the one stage runner (lib/pipeline/run-stage.ts):
// - the CLI and the cluster runner turn the same argv into the same library options, for every
//   stage and flag, and a cluster chunk of `generate --no-retrieval` equals the single-process run;
// - select reports the reference's numbers: rerank recall over the K kept, exact ties resolved
//   as the reference's argsort (the later candidate, the pseudo-passage, first);
// - the runner's rules: damaged input flushes what was read before it, a finished output is
//   reused only with the same settings and weights, an interrupted run resumes only onto the
//   same weights, one over-long question skips one record.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { cliParser } from '../lib/cli/parser.js';
import { commands } from '../lib/cli/commands/index.js';
import { STAGE_TABLE, STAGES, type StageName } from '../lib/stages/index.js';
import { parseStageArgs, runChunk } from '../lib/scale/stages.js';
import { select, type PairScorer } from '../lib/pipeline/select.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { cliPath, fixture, repoRoot } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-stage-table-'));
after(() => rmSync(work, { recursive: true, force: true }));
const model = (name: string) => path.join(repoRoot, 'models', name);

// Every flag of every stage, each with a value other than its default.
const FLAGS: Record<StageName, string[]> = {
  retrieve: [
    '--index', 'idx', '--encoder', 'enc', '--top-k', '7', '--batch-size', '9', '--max-length', '33', '--device', 'cpu', '--pooling', 'cls', '--no-normalize',
    '--query-prefix', 'query: ', '--passage-prefix', 'passage: ', '--allow-encoder-mismatch', '--shard', '1/3', '--format', 'arrow', '--encoder-dtype', 'bfloat16', '--matmul-precision', 'high',
  ],
  synthesize: [
    '--llm', 'lm', '--top-k', '5', '--alpha', '0.25', '--task', 'FEVER', '--instruction', 'Say it.', '--no-pseudo-passage', '--max-new-tokens', '7',
    '--pseudo-max-new-tokens', '11', '--chat-template', 'none', '--system-prompt', 'sys', '--resume', '--generate-url', 'http://127.0.0.1:9/v1',
    '--generate-model', 'm', '--generate-timeout', '3', '--generate-concurrency', '2', '--batch-questions', '4', '--device', 'cpu', '--dtype', 'bfloat16',
    '--retries', '5', '--api-key-env', 'MY_KEY', '--double-bos', '--data-format', 'nq-open', '--question-field', 'q', '--answers-field', 'a', '--id-field', 'i',
    '--shard', '0/2', '--format', 'jsonl',
  ],
  select: [
    '--selector', 'sel', '--llm', 'lm', '--k-docs', '3', '--candidates', '12', '--no-pseudo-passage', '--pseudo-max-new-tokens', '9', '--batch-questions', '5',
    '--max-length', '64', '--batch-tokens', '2048', '--ties', 'earlier', '--resume', '--generate-url', 'http://127.0.0.1:9', '--generate-model', 'm',
    '--generate-timeout', '4', '--generate-concurrency', '3', '--chat-template', 'none', '--system-prompt', '', '--device', 'cpu', '--dtype', 'float16',
    '--retries', '0', '--double-bos', '--data-format', 'records', '--matmul-precision', 'high',
  ],
  generate: [
    '--llm', 'lm', '--k-docs', '2', '--task', 'QA', '--instruction', 'Answer.', '--no-retrieval', '--max-new-tokens', '5', '--resume', '--batch-questions', '6',
    '--generate-url', 'http://127.0.0.1:9/v1/chat/completions', '--generate-model', 'x', '--generate-timeout', '2', '--generate-concurrency', '1',
    '--chat-template', 'none', '--system-prompt', 'S', '--device', 'cpu', '--dtype', 'float32', '--retries', '2', '--api-key-env', 'K', '--double-bos',
    '--question-field', 'qText', '--shard', '2/4',
  ],
};

/** The options the real CLI parser hands the stage (its handler replaced by a capture). */
async function cliOptions(stage: StageName, args: string[]): Promise<unknown> {
  let captured: unknown;
  const cmds = (commands as CommandModule[]).map((c) =>
    c.command === stage ? { ...c, handler: (argv: Record<string, unknown>) => void (captured = STAGE_TABLE[stage].optionsFromArgs(argv)) } : c,
  );
  await cliParser([stage, ...args], cmds as never).exitProcess(false).fail((msg, err) => { throw err ?? new Error(msg); }).parseAsync();
  return captured;
}

test('CLI and cluster map the same argv to the same options, for every stage and flag', async () => {
  for (const stage of STAGES) {
    const data = path.join(work, 'in.jsonl');
    const out = path.join(work, `${stage}.out.jsonl`);
    const flags = FLAGS[stage].filter((f, i, all) => !(f === '--shard' || all[i - 1] === '--shard')); // the runner owns --shard
    const fromCli = await cliOptions(stage, [...flags, '--data', data, '--out', out]);
    const fromCluster = STAGE_TABLE[stage].optionsFromArgs(parseStageArgs(stage, flags, data, out));
    assert.deepEqual(fromCluster, fromCli, `${stage}: cluster and CLI options differ`);
    // Both with --shard on the CLI side only: the CLI's shard reaches the options.
    const sharded = (await cliOptions(stage, [...FLAGS[stage], '--data', data, '--out', out])) as { shard?: unknown };
    if (FLAGS[stage].includes('--shard')) assert.ok(sharded.shard, `${stage}: --shard reaches the options`);
  }
  const gen = STAGE_TABLE.generate.optionsFromArgs(parseStageArgs('generate', ['--llm', 'lm', '--no-retrieval'], 'd', 'o.jsonl')) as { noRetrieval?: boolean };
  assert.equal(gen.noRetrieval, true, 'cluster generate --no-retrieval answers without retrieval');
  // retrieve --no-text, and --index for the stages reading such an output, by both parsers.
  const rFlags = ['--index', 'ix', '--encoder', 'e', '--no-text'];
  assert.equal((STAGE_TABLE.retrieve.optionsFromArgs(parseStageArgs('retrieve', rFlags, 'd', 'o.parquet')) as { noText?: boolean }).noText, true);
  assert.equal(((await cliOptions('retrieve', [...rFlags, '--data', 'd', '--out', 'o.parquet'])) as { noText?: boolean }).noText, true);
  assert.equal(((await cliOptions('retrieve', ['--index', 'ix', '--encoder', 'e', '--data', 'd', '--out', 'o.parquet'])) as { noText?: boolean }).noText, undefined);
  const withIndex = STAGE_TABLE.synthesize.optionsFromArgs(parseStageArgs('synthesize', ['--llm', 'lm', '--index', 'ix'], 'd', 'o.jsonl')) as { indexDir?: string };
  assert.equal(withIndex.indexDir, 'ix');
  const sel = (await cliOptions('select', FLAGS.select.concat(['--data', 'd', '--out', 'o.jsonl']))) as { ties?: string; kDocs?: number; pseudoPassage?: boolean; backend: { retries?: number; doubleBos?: boolean } };
  assert.deepEqual([sel.ties, sel.kDocs, sel.pseudoPassage, sel.backend.retries, sel.backend.doubleBos], ['earlier', 3, false, 0, true]);
  const syn = STAGE_TABLE.synthesize.optionsFromArgs(parseStageArgs('synthesize', FLAGS.synthesize.slice(0, -4), 'd', 'o.jsonl')) as { doubleBos?: boolean; dataset?: object; backend: { apiKeyEnv?: string } };
  assert.deepEqual([syn.doubleBos, syn.backend.apiKeyEnv, syn.dataset], [true, 'MY_KEY', { dataFormat: 'nq-open', questionField: 'q', answersField: 'a', idField: 'i' }]);
  // An option given twice is refused by both parsers.
  assert.throws(() => parseStageArgs('select', ['--selector', 's', '--k-docs', '1', '--k-docs', '2'], 'd', 'o.jsonl'), { code: 'E_INVALID_ARG', message: /given 2 times/ });
  await assert.rejects(cliOptions('select', ['--selector', 's', '--k-docs', '1', '--k-docs', '2', '--data', 'd', '--out', 'o.jsonl']), { code: 'E_INVALID_ARG' });
});

test('a cluster chunk of generate --no-retrieval equals the single-process run', async () => {
  const data = path.join(work, 'gen-in.jsonl');
  const recs = [
    { question: 'who wrote the book of kells', answers: ['monks'], ctxs: [{ title: 'Kells', text: 'The Book of Kells was written by Columban monks.' }] },
    { question: 'what colour is the sky', answers: ['blue'], ctxs: [{ title: 'Sky', text: 'The daytime sky is blue because of Rayleigh scattering.' }] },
    { question: 'where is the eiffel tower', answers: ['Paris'], ctxs: [{ title: 'Tower', text: 'The Eiffel Tower stands in Paris.' }] },
  ];
  writeFileSync(data, recs.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const args = ['--llm', model('llama-tiny'), '--no-retrieval', '--max-new-tokens', '6', '--batch-questions', '2'];
  const single = path.join(work, 'gen-single.jsonl');
  const r = spawnSync(process.execPath, [cliPath, 'generate', '--data', data, '--out', single, ...args, '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const chunk = path.join(work, 'gen-chunk.jsonl');
  const n = await runChunk({ stage: 'generate', args, data, range: { start: 0, end: 3 }, out: chunk, format: 'jsonl' }, new Map());
  assert.equal(n, 3);
  assert.ok(readFileSync(chunk).equals(readFileSync(single)), 'chunk output is byte-identical to the single-process run');
  // And it is the no-retrieval run: the same flags with retrieval give the prompts with evidence.
  const withCtx = path.join(work, 'gen-ctx.jsonl');
  await runChunk({ stage: 'generate', args: args.filter((a) => a !== '--no-retrieval'), data, range: { start: 0, end: 3 }, out: withCtx, format: 'jsonl' }, new Map());
  assert.ok(existsSync(withCtx));
});

// A scorer whose scores are given per passage text (unknown texts score 0).
function scorer(scores: Record<string, number>, fits: (q: string) => boolean = () => true): PairScorer {
  return {
    numLabels: 1,
    queryFits: async (q) => fits(q),
    score: async (_q, passages) => Float32Array.from(passages.map((p) => scores[p.split('\n').slice(1).join('\n')] ?? 0)),
  };
}

function retrieved(file: string, n: number, extra: (i: number) => object = () => ({})) {
  const lines = Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      question: `question ${i}`, answers: ['gold'], pseudo_passage: `pseudo ${i}`,
      ctxs: [{ title: 't', text: `first ${i}` }, { title: 't', text: `second ${i}` }, { title: 't', text: `gold third ${i}` }],
      ...extra(i),
    }),
  );
  writeFileSync(file, lines.join('\n') + '\n');
  return lines;
}

test("select at K=1 reports the reference's rerank recall (over the K kept); the full-list number has its own name", async () => {
  const data = path.join(work, 'recall.jsonl');
  retrieved(data, 4);
  // The answer-bearing passage ranks second after reranking: in the full list @3, not among K=1 kept.
  const s: Record<string, number> = {};
  for (let i = 0; i < 4; i++) Object.assign(s, { [`first ${i}`]: 3, [`gold third ${i}`]: 2, [`second ${i}`]: 1, [`pseudo ${i}`]: 0 });
  const summary = await select(scorer(s), { data, out: path.join(work, 'recall.out.jsonl'), kDocs: 1 });
  assert.equal(summary.rerankRecall[3], 0, 'recall@3 of the one passage kept');
  assert.equal(summary.rerankRecall[5], 0);
  assert.equal(summary.rerankRecallFull[3], 1, 'recall@3 of the whole reranked list');
  const k3 = await select(scorer(s), { data, out: path.join(work, 'recall3.out.jsonl'), kDocs: 3 });
  assert.equal(k3.rerankRecall[3], 1);
  assert.equal(k3.rerankRecall[1], 0);
});

test("exact score ties keep the reference's candidate: the later one (the pseudo-passage); --ties earlier keeps the first", async () => {
  const data = path.join(work, 'ties.jsonl');
  retrieved(data, 2);
  const flat = scorer({}); // every candidate scores 0
  const out = path.join(work, 'ties.out.jsonl');
  await select(flat, { data, out, kDocs: 1 });
  const kept = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l).ctxs[0]);
  assert.deepEqual(kept.map((c: { pseudo?: boolean; text: string }) => [c.pseudo === true, c.text]), [[true, 'pseudo 0'], [true, 'pseudo 1']]);
  const out2 = path.join(work, 'ties-earlier.out.jsonl');
  await select(flat, { data, out: out2, kDocs: 1, ties: 'earlier' });
  assert.deepEqual(readFileSync(out2, 'utf8').trim().split('\n').map((l) => JSON.parse(l).ctxs[0].text), ['first 0', 'first 1']);
});

test('select writes the records read before a damaged line, so --resume starts after them', async () => {
  const data = path.join(work, 'damaged.jsonl');
  const lines = retrieved(data, 3);
  writeFileSync(data, [...lines, '{"question": "broken", "answers": ['].join('\n') + '\n');
  const out = path.join(work, 'damaged.out.jsonl');
  await assert.rejects(select(scorer({}), { data, out, batchQuestions: 2 }), { code: 'E_DATA' });
  const partial = readFileSync(`${out}.partial`, 'utf8').trim().split('\n');
  assert.equal(partial.length, 3, 'the three good records are in OUT.partial');
  assert.equal(existsSync(out), false);
});

test('one over-long question skips its record only', async () => {
  const data = path.join(work, 'long.jsonl');
  retrieved(data, 3);
  const s = await select(scorer({}, (q) => q !== 'question 1'), { data, out: path.join(work, 'long.out.jsonl') });
  assert.equal(s.written, 2);
  assert.deepEqual(s.skippedReasons, { 'question-too-long': 1 });
  // The real selector says which questions fit its pairs.
  const reranker = await CrossEncoder.load(fixture('xlmr-tiny-reranker'));
  try {
    assert.equal(await reranker.queryFits('a short question'), true);
    assert.equal(await reranker.queryFits('word '.repeat(reranker.maxLength * 2)), false);
  } finally {
    reranker.dispose();
  }
});

test('--resume onto a finished output is "complete" only for the same settings; changed weights refuse to resume a partial run', async () => {
  const data = path.join(work, 'stale.jsonl');
  retrieved(data, 4);
  const out = path.join(work, 'stale.out.jsonl');
  const modelDir = path.join(work, 'sel-model');
  cpSync(fixture('xlmr-tiny-reranker'), modelDir, { recursive: true, dereference: true }); // a copy: the fixture itself is never edited
  await select(scorer({}), { data, out, kDocs: 1, modelId: modelDir });
  const same = await select(scorer({}), { data, out, kDocs: 1, modelId: modelDir, resume: true });
  assert.equal(same.resumed, 4, 'same settings: replayed');
  await assert.rejects(select(scorer({}), { data, out, kDocs: 2, modelId: modelDir, resume: true }), { code: 'E_INVALID_ARG', message: /other settings.*kDocs: 1 -> 2/ });
  // The selector's float32 products as bf16x3 are another precision: not the same output.
  await assert.rejects(select(scorer({}), { data, out, kDocs: 1, modelId: modelDir, matmulPrecision: 'high', resume: true }),
    { code: 'E_INVALID_ARG', message: /other settings.*precision: null -> "float32\/matmul-high"/ });

  // Interrupted after the first batch, then the weights at the same path change.
  const out2 = path.join(work, 'stale2.out.jsonl');
  const ac = new AbortController();
  await assert.rejects(
    select(scorer({}), { data, out: out2, batchQuestions: 2, modelId: modelDir, signal: ac.signal, onProgress: (done) => void (done >= 2 && ac.abort()) }),
    { code: 'E_CANCELLED' },
  );
  assert.equal(readFileSync(`${out2}.partial`, 'utf8').trim().split('\n').length, 2);
  const config = path.join(modelDir, 'config.json');
  writeFileSync(config, readFileSync(config, 'utf8').replace(/\}\s*$/, ', "retrained": true}\n'));
  await assert.rejects(select(scorer({}), { data, out: out2, batchQuestions: 2, modelId: modelDir, resume: true }), { code: 'E_INVALID_ARG', message: /weights/ });
});

test('cluster submit checks the stage\'s values before anything is queued (not after three worker attempts)', async () => {
  const { submit } = await import('../lib/scale/cluster.js');
  const data = path.join(work, 'submit.jsonl');
  retrieved(data, 2);
  // Nothing listens on port 9: reaching Redis would be E_IO; the bad value must be reported first.
  const base = { stage: 'select', data, out: path.join(work, 'submit.out.jsonl'), redis: 'redis://127.0.0.1:9', chunkSize: 4, connectTimeoutMs: 500 };
  await assert.rejects(submit({ ...base, args: ['--selector', 'sel', '--k-docs', '0'] }), { code: 'E_INVALID_ARG', message: /kDocs must be a positive integer/ });
  await assert.rejects(submit({ ...base, stage: 'synthesize', args: ['--llm', 'lm', '--alpha', '1e300'] }), { code: 'E_INVALID_ARG', message: /alpha/ });
  assert.equal(existsSync(base.out), false);
});
