// Seeded fuzzing of the file formats (issue #13, "Also: fuzzing"): mutations of a valid
// safetensors header, config.json, index manifest, .npy header and JSONL records must each end
// in a valid result or a coded error, never a crash. The driver (bench/fuzz.ts) runs in a child
// process, so a segfault or abort shows up here as a signal instead of killing the runner.
// A few hundred cases per format keeps this to seconds; bench/fuzz.ts runs longer campaigns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { ERROR_CODES } from '../lib/errors.js';
import { mutateBytes, mutateJson, type FuzzReport } from '../bench/fuzz.js';
import { Rng } from '../lib/training/prng.js';
import { repoRoot } from './helpers.js';

const driver = path.join(repoRoot, 'dist', 'bench', 'fuzz.js');

function campaign(target: string, seed: number, iterations: number): FuzzReport {
  const r = spawnSync(process.execPath, [driver, '--target', target, '--seed', String(seed), '--iterations', String(iterations), '--json'], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  assert.equal(r.signal, null, `the ${target} fuzzer crashed with ${r.signal}: ${r.stderr.slice(-2000)}`);
  const reports = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as FuzzReport);
  assert.equal(reports.length, 1, r.stderr);
  const rep = reports[0];
  assert.deepEqual(rep.bad, [], `${target}: cases without a code (or E_INTERNAL)`);
  assert.equal(r.status, 0, r.stderr);
  return rep;
}

test('the mutators are deterministic for a seed and do change their input', () => {
  const data = Buffer.from('{"a": [1, 2, 3], "b": {"c": "d"}}');
  const run = (seed: number) => {
    const rng = new Rng(seed);
    return Array.from({ length: 50 }, () => Buffer.from(mutateBytes(rng, data, 8)).toString('latin1'));
  };
  assert.deepEqual(run(7), run(7));
  assert.notDeepEqual(run(7), run(8));
  assert.ok(run(7).filter((m) => m !== data.toString('latin1')).length > 40);
  const rng = new Rng(3);
  const doc = { a: [1, 2], b: { c: 'd' } };
  const outs = Array.from({ length: 30 }, () => JSON.stringify(mutateJson(rng, doc)));
  assert.ok(outs.filter((o) => o !== JSON.stringify(doc)).length > 20);
  assert.deepEqual(doc, { a: [1, 2], b: { c: 'd' } }, 'the input is not modified');
});

for (const [target, iterations] of [['safetensors', 250], ['config', 120], ['manifest', 200], ['npy', 200], ['jsonl', 200]] as const) {
  test(`fuzz ${target}: ${iterations} seeded mutations, each a valid result or a coded error`, () => {
    const rep = campaign(target, 20261201, iterations);
    assert.ok(rep.cases >= iterations);
    const rejected = Object.entries(rep.rejected);
    assert.ok(rejected.length > 0, 'the mutations do reach the validation (some are rejected)');
    for (const [code] of rejected) assert.ok((ERROR_CODES as readonly string[]).includes(code), code);
    assert.equal(rep.accepted + rejected.reduce((n, [, c]) => n + c, 0), rep.cases);
  });
}
