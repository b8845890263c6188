// Selection throughput (pairs/s): `select` with the pairs of many questions per engine call
// (default, --batch-questions 32) against one question per call (--batch-questions 1), same
// records, same selector, same process, interleaved rounds:
//   node dist/bench/select.js [--questions 64] [--candidates 100] [--rounds 3] [--selector DIR] [--batch-tokens N]
// Records are bundled SQuAD questions with pseudo-randomly drawn bundled passages as candidates
// and a pseudo-passage already in the record (no LLM in the loop: this measures scoring).
// pairs/s is over the time in the selector's score calls (tokenisation included); the wall
// seconds of the whole select() call are printed too. Both runs must keep the same passages.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { select, type SelectSummary } from '../lib/pipeline/select.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
function strArg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const questions = arg('questions', 64);
const candidates = arg('candidates', 100);
const rounds = arg('rounds', 3);
const batchTokens = strArg('batch-tokens') ? Number(strArg('batch-tokens')) : undefined;
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const selectorDir = strArg('selector') ?? path.join(repoRoot, 'models', 'xlmr-tiny-reranker');

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
}

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-bench-select-'));
try {
  const passages = lines(path.join(repoRoot, 'data', 'demo', 'passages.jsonl')).map((l) => JSON.parse(l));
  const qs = lines(path.join(repoRoot, 'data', 'demo', 'questions.jsonl')).slice(0, questions).map((l) => JSON.parse(l));
  let s = 12345;
  const next = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s;
  };
  const data = path.join(work, 'retrieved.jsonl');
  writeFileSync(data, qs.map((q) => JSON.stringify({
    ...q,
    ctxs: Array.from({ length: candidates }, () => passages[next() % passages.length]),
    pseudo_passage: passages[next() % passages.length].text,
  })).join('\n') + '\n');

  const selector = await CrossEncoder.load(selectorDir);
  const runs = { batched: [] as SelectSummary[], single: [] as SelectSummary[] };
  const once = async (name: 'batched' | 'single', round: number) => {
    const out = path.join(work, `${name}-${round}.jsonl`);
    runs[name].push(await select(selector, { data, out, candidates, kDocs: 5, batchQuestions: name === 'batched' ? 32 : 1, batchTokens }));
    return out;
  };
  await once('batched', -1); // warm-up
  let same = true;
  for (let r = 0; r < rounds; r++) {
    const a = await once('batched', r);
    const b = await once('single', r);
    const texts = (f: string) => lines(f).map((l) => (JSON.parse(l).ctxs as { text: string }[]).map((c) => c.text).join('\u0000'));
    if (texts(a).join('\n') !== texts(b).join('\n')) same = false;
  }
  runs.batched.shift();
  const best = (xs: SelectSummary[]) => Math.max(...xs.map((x) => x.pairsPerSecond));
  const wall = (xs: SelectSummary[]) => Math.min(...xs.map((x) => x.seconds));
  const pb = best(runs.batched);
  const ps = best(runs.single);
  process.stdout.write(
    [
      `select bench: ${questions} questions x ${candidates + 1} candidates, selector ${path.basename(selectorDir)}, ${cpus().length} cores, load ${loadavg()[0].toFixed(1)}` +
        (batchTokens ? `, batchTokens ${batchTokens}` : ''),
      `  many questions per call (32): ${pb.toFixed(0)} pairs/s (best of ${rounds}; wall ${wall(runs.batched).toFixed(2)} s)`,
      `  one question per call:        ${ps.toFixed(0)} pairs/s (best of ${rounds}; wall ${wall(runs.single).toFixed(2)} s)`,
      `  ratio ${(pb / ps).toFixed(2)}x; kept passages identical: ${same ? 'yes' : 'NO'}`,
    ].join('\n') + '\n',
  );
  if (!same) process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
