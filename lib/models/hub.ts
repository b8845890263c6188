// Model references: a local directory, or a Hugging Face hub id `org/name[@revision]`.
//
// Hub ids resolve offline-first from the cache in the layout Python's huggingface_hub writes
// (<cache>/models--org--name/{refs/<rev>, snapshots/<commit>/<file> -> ../../blobs/<etag>}),
// so a cache filled by transformers / sentence-transformers is used as it is, and what gainrag
// downloads is usable by them. The network is used only when a file a model needs is missing
// (or by `gainrag pull`, which always asks the hub what the revision is now).
//
// Downloads: metadata through @huggingface/hub's fileDownloadInfo (its URL scheme and error
// parsing), through a fetch of ours that follows redirects itself, so that the hub's own headers
// (X-Repo-Commit, X-Linked-Etag, X-Linked-Size) are seen before a CDN answers and the token never
// leaves the hub's origin. Bodies go to blobs/<etag>.incomplete and are renamed to blobs/<etag>
// only once complete and checked against the etag (sha256 for LFS files; the git blob sha1 of
// other files when a resume joined pieces); an interrupted .incomplete is resumed with a Range
// request by the next run.
import { createHash } from 'node:crypto';
import {
  closeSync, copyFileSync, createReadStream, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync,
  symlinkSync, writeSync,
} from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { GainragError, hasCode, ioError } from '../errors.js';
import { acquireOutputLock, writeFileAtomic, type OutputLock } from '../io/output.js';
import { poolingConfigPaths } from './sentence-transformers.js';

export interface DownloadProgress {
  /** The model being downloaded (org/name@revision). */
  repo: string;
  /** Path of the file inside the repository. */
  file: string;
  /** Bytes of the file on disk so far (a resumed download starts above 0). */
  bytes: number;
  total: number;
}

export interface HubOptions {
  /** Never use the network (default: env HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Hub base URL (default: env HF_ENDPOINT, else https://huggingface.co). */
  hubUrl?: string;
  /** Access token for gated / private repos (default: env HF_TOKEN, else the token file `huggingface-cli login` wrote). */
  token?: string;
  /** Cache directory (default: env HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
}

export interface HubRef {
  repo: string;
  revision: string;
}

export interface PullResult {
  repo: string;
  revision: string;
  commit: string;
  /** The snapshot directory (what loaders read). */
  dir: string;
  /** Files of the snapshot, with whether this call downloaded them. */
  files: { file: string; bytes: number; downloaded: boolean }[];
}

let defaultProgress: ((p: DownloadProgress) => void) | undefined;

/** The progress callback of downloads whose caller gave none (the CLI prints them on stderr). */
export function setDefaultDownloadProgress(report: ((p: DownloadProgress) => void) | undefined): void {
  defaultProgress = report;
}

/** Files a model may need besides its weights; absent ones are fine. */
const OPTIONAL_FILES = [
  'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'modules.json',
  'config_sentence_transformers.json', 'sentence_bert_config.json',
];
const COMMIT = /^[0-9a-f]{40}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

/** `org/name[@revision]` as a hub reference, or null when `ref` does not have that form. */
export function parseHubRef(ref: string): HubRef | null {
  const at = ref.indexOf('@');
  const id = at >= 0 ? ref.slice(0, at) : ref;
  const revision = at >= 0 ? ref.slice(at + 1) : 'main';
  const parts = id.split('/');
  if (parts.length !== 2 || !parts.every((p) => NAME.test(p) && !p.includes('--') && !p.includes('..') && !p.endsWith('.'))) return null;
  if (revision === '' || revision.split('/').some((s) => s === '' || s === '.' || s === '..') || /[\s\\]/.test(revision)) return null;
  return { repo: id, revision };
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(homedir(), p.slice(1)) : p;
}

function hfHome(): string {
  const env = process.env;
  return expandHome(env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'huggingface'));
}

/** The hub cache directory, as huggingface_hub computes it. */
export function hubCacheDir(): string {
  const env = process.env;
  const explicit = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  return explicit ? expandHome(explicit) : path.join(hfHome(), 'hub');
}

function isOffline(options: HubOptions): boolean {
  if (options.offline !== undefined) return options.offline;
  return /^(1|true|yes|on)$/i.test(process.env.HF_HUB_OFFLINE ?? '');
}

