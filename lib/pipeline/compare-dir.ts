// The directory `compare --out D` writes into. compare writes files of fixed names there
// (input.jsonl, <run>-k<K>.answers.jsonl, reranked.jsonl, ..., each with .summary.json etc.);
// a file of such a name that compare did not write is someone's data. A directory compare made
// or adopted carries a marker; one without it is adopted only while it holds none of those names.
import { lstatSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';
import { writeFileAtomic } from '../io/output.js';

export const COMPARE_DIR_MARKER = '.gainrag-compare.json';
const FORMAT = 'gainrag-compare-dir-1';

/** Names compare writes (with any suffix: .summary.json, .partial, .lock, .gainrag.json, ...). */
const OWN_NAME = /^(input\.jsonl|no-retrieval\.answers\.jsonl|(retrieval|reranker|gainrag)-k\d+\.answers\.jsonl|reranked\.jsonl|selected\.jsonl|compare\.json)(\..*)?$/;

function isOurs(dir: string): boolean {
  try {
    return (JSON.parse(readFileSync(path.join(dir, COMPARE_DIR_MARKER), 'utf8')) as { format?: unknown }).format === FORMAT;
  } catch {
    return false;
  }
}

/** Makes or adopts `dir` for compare. Errors: E_INVALID_ARG (not a directory; holds files of compare's names it did not write), E_IO. */
export function claimCompareDir(dir: string): void {
  let exists = true;
  try {
    lstatSync(dir);
  } catch {
    exists = false;
  }
  try {
    if (exists && !statSync(dir).isDirectory()) throw new GainragError('E_INVALID_ARG', `--out ${dir} exists and is not a directory; compare writes a directory of runs there`);
    if (exists && isOurs(dir)) return;
    if (exists) {
      const theirs = readdirSync(dir).filter((n) => OWN_NAME.test(n));
      if (theirs.length > 0) {
        throw new GainragError('E_INVALID_ARG', `--out ${dir} holds ${theirs.slice(0, 3).join(', ')}${theirs.length > 3 ? ` and ${theirs.length - 3} more` : ''}, not written by gainrag compare; choose another --out (compare would overwrite them)`);
      }
    } else {
      mkdirSync(dir, { recursive: true });
    }
    writeFileAtomic(path.join(dir, COMPARE_DIR_MARKER), `${JSON.stringify({ format: FORMAT })}\n`);
  } catch (err) {
    throw ioError(err, `cannot prepare ${dir}`);
  }
}
