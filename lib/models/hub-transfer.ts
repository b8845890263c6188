// The network half of hub downloads (lib/models/hub.ts decides what to fetch and where it goes):
// metadata through @huggingface/hub's fileDownloadInfo, through a fetch of ours that follows
// redirects itself, so that the hub's own headers (X-Repo-Commit, X-Linked-Etag, X-Linked-Size)
// are seen before a CDN answers and the token never leaves the hub's origin; bodies streamed onto
// blobs/<etag>.incomplete (resumed with a Range request), checked, and renamed into place.
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, fsyncSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { GainragError, hasCode, ioError } from '../errors.js';
import { acquireOutputLock, type OutputLock } from '../io/output.js';

export interface TransferProgress {
  (bytes: number, total: number): void;
}

const COMMIT = /^[0-9a-f]{40}$/;

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

export interface FileMeta {
  commit: string;
  etag: string;
  size: number;
}

/** A fetch that follows redirects itself, sending the token to the hub's origin only, and remembers the hub's last response. */
export class HubSession {
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
export async function fetchBlob(
  session: HubSession, url: string, blob: string, meta: FileMeta, file: string, lockName: string, options: { signal?: AbortSignal; onProgress?: TransferProgress },
): Promise<boolean> {
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
async function receive(
  session: HubSession, url: string, incomplete: string, have: number, meta: FileMeta, file: string, options: { signal?: AbortSignal; onProgress?: TransferProgress },
): Promise<number> {
  const res = await session.fetch(url, { headers: have > 0 ? { Range: `bytes=${have}-` } : {} });
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw session.failure(`${session.ref}/${file}`, res.status);
  }
  // A server that ignores the range sends the whole file: start over rather than append it.
  const resumed = have > 0 && res.status === 206 && (res.headers.get('content-range') ?? '').startsWith(`bytes ${have}-`);
  if (!resumed) have = 0;
  const fd = openSync(incomplete, resumed ? 'a' : 'w');
  const report = (bytes: number) => options.onProgress?.(bytes, meta.size);
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
