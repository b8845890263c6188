// A cheap identity of a model's weights, for the settings an output depends on: a run resumed
// after the weights at the same path were replaced (a retrained selector, another snapshot)
// must not append records of the new model to those of the old one. Hashing whole checkpoints
// (GBs) at every start would cost more than many runs; instead each weight and config file
// contributes its name, size and first and last MiB. A safetensors file's first MiB holds its
// header (every tensor's name, dtype, shape and offsets) and the start of the data, and any
// retraining changes the data at both ends, so in practice a changed model changes the id.
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { resolveModelSync } from './hub.js';

const FILES = /(\.safetensors|^config\.json|^tokenizer\.json|^tokenizer_config\.json|^modules\.json)$/;
const EDGE = 1 << 20;

/**
 * Hex id of the weights in `dir` (see the top of this file); null when `dir` is not a readable
 * directory. `files` picks the file names that count (default: weights, configs, tokenizer, modules.json).
 */
export function weightsFingerprint(dir: string | undefined, files: RegExp = FILES): string | null {
  if (!dir) return null;
  try {
    dir = resolveModelSync(dir); // a hub id: its cached snapshot (the loaders resolved it before)
  } catch {
    return null;
  }
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) return null;
    names = readdirSync(dir).filter((n) => files.test(n)).sort();
  } catch {
    return null;
  }
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(EDGE);
  for (const name of names) {
    const file = path.join(dir, name);
    let fd: number | undefined;
    try {
      const st = statSync(file);
      if (!st.isFile()) continue;
      hash.update(`${name}\0${st.size}\0`);
      fd = openSync(file, 'r');
      // Small files whole; large ones by their first and last MiB.
      const spans = st.size > 2 * EDGE ? [[0, EDGE], [st.size - EDGE, st.size]] : [[0, st.size]];
      for (const [from, to] of spans) {
        for (let at = from; at < to; ) {
          const n = readSync(fd, buf, 0, Math.min(buf.length, to - at), at);
          if (n === 0) break;
          hash.update(buf.subarray(0, n));
          at += n;
        }
      }
    } catch {
      hash.update(`${name}\0unreadable\0`);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
  return hash.digest('hex').slice(0, 32);
}
