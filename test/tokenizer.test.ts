// Tokenizer against the fixtures' input_ids (made by Python `tokenizers`) and against the
// `tokenizers` library's own truncation (its Node binding) for strategies the fixtures lack.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { Tokenizer as HfTokenizer } from 'tokenizers';
import { Tokenizer, truncatePair, type TokenBatch, type TruncationStrategy } from '../lib/tokenizer.js';
import { fixture, readReference } from './helpers.js';

interface BertRef { queries: string[]; input_ids: number[][]; attention_mask: number[][] }
interface XlmrRef { pairs: [string, string][]; input_ids: number[][]; attention_mask: number[][]; max_length: number }

function rows(batch: TokenBatch): number[][] {
  const out: number[][] = [];
  for (let i = 0; i + 1 < batch.offsets.length; i++) out.push(Array.from(batch.ids.subarray(batch.offsets[i], batch.offsets[i + 1])));
  return out;
}

function unpad(ids: number[][], mask: number[][]): number[][] {
  return ids.map((row, i) => row.filter((_, j) => mask[i][j] === 1));
}

test('bert-tiny single sequences match the reference input_ids', async () => {
  const ref = readReference<BertRef>('bert-tiny');
  const tok = Tokenizer.load(fixture('bert-tiny'));
  const batch = await tok.encodeBatch(ref.queries, { maxLength: 128 });
  assert.deepEqual(rows(batch), unpad(ref.input_ids, ref.attention_mask));
  assert.equal(batch.truncated, 0);
});

test('xlmr-tiny pairs with only_second truncation at max_length 64 match the reference', async () => {
  const ref = readReference<XlmrRef>('xlmr-tiny-reranker');
  const tok = Tokenizer.load(fixture('xlmr-tiny-reranker'));
  const batch = await tok.encodePairs(ref.pairs.map((p) => p[0]), ref.pairs.map((p) => p[1]), {
    maxLength: ref.max_length,
    truncation: 'only_second',
  });
  assert.deepEqual(rows(batch), unpad(ref.input_ids, ref.attention_mask));
  assert.ok(batch.truncated > 0, 'the long passage must have been truncated');
  assert.ok(rows(batch).every((r) => r.length <= ref.max_length));
});

// Texts of many lengths, so every branch of the truncation arithmetic is hit. When
// longest_first must cut both sides and the budget is odd, the `tokenizers` Node binding gives
// the odd token sometimes to one side and sometimes to the other (it even depends on the text,
// not only on the lengths), unlike its documented algorithm in truncation.rs; those cases are
// checked against truncation.rs's own table below instead.
function variedTexts(): string[] {
  const out: string[] = [''];
  for (let n = 1; n <= 40; n += 3) out.push(Array.from({ length: n }, () => 'the').join(' '));
  return out;
}

async function hfPairs(dir: string, a: string[], b: string[], maxLength: number, strategy: string): Promise<number[][]> {
  const hf = HfTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  hf.disablePadding();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  hf.setTruncation(maxLength, { strategy: strategy as any });
  const out: number[][] = [];
  for (let i = 0; i < a.length; i++) {
    try {
      out.push((await hf.encode(a[i], b[i])).getIds());
    } catch {
      out.push([]);  // tokenizers refuses: we must refuse too (checked below)
    }
  }
  return out;
}

for (const [model, strategy] of [
  ['bert-tiny', 'longest_first'],
  ['xlmr-tiny-reranker', 'longest_first'],
  ['bert-tiny', 'only_second'],
  ['xlmr-tiny-reranker', 'only_first'],
] as const) {
  test(`${model} pair truncation ${strategy} agrees with tokenizers`, async () => {
    const dir = fixture(model);
    const tok = Tokenizer.load(dir);
    const texts = variedTexts();
    const a: string[] = [];
    const b: string[] = [];
    for (const x of texts) for (const y of texts) { a.push(x); b.push(y); }
    const hfStrategy = { longest_first: 'LongestFirst', only_second: 'OnlySecond', only_first: 'OnlyFirst' }[strategy];
    for (const maxLength of [9, 16, 25]) {
      const expected = await hfPairs(dir, a, b, maxLength, hfStrategy);
      const budget = maxLength - tok.specialTokens.pair;
      for (let i = 0; i < a.length; i++) {
        // Both sides cut (case 3 of truncation.rs): see the note above variedTexts.
        const [la, lb] = [(await tok.encodeRaw([a[i]]))[0].length, (await tok.encodeRaw([b[i]]))[0].length];
        if (strategy === 'longest_first' && la + lb > budget && Math.min(la, lb) > budget - Math.min(la, lb)) continue;
        let got: number[];
        try {
          got = rows(await tok.encodePairs([a[i]], [b[i]], { maxLength, truncation: strategy as TruncationStrategy }))[0];
        } catch (err) {
          assert.ok(err instanceof RangeError, `pair ${i}: ${String(err)}`);
          got = [];
        }
        assert.deepEqual(got, expected[i], `pair ${i} (${a[i].length} / ${b[i].length} chars) at maxLength ${maxLength}`);
      }
    }
  });
}

