// Paths shared by the test suites. Everything a test reads lives in the repository
// (test/fixtures, test/data, models/; see their PROVENANCE.md), so a clone anywhere passes.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fixturesDir = path.join(repoRoot, 'test', 'fixtures');
export const dataDir = path.join(repoRoot, 'test', 'data');

export function fixture(name: string): string {
  return path.join(fixturesDir, name);
}

export function readReference<T = Record<string, unknown>>(name: string): T {
  return JSON.parse(readFileSync(path.join(fixturesDir, `${name}.reference.json`), 'utf8')) as T;
}

/** Largest relative difference |a-b| / max(|b|, floor) over two equal-length sequences. */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), floor));
  return worst;
}

/** Path of the CLI entry point (compiled). */
export const cliPath = path.join(repoRoot, 'dist', 'lib', 'cli', 'main.js');
