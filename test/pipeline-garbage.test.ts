// Bad values in pipeline data must give a clear error or a counted, FILE:LINE-warned skip, never
// plausible-looking garbage: EM_with_retrieval "false" kept by filter, negative perplexities
// turned into null teacher scores, an empty question passed to the selector data, --alpha 1e300
// accepted, and a synthesis run whose every score is NaN reported as "scored".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { filterSynthesized } from '../lib/pipeline/filter.js';
import { toSelector } from '../lib/pipeline/to-selector.js';
import { checkSynthesizeOptions, synthesize, MAX_ALPHA, type SynthesisModel } from '../lib/pipeline/synthesize.js';
import { AnswerMatcher } from '../lib/retrieval/has-answer.js';
import { cliPath } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-garbage-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function jsonl(name: string, records: unknown[]): string {
  const file = path.join(work, name);
  writeFileSync(file, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

function lines(file: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

const psg = (title: string, ppl: unknown, em: unknown) => ({ title, text: `text ${title}`, PPL_CD: ppl, EM_with_retrieval: em });

test('answers [""] marks no passage as holding the answer', () => {
  assert.equal(new AnswerMatcher(['']).matches('any passage at all'), false);
  assert.equal(new AnswerMatcher(['', '\u200b']).usable, false);
  assert.equal(new AnswerMatcher(['', 'passage']).matches('any passage at all'), true);
});

test('filter: EM_with_retrieval must be a boolean or 0/1; others are skipped with FILE:LINE', async () => {
  const data = jsonl('em.jsonl', [
    { question: 'q1', passages: [psg('A', 2, 'false')] },
    { question: 'q2', passages: [psg('A', 2, 'true')] },
    { question: 'q3', passages: [psg('A', 2, null)] },
    { question: 'q4', passages: [psg('A', 2, 2)] },
    { question: 'q5', passages: [psg('A', 2, 1)] },
    { question: 'q6', passages: [psg('A', 2, 0)] },
    { question: 'q7', passages: [psg('A', 2, true)] },
    // only the best passage's flag decides; a bad flag elsewhere does not matter
    { question: 'q8', passages: [psg('A', 2, false), psg('B', 9, 'yes')] },
  ]);
  const warnings: string[] = [];
  const out = path.join(work, 'em.out.jsonl');
  const s = await filterSynthesized({ data, out, warn: (m) => warnings.push(m) });
  assert.deepEqual(s, { records: 8, kept: 2, skipped: 4, badScores: 0 });
  assert.deepEqual(lines(out).map((r) => r.question), ['q5', 'q7']);
  for (const n of [1, 2, 3, 4]) assert.ok(warnings.some((w) => w.includes(`em.jsonl:${n}: EM_with_retrieval`)), `line ${n}: ${warnings.join(' | ')}`);
  assert.match(warnings[0], /got "false"/);
});

test('filter: a negative or NaN PPL_CD is never the best passage', async () => {
  const data = path.join(work, 'neg.jsonl');
  writeFileSync(data, [
    JSON.stringify({ question: 'neg', passages: [psg('A', -5, true), psg('B', 3, false)] }),
    '{"question": "nan", "passages": [{"title": "A", "text": "a", "PPL_CD": NaN, "EM_with_retrieval": true}, {"title": "B", "text": "b", "PPL_CD": 3, "EM_with_retrieval": false}]}',
    JSON.stringify({ question: 'none', passages: [psg('A', 'low', true), psg('B', null, true)] }),
  ].join('\n'));
  const warnings: string[] = [];
  const out = path.join(work, 'neg.out.jsonl');
  const s = await filterSynthesized({ data, out, warn: (m) => warnings.push(m) });
  assert.deepEqual(s, { records: 3, kept: 0, skipped: 1, badScores: 3 });
  assert.ok(warnings.some((w) => w.includes('neg.jsonl:1:') && /negative, NaN/.test(w)));
  assert.ok(warnings.some((w) => w.includes('skipped') && w.includes('neg.jsonl:3:') && /no passage has a usable PPL_CD/.test(w)));
});

test('to-selector: bad perplexities dropped (never null scores), +Infinity is the worst, empty questions skipped', async () => {
  const data = path.join(work, 'sel.jsonl');
  writeFileSync(data, [
    JSON.stringify({ question: 'negative', passages: [psg('A', -3, true), psg('B', 2, true), psg('C', 4, true)] }),
    '{"question": "python", "passages": [{"title": "A", "text": "a", "PPL_CD": Infinity}, {"title": "B", "text": "b", "PPL_CD": NaN}, {"title": "C", "text": "c", "PPL_CD": 1.5}]}',
    JSON.stringify({ question: '', passages: [psg('A', 2, true), psg('B', 3, true)] }),
    JSON.stringify({ question: ' \t', passages: [psg('A', 2, true), psg('B', 3, true)] }),
    '{"question": "all infinite", "passages": [{"title": "A", "text": "a", "PPL_CD": Infinity}, {"title": "B", "text": "b", "PPL_CD": 1e999}]}',
  ].join('\n'));
  const warnings: string[] = [];
  const out = path.join(work, 'sel.out.jsonl');
  const s = await toSelector({ data, out, warn: (m) => warnings.push(m) });
  assert.deepEqual(s, { records: 5, written: 2, skipped: 3, droppedPassages: 2, badScores: 2, scoreField: 'PPL_CD' });
  const raw = readFileSync(out, 'utf8');
  assert.doesNotMatch(raw, /null/);
  const [neg, py] = lines(out) as unknown as { query: string; pos: string[]; neg: string[]; pos_scores: number[]; neg_scores: number[] }[];
  assert.deepEqual([neg.query, neg.pos, neg.neg, neg.pos_scores, neg.neg_scores], ['negative', ['B\ntext B'], ['C\ntext C'], [-Math.log(3)], [-Math.log(5)]]);
  assert.deepEqual([py.pos, py.neg, py.pos_scores, py.neg_scores], [['C\nc'], ['A\na'], [-Math.log(2.5)], [-Infinity]]);
  assert.match(raw.split('\n')[1], /"neg_scores":\[-1e999\]/);
  assert.ok(warnings.some((w) => w.includes('sel.jsonl:1:') && /1 with a negative, NaN/.test(w)));
  assert.ok(warnings.some((w) => w.includes('skipped') && w.includes('sel.jsonl:3:') && /empty "question"/.test(w)));
  assert.ok(warnings.some((w) => w.includes('skipped') && w.includes('sel.jsonl:4:')));
  assert.ok(warnings.some((w) => w.includes('skipped') && w.includes('sel.jsonl:5:') && /infinite/.test(w)));
});

test('synthesize: --alpha must be finite and at most MAX_ALPHA (RangeError, before any model load)', () => {
  const base = { data: path.join(work, 'in.jsonl'), out: path.join(work, 'alpha.out.jsonl') };
  for (const alpha of [1e300, Infinity, -Infinity, NaN, -0.1, MAX_ALPHA + 1, '0.5' as unknown as number]) {
    assert.throws(() => checkSynthesizeOptions({ ...base, alpha }), RangeError, String(alpha));
  }
  for (const alpha of [0, 0.5, MAX_ALPHA]) assert.equal(checkSynthesizeOptions({ ...base, alpha }).alpha, alpha);
  writeFileSync(base.data, '{"question": "q", "answers": ["a"], "ctxs": []}\n');
  const r = spawnSync(process.execPath, [cliPath, 'synthesize', '--data', base.data, '--llm', path.join(work, 'no-such-model'), '--out', base.out, '--alpha', '1e300'], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /alpha must be a number in \[0, 100\], got 1e\+300/);
});

// A stand-in model whose scores are whatever the test says (a broken model gives NaN).
function fakeModel(score: (question: number, passage: number) => number): SynthesisModel {
  let calls = 0;
  return {
    contextLength: 4096,
    tokenizer: {
      encodeRaw: async (texts: string[]) => texts.map((t) => t.split(/\s+/).filter(Boolean).map((_, i) => i + 1)),
      decode: async () => '',
      config: {},
    },
    applyChatTemplate: () => {
      throw new Error('no chat template');
    },
    contrastivePerplexity: async (items) =>
      items.map((it) => {
        const q = calls++;
        const min = it.contextPrompts.map((_, j) => score(q, j));
        return { min, perAnswer: min.map((m) => it.answers.map(() => m)) };
      }),
    generate: async (prompts: string[]) => ({ texts: prompts.map(() => '') }),
  };
}

test('synthesize: non-finite scores are counted and warned, not reported as scored', async () => {
  const records = [0, 1].map((i) => ({ question: `question ${i}`, answers: ['an answer'], ctxs: [{ title: 't', text: 'a passage', score: 1, hasanswer: false }, { title: 'u', text: 'another passage', score: 0.5, hasanswer: false }] }));
  const data = jsonl('synth-in.jsonl', records);
  const noGeneration = { description: 'none', generate: async (prompts: unknown[]) => prompts.map(() => '') };
  const common = { data, pseudoPassage: false, chatTemplate: 'none' as const, generator: noGeneration, batchQuestions: 1 };

  const warnings: string[] = [];
  const out = path.join(work, 'synth-nan.jsonl');
  const s = await synthesize(fakeModel(() => NaN), { ...common, out, warn: (m) => warnings.push(m) });
  assert.equal(s.passagesScored, 4);
  assert.equal(s.nonFiniteScores, 4);
  assert.equal(warnings.filter((w) => /synth-in\.jsonl:\d: 2 of 2 passage scores are not finite/.test(w)).length, 2);
  assert.ok(lines(out).every((r) => (r.passages as { PPL_CD: unknown }[]).every((p) => p.PPL_CD === null)));

  const mixedOut = path.join(work, 'synth-mixed.jsonl');
  const m = await synthesize(fakeModel((q, j) => (q === 0 && j === 1 ? Infinity : 2 + j)), { ...common, out: mixedOut, warn: () => undefined });
  assert.equal(m.nonFiniteScores, 1);
  assert.match(readFileSync(mixedOut, 'utf8').split('\n')[0], /"PPL_CD":1e999/);
});
