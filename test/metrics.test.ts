// QA metrics against the reference semantics (GainRAG evaluation.py: SQuAD normalisation, regex
// EM with IGNORECASE|UNICODE|MULTILINE, Counter-overlap F1). Expected values are written by hand;
// each was also checked against the Python reference functions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeAnswer, regexMatch, exactMatch, tokenF1, emMaxOverGold, f1MaxOverGold } from '../lib/metrics/index.js';

test('normalizeAnswer: articles, punctuation, whitespace, Unicode', () => {
  const cases: [string, string][] = [
    ['The Eiffel Tower', 'eiffel tower'],
    ['  A  cat,  an apple; the END. ', 'cat apple end'],
    ['An apple a day', 'apple day'],
    ['the a an', ''],
    ['theatre', 'theatre'], // article inside a word stays
    ['a.b', 'ab'], // punctuation goes before articles are looked for
    ['the_the', 'thethe'], // `_` is punctuation
    ['Ünïcödé naïve café', 'ünïcödé naïve café'],
    ['Straße', 'straße'],
    ['«Le» the end', '«le» end'], // only ASCII punctuation is removed
    ['éthe', 'éthe'], // Python's \b is Unicode-aware: é is a word character
    ['1an', '1an'], // digits are word characters
    ['a\u00a0b', 'b'], // NBSP is whitespace for Python's str.split
    ['x\ufeffy', 'x\ufeffy'], // ...but U+FEFF is not (JS \s would split here)
    ['x\x1fy', 'x y'], // ...and \x1f is (JS \s would not split here)
    ['ΣΑΣ', 'σας'], // final sigma
    ['İ', 'i\u0307'],
    ['C++', 'c'],
    ['(a)', ''],
    ['', ''],
  ];
  for (const [input, expected] of cases) assert.equal(normalizeAnswer(input), expected, JSON.stringify(input));
});

test('regexMatch: gold answer searched as a (normalised) regular expression', () => {
  const cases: [string, string, boolean][] = [
    ['It was Jane Austen.', 'Jane Austen', true],
    ['Beatles', 'the Beatles', true],
    ['', 'Jane Austen', false],
    ['ÜNÏCÖDÉ text', 'Ünïcödé', true],
    // regex metacharacters are punctuation, so normalisation strips them from the pattern:
    ['C', 'C++', true],
    ['scala', 'C++', true], // "c++" -> "c", found inside "scala" (the reference behaves so)
    ['Python', 'C++', false],
    ['15 meters', '1.5', true],
    ['1,5', '1.5', true],
    ['a b', 'a|b', false], // not an alternation: the pattern is "ab"
    ['ab', 'a|b', true],
    ['anything', '[', true], // empty pattern matches everywhere
    ['', '(a)', true],
    ['x', 'x\\', true], // a trailing backslash would not compile, but it is stripped first
  ];
  for (const [pred, gold, expected] of cases) assert.equal(regexMatch(pred, gold), expected, `${JSON.stringify(pred)} ~ ${JSON.stringify(gold)}`);
});

test('exactMatch compares normalised strings', () => {
  assert.equal(exactMatch('The  Beatles!', 'beatles'), true);
  assert.equal(exactMatch('The Beatles band', 'beatles'), false);
});

test('tokenF1: multiset overlap; no overlap (or nothing left) gives 0', () => {
  const cases: [string, string, number][] = [
    ['Jane Austen', 'Jane Austen', 1],
    ['Austen wrote it', 'Jane Austen', 0.4],
    ['the the cat cat', 'cat', 2 / 3],
    ['Austen', 'Jane Austen', 2 / 3],
    ['', 'Jane', 0],
    ['', 'the', 0], // both empty after normalisation: 0, as the reference's f1_score
    ['cat', '', 0],
  ];
  for (const [pred, gold, expected] of cases) {
    assert.ok(Math.abs(tokenF1(pred, gold) - expected) < 1e-12, `${JSON.stringify(pred)} vs ${JSON.stringify(gold)}: ${tokenF1(pred, gold)}`);
  }
});

test('max over gold answers', () => {
  assert.equal(emMaxOverGold('he wrote as Austen', ['Jane Austen', 'Austen']), true);
  assert.equal(emMaxOverGold('he wrote as Austen', ['Jane Austen', 'Bronte']), false);
  assert.equal(emMaxOverGold('Jane Austen', ['jane austen'], false), true);
  assert.equal(f1MaxOverGold('Austen', ['Jane Austen', 'Austen']), 1);
  assert.ok(Math.abs(f1MaxOverGold('Austen', ['Jane Austen', 'Bronte']) - 2 / 3) < 1e-12);
  assert.throws(() => emMaxOverGold('x', []), RangeError);
  assert.throws(() => f1MaxOverGold('x', []), RangeError);
});
