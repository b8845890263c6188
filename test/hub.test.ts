// Hub ids (lib/models/hub.ts): resolution from a cache in huggingface_hub's layout with no
// network, and downloads into that layout from a hub-compatible server on 127.0.0.1 (404, 401,
// a body cut off and resumed), after which the model loads.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import { CrossEncoder, Encoder, hasCode } from '../lib/index.js';
import { pullModel, resolveModel, resolveModelSync, type DownloadProgress } from '../lib/models/hub.js';
import { Tokenizer } from '../lib/tokenizer.js';
import { cliPath, fixture } from './helpers.js';
import { HubServer, gitSha1, sha256 } from './hub-server.js';

const scratch = mkdtempSync(path.join(tmpdir(), 'gainrag-hub-test-'));
const COMMIT = 'a'.repeat(40);
const COMMIT2 = 'b'.repeat(40);
const bertFiles = () => new Map(readdirSync(fixture('bert-tiny')).map((f) => [f, readFileSync(path.join(fixture('bert-tiny'), f))]));
let server: HubServer;
let closed = ''; // a URL where nothing listens
const texts = ['who wrote hamlet', 'the capital of france'];
let expected: Float32Array;

before(async () => {
  // No test may touch the user's cache or token.
  process.env.HF_HOME = path.join(scratch, 'hf-home');
  delete process.env.HF_HUB_CACHE;
  delete process.env.HF_TOKEN;
  delete process.env.HF_HUB_OFFLINE;
  delete process.env.HF_ENDPOINT;
  server = await new HubServer().start();
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  closed = `http://127.0.0.1:${(probe.address() as { port: number }).port}`;
  await new Promise((r) => probe.close(r));
  const local = await Encoder.load(fixture('bert-tiny'));
  expected = await local.embed(texts);
  await local.dispose();
});
after(async () => {
  await server.stop();
  rmSync(scratch, { recursive: true, force: true });
});

let n = 0;
const freshCache = () => {
  const dir = path.join(scratch, `cache-${n++}`);
  mkdirSync(dir, { recursive: true });
  return dir;
};

/** What Python's huggingface_hub leaves after from_pretrained: blobs by etag, snapshot links, refs. */
function pythonCache(cache: string, repo: string, commit: string, files: Map<string, Buffer>, refs: Record<string, string>): string {
  const storage = path.join(cache, `models--${repo.replace('/', '--')}`);
  mkdirSync(path.join(storage, 'blobs'), { recursive: true });
  for (const [name, data] of files) {
    const etag = name.endsWith('.safetensors') ? sha256(data) : gitSha1(data);
    writeFileSync(path.join(storage, 'blobs', etag), data);
    const pointer = path.join(storage, 'snapshots', commit, name);
    mkdirSync(path.dirname(pointer), { recursive: true });
    symlinkSync(path.relative(path.dirname(pointer), path.join(storage, 'blobs', etag)), pointer);
  }
  for (const [ref, c] of Object.entries(refs)) {
    mkdirSync(path.join(storage, 'refs'), { recursive: true });
    writeFileSync(path.join(storage, 'refs', ref), c); // no newline, as Python writes it
  }
  return path.join(storage, 'snapshots', commit);
}

const code = (c: string, message?: RegExp) => (e: unknown) => {
  assert.ok(hasCode(e, c as never), `expected ${c}, got ${(e as { code?: string }).code}: ${(e as Error).message}`);
  if (message) assert.match((e as Error).message, message);
  return true;
};

test('a hub id resolves from a Python-layout cache with no network (main, a tag, a commit), and loads', async () => {
  const cache = freshCache();
  const snapshot = pythonCache(cache, 'acme/bert-tiny', COMMIT, bertFiles(), { main: COMMIT, v1: COMMIT });
  process.env.HF_HUB_CACHE = cache;
  process.env.HF_ENDPOINT = closed; // any request would fail
  try {
    for (const ref of ['acme/bert-tiny', 'acme/bert-tiny@main', 'acme/bert-tiny@v1', `acme/bert-tiny@${COMMIT}`]) {
      assert.equal(await resolveModel(ref), snapshot, ref);
      assert.equal(resolveModelSync(ref), snapshot, ref);
    }
    const enc = await Encoder.load('acme/bert-tiny');
    assert.equal(enc.dir, snapshot);
    assert.deepEqual(await enc.embed(texts), expected);
    assert.equal(enc.record().revision, COMMIT);
    await enc.dispose();
    assert.equal(Tokenizer.load('acme/bert-tiny').dir, snapshot);
    // A directory of that name wins over the hub id; a plain missing path stays a path.
    assert.equal(await resolveModel(fixture('bert-tiny')), fixture('bert-tiny'));
    assert.equal(await resolveModel('./no/such-dir'), './no/such-dir');
  } finally {
    delete process.env.HF_HUB_CACHE;
    delete process.env.HF_ENDPOINT;
  }
});