function hubToken(options: HubOptions): string | undefined {
  if (options.token) return options.token;
  if (process.env.HF_TOKEN) return process.env.HF_TOKEN;
  try {
    const saved = readFileSync(expandHome(process.env.HF_TOKEN_PATH || path.join(hfHome(), 'token')), 'utf8').trim();
    return saved || undefined;
  } catch {
    return undefined;
  }
}

/** models--org--name: the repository's folder in the cache. */
export function repoFolder(cacheDir: string, repo: string): string {
  return path.join(cacheDir, `models--${repo.split('/').join('--')}`);
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile(); // follows the snapshot's symlink into blobs
  } catch {
    return false;
  }
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Shard files named by a safetensors index (model.safetensors.index.json's weight_map). */
function shardsOf(indexFile: string): string[] | null {
  const map = (readJson(indexFile) as { weight_map?: Record<string, unknown> } | undefined)?.weight_map;
  if (!map || typeof map !== 'object') return null;
  return [...new Set(Object.values(map).filter((v): v is string => typeof v === 'string'))].sort();
}

/** What a snapshot directory lacks for loading (empty when complete). */
export function missingFiles(dir: string): string[] {
  const missing = ['config.json', 'tokenizer.json'].filter((f) => !isFile(path.join(dir, f)));
  if (!isFile(path.join(dir, 'model.safetensors'))) {
    const index = path.join(dir, 'model.safetensors.index.json');
    const shards = isFile(index) ? shardsOf(index) : null;
    if (!shards) missing.push('model.safetensors');
    else missing.push(...shards.filter((s) => !isFile(path.join(dir, s))));
  }
  if (isFile(path.join(dir, 'modules.json'))) missing.push(...poolingConfigPaths(dir).filter((f) => !isFile(path.join(dir, f))));
  return missing;
}

interface CacheLookup {
  storage: string;
  refFile?: string;
  commit?: string;
  dir?: string;
  missing: string[];
}

function readCommit(storage: string, revision: string): { refFile?: string; commit?: string } {
  if (COMMIT.test(revision)) return { commit: revision };
  const refFile = path.join(storage, 'refs', revision);
  try {
    const commit = readFileSync(refFile, 'utf8').trim();
    return { refFile, commit: COMMIT.test(commit) ? commit : undefined };
  } catch {
    return { refFile };
  }
}

function lookup(ref: HubRef, cacheDir: string): CacheLookup {
  const storage = repoFolder(cacheDir, ref.repo);
  const { refFile, commit } = readCommit(storage, ref.revision);
  if (!commit) return { storage, refFile, missing: [] };
  const dir = path.join(storage, 'snapshots', commit);
  return { storage, refFile, commit, dir: existsSync(dir) ? dir : undefined, missing: existsSync(dir) ? missingFiles(dir) : [] };
}

function notCached(ref: string, hub: HubRef, found: CacheLookup, why: string): GainragError {
  const where = !found.commit
    ? `no ${found.refFile ? path.relative(found.storage, found.refFile) : `snapshots/${hub.revision}`} in ${found.storage}`
    : !found.dir
      ? `no snapshot ${path.join(found.storage, 'snapshots', found.commit)}`
      : `${found.dir} lacks ${found.missing.join(', ')}`;
  return new GainragError(
    'E_MODEL_NOT_FOUND',
    `model ${ref}: no directory ${path.resolve(ref)}, and revision ${hub.revision} of ${hub.repo} is not complete in the Hugging Face cache (${where}); ${why}`,
  );
}

/** The directory `ref` names when it exists; else, for a hub id, its complete cached snapshot. Never uses the network. */
export function resolveModelSync(ref: string, options: Pick<HubOptions, 'cacheDir'> = {}): string {
  if (typeof ref !== 'string' || ref.length === 0) throw new TypeError('model reference must be a non-empty string');
  const hub = existsSync(ref) ? null : parseHubRef(ref);
  if (!hub) return ref; // a path (the loader reports a missing one as before)
  const found = lookup(hub, options.cacheDir ?? hubCacheDir());
  if (found.dir && found.missing.length === 0) return found.dir;
  throw notCached(ref, hub, found, `fetch it first with \`gainrag pull ${ref}\``);
}

/**
 * A local directory for `ref`: the directory itself, or the snapshot of a hub id, from the
 * cache when complete there, else downloaded into it (unless offline).
 * Errors: E_MODEL_NOT_FOUND, E_UNAUTHORIZED, E_NETWORK, E_TOKENIZER (a repo without tokenizer.json), E_IO.
 */
export async function resolveModel(ref: string, options: HubOptions = {}): Promise<string> {
  if (typeof ref !== 'string' || ref.length === 0) throw new TypeError('model reference must be a non-empty string');
  const hub = existsSync(ref) ? null : parseHubRef(ref);
  if (!hub) return ref;
  const cacheDir = options.cacheDir ?? hubCacheDir();
  const found = lookup(hub, cacheDir);
  if (found.dir && found.missing.length === 0) return found.dir;
  if (isOffline(options)) throw notCached(ref, hub, found, `offline (${options.offline ? 'offline: true' : 'HF_HUB_OFFLINE is set'}), so nothing is downloaded`);
  return (await download(hub, cacheDir, options, false)).dir;
}

/**
 * Downloads what `ref` (a hub id) needs into the cache, asking the hub what the revision is now
 * (a branch may have moved); files already cached are not downloaded again.
 */
export async function pullModel(ref: string, options: HubOptions = {}): Promise<PullResult> {
  const hub = parseHubRef(ref);
  if (!hub) throw new GainragError('E_INVALID_ARG', `${ref} is not a hub model id (org/name or org/name@revision)`);
  const cacheDir = options.cacheDir ?? hubCacheDir();
  if (isOffline(options)) {
    const found = lookup(hub, cacheDir);
    if (found.dir && found.missing.length === 0) return { ...hub, commit: found.commit!, dir: found.dir, files: [] };
    throw notCached(ref, hub, found, 'offline, so nothing is downloaded');
  }
  return download(hub, cacheDir, options, true);
}

// ---------------------------------------------------------------------------------------------

interface FileMeta {
  commit: string;
  etag: string;
  size: number;
}

/** A fetch that follows redirects itself, sending the token to the hub's origin only, and remembers the hub's last response. */
class HubSession {
  readonly origin: string;
  hubHeaders?: Headers;
  hubStatus?: number;
  private pending?: Response;

  constructor(readonly hubUrl: string, readonly token: string | undefined, readonly signal: AbortSignal | undefined, readonly ref: string, readonly storage: string) {
    try {
      this.origin = new URL(hubUrl).origin;
    } catch {
      throw new GainragError('E_INVALID_ARG', `hub URL ${hubUrl} is not a URL`);
    }
  }

  fetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    let target = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    this.hubHeaders = undefined;
    this.hubStatus = undefined;
    for (let hop = 0; hop < 10; hop++) {
      const headers = new Headers(init.headers);
      if (this.token && target.origin === this.origin) headers.set('Authorization', `Bearer ${this.token}`);
      else headers.delete('Authorization');
      let res: Response;
      try {
        res = await fetch(target, { ...init, headers, redirect: 'manual', signal: this.signal });
      } catch (err) {
        if (this.signal?.aborted) throw new GainragError('E_CANCELLED', `download of ${this.ref} cancelled`, { cause: err });
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        throw new GainragError('E_NETWORK', `cannot reach ${target.origin} to download ${this.ref} into ${this.storage}: ${cause?.code ?? cause?.message ?? (err as Error).message} (HF_HUB_OFFLINE=1 uses the cache only)`, { cause: err });
      }
      if (target.origin === this.origin) {
        this.hubHeaders = res.headers;
        this.hubStatus = res.status;
      }
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel();
        target = new URL(location, target);
        continue;
      }
      this.pending = res;
      return res;
    }
    throw new GainragError('E_NETWORK', `too many redirects for ${this.ref} (${target.href})`);
  };

  /** Drops the body of a response nobody reads (fileDownloadInfo reads headers only). */
  async discard(): Promise<void> {
    const res = this.pending;
    this.pending = undefined;
    if (res && !res.bodyUsed) await res.body?.cancel().catch(() => undefined);
  }

  /** The error for a failed hub response, by status and X-Error-Code as huggingface_hub reads them. */
  failure(what: string, status = this.hubStatus, err?: unknown): GainragError {
    const code = this.hubHeaders?.get('x-error-code') ?? '';
    const detail = this.hubHeaders?.get('x-error-message');
    const tail = `${status !== undefined ? `HTTP ${status}` : (err as Error)?.message ?? 'no response'}${code ? ` ${code}` : ''}${detail ? `: ${detail}` : ''}`;
    const tokenNote = this.token ? 'the token given has no access' : 'no token given (set HF_TOKEN or run `huggingface-cli login`)';
    if (code === 'RepoNotFound' || code === 'RevisionNotFound') {
      return new GainragError('E_MODEL_NOT_FOUND', `${what}: not found on ${this.hubUrl} (${tail})${code === 'RepoNotFound' ? `; if it is private or gated, ${tokenNote}` : ''}`, { cause: err });
    }
    if (status === 401 || status === 403) {
      return new GainragError('E_UNAUTHORIZED', `${what}: ${this.hubUrl} refused access (${tail}); gated or private repository: ${tokenNote}, and accept its terms on the hub if it is gated`, { cause: err });
    }
    if (status === 404) return new GainragError('E_MODEL_NOT_FOUND', `${what}: not found on ${this.hubUrl} (${tail})`, { cause: err });
    return new GainragError('E_NETWORK', `${what}: unexpected answer from ${this.hubUrl} (${tail})`, { cause: err });
  }

  /** Metadata of `file` at `revision`; null when the repository has no such file. */
  async info(repo: string, revision: string, file: string): Promise<FileMeta | null> {
    // Imported on first use: most runs resolve from the cache and never need the package.
    const { fileDownloadInfo } = await import('@huggingface/hub');
    let info: Awaited<ReturnType<typeof fileDownloadInfo>>;
    try {
      info = await fileDownloadInfo({ repo: { type: 'model', name: repo }, path: file, revision, hubUrl: this.hubUrl, fetch: this.fetch as typeof fetch });
    } catch (err) {
      await this.discard();
      if (err instanceof GainragError) throw err;
      // A plain 404 (a mirror without X-Error-Code) is a missing file, as EntryNotFound is.
      if (this.hubStatus === 404 && !/^(RepoNotFound|RevisionNotFound)$/.test(this.hubHeaders?.get('x-error-code') ?? '')) return null;
      throw this.failure(`${repo}@${revision}/${file}`, (err as { statusCode?: number }).statusCode ?? this.hubStatus, err);
    }
    await this.discard();
    if (info === null) return null;
    const h = this.hubHeaders;
    const commit = h?.get('x-repo-commit') ?? '';
    if (!COMMIT.test(commit)) throw new GainragError('E_NETWORK', `${repo}@${revision}/${file}: ${this.hubUrl} sent no X-Repo-Commit header, so the snapshot cannot be named`);
    const etag = normaliseEtag(h?.get('x-linked-etag') ?? h?.get('etag') ?? info.etag);
    const size = Number(h?.get('x-linked-size') ?? info.size);
    if (!etag || /[/\\]/.test(etag) || !Number.isSafeInteger(size) || size < 0) {
      throw new GainragError('E_NETWORK', `${repo}@${revision}/${file}: ${this.hubUrl} sent no usable ETag / size`);
    }
    return { commit, etag, size };
  }
}

