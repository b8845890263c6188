// Cost of reading and writing non-finite numbers (lib/io/json-values.ts), as ratios measured in
// this run against plain JSON.parse / JSON.stringify on the same retrieval-sized records
// (100 ctxs of ~80 words). Run: node dist/bench/json-values.js
import { parseJson, stringifyJson } from '../lib/io/json-values.js';
import { Rng } from '../lib/training/prng.js';

const rng = new Rng(7);
const words = ['the', 'river', 'Infinity', 'of', 'NaN', 'bread', 'capital', 'in', 'year', 'and'];
function record(infinite: boolean) {
  return {
    question: 'which river flows through the capital',
    answers: ['the river'],
    ctxs: Array.from({ length: 100 }, (_, i) => ({
      id: String(i),
      title: `Title ${i}`,
      text: Array.from({ length: 80 }, () => words[Math.floor(rng.next() * words.length)]).join(' '),
      score: rng.next() * 100,
      hasanswer: i % 3 === 0,
      PPL_CD: infinite && i === 99 ? Infinity : 1 + rng.next() * 50,
    })),
  };
}

// Every candidate runs once per round, rounds interleaved (so load spikes and GC hit all of them
// alike); each keeps its best round of seven, after a warm-up round.
function timeAll(n: number, cases: [string, () => unknown][]): number[] {
  const best = cases.map(() => Infinity);
  for (let round = 0; round < 8; round++) {
    cases.forEach(([, fn], k) => {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) fn();
      if (round > 0) best[k] = Math.min(best[k], (performance.now() - t0) / n);
    });
  }
  cases.forEach(([label], k) => process.stdout.write(`${label.padEnd(58)} ${(best[k] * 1000).toFixed(1).padStart(8)} us/record\n`));
  return best;
}

const N = 100;
const finite = record(false);
const withInf = record(true);
const plainText = JSON.stringify(finite);
// Python's json.dumps text of the record with one PPL_CD = inf.
const pythonText = JSON.stringify(withInf).replace(/:1e999|:null/g, ':Infinity');
if (!pythonText.includes(':Infinity')) throw new Error('bench: no Infinity token in the Python-style text');
const ourText = stringifyJson(withInf)!;

process.stdout.write(`records of ${plainText.length} characters\n`);
const [sPlain, sFinite, sInf, pPlain, pOurs, pPy] = timeAll(N, [
  ['JSON.stringify (baseline; loses Infinity)', () => JSON.stringify(finite)],
  ['stringifyJson, all finite (walk + JSON.stringify)', () => stringifyJson(finite)],
  ['stringifyJson, one Infinity (replacer path)', () => stringifyJson(withInf)],
  ['JSON.parse (baseline)', () => JSON.parse(plainText)],
  ['parseJson of our output (1e999: fast path)', () => parseJson(ourText)],
  ['parseJson of Python text (Infinity: fallback parser)', () => parseJson(pythonText)],
]);
process.stdout.write(
  [
    `write, finite records:     ${(sFinite / sPlain).toFixed(2)}x the time of JSON.stringify`,
    `write, with an Infinity:   ${(sInf / sPlain).toFixed(2)}x`,
    `read our files:            ${(pOurs / pPlain).toFixed(2)}x the time of JSON.parse`,
    `read Python NaN/Infinity:  ${(pPy / pPlain).toFixed(2)}x`,
  ].join('\n') + '\n',
);