test('offline (HF_HUB_OFFLINE=1) and not cached: E_MODEL_NOT_FOUND saying what was looked for and where', async () => {
  const cache = freshCache();
  process.env.HF_HUB_OFFLINE = '1';
  try {
    await assert.rejects(resolveModel('acme/absent@v2', { cacheDir: cache }), code('E_MODEL_NOT_FOUND', /revision v2 of acme\/absent.*refs\/v2 in .*models--acme--absent.*HF_HUB_OFFLINE/));
    await assert.rejects(Encoder.load('acme/absent', { hub: { cacheDir: cache } }), code('E_MODEL_NOT_FOUND', /offline/));
    // A snapshot missing its weights is not complete either.
    const files = bertFiles();
    files.delete('model.safetensors');
    pythonCache(cache, 'acme/partial', COMMIT, files, { main: COMMIT });
    await assert.rejects(resolveModel('acme/partial', { cacheDir: cache }), code('E_MODEL_NOT_FOUND', /lacks model\.safetensors/));
  } finally {
    delete process.env.HF_HUB_OFFLINE;
  }
  assert.throws(() => resolveModelSync('acme/absent', { cacheDir: cache }), code('E_MODEL_NOT_FOUND', /gainrag pull acme\/absent/));
});

test('a missing model downloads into the cache layout (blobs by etag, snapshot links, refs/main) and loads', async () => {
  const cache = freshCache();
  const files = bertFiles();
  files.set('modules.json', Buffer.from(JSON.stringify([{ idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' }, { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' }])));
  files.set('1_Pooling/config.json', Buffer.from(JSON.stringify({ word_embedding_dimension: 64, pooling_mode_mean_tokens: true })));
  files.set('pytorch_model.bin', Buffer.from('a pickle that must never be fetched'));
  files.set('README.md', Buffer.from('# not needed'));
  server.repos.set('acme/served', { files, commit: COMMIT });
  const events: DownloadProgress[] = [];
  const before = server.seen.length;
  // The cache and the endpoint from the environment, as huggingface_hub takes them.
  process.env.HF_HUB_CACHE = cache;
  process.env.HF_ENDPOINT = server.url;
  let enc: Encoder;
  try {
    enc = await Encoder.load('acme/served', { hub: { onProgress: (p) => events.push(p) } });
  } finally {
    delete process.env.HF_HUB_CACHE;
    delete process.env.HF_ENDPOINT;
  }
  const storage = path.join(cache, 'models--acme--served');
  assert.equal(enc.dir, path.join(storage, 'snapshots', COMMIT));
  assert.deepEqual(await enc.embed(texts), expected);
  await enc.dispose();
  assert.equal(readFileSync(path.join(storage, 'refs', 'main'), 'utf8'), COMMIT);
  const weights = files.get('model.safetensors')!;
  const link = path.join(storage, 'snapshots', COMMIT, 'model.safetensors');
  assert.ok(lstatSync(link).isSymbolicLink());
  assert.equal(readlinkSync(link), path.join('..', '..', 'blobs', sha256(weights)));
  assert.equal(readlinkSync(path.join(storage, 'snapshots', COMMIT, '1_Pooling', 'config.json')), path.join('..', '..', '..', 'blobs', gitSha1(files.get('1_Pooling/config.json')!)));
  assert.ok(readdirSync(path.join(storage, 'blobs')).every((b) => !b.endsWith('.incomplete')));
  const urls = server.seen.slice(before).map((s) => s.url);
  assert.ok(!urls.some((u) => /pytorch_model\.bin|README/.test(u)), 'only the files a model needs');
  assert.ok(events.some((e) => e.file === 'model.safetensors' && e.bytes === weights.length && e.total === weights.length));
  // Now cached: resolving again asks nothing, even offline.
  const count = server.seen.length;
  assert.equal(await resolveModel('acme/served', { cacheDir: cache, offline: true }), enc.dir);
  assert.equal(server.seen.length, count);
});

