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

// Best of five rounds (other processes share the cores), after a warm-up round.
function time(label: string, n: number, fn: () => unknown): number {
  for (let i = 0; i < n; i++) fn();
  let ms = Infinity;
  for (let round = 0; round < 5; round++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    ms = Math.min(ms, (performance.now() - t0) / n);
  }
  process.stdout.write(`${label.padEnd(58)} ${(ms * 1000).toFixed(1).padStart(8)} us/record\n`);
  return ms;
}

const N = 200;
const finite = record(false);
const withInf = record(true);
const plainText = JSON.stringify(finite);
// Python's json.dumps text of the record with one PPL_CD = inf.
const pythonText = JSON.stringify(withInf).replace(/:1e999|:null/g, ':Infinity');
if (!pythonText.includes(':Infinity')) throw new Error('bench: no Infinity token in the Python-style text');
const ourText = stringifyJson(withInf)!;

process.stdout.write(`records of ${plainText.length} characters\n`);
const sPlain = time('JSON.stringify (baseline; loses Infinity)', N, () => JSON.stringify(finite));
const sFinite = time('stringifyJson, all finite (walk + JSON.stringify)', N, () => stringifyJson(finite));
const sInf = time('stringifyJson, one Infinity (replacer path)', N, () => stringifyJson(withInf));
const pPlain = time('JSON.parse (baseline)', N, () => JSON.parse(plainText));
const pOurs = time('parseJson of our output (1e999: fast path)', N, () => parseJson(ourText));
const pPy = time('parseJson of Python text (Infinity: fallback parser)', N, () => parseJson(pythonText));
process.stdout.write(
  [
    `write, finite records:     ${(sFinite / sPlain).toFixed(2)}x the time of JSON.stringify`,
    `write, with an Infinity:   ${(sInf / sPlain).toFixed(2)}x`,
    `read our files:            ${(pOurs / pPlain).toFixed(2)}x the time of JSON.parse`,
    `read Python NaN/Infinity:  ${(pPy / pPlain).toFixed(2)}x`,
  ].join('\n') + '\n',
);
