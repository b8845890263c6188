// Seeded mutation fuzzing of every file format the engine parses: safetensors headers,
// config.json, index manifests, .npy headers and JSONL records. Each case starts from a valid
// file, mutates it (bit flips, interesting bytes, truncation, insertion, JSON value swaps), and
// feeds it to the real loader. The only acceptable outcomes are a valid result or an error whose
// `code` is on the shared list (and not E_INTERNAL, which means a bug); anything else is
// reported, and a crash kills this process, which is why test/fuzz.test.ts runs it as a child.
//
//   node dist/bench/fuzz.js [--target NAME|all] [--seed N] [--iterations N] [--json]
//
// The suite runs a few hundred cases per target; a longer run is the same command with more
// iterations (e.g. --iterations 5000). Same seed, same cases.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isErrorCode } from '../lib/errors.js';
import { readSafetensors } from '../lib/safetensors.js';
import { Encoder } from '../lib/models/encoder.js';
import { DenseIndex, npyInfo } from '../lib/retrieval/dense-index.js';
import { DenseIndexWriter } from '../lib/retrieval/index-writer.js';
import { readNpyFloat32, writeNpyFloat32 } from '../lib/retrieval/npy.js';
import { readRecords } from '../lib/io/jsonl.js';
import { filterSynthesized } from '../lib/pipeline/filter.js';
import { toSelector } from '../lib/pipeline/to-selector.js';
import { loadTrainingData } from '../lib/training/data.js';
import { Rng } from '../lib/training/prng.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bertDir = path.join(root, 'models', 'bert-tiny');

export interface FuzzReport {
  target: string;
  seed: number;
  cases: number;
  accepted: number;
  /** error code -> count */
  rejected: Record<string, number>;
  /** cases that failed without a code, or with E_INTERNAL: each a short description */
  bad: string[];
}

// ---------------------------------------------------------------- mutations

const INTERESTING = [0x00, 0xff, 0x7f, 0x80, 0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x30, 0x39, 0x2d, 0x20, 0x5c, 0x0a];

/** One random byte-level mutation, biased towards the first `hot` bytes (the header). */
export function mutateBytes(rng: Rng, data: Uint8Array, hot: number): Uint8Array {
  if (data.length === 0) return Uint8Array.of(INTERESTING[rng.int(INTERESTING.length)]); // nothing left to mutate
  const span = Math.max(1, rng.next() < 0.85 ? Math.min(hot, data.length) : data.length);
  const at = rng.int(span);
  const out = Buffer.from(data);
  switch (rng.int(6)) {
    case 0: // flip one bit
      out[at] ^= 1 << rng.int(8);
      return out;
    case 1: // an interesting byte
      out[at] = INTERESTING[rng.int(INTERESTING.length)];
      return out;
    case 2: // a run of random bytes
      for (let i = at; i < Math.min(out.length, at + 1 + rng.int(8)); i++) out[i] = rng.int(256);
      return out;
    case 3: // truncate
      return out.subarray(0, rng.int(out.length));
    case 4: {
      // insert bytes
      const ins = Buffer.from(Array.from({ length: 1 + rng.int(6) }, () => (rng.next() < 0.5 ? INTERESTING[rng.int(INTERESTING.length)] : rng.int(256))));
      return Buffer.concat([out.subarray(0, at), ins, out.subarray(at)]);
    }
    default: {
      // delete bytes
      return Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + rng.int(8)))]);
    }
  }
}

const VALUES: unknown[] = [0, -1, 1, 2, 3, 7, 1.5, -0.0, 1e-30, 1e300, -1e300, 2 ** 31, 2 ** 53, 1e22, null, true, false, '', 'x', 'float16', 'gelu', 'silu', [], [1], {}, { a: 1 }];

/** Replaces, deletes or adds one value somewhere in a JSON document. */
export function mutateJson(rng: Rng, value: unknown): unknown {
  const doc = structuredClone(value);
  const containers: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const walk = (v: unknown, depth: number) => {
    if (depth > 6 || v === null || typeof v !== 'object') return;
    for (const k of Array.isArray(v) ? v.keys() : Object.keys(v)) {
      containers.push({ parent: v as Record<string, unknown>, key: k });
      walk((v as Record<string, unknown>)[k as string], depth + 1);
    }
  };
  walk(doc, 0);
  if (containers.length === 0) return VALUES[rng.int(VALUES.length)];
  const { parent, key } = containers[rng.int(containers.length)];
  const p = parent as Record<string | number, unknown>;
  const r = rng.next();
  if (r < 0.7) p[key] = VALUES[rng.int(VALUES.length)];
  else if (r < 0.85 && !Array.isArray(parent)) delete p[key];
  else p[key] = [p[key], p[key]];
  return doc;
}

