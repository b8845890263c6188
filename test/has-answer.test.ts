// DPR answer matching (has_answer, match_type "string") and Recall@k.
// Expected values follow from DPR's definition (NFD, SimpleTokenizer regex, lower-case, token-run
// match), worked out by hand per case; the last test checks the hasanswer flags that the
// upstream NQ-open oracle file carries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import path from 'node:path';
import { dprTokens, hasAnswer, recallAtK, RecallAccumulator } from '../lib/retrieval/has-answer.js';
import { dataDir } from './helpers.js';

const cases: [string, string, string[], boolean][] = [
  ['case-insensitive', 'The Denver Broncos won.', ['denver BRONCOS'], true],
  ['partial word does not match', 'The Denver Broncos won.', ['Bronco'], false],
  ['composed text, decomposed answer', 'Beyonc\u00e9 sang', ['Beyonce\u0301'], true],
  ['decomposed text, composed answer', 'Beyonce\u0301 sang', ['Beyonc\u00e9'], true],
  ['accents are not stripped', 'the caf\u00e9 is open', ['cafe'], false],
  ['punctuation is a token', 'in 1,000 years', ['1,000'], true],
  ['digits split by punctuation', 'in 1,000 years', ['1000'], false],
  ['abbreviation with dots', 'the U.S. army', ['U.S.'], true],
  ['abbreviation without dots', 'the U.S. army', ['US'], false],
  ['regex metacharacters are literal: C++', 'I like C++ a lot', ['C++'], true],
  ['C++ needs both plus signs', 'I like C+ a lot', ['C++'], false],
  ['dot is literal', 'see a.b now', ['a.b'], true],
  ['dot is not a wildcard', 'see axb now', ['a.b'], false],
  ['parentheses are literal', 'item (1) here', ['(1)'], true],
  ['brackets and star', 'x [a*] y', ['[a*]'], true],
  ['CJK run is one token', '\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd', ['\u6771\u4eac'], false],
  ['CJK whole run', '\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd', ['\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd'], true],
  ['CJK separated by spaces', '\u9996\u90fd \u6771\u4eac \u3067\u3059', ['\u6771\u4eac'], true],
  ['no-break space separates', 'New\u00a0York City', ['new york'], true],
  ['zero-width space (Cf) separates', 'New\u200bYork', ['new york'], true],
  ['hyphen is a token', 'state-of-the-art', ['state of the art'], false],
  ['hyphenated answer', 'a state-of-the-art lab', ['State-of-the-art'], true],
  ['en dash splits numbers', 'the 2015\u201316 season', ['2015'], true],
  ['sharp s is not ss', 'Hauptstra\u00dfe 5', ['hauptstrasse'], false],
  ['second answer matches', 'Paris is the capital', ['London', 'paris'], true],
  ['answer longer than text', 'Paris', ['Paris France'], false],
  ['no answers', 'anything', [], false],
  // DPR finds the empty token run in every text; an answer with no tokens matches nothing here.
  ['empty answer matches nothing', 'anything', [''], false],
  ['whitespace-only answer matches nothing', 'anything at all', [' \t'], false],
  ['empty answer beside a real one', 'Paris is the capital', ['', 'Paris'], true],
];

for (const [name, text, answers, expected] of cases) {
  test(`hasAnswer: ${name}`, () => {
    assert.equal(hasAnswer(text, answers), expected);
  });
}

test('dprTokens', () => {
  assert.deepEqual(dprTokens("Don't stop, C++!"), ['don', "'", 't', 'stop', ',', 'c', '+', '+', '!']);
  assert.deepEqual(dprTokens('caf\u00e9'), ['cafe\u0301']);
  assert.deepEqual(dprTokens(' \t\n'), []);
});

test('hasAnswer argument checks', () => {
  assert.throws(() => hasAnswer(3 as never, ['a']), TypeError);
  assert.throws(() => hasAnswer('a', [3] as never), TypeError);
});

test('recallAtK', () => {
  const hits = [
    [false, true, false, false, false],
    [true, false, false, false, false],
    [false, false, false, false, false],
    [false, false, false, false, true],
  ];
  assert.deepEqual(recallAtK(hits, [1, 2, 5]), { '1': 0.25, '2': 0.5, '5': 0.75 });
  // deeper ks than the lists are left out
  assert.deepEqual(recallAtK(hits), { '1': 0.25, '5': 0.75 });
  const acc = new RecallAccumulator([1, 3]);
  acc.add([false, false, true]);
  assert.equal(acc.count, 1);
  assert.deepEqual(acc.result(), { '1': 0, '3': 1 });
  assert.throws(() => new RecallAccumulator([0]), RangeError);
});

test('agrees with the hasanswer flags of the NQ-open oracle file (1971 gold passages)', () => {
  const file = path.join(dataDir, 'nq_open_gold_passages', 'nq-open-oracle.subset.jsonl.gz');
  const lines = gunzipSync(readFileSync(file)).toString('utf8').trim().split('\n');
  let checked = 0;
  for (const line of lines) {
    const r = JSON.parse(line) as { answers: string[]; ctxs: { text: string; hasanswer: boolean }[] };
    for (const c of r.ctxs) {
      assert.equal(hasAnswer(c.text, r.answers), c.hasanswer, `answers ${JSON.stringify(r.answers)}`);
      checked++;
    }
  }
  assert.equal(checked, 1971);
});
