// `merge` has the output guarantees of every other writer (issue #20, item 6): --out is
// validated and locked, damaged shards are refused naming the file, and shards with manifests
// must be one job's (stage, settings, input) whose ranges tile the input in order.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { acquireOutputLock } from '../lib/io/output.js';
import { manifestPath, readManifest } from '../lib/io/manifest.js';
import { openStageOutput, type RecordFormat } from '../lib/io/records.js';
import { mergeOutputs } from '../lib/scale/merge.js';
import { cliPath } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-merge-'));
after(() => rmSync(work, { recursive: true, force: true }));
const f = (name: string) => path.join(work, name);

const input = f('input.jsonl');
writeFileSync(input, Array.from({ length: 6 }, (_, i) => JSON.stringify({ question: `q${i}` })).join('\n') + '\n');

/** A stage output of input positions [start, end), one record per position, with a manifest unless `bare`. */
function shard(name: string, start: number, end: number, o: { format?: RecordFormat; stage?: string; settings?: Record<string, unknown>; data?: string; bare?: boolean } = {}): string {
  const out = f(name);
  const manifest = o.bare ? undefined : { stage: o.stage ?? 'select', settings: o.settings ?? { kDocs: 2 }, input: o.data ?? input, range: { start, end } };
  const w = openStageOutput(out, { format: o.format ?? 'jsonl', kind: 'json', manifest });
  for (let i = start; i < end; i++) w.write({ question: `q${i}`, selected: i });
  w.flush();
  w.close();
  return out;
}

test('merge: shards with manifests that tile the input merge, and the result has a manifest', async () => {
  for (const format of ['jsonl', 'arrow'] as const) {
    const parts = [shard(`a0.${format}`, 0, 2, { format }), shard(`a1.${format}`, 2, 4, { format }), shard(`a2.${format}`, 4, 6, { format })];
    const warnings: string[] = [];
    const out = f(`merged.${format}`);
    const s = await mergeOutputs(parts, out, { warn: (m) => warnings.push(m) });
    assert.equal(s.records, 6);
    assert.equal(s.checked, true);
    assert.deepEqual(warnings, []);
    const m = readManifest(out)!;
    assert.equal(m.stage, 'select');
    assert.deepEqual(m.settings, { kDocs: 2 });
    assert.equal(m.input!.path, input);
    assert.equal(m.range, null, 'the whole input');
    assert.equal(m.records, 6);
  }
});

test('merge: missing, overlapping, reordered and foreign shards are E_DATA; nothing is written', async () => {
  const s0 = shard('b0.jsonl', 0, 2);
  const s1 = shard('b1.jsonl', 2, 4);
  const s2 = shard('b2.jsonl', 4, 6);
  const out = f('never.jsonl');
  const cases: [string[], RegExp][] = [
    [[s0, s2], /positions 2-3 are in no shard/],
    [[s1, s2], /positions 0-1 are in no shard/],
    [[s0, s1], /0-3 of 6 .*last shard/],
    [[s1, s0, s2], /overlap or are out of order/],
    [[s0, shard('b1-overlap.jsonl', 1, 4), s2], /overlap/],
    [[s0, shard('b1-stage.jsonl', 2, 4, { stage: 'generate' }), s2], /b1-stage\.jsonl is a generate output/],
    [[s0, shard('b1-settings.jsonl', 2, 4, { settings: { kDocs: 3 } }), s2], /other settings/],
    [[s0, s1, shard('b2-input.jsonl', 4, 6, { data: f('b0.jsonl') }), s2], /another input/],
  ];
  for (const [parts, message] of cases) {
    await assert.rejects(mergeOutputs(parts, out), { code: 'E_DATA', message }, parts.map((p) => path.basename(p)).join(' '));
  }
  // A shard changed after it was written no longer holds what its manifest says.
  const s1b = shard('b1-changed.jsonl', 2, 4);
  appendFileSync(s1b, '{"question": "extra"}\n');
  await assert.rejects(mergeOutputs([s0, s1b, s2], out), { code: 'E_DATA', message: /b1-changed\.jsonl holds 3 records but its manifest says 2/ });
  // An input edited since the shards were written: its identity differs from theirs.
  const other = f('input-2.jsonl');
  writeFileSync(other, readFileSync(input));
  const t0 = shard('c0.jsonl', 0, 3, { data: other });
  const t1 = shard('c1.jsonl', 3, 6, { data: other });
  appendFileSync(other, '{"question": "q6"}\n');
  const warnings: string[] = [];
  const ok = await mergeOutputs([t0, t1], f('changed-input.jsonl'), { warn: (m) => warnings.push(m) });
  assert.equal(ok.records, 6);
  assert.match(warnings.join('\n'), /changed or is gone/);
  assert.deepEqual(readManifest(f('changed-input.jsonl'))!.range, { start: 0, end: 6 }, 'only what is known is claimed');
  assert.equal(existsSync(out) || existsSync(`${out}.partial`) || existsSync(`${out}.lock`), false);
});