test('pull follows a moved branch; `gainrag pull` on the CLI; a commit pin', async () => {
  const cache = freshCache();
  const files = bertFiles();
  server.repos.set('acme/moving', { files, commit: COMMIT, refs: { main: COMMIT } });
  const first = await pullModel('acme/moving', { cacheDir: cache, hubUrl: server.url });
  assert.equal(first.commit, COMMIT);
  assert.ok(first.files.find((f) => f.file === 'model.safetensors')?.downloaded);
  const changed = new Map(files);
  changed.set('config.json', Buffer.from(readFileSync(path.join(fixture('bert-tiny'), 'config.json'), 'utf8').replace('{', '{"note": "v2",')));
  server.repos.set('acme/moving', { files: changed, commit: COMMIT2, refs: { main: COMMIT2 } });
  // resolve stays offline-first on the cached main ...
  assert.equal(await resolveModel('acme/moving', { cacheDir: cache, hubUrl: server.url }), first.dir);
  // ... pull asks the hub; the unchanged weights blob is reused, not downloaded again.
  // (asynchronously: the server answering it runs in this process)
  const cli = await promisify(execFile)(process.execPath, [cliPath, 'pull', 'acme/moving', '--json', '--hub-url', server.url, '--cache-dir', cache], { encoding: 'utf8' });
  const second = JSON.parse(cli.stdout);
  assert.equal(second.commit, COMMIT2);
  assert.equal(second.files.find((f: { file: string }) => f.file === 'model.safetensors').downloaded, false);
  assert.equal(second.files.find((f: { file: string }) => f.file === 'config.json').downloaded, true);
  assert.equal(readFileSync(path.join(cache, 'models--acme--moving', 'refs', 'main'), 'utf8'), COMMIT2);
  assert.match(readFileSync(path.join(second.dir, 'config.json'), 'utf8'), /"note": "v2"/);
  assert.equal(await resolveModel(`acme/moving@${COMMIT}`, { cacheDir: cache, offline: true }), first.dir);
});

test('404s: an unknown repo and a repo with .bin weights only are E_MODEL_NOT_FOUND', async () => {
  const cache = freshCache();
  await assert.rejects(resolveModel('acme/nowhere', { cacheDir: cache, hubUrl: server.url }), code('E_MODEL_NOT_FOUND', /acme\/nowhere.*RepoNotFound/));
  const files = bertFiles();
  files.delete('model.safetensors');
  files.set('pytorch_model.bin', Buffer.from('pickle'));
  server.repos.set('acme/pickled', { files, commit: COMMIT });
  await assert.rejects(resolveModel('acme/pickled', { cacheDir: cache, hubUrl: server.url }), code('E_MODEL_NOT_FOUND', /safetensors.*\.bin pickles are never loaded/));
  assert.ok(!server.seen.some((s) => s.url.includes('acme/pickled') && s.url.endsWith('.bin')));
  await assert.rejects(resolveModel('acme/pickled@v9', { cacheDir: cache, hubUrl: server.url }), code('E_MODEL_NOT_FOUND', /RevisionNotFound/));
});

test('401 from a gated repo is E_UNAUTHORIZED; with HF_TOKEN it downloads, and the token never leaves the hub', async () => {
  const cache = freshCache();
  server.repos.set('acme/gated', { files: bertFiles(), commit: COMMIT, token: 'hf_secret' });
  await assert.rejects(resolveModel('acme/gated', { cacheDir: cache, hubUrl: server.url }), code('E_UNAUTHORIZED', /no token given/));
  await assert.rejects(resolveModel('acme/gated', { cacheDir: cache, hubUrl: server.url, token: 'hf_wrong' }), code('E_UNAUTHORIZED', /token given has no access/));
  const before = server.seen.length;
  process.env.HF_TOKEN = 'hf_secret';
  try {
    const dir = await resolveModel('acme/gated', { cacheDir: cache, hubUrl: server.url });
    assert.equal(dir, path.join(cache, 'models--acme--gated', 'snapshots', COMMIT));
  } finally {
    delete process.env.HF_TOKEN;
  }
  const seen = server.seen.slice(before);
  assert.ok(seen.some((s) => s.origin === 'cdn'), 'the weights came from the CDN');
  assert.ok(seen.filter((s) => s.origin === 'cdn').every((s) => s.auth === undefined));
  assert.ok(seen.filter((s) => s.origin === 'hub').every((s) => s.auth === 'Bearer hf_secret'));
});