// ---------------------------------------------------------------- driver

function report(target: string, seed: number): FuzzReport {
  return { target, seed, cases: 0, accepted: 0, rejected: {}, bad: [] };
}

async function runCase(r: FuzzReport, what: string, fn: () => Promise<void>): Promise<void> {
  r.cases++;
  try {
    await fn();
    r.accepted++;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (isErrorCode(code) && code !== 'E_INTERNAL') {
      r.rejected[code] = (r.rejected[code] ?? 0) + 1;
    } else {
      const e = err as Error;
      r.bad.push(`${what}: ${e?.constructor?.name ?? typeof err} ${String(code ?? '(no code)')}: ${String(e?.message ?? err).slice(0, 200)}`);
    }
  }
}

export async function fuzzSafetensors(seed: number, iterations: number, dir: string): Promise<FuzzReport> {
  const r = report('safetensors', seed);
  const rng = new Rng(seed, 1);
  const valid = readFileSync(path.join(bertDir, 'model.safetensors'));
  const headerEnd = 8 + Number(valid.readBigUInt64LE(0));
  const file = path.join(dir, 'fuzz.safetensors');
  for (let i = 0; i < iterations; i++) {
    let data: Uint8Array = valid;
    for (let m = 1 + rng.int(3); m > 0; m--) data = mutateBytes(rng, data, headerEnd);
    writeFileSync(file, data);
    await runCase(r, `case ${i}`, async () => {
      const st = await readSafetensors(file);
      for (const t of st.tensors()) {
        const v = st.tensor(t.name);
        if (v.byteLength !== t.byteLength) throw new Error(`tensor ${t.name}: view has ${v.byteLength} bytes, header says ${t.byteLength}`);
      }
    });
  }
  return r;
}

export async function fuzzConfig(seed: number, iterations: number, dir: string): Promise<FuzzReport> {
  const r = report('config', seed);
  const rng = new Rng(seed, 2);
  const model = path.join(dir, 'model');
  mkdirSync(model, { recursive: true });
  for (const f of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(bertDir, f), path.join(model, f));
  const valid = JSON.parse(readFileSync(path.join(bertDir, 'config.json'), 'utf8'));
  for (let i = 0; i < iterations; i++) {
    const bytes = rng.next() < 0.3;
    const text = bytes ? Buffer.from(mutateBytes(rng, Buffer.from(JSON.stringify(valid)), 1 << 20)) : JSON.stringify(mutateJson(rng, valid));
    writeFileSync(path.join(model, 'config.json'), text);
    await runCase(r, `case ${i}: ${String(text).slice(0, 120)}`, async () => {
      const enc = await Encoder.load(model);
      const v = await enc.embed(['a short probe sentence']);
      if (v.length !== enc.dim) throw new Error(`embedding has ${v.length} values for dim ${enc.dim}`);
    });
  }
  return r;
}

export async function fuzzManifest(seed: number, iterations: number, dir: string): Promise<FuzzReport> {
  const r = report('manifest', seed);
  const rng = new Rng(seed, 3);
  const index = path.join(dir, 'index');
  const w = DenseIndexWriter.create(index, 4);
  await w.append(new Float32Array(Array.from({ length: 4 * 6 }, (_, k) => Math.sin(k))));
  await w.finish();
  const manifest = path.join(index, 'manifest.json');
  const valid = JSON.parse(readFileSync(manifest, 'utf8'));
  for (let i = 0; i < iterations; i++) {
    const text = rng.next() < 0.3 ? Buffer.from(mutateBytes(rng, Buffer.from(JSON.stringify(valid)), 1 << 20)) : JSON.stringify(mutateJson(rng, valid));
    writeFileSync(manifest, text);
    await runCase(r, `case ${i}: ${String(text).slice(0, 120)}`, async () => {
      const idx = await DenseIndex.open(index);
      const res = await idx.search(new Float32Array([1, 0, 0, 0]), Math.min(3, idx.size));
      for (const id of res.ids) if (id < -1n || id >= 6n) throw new Error(`search returned id ${id}`);
    });
  }
  return r;
}

