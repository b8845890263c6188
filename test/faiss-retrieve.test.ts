// retrieve on an index with a FAISS approximate index (issue #17): --nprobe / --ef-search are
// validated, change the results, and are part of the output's settings (so merge refuses shards
// searched with other values); --shard + merge on an ANN index equals the unsharded run.
// Skipped without FAISS in the build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cliPath, dataDir, repoRoot } from './helpers.js';
import { buildAnn, faissAvailable } from '../lib/retrieval/ann.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { openRetrieveResources, retrieve, type RetrieveResources } from '../lib/retrieval/retrieve.js';
import { mergeOutputs } from '../lib/scale/merge.js';

const skip = faissAvailable() ? false : 'this addon was built without FAISS (libfaiss-dev)';
const encoder = path.join(repoRoot, 'models', 'bert-tiny');
const squad = path.join(dataDir, 'squad_v1.1_dev_open');

interface Fixture { w: string; questions: string; exact: string; ivf: string; hnsw: string }

// 300 passages and 24 questions of the bundled SQuAD data; one exact index, the same rows with an
// IVF8,Flat (FAISS's default nprobe 1) and with an HNSW16,Flat.
async function setup(): Promise<Fixture> {
  const w = mkdtempSync(path.join(tmpdir(), 'gainrag-ann-retrieve-'));
  const passages = path.join(w, 'p.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').split('\n').slice(0, 300).join('\n') + '\n');
  const questions = path.join(w, 'q.jsonl');
  writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').split('\n').slice(0, 24).join('\n') + '\n');
  const exact = path.join(w, 'exact');
  await buildIndex({ passages, encoder, out: exact, batchSize: 100 });
  const ivf = path.join(w, 'ivf');
  const hnsw = path.join(w, 'hnsw');
  cpSync(exact, ivf, { recursive: true });
  cpSync(exact, hnsw, { recursive: true });
  await buildAnn(ivf, { factory: 'IVF8,Flat', trainSize: 300 });
  await buildAnn(hnsw, { factory: 'HNSW16,Flat' });
  return { w, questions, exact, ivf, hnsw };
}

const ctxIds = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { ctxs: { id: string }[] }).ctxs.map((c) => c.id));
const settings = (file: string) => (JSON.parse(readFileSync(`${file}.gainrag.json`, 'utf8')) as { settings: { approximate?: { nprobe: number | null; efSearch: number | null } } }).settings;

test('retrieve --nprobe / --ef-search: validated, change the results on an IVF index, recorded in the manifest; merge refuses shards of other values', { skip }, async () => {
  const f = await setup();
  let resources: RetrieveResources | undefined;
  try {
    const out = (name: string) => path.join(f.w, name);
    // Through the CLI: every list probed gives exact search's results.
    const cli = (args: string[]) => spawnSync(process.execPath, [cliPath, 'retrieve', '--encoder', encoder, '--data', f.questions, '--top-k', '5', ...args], { encoding: 'utf8' });
    let r = cli(['--index', f.ivf, '--nprobe', '8', '--out', out('all.jsonl')]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(settings(out('all.jsonl')).approximate?.nprobe, 8);
    r = cli(['--index', f.ivf, '--ef-search', '32', '--out', out('refused.jsonl')]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /E_INVALID_ARG/);
    assert.ok(r.stderr.includes('--ef-search needs an index with an HNSW FAISS index'), r.stderr);
    assert.equal(existsSync(out('refused.jsonl')), false);

    resources = await openRetrieveResources({ index: f.exact, encoder });
    const refused = async (o: { index: string; nprobe?: number; efSearch?: number }, says: string) => {
      await assert.rejects(retrieve({ encoder, data: f.questions, out: out('refused.jsonl'), topK: 5, resources, ...o }), (e: Error & { code?: string }) => e.code === 'E_INVALID_ARG' && e.message.includes(says));
      assert.equal(existsSync(out('refused.jsonl')), false);
    };
    await refused({ index: f.exact, nprobe: 4 }, 'none (exact search)');
    await retrieve({ index: f.exact, encoder, data: f.questions, out: out('exact.jsonl'), topK: 5, resources });
    assert.equal(settings(out('exact.jsonl')).approximate, undefined);
    const exactIds = ctxIds(out('exact.jsonl'));
    assert.equal(exactIds.length, 24);
    assert.deepEqual(ctxIds(out('all.jsonl')), exactIds);
    await resources.index.dispose();
    resources.store.close();

    resources = await openRetrieveResources({ index: f.ivf, encoder });
    await refused({ index: f.ivf, nprobe: 0 }, '--nprobe must be a positive integer');
    await refused({ index: f.ivf, nprobe: 2.5 }, '--nprobe must be a positive integer');
    await refused({ index: f.ivf, efSearch: 16 }, 'an HNSW FAISS index; ' + f.ivf + ' has FAISS IndexIVFFlat');
    const run = (name: string, nprobe?: number, shard?: { index: number; count: number }) =>
      retrieve({ index: f.ivf, encoder, data: f.questions, out: out(name), topK: 5, batchSize: 8, resources, nprobe, shard });
    await run('default.jsonl');
    await run('one.jsonl', 1);
    // Without the flag: ann.json's nprobe (none here: FAISS's 1), recorded as null.
    assert.equal(settings(out('default.jsonl')).approximate?.nprobe, null);
    assert.equal(settings(out('one.jsonl')).approximate?.nprobe, 1);
    assert.deepEqual(ctxIds(out('one.jsonl')), ctxIds(out('default.jsonl')));
    assert.notDeepEqual(ctxIds(out('one.jsonl')), exactIds, 'one list of eight found the exact top-5 for every question');

    // Shards searched with different nprobe are not one job's output.
    await run('s0.jsonl', 1, { index: 0, count: 2 });
    await run('s1.jsonl', 8, { index: 1, count: 2 });
    await assert.rejects(mergeOutputs([out('s0.jsonl'), out('s1.jsonl')], out('mixed.jsonl')), (e: Error & { code?: string }) => e.code === 'E_DATA' && /other settings/.test(e.message));
    assert.equal(existsSync(out('mixed.jsonl')), false);
  } finally {
    if (resources) {
      await resources.index.dispose();
      resources.store.close();
    }
    rmSync(f.w, { recursive: true, force: true });
  }
});

test('retrieve --shard + merge on approximate indexes (IVF, HNSW) equals the unsharded run byte for byte', { skip }, async () => {
  const f = await setup();
  try {
    for (const [index, params] of [[f.ivf, { nprobe: 2 }], [f.hnsw, { efSearch: 8 }]] as const) {
      const resources = await openRetrieveResources({ index, encoder });
      try {
        const out = (name: string) => path.join(f.w, `${path.basename(index)}-${name}`);
        const run = (name: string, shard?: { index: number; count: number }) =>
          retrieve({ index, encoder, data: f.questions, out: out(name), topK: 5, batchSize: 8, resources, ...params, shard });
        await run('whole.jsonl');
        const shards = [0, 1, 2].map((i) => `s${i}.jsonl`);
        for (const [i, name] of shards.entries()) await run(name, { index: i, count: 3 });
        await mergeOutputs(shards.map(out), out('merged.jsonl'));
        assert.ok(readFileSync(out('merged.jsonl')).equals(readFileSync(out('whole.jsonl'))), `${path.basename(index)}: merged shards differ from the unsharded run`);
        assert.equal(ctxIds(out('whole.jsonl')).length, 24);
      } finally {
        await resources.index.dispose();
        resources.store.close();
      }
    }
  } finally {
    rmSync(f.w, { recursive: true, force: true });
  }
});