test('a body cut off leaves only blobs/<etag>.incomplete (E_NETWORK); the next run resumes it with a Range request', async () => {
  const cache = freshCache();
  const files = bertFiles();
  const weights = files.get('model.safetensors')!;
  server.repos.set('acme/flaky', { files, commit: COMMIT });
  const cut = 300_000;
  server.breakAfter.set('model.safetensors', cut);
  await assert.rejects(resolveModel('acme/flaky', { cacheDir: cache, hubUrl: server.url }), code('E_NETWORK', /model\.safetensors.*broke off.*resumes/));
  const blobs = path.join(cache, 'models--acme--flaky', 'blobs');
  const oid = sha256(weights);
  assert.equal(existsSync(path.join(blobs, oid)), false, 'never a half file under the final name');
  const partial = statSync(path.join(blobs, `${oid}.incomplete`)).size;
  assert.ok(partial > 0 && partial <= cut, `kept ${partial} bytes`);
  assert.equal(existsSync(path.join(cache, 'models--acme--flaky', 'snapshots', COMMIT, 'model.safetensors')), false);
  await assert.rejects(resolveModel('acme/flaky', { cacheDir: cache, offline: true }), code('E_MODEL_NOT_FOUND'));

  const before = server.seen.length;
  const dir = await resolveModel('acme/flaky', { cacheDir: cache, hubUrl: server.url });
  const ranged = server.seen.slice(before).filter((s) => s.origin === 'cdn' && s.range !== 'bytes=0-0');
  assert.deepEqual(ranged.map((s) => s.range), [`bytes=${partial}-`]);
  assert.deepEqual(readFileSync(path.join(dir, 'model.safetensors')), weights);
  assert.equal(existsSync(path.join(blobs, `${oid}.incomplete`)), false);
  const enc = await Encoder.load(dir);
  assert.deepEqual(await enc.embed(texts), expected);
  await enc.dispose();
});

test('an unreachable hub is E_NETWORK; a corrupt .incomplete is caught by the etag check', async () => {
  const cache = freshCache();
  await assert.rejects(resolveModel('acme/served', { cacheDir: cache, hubUrl: closed }), code('E_NETWORK', /cannot reach .*ECONNREFUSED/));
  // Garbage where a resumed download would continue: the finished file fails its sha256.
  const files = bertFiles();
  server.repos.set('acme/garbled', { files, commit: COMMIT });
  const blobs = path.join(cache, 'models--acme--garbled', 'blobs');
  mkdirSync(blobs, { recursive: true });
  writeFileSync(path.join(blobs, `${sha256(files.get('model.safetensors')!)}.incomplete`), Buffer.alloc(1000, 7));
  await assert.rejects(resolveModel('acme/garbled', { cacheDir: cache, hubUrl: server.url }), code('E_NETWORK', /corrupt/));
  const dir = await resolveModel('acme/garbled', { cacheDir: cache, hubUrl: server.url });
  assert.deepEqual(readFileSync(path.join(dir, 'model.safetensors')), files.get('model.safetensors'));
});

test('CrossEncoder.load takes a hub id too', async () => {
  const cache = freshCache();
  const dir = fixture('xlmr-tiny-reranker');
  pythonCache(cache, 'acme/reranker', COMMIT, new Map(readdirSync(dir).map((f) => [f, readFileSync(path.join(dir, f))])), { main: COMMIT });
  const ce = await CrossEncoder.load('acme/reranker', { hub: { cacheDir: cache, offline: true } });
  const local = await CrossEncoder.load(dir);
  assert.deepEqual(await ce.score(['q'], ['a passage']), await local.score(['q'], ['a passage']));
  await ce.dispose();
  await local.dispose();
});

test('two loads of one model at once: one download per blob, both get the snapshot', async () => {
  const cache = freshCache();
  server.repos.set('acme/twice', { files: bertFiles(), commit: COMMIT });
  const before = server.seen.length;
  const [a, b] = await Promise.all([0, 1].map(() => resolveModel('acme/twice', { cacheDir: cache, hubUrl: server.url })));
  assert.equal(a, b);
  const bodies = server.seen.slice(before).filter((s) => s.origin === 'cdn' && s.range !== 'bytes=0-0');
  assert.equal(bodies.length, 1, 'the weights were downloaded once');
  assert.deepEqual(readFileSync(path.join(a, 'model.safetensors')), bertFiles().get('model.safetensors'));
});
