// The engine's CPU tensor allocator (native/core/tensor_memory.h): large freed blocks are reused
// instead of mapped afresh, the cap from GAINRAG_TENSOR_CACHE_MB holds, reuse changes no result
// (a recycled block holds the last tensor's bytes, so code that wrongly relied on fresh zeroed
// pages would show here), and releaseTensorMemory() gives the cache back.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Encoder, engineInfo, releaseTensorMemory } from '../lib/index.js';
import { fixture } from './helpers.js';

const MiB = 1 << 20;

// 48 rows of 120 words: bert-tiny's [48, ~128, 512] FFN activations are ~12 MiB, well above the
// 1 MiB threshold where the allocator takes over from malloc.
const texts = Array.from({ length: 48 }, (_, i) =>
  Array.from({ length: 120 }, (_, j) => ['retrieval', 'gain', 'signal', 'passage', 'query'][(i * 7 + j) % 5]).join(' '));

test('large tensors are reused across calls, and reuse changes no output', async () => {
  const before = engineInfo().tensorMemory;
  assert.equal(before.installed, true);
  if (process.env.GAINRAG_TENSOR_CACHE_MB === undefined) assert.equal(before.capBytes, 1024 * MiB);
  const enc = await Encoder.load(fixture('bert-tiny'));
  const first = await enc.embed(texts);
  const afterFirst = engineInfo().tensorMemory;
  assert.ok(afterFirst.mapped > before.mapped, 'the first call maps its large activations');
  assert.ok(afterFirst.cachedBytes > 0 && afterFirst.cachedBytes <= afterFirst.capBytes);
  const second = await enc.embed(texts);
  const afterSecond = engineInfo().tensorMemory;
  // The same shapes again: every large block comes back from the cache.
  assert.equal(afterSecond.mapped, afterFirst.mapped);
  assert.ok(afterSecond.reused > afterFirst.reused);
  // Same path, same threads: bitwise equal.
  assert.deepEqual(Array.from(second), Array.from(first));
  const released = releaseTensorMemory();
  assert.equal(released, afterSecond.cachedBytes);
  assert.equal(engineInfo().tensorMemory.cachedBytes, 0);
  enc.dispose();
});

function childInfo(cacheMb: string): { status: number | null; stderr: string; info: { capBytes: number; cachedBytes: number; mapped: number } } {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const script = `
    const { Encoder, engineInfo } = await import(${JSON.stringify(path.join(here, '..', 'lib', 'index.js'))});
    const enc = await Encoder.load(${JSON.stringify(fixture('bert-tiny'))});
    await enc.embed(${JSON.stringify(texts)});
    await enc.embed(${JSON.stringify(texts)});
    process.stdout.write(JSON.stringify(engineInfo().tensorMemory));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, GAINRAG_TENSOR_CACHE_MB: cacheMb },
  });
  return { status: r.status, stderr: r.stderr, info: r.status === 0 ? JSON.parse(r.stdout) : null };
}

test('GAINRAG_TENSOR_CACHE_MB=0 keeps nothing: every call maps afresh', () => {
  const r = childInfo('0');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.info.capBytes, 0);
  assert.equal(r.info.cachedBytes, 0);
  assert.ok(r.info.mapped > 0);
});

test('a malformed GAINRAG_TENSOR_CACHE_MB is named on stderr and the default is used', () => {
  const r = childInfo('lots');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /GAINRAG_TENSOR_CACHE_MB=lots is not a whole number of MiB; using 1024/);
  assert.equal(r.info.capBytes, 1024 * MiB);
});
