// compare's contracts from issue #20: --resume reuses a finished run only when its settings (the
// input's identity, K, token limit, model) are the same; a truncated column; "evidence cut"
// warnings capped like every stage's; the random-weights disclaimer when a bundled model is used.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { AtomicJsonlWriter } from '../lib/io/jsonl.js';
import { compare, formatComparison } from '../lib/pipeline/compare.js';
import type { GenerateAnswersOptions } from '../lib/pipeline/generate.js';
import { BUNDLED_MODELS_DIR, BUNDLED_MODELS_DISCLAIMER, isBundledModel } from '../lib/models/bundled.js';
import { cliPath, fixture, repoRoot } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'gainrag-compare-contracts-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const words = (seed: number, n: number) => Array.from({ length: n }, (_, i) => `w${(seed * 31 + i * 7) % 97}`).join(' ');
function retrieved(name: string, questions: number): string {
  const file = path.join(tmp, name);
  const recs = Array.from({ length: questions }, (_, q) => ({
    question: `question number ${q}?`,
    answers: [`w${q % 97}`],
    ctxs: Array.from({ length: 6 }, (_, c) => ({ id: `${q}-${c}`, title: `T${c}`, text: words(q + c, 120), hasanswer: false })),
  }));
  writeFileSync(file, recs.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

// Stand-in answer writer: records which runs were generated; marks every other record truncated.
function fakeGenerator(calls: string[]) {
  return async (o: GenerateAnswersOptions) => {
    calls.push(`${path.basename(o.out)}:${o.maxNewTokens}`);
    const w = AtomicJsonlWriter.open(o.out);
    let i = 0;
    for (const line of readFileSync(o.data, 'utf8').trim().split('\n')) {
      const r = JSON.parse(line);
      w.write({ ...r, generated: 'w1', ...(i++ % 2 === 0 ? { truncated: true } : {}) });
    }
    w.close();
    return { seconds: 0.1 };
  };
}

test('compare --resume recomputes runs whose --data or --max-new-tokens changed, and keeps the rest', async () => {
  const data = retrieved('resume.jsonl', 4);
  const outDir = path.join(tmp, 'resume');
  const llm = fixture('llama-tiny');
  const calls: string[] = [];
  const base = { data, outDir, llm, kDocs: [1, 2], candidates: 6, generateAnswers: fakeGenerator(calls), maxNewTokens: 8 };
  const first = await compare(base);
  assert.equal(first.questions, 4);
  assert.equal(calls.length, 3);
  // the same settings: nothing runs again
  calls.length = 0;
  await compare({ ...base, resume: true });
  assert.deepEqual(calls, []);
  // another token limit: every answer run again, with the new limit
  const other = await compare({ ...base, resume: true, maxNewTokens: 4 });
  assert.deepEqual(calls, ['no-retrieval.answers.jsonl:4', 'retrieval-k1.answers.jsonl:4', 'retrieval-k2.answers.jsonl:4']);
  assert.equal(other.questions, 4);
  // another input at the same path: the question set and every run are new
  calls.length = 0;
  retrieved('resume.jsonl', 3);
  const moved = await compare({ ...base, resume: true, maxNewTokens: 4 });
  assert.equal(moved.questions, 3);
  assert.equal(calls.length, 3);
  assert.ok(moved.rows.every((r) => r.questions === 3));
  // another input path with the same content is another input too
  calls.length = 0;
  const copy = path.join(tmp, 'resume-copy.jsonl');
  cpSync(data, copy);
  await compare({ ...base, data: copy, resume: true, maxNewTokens: 4 });
  assert.equal(calls.length, 3);
});

test('compare counts truncated answers per run and shows them in the table', async () => {
  const data = retrieved('trunc.jsonl', 5);
  const s = await compare({ data, outDir: path.join(tmp, 'trunc'), llm: fixture('llama-tiny'), kDocs: [1], candidates: 6, generateAnswers: fakeGenerator([]) });
  assert.deepEqual(s.rows.map((r) => r.truncated), [3, 3]);
  const table = formatComparison(s);
  assert.match(table, /^run\s+K\s+EM\s+F1\s+Recall@K\s+truncated\s+seconds/m);
  assert.match(table, /^retrieval\s+1\s+\S+\s+\S+\s+\S+\s+3\s/m);
});

test('isBundledModel: the models under models/ (also through a link), not a copy or the folder itself', () => {
  assert.equal(isBundledModel(path.join(repoRoot, 'models', 'llama-tiny')), true);
  assert.equal(isBundledModel(fixture('xlmr-tiny-reranker')), true); // test/fixtures links to models/
  assert.equal(isBundledModel(path.join(repoRoot, 'models', 'bert-tiny', '')), true);
  const copy = path.join(tmp, 'llama-copy');
  cpSync(path.join(repoRoot, 'models', 'llama-tiny'), copy, { recursive: true });
  assert.equal(isBundledModel(copy), false);
  assert.equal(isBundledModel(BUNDLED_MODELS_DIR), false);
  assert.equal(isBundledModel(undefined), false);
  assert.equal(isBundledModel(path.join(tmp, 'missing')), false);
});

test('gainrag compare (CLI): evidence-cut warnings capped with a "more" line; the random-weights note', () => {
  const data = retrieved('cli.jsonl', 8);
  const out = path.join(tmp, 'cli');
  // 5 passages of ~120 words do not fit llama-tiny's 512 positions: every record is cut.
  const r = spawnSync(process.execPath, [cliPath, 'compare', '--data', data, '--llm', fixture('llama-tiny'), '--k-docs', '5', '--candidates', '6',
    '--max-new-tokens', '2', '--out', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const cuts = r.stderr.split('\n').filter((l) => l.includes('evidence cut to fit'));
  assert.equal(cuts.length, 3, r.stderr);
  assert.equal(r.stderr.split('\n').filter((l) => l.includes('more records had their evidence cut')).length, 1, r.stderr);
  assert.match(r.stdout, /^retrieval\s+5\s+\S+\s+\S+\s+\S+\s+8\s/m);
  assert.ok(r.stdout.trimEnd().endsWith(BUNDLED_MODELS_DISCLAIMER), r.stdout);
  // a model outside models/ gets no note
  const copy = path.join(tmp, 'llm-copy');
  cpSync(fixture('llama-tiny'), copy, { recursive: true, dereference: true });
  const real = spawnSync(process.execPath, [cliPath, 'compare', '--data', data, '--llm', copy, '--k-docs', '1', '--candidates', '6', '--max-new-tokens', '2',
    '--out', path.join(tmp, 'cli-copy')], { encoding: 'utf8' });
  assert.equal(real.status, 0, real.stderr);
  assert.ok(!real.stdout.includes('random-weight'), real.stdout);
});