test('merge: a torn last line, a JSON array shard and a directory are refused naming the file', async () => {
  const torn = f('torn.jsonl');
  writeFileSync(torn, '{"question": "q0"}\n{"question": "q1", "sel');
  const array = f('array.json');
  writeFileSync(array, '[{"question": "q0"}]\n');
  const dir = f('a-dir');
  mkdirSync(dir);
  const good = shard('d0.jsonl', 0, 2, { bare: true });
  const out = f('d.jsonl');
  await assert.rejects(mergeOutputs([good, torn], out), { code: 'E_DATA', message: /torn\.jsonl does not end with a newline/ });
  await assert.rejects(mergeOutputs([good, array], out), { code: 'E_DATA', message: /array\.json is a JSON array/ });
  await assert.rejects(mergeOutputs([good, dir], out), { code: 'E_INVALID_ARG', message: /a-dir is a directory, not a regular file/ });
  // An Arrow shard cut short (no end-of-stream marker).
  const arrow = shard('d1.arrow', 0, 2, { format: 'arrow', bare: true });
  const bytes = readFileSync(arrow);
  writeFileSync(f('cut.arrow'), bytes.subarray(0, bytes.length - 20));
  await assert.rejects(mergeOutputs([arrow, f('cut.arrow')], f('d.arrow')), { code: 'E_DATA', message: /cut\.arrow/ });
  assert.equal(existsSync(out) || existsSync(f('d.arrow')), false);
});

test('merge: --out that is a symlink, a FIFO, a hard link to a shard, or locked is refused', async () => {
  const a = shard('e0.jsonl', 0, 3);
  const b = shard('e1.jsonl', 3, 6);
  const before = readFileSync(a);
  const target = f('precious.txt');
  writeFileSync(target, 'keep');
  const link = f('link.jsonl');
  symlinkSync(target, link);
  await assert.rejects(mergeOutputs([a, b], link), { code: 'E_INVALID_ARG', message: /symbolic link/ });
  const fifo = f('fifo.jsonl');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  await assert.rejects(mergeOutputs([a, b], fifo), { code: 'E_INVALID_ARG', message: /FIFO/ });
  const hard = f('hard.jsonl');
  linkSync(a, hard);
  await assert.rejects(mergeOutputs([a, b], hard), { code: 'E_INVALID_ARG', message: /input/ });
  assert.ok(readFileSync(a).equals(before), 'the shard is intact');
  assert.equal(readFileSync(target, 'utf8'), 'keep');
  const out = f('locked.jsonl');
  const lock = acquireOutputLock(out);
  try {
    await assert.rejects(mergeOutputs([a, b], out), { code: 'E_LOCKED' });
  } finally {
    lock.release();
  }
  assert.equal((await mergeOutputs([a, b], out)).records, 6);
});

test('merge: shards without manifests still merge, with a warning, into an output without one (CLI)', () => {
  const a = shard('g0.jsonl', 0, 3, { bare: true });
  const b = shard('g1.jsonl', 3, 6, { bare: true });
  const out = f('g.jsonl');
  writeFileSync(manifestPath(out), JSON.stringify({ format: 'gainrag-output-1', stage: 'old', settings: {}, input: null, range: null, records: 1 }));
  const r = spawnSync(process.execPath, [cliPath, 'merge', a, b, '--out', out, '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /g0\.jsonl, .*g1\.jsonl have no manifest/);
  assert.equal(JSON.parse(r.stdout).checked, false);
  assert.equal(readFileSync(out, 'utf8'), readFileSync(a, 'utf8') + readFileSync(b, 'utf8'));
  assert.equal(readManifest(out), null, 'the stale manifest of the old file is gone');
  const bad = spawnSync(process.execPath, [cliPath, 'merge', a, f('torn-cli.jsonl'), '--out', f('h.jsonl')], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /torn-cli\.jsonl.*E_IO/);
});
