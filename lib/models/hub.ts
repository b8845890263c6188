// Model references: a local directory, or a Hugging Face hub id `org/name[@revision]`.
//
// Hub ids resolve offline-first from the cache in the layout Python's huggingface_hub writes
// (<cache>/models--org--name/{refs/<rev>, snapshots/<commit>/<file> -> ../../blobs/<etag>}),
// so a cache filled by transformers / sentence-transformers is used as it is, and what gainrag
// downloads is usable by them. The network is used only when a file a model needs is missing
// (or by `gainrag pull`, which always asks the hub what the revision is now).
//
// Downloads (the network side in hub-transfer.ts) go to blobs/<etag>.incomplete and are renamed
// to blobs/<etag> only once complete and checked; the snapshot links and refs/<rev> follow.
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';
import { writeFileAtomic } from '../io/output.js';
import { HubSession, fetchBlob } from './hub-transfer.js';
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
        const onProgress = options.onProgress ?? defaultProgress;
        const lockName = path.join(cacheDir, '.locks', path.basename(storage), meta.etag);
        downloaded = await fetchBlob(session, url, blob, meta, file, lockName, { signal: options.signal, onProgress: onProgress && ((bytes, total) => onProgress({ repo: ref, file, bytes, total })) });
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

