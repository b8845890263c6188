// scripts/build-native.js configures a build tree again when an optional backend that the tree's
// CMakeCache.txt records as not found (AUTO mode) has been installed since: cmake-js configures
// only a tree without a cache, so a tree first configured before `apt-get install libdnnl-dev`
// kept building without oneDNN. Checked through the script's --stale-backends report on a
// throwaway build tree, with CPATH pointing at a throwaway header.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { repoRoot } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-buildcfg-'));
after(() => rmSync(work, { recursive: true, force: true }));
const include = path.join(work, 'include');
mkdirSync(path.join(include, 'faiss'), { recursive: true });
writeFileSync(path.join(include, 'dnnl.hpp'), '// empty\n');
writeFileSync(path.join(include, 'faiss', 'Index.h'), '// empty\n');

function staleBackends(cache: string | null, env: NodeJS.ProcessEnv = {}): string[] {
  const dir = mkdtempSync(path.join(work, 'build-'));
  if (cache !== null) writeFileSync(path.join(dir, 'CMakeCache.txt'), cache);
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'scripts', 'build-native.js'), '--stale-backends'], {
    encoding: 'utf8',
    env: { ...process.env, GAINRAG_BUILD_DIR: dir, CPATH: include, GAINRAG_WITH_DNNL: '', GAINRAG_FAISS: '', ...env },
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as string[];
}

const notFound = 'GAINRAG_DNNL_INCLUDE:PATH=GAINRAG_DNNL_INCLUDE-NOTFOUND\nfaiss_DIR:PATH=faiss_DIR-NOTFOUND\n';
const found = 'GAINRAG_DNNL_INCLUDE:PATH=/usr/include\nfaiss_DIR:PATH=/usr/lib/x86_64-linux-gnu/cmake/faiss\n';

test('a tree that cached oneDNN and FAISS as not found configures again once their headers exist', () => {
  assert.deepEqual(staleBackends(notFound), ['libdnnl-dev', 'libfaiss-dev']);
});

test('found backends, OFF backends and a tree never configured do not force a configure', () => {
  assert.deepEqual(staleBackends(found), []);
  assert.deepEqual(staleBackends(notFound, { GAINRAG_WITH_DNNL: 'OFF', GAINRAG_FAISS: 'off' }), []);
  assert.deepEqual(staleBackends(notFound, { GAINRAG_WITH_DNNL: 'OFF' }), ['libfaiss-dev']);
  assert.deepEqual(staleBackends(null), []);
});
