// The models shipped under models/ of this package (bert-tiny, llama-tiny, xlmr-tiny-reranker)
// have random weights: they exist so that every stage runs end to end offline. Numbers measured
// with them say nothing about GainRAG's quality, so every command that prints a results table
// says so when one of them was used.
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// This file is dist/lib/models/bundled.js (or lib/models/bundled.ts under a TS runner): the
// package root is three levels up from dist/, two from lib/.
const here = path.dirname(fileURLToPath(import.meta.url));
const packageRoot = path.basename(path.resolve(here, '..', '..')) === 'dist' ? path.resolve(here, '..', '..', '..') : path.resolve(here, '..', '..');

/** The directory holding the bundled random-weight models. */
export const BUNDLED_MODELS_DIR = path.join(packageRoot, 'models');

/** The line table-printing commands add when a bundled model was used. */
export const BUNDLED_MODELS_DISCLAIMER =
  "NOTE: these numbers come from the bundled random-weight test models (under this package's models/); they show that the pipeline runs, and say nothing about GainRAG's quality.";

function real(p: string): string | undefined {
  try {
    return realpathSync(p);
  } catch {
    return undefined;
  }
}

/** True when `dir` (links followed) is one of the bundled models, or a directory inside one. */
export function isBundledModel(dir: string | undefined): boolean {
  if (typeof dir !== 'string' || dir === '') return false;
  const d = real(dir);
  const root = real(BUNDLED_MODELS_DIR);
  if (d === undefined || root === undefined) return false;
  const rel = path.relative(root, d);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** The disclaimer line (with a newline) when any of `dirs` is a bundled model, else ''. */
export function bundledModelsNote(dirs: readonly (string | undefined)[]): string {
  return dirs.some((d) => isBundledModel(d)) ? `${BUNDLED_MODELS_DISCLAIMER}\n` : '';
}