export async function fuzzNpy(seed: number, iterations: number, dir: string): Promise<FuzzReport> {
  const r = report('npy', seed);
  const rng = new Rng(seed, 4);
  const src = path.join(dir, 'valid.npy');
  writeNpyFloat32(src, new Float32Array(5 * 3).map((_, k) => k / 7), 5, 3);
  const valid = readFileSync(src);
  const headerEnd = 10 + valid.readUInt16LE(8);
  const file = path.join(dir, 'fuzz.npy');
  for (let i = 0; i < iterations; i++) {
    let data: Uint8Array = valid;
    for (let m = 1 + rng.int(3); m > 0; m--) data = mutateBytes(rng, data, headerEnd);
    writeFileSync(file, data);
    await runCase(r, `case ${i} (js)`, async () => {
      const m = readNpyFloat32(file);
      if (m.data.length !== m.rows * m.cols) throw new Error('row/col mismatch');
    });
    await runCase(r, `case ${i} (native)`, async () => {
      const info = npyInfo(file);
      const idx = await DenseIndex.fromNpy(file);
      if (idx.size !== info.rows || idx.dim !== info.dim) throw new Error(`index ${idx.size}x${idx.dim}, header ${info.rows}x${info.dim}`);
      if (idx.size > 0) await idx.search(new Float32Array(idx.dim).fill(0.5), 1);
    });
  }
  return r;
}

export async function fuzzJsonl(seed: number, iterations: number, dir: string): Promise<FuzzReport> {
  const r = report('jsonl', seed);
  const rng = new Rng(seed, 5);
  const synth = {
    question: 'who wrote it', answers: ['Austen'],
    passages: [{ title: 't', text: 'Jane Austen wrote it.', PPL_CD: 1.5, EM_with_retrieval: true }, { title: '', text: 'other', PPL_CD: 3, EM_with_retrieval: false }],
  };
  const train = { query: 'find code', pos: ['the code'], neg: ['a', 'b'], pos_scores: [-0.7], neg_scores: [-2.3, -2.4] };
  const file = path.join(dir, 'fuzz.jsonl');
  for (let i = 0; i < iterations; i++) {
    const base = i % 2 === 0 ? synth : train;
    const lines = [JSON.stringify(base), JSON.stringify(rng.next() < 0.5 ? mutateJson(rng, base) : base), JSON.stringify(base)];
    let data: Uint8Array = Buffer.from(`${lines.join('\n')}\n`);
    if (rng.next() < 0.5) data = mutateBytes(rng, data, data.length);
    writeFileSync(file, data);
    await runCase(r, `case ${i} (read)`, async () => {
      for await (const _ of readRecords(file)) void _;
    });
    if (base === synth) {
      await runCase(r, `case ${i} (filter)`, async () => void (await filterSynthesized({ data: file, out: path.join(dir, 'f.jsonl') })));
      await runCase(r, `case ${i} (to-selector)`, async () => void (await toSelector({ data: file, out: path.join(dir, 's.jsonl') })));
    } else {
      await runCase(r, `case ${i} (training data)`, async () => void (await loadTrainingData(file)));
    }
  }
  return r;
}

export const TARGETS: Record<string, (seed: number, iterations: number, dir: string) => Promise<FuzzReport>> = {
  safetensors: fuzzSafetensors,
  config: fuzzConfig,
  manifest: fuzzManifest,
  npy: fuzzNpy,
  jsonl: fuzzJsonl,
};

async function main(): Promise<void> {
  const arg = (name: string, fallback: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
  };
  const target = arg('target', 'all');
  const seed = Number(arg('seed', '1'));
  const iterations = Number(arg('iterations', '2000'));
  const names = target === 'all' ? Object.keys(TARGETS) : target.split(',');
  const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-fuzz-'));
  let bad = 0;
  try {
    for (const name of names) {
      const fn = TARGETS[name];
      if (!fn) throw new Error(`unknown target ${name} (${Object.keys(TARGETS).join(', ')})`);
      const started = Date.now();
      mkdirSync(path.join(dir, name), { recursive: true });
      const r = await fn(seed, iterations, path.join(dir, name));
      bad += r.bad.length;
      if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        process.stdout.write(`${name}: ${r.cases} cases, ${r.accepted} accepted, rejected ${JSON.stringify(r.rejected)}, ${r.bad.length} bad (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
        for (const b of r.bad.slice(0, 20)) process.stdout.write(`  BAD ${b}\n`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.exitCode = bad > 0 ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`fuzz: ${(err as Error).stack}\n`);
    process.exit(2);
  });
}
