// Import arrows run one way (issue #20 item 3): read the sources' import / #include lines and
// check the layering rules that were once broken, so a new upward arrow fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './helpers.js';

function files(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  for (const name of readdirSync(path.join(repoRoot, dir))) {
    const rel = path.posix.join(dir, name);
    if (statSync(path.join(repoRoot, rel)).isDirectory()) out.push(...files(rel, ext));
    else if (ext.test(name)) out.push(rel);
  }
  return out;
}

/** lib/ module -> the lib/ modules it imports (type-only imports included: they are arrows too). */
function libGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const f of files('lib', /\.ts$/)) {
    const src = readFileSync(path.join(repoRoot, f), 'utf8');
    const deps = [...src.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'/gm)].map((m) =>
      path.posix.normalize(path.posix.join(path.posix.dirname(f), m[1])).replace(/\.js$/, '.ts'),
    );
    graph.set(f, deps);
  }
  return graph;
}

function includes(file: string): string[] {
  return [...readFileSync(path.join(repoRoot, file), 'utf8').matchAll(/^#include "([^"]+)"/gm)].map((m) => m[1]);
}

test('lib/ has no import cycle (the trainer types loop included)', () => {
  const graph = libGraph();
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (f: string, stack: string[]) => {
    state.set(f, 'open');
    for (const d of graph.get(f) ?? []) {
      if (state.get(d) === 'open') cycles.push([...stack.slice(stack.indexOf(d)), d].join(' -> '));
      else if (!state.has(d)) visit(d, [...stack, d]);
    }
    state.set(f, 'done');
  };
  for (const f of graph.keys()) if (!state.has(f)) visit(f, [f]);
  assert.deepEqual(cycles, []);
});

test('lib/io imports nothing from the layers above it', () => {
  const above = /^lib\/(retrieval|pipeline|models|training|scale|cli|metrics|convert)\//;
  const bad = [...libGraph()].filter(([f]) => f.startsWith('lib/io/')).flatMap(([f, deps]) => deps.filter((d) => above.test(d)).map((d) => `${f} -> ${d}`));
  assert.deepEqual(bad, []);
});

test('native/core includes only core; cuda knows no index; index reaches cuda through kernel_search.h', () => {
  const bad: string[] = [];
  for (const f of files('native', /\.(h|cpp|cu)$/)) {
    for (const inc of includes(f)) {
      const top = inc.split('/')[0];
      if (f.startsWith('native/core/') && top !== 'core') bad.push(`${f} -> ${inc}`);
      if (f.startsWith('native/cuda/') && ['index', 'models', 'train'].includes(top)) bad.push(`${f} -> ${inc}`);
      if (f.startsWith('native/index/') && top === 'cuda' && inc !== 'cuda/kernel_search.h') bad.push(`${f} -> ${inc}`);
    }
  }
  assert.deepEqual(bad, []);
});

test('one batch planner: PlanRows is gone, DenseIndex::SearchCudaKernels is defined in index/', () => {
  const native = files('native', /\.(h|cpp|cu)$/);
  assert.deepEqual(native.filter((f) => /\bPlanRows\b/.test(readFileSync(path.join(repoRoot, f), 'utf8'))), []);
  const defs = native.filter((f) => /DenseIndex::SearchCudaKernels\(/.test(readFileSync(path.join(repoRoot, f), 'utf8')));
  assert.deepEqual(defs, ['native/index/dense_index_cuda.cpp']);
});