test('longest_first follows the table in tokenizers truncation.rs (max_length 7)', () => {
  // [len1, len2, kept1, kept2] from truncate_encodings_longest_first in tokenizers' own tests.
  const table = [
    [0, 0, 0, 0], [0, 2, 0, 2], [0, 4, 0, 4], [0, 8, 0, 7],
    [2, 0, 2, 0], [2, 2, 2, 2], [2, 4, 2, 4], [2, 8, 2, 5],
    [4, 0, 4, 0], [4, 2, 4, 2], [4, 4, 3, 4], [4, 8, 3, 4],
    [8, 0, 7, 0], [8, 2, 5, 2], [8, 4, 4, 3], [8, 8, 3, 4],
  ];
  const seq = (n: number) => Array.from({ length: n }, (_, i) => i);
  for (const [n1, n2, k1, k2] of table) {
    const [a, b] = truncatePair(seq(n1), seq(n2), 7, 'longest_first');
    assert.deepEqual([a.length, b.length], [k1, k2], `${n1}, ${n2}`);
  }
});

test('single-sequence truncation agrees with tokenizers', async () => {
  for (const model of ['bert-tiny', 'xlmr-tiny-reranker']) {
    const dir = fixture(model);
    const tok = Tokenizer.load(dir);
    const hf = HfTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    hf.disablePadding();
    hf.setTruncation(12);
    const texts = variedTexts();
    const expected = (await hf.encodeBatch(texts)).map((e) => e.getIds());
    const batch = await tok.encodeBatch(texts, { maxLength: 12 });
    assert.deepEqual(rows(batch), expected, model);
    const full = rows(await tok.encodeBatch(texts));
    assert.equal(batch.truncated, full.filter((r) => r.length > 12).length, model);
  }
});

test('empty batch and empty strings', async () => {
  const tok = Tokenizer.load(fixture('bert-tiny'));
  const empty = await tok.encodeBatch([]);
  assert.equal(empty.ids.length, 0);
  assert.deepEqual(Array.from(empty.offsets), [0]);
  const blank = await tok.encodeBatch(['', '']);
  assert.deepEqual(rows(blank), [[tok.tokenToId('[CLS]'), tok.tokenToId('[SEP]')], [tok.tokenToId('[CLS]'), tok.tokenToId('[SEP]')]]);
  const pairs = await tok.encodePairs([], [], { maxLength: 16 });
  assert.deepEqual(Array.from(pairs.offsets), [0]);
});

test('pair arguments are checked', async () => {
  const tok = Tokenizer.load(fixture('xlmr-tiny-reranker'));
  await assert.rejects(tok.encodePairs(['a'], [], { maxLength: 16 }), RangeError);
  await assert.rejects(tok.encodePairs(['a'], ['b'], { maxLength: 3 }), RangeError);
  // only_second cannot help when the query alone overflows the budget
  await assert.rejects(tok.encodePairs(['word '.repeat(50)], ['b'], { maxLength: 16 }), RangeError);
});

// Issue #13 item 6: a 50 MB text used to be tokenised in full before truncation (minutes,
// gigabytes). The tokenizer now hands `tokenizers` at most a bounded prefix, and the tokens that
// survive truncation are the same as when the whole text is tokenised.
test('huge texts are cut before tokenising, with the same truncated tokens', async () => {
  const { MAX_CHARS_PER_TOKEN, cutForTokens } = await import('../lib/tokenizer.js');
  const words = ['license', 'copyright', 'Überprüfung', 'naïve', 'déjà', 'program', '数据', 'x1', 'source,', 'the'];
  const text = (n: number) => Array.from({ length: n }, (_, i) => words[(i * 7) % words.length]).join(' ');
  const huge = `${text(1000)} `.repeat(7000); // ~50 MB
  assert.ok(huge.length > 45e6);
  const medium = text(3000); // longer than the cut bound below, short enough to tokenise whole
  for (const name of ['bert-tiny', 'xlmr-tiny-reranker']) {
    const tok = Tokenizer.load(fixture(name));
    const hf = (tok as unknown as { hf: { encodeBatch: (t: string[], o: unknown) => Promise<unknown> } }).hf;
    const seen: number[] = [];
    const original = hf.encodeBatch.bind(hf);
    hf.encodeBatch = (texts: string[], o: unknown) => {
      seen.push(...texts.map((t) => t.length));
      return original(texts, o);
    };
    const maxLength = 64;
    const budget = maxLength - tok.specialTokens.single;
    const cut = await tok.encodeBatch([huge], { maxLength });
    assert.equal(cut.truncated, 1);
    assert.equal(cut.offsets[1], maxLength);
    assert.ok(Math.max(...seen) <= (budget + 1) * MAX_CHARS_PER_TOKEN, `${name}: tokenizers saw ${Math.max(...seen)} characters`);
    assert.ok(medium.length > (budget + 1) * MAX_CHARS_PER_TOKEN, 'the medium text is cut too');
    const full = (await tok.encodeRaw([medium]))[0];
    const row = rows(await tok.encodeBatch([medium], { maxLength }))[0];
    assert.deepEqual(row.slice(1, -1), full.slice(0, budget), `${name}: same tokens as tokenising the whole text`);
    const pairs = rows(await tok.encodePairs(['a question', 'a question'], [huge, medium], { maxLength }));
    assert.equal(pairs[0].length, maxLength);
    assert.deepEqual(pairs[0], pairs[1], `${name}: same passage prefix, same pair tokens`);
  }
  // The prefix ends at whitespace, never inside a word or a surrogate pair.
  const c = cutForTokens(huge, 10);
  assert.ok(c.length <= 10 * MAX_CHARS_PER_TOKEN && /\S$/.test(c) && huge[c.length] === ' ');
  assert.equal(cutForTokens('short text', 10), 'short text');
  assert.ok(!/[\ud800-\udbff]$/.test(cutForTokens('😀'.repeat(5000), 3)));
});