/** huggingface_hub's normalisation: no weak prefix, no quotes. */
function normaliseEtag(etag: string | undefined | null): string {
  return (etag ?? '').replace(/^W\//, '').replace(/"/g, '');
}

async function download(hub: HubRef, cacheDir: string, options: HubOptions, refresh: boolean): Promise<PullResult> {
  const ref = `${hub.repo}@${hub.revision}`;
  const hubUrl = (options.hubUrl ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const storage = repoFolder(cacheDir, hub.repo);
  const session = new HubSession(hubUrl, hubToken(options), options.signal, ref, storage);
  let commit = COMMIT.test(hub.revision) ? hub.revision : refresh ? undefined : readCommit(storage, hub.revision).commit;
  const files: PullResult['files'] = [];
  const snapshot = () => path.join(storage, 'snapshots', commit!);

  /** Makes `file` present in the snapshot; false when the repository has no such file. */
  const fetchFile = async (file: string, optional: boolean): Promise<boolean> => {
    if (commit && isFile(path.join(snapshot(), file))) {
      files.push({ file, bytes: statSync(path.join(snapshot(), file)).size, downloaded: false });
      return true;
    }
    if (commit && optional && !refresh && existsSync(path.join(storage, '.no_exist', commit, file))) return false;
    const meta = await session.info(hub.repo, commit ?? hub.revision, file);
    if (meta && commit && meta.commit !== commit) {
      throw new GainragError('E_NETWORK', `${ref}: ${hubUrl} answered ${file} from commit ${meta.commit}, not ${commit}`);
    }
    if (!meta) {
      if (commit) markAbsent(storage, commit, file);
      return false;
    }
    commit ??= meta.commit;
    const pointer = path.join(snapshot(), file);
    const blob = path.join(storage, 'blobs', meta.etag);
    let downloaded = false;
    if (!isFile(pointer)) {
      if (!isFile(blob)) {
        const url = `${hubUrl}/${hub.repo}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
        downloaded = await fetchBlob(session, url, blob, meta, file, path.join(cacheDir, '.locks', path.basename(storage), meta.etag), options);
      }
      link(blob, pointer);
    }
    files.push({ file, bytes: meta.size, downloaded });
    return true;
  };

  try {
    if (!(await fetchFile('config.json', false))) {
      throw new GainragError('E_MODEL_NOT_FOUND', `${ref}: the repository on ${hubUrl} has no config.json (not a model gainrag can load)`);
    }
    if (!(await fetchFile('model.safetensors', false))) {
      if (!(await fetchFile('model.safetensors.index.json', false))) {
        throw new GainragError('E_MODEL_NOT_FOUND', `${ref}: no model.safetensors or model.safetensors.index.json at commit ${commit} on ${hubUrl}; gainrag loads safetensors weights only (.bin pickles are never loaded)`);
      }
      const shards = shardsOf(path.join(snapshot(), 'model.safetensors.index.json'));
      if (!shards) throw new GainragError('E_MODEL_CONFIG', `${ref}: model.safetensors.index.json has no weight_map`);
      for (const shard of shards) {
        if (!(await fetchFile(shard, false))) throw new GainragError('E_MODEL_NOT_FOUND', `${ref}: model.safetensors.index.json names ${shard}, which commit ${commit} does not have`);
      }
    }
    if (!(await fetchFile('tokenizer.json', false))) {
      throw new GainragError('E_TOKENIZER', `${ref}: no tokenizer.json at commit ${commit} on ${hubUrl} (gainrag needs the fast-tokenizer file)`);
    }
    for (const file of OPTIONAL_FILES) await fetchFile(file, true);
    for (const file of poolingConfigPaths(snapshot())) await fetchFile(file, true);
    if (!COMMIT.test(hub.revision)) {
      const refFile = path.join(storage, 'refs', hub.revision);
      mkdirSync(path.dirname(refFile), { recursive: true });
      writeFileAtomic(refFile, commit!);
    }
  } catch (err) {
    if (err instanceof GainragError || !(err as NodeJS.ErrnoException).syscall) throw err;
    throw ioError(err, `${ref}: cannot write the cache ${storage}`);
  }
  return { ...hub, commit: commit!, dir: snapshot(), files };
}

/** Python's marker for "this revision has no such file". */
function markAbsent(storage: string, commit: string, file: string): void {
  const marker = path.join(storage, '.no_exist', commit, file);
  try {
    mkdirSync(path.dirname(marker), { recursive: true });
    writeFileAtomic(marker, '');
  } catch {
    /* only a cache hint */
  }
}

/** snapshots/<commit>/<file> -> blobs/<etag>, relative as huggingface_hub makes it; swapped in by rename. */
function link(blob: string, pointer: string): void {
  mkdirSync(path.dirname(pointer), { recursive: true });
  const tmp = `${pointer}.gainrag-${process.pid}`;
  rmSync(tmp, { force: true });
  try {
    symlinkSync(path.relative(path.dirname(pointer), blob), tmp);
  } catch {
    copyFileSync(blob, tmp); // file systems without symlinks, as huggingface_hub falls back
  }
  renameSync(tmp, pointer);
}

async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/** Waits for another process downloading the same blob (its lock), then holds the lock. */
async function lockBlob(lockName: string, signal?: AbortSignal): Promise<OutputLock> {
  mkdirSync(path.dirname(lockName), { recursive: true });
  for (;;) {
    try {
      return acquireOutputLock(`${lockName}.gainrag`);
    } catch (err) {
      if (!hasCode(err, 'E_LOCKED')) throw err;
    }
    if (signal?.aborted) throw new GainragError('E_CANCELLED', 'download cancelled while waiting for another process');
    await sleep(500, signal);
  }
}

/** Downloads into blob (via blob.incomplete, resumed when one is there). True when this call wrote it. */
async function fetchBlob(session: HubSession, url: string, blob: string, meta: FileMeta, file: string, lockName: string, options: HubOptions): Promise<boolean> {
  mkdirSync(path.dirname(blob), { recursive: true });
  const lock = await lockBlob(lockName, options.signal);
  try {
    if (isFile(blob)) return false; // another process finished it while we waited
    const incomplete = `${blob}.incomplete`;
    let have = isFile(incomplete) ? statSync(incomplete).size : 0;
    if (have > meta.size) {
      rmSync(incomplete, { force: true });
      have = 0;
    }
    const resumedFrom = have;
    if (have < meta.size || meta.size === 0) have = await receive(session, url, incomplete, have, meta, file, options);
    if (have !== meta.size) {
      throw new GainragError('E_NETWORK', `${session.ref}: ${file} stopped at ${have} of ${meta.size} bytes; ${incomplete} is kept and the next run resumes it`);
    }
    // sha256 (LFS) always; the git sha1 of a small file only when pieces of several runs were joined.
    const actual = await etagOf(incomplete, meta.etag, meta.size, resumedFrom > 0);
    if (actual !== null && actual !== meta.etag) {
      rmSync(incomplete, { force: true });
      throw new GainragError('E_NETWORK', `${session.ref}: ${file} arrived corrupt (checksum ${actual}, the hub says ${meta.etag}); removed, run again`);
    }
    renameSync(incomplete, blob);
    return true;
  } finally {
    lock.release();
  }
}

/** Streams the body (from byte `have` on) onto `incomplete`; returns the bytes on disk. */
async function receive(session: HubSession, url: string, incomplete: string, have: number, meta: FileMeta, file: string, options: HubOptions): Promise<number> {
  const res = await session.fetch(url, { headers: have > 0 ? { Range: `bytes=${have}-` } : {} });
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw session.failure(`${session.ref}/${file}`, res.status);
  }
  // A server that ignores the range sends the whole file: start over rather than append it.
  const resumed = have > 0 && res.status === 206 && (res.headers.get('content-range') ?? '').startsWith(`bytes ${have}-`);
  if (!resumed) have = 0;
  const fd = openSync(incomplete, resumed ? 'a' : 'w');
  const onProgress = options.onProgress ?? defaultProgress;
  const report = (bytes: number) => onProgress?.({ repo: session.ref, file, bytes, total: meta.size });
  report(have);
  try {
    if (res.body) {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off, chunk.length - off);
        have += chunk.length;
        report(have);
      }
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).syscall) throw ioError(err, `cannot write ${incomplete}`); // the disk, not the network
    if (options.signal?.aborted) throw new GainragError('E_CANCELLED', `download of ${session.ref}/${file} cancelled (${have} of ${meta.size} bytes kept in ${incomplete})`, { cause: err });
    throw new GainragError('E_NETWORK', `${session.ref}: the download of ${file} broke off at ${have} of ${meta.size} bytes (${(err as Error).message}); ${incomplete} is kept and the next run resumes it`, { cause: err });
  } finally {
    fsyncSync(fd);
    closeSync(fd);
  }
  return have;
}

/** The file's checksum in the etag's kind (sha256: LFS; sha1 of the git blob: other files); null for other etags. */
async function etagOf(file: string, etag: string, size: number, gitToo: boolean): Promise<string | null> {
  const kind = /^[0-9a-f]{64}$/.test(etag) ? 'sha256' : gitToo && /^[0-9a-f]{40}$/.test(etag) ? 'sha1' : null;
  if (!kind) return null;
  const hash = createHash(kind);
  if (kind === 'sha1') hash.update(`blob ${size}\0`);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 }) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}
