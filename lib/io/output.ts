// Every output gainrag writes goes through here, so that no run can destroy data it did not
// write or publish a file two runs wrote into:
//
// - validateOutput(): checked before any work starts (a run must not compute for minutes and
//   then fail at the rename). The path must be non-empty; a file output must not end in '/',
//   must not be an existing directory, symlink, FIFO or device (outputs are published by
//   rename, which would silently replace the link or the FIFO with a regular file; give the
//   real target path instead); it must not be one of the run's inputs; the nearest existing
//   parent must be a writable directory.
// - acquireOutputLock(): `<out>.lock` holds the owner's host, pid and a heartbeat time. It is
//   created with link(2), which fails if the name exists, so two processes cannot both own one
//   output. The owner rewrites the heartbeat every few seconds (an unref'd timer). A lock is
//   stale, and taken over, when its owner is a dead pid on this host, or, from another host of
//   a shared filesystem (where the pid cannot be checked), when its heartbeat is older than
//   GAINRAG_LOCK_STALE_S seconds (default 60; the hosts' clocks must agree to well within
//   that). Otherwise E_LOCKED. Released when the writer finishes or aborts, and on process exit.
// - writeFileAtomic(): small files (manifests, .npy) as temp + fsync + rename.
import {
  accessSync, closeSync, constants, fsyncSync, linkSync, lstatSync, openSync, readFileSync, renameSync, statSync, unlinkSync,
  writeFileSync, writeSync, type Stats,
} from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';

export type OutputKind = 'file' | 'dir';

export interface ValidateOutputOptions {
  /** Paths the run reads: the output may not be any of them (same file, by device + inode). */
  inputs?: string[];
  /** Name used in messages (a CLI flag such as '--out'). */
  label?: string;
}

function lstatOrNull(p: string): Stats | null {
  try {
    return lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    throw ioError(err, `cannot inspect ${p}`);
  }
}

function describe(st: Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  if (st.isFile()) return 'a regular file, not a directory';
  return 'not a regular file';
}

/** Validates an output path up front (see the file comment). Returns the absolute path. Errors: E_INVALID_ARG, E_IO. */
export function validateOutput(out: unknown, kind: OutputKind, options: ValidateOutputOptions = {}): string {
  const label = options.label ?? 'output';
  if (typeof out !== 'string' || out.trim() === '') throw new GainragError('E_INVALID_ARG', `${label} must be a non-empty path`);
  if (out.includes('\0')) throw new GainragError('E_INVALID_ARG', `${label} contains a NUL character`);
  if (kind === 'file' && /[/\\]$/.test(out)) throw new GainragError('E_INVALID_ARG', `${label} ${out} names a directory; give a file path`);
  const abs = path.resolve(out);
  const st = lstatOrNull(abs);
  if (st) {
    const ok = kind === 'file' ? st.isFile() : st.isDirectory();
    if (!ok) {
      throw new GainragError('E_INVALID_ARG', `${label} ${out} is ${describe(st)}; gainrag writes ${kind === 'file' ? 'a regular file' : 'a directory'} there by rename, so give a new path or the real target of a link`);
    }
  }
  for (const p of [`${abs}.partial`, `${abs}.lock`]) {
    const side = lstatOrNull(p);
    if (side && !(side.isFile() || (kind === 'dir' && p.endsWith('.partial') && side.isDirectory()))) {
      throw new GainragError('E_INVALID_ARG', `${p} is ${describe(side)}; remove it or choose another ${label}`);
    }
  }
  for (const input of options.inputs ?? []) {
    if (typeof input === 'string' && input !== '' && sameFile(abs, input)) {
      throw new GainragError('E_INVALID_ARG', `${label} ${out} is also an input of this run (${input}); writing it would destroy the input`);
    }
  }
  // The nearest existing ancestor must be a directory we can create entries in.
  let parent = path.dirname(abs);
  for (;;) {
    const pst = lstatOrNull(parent);
    if (pst) {
      if (!statSync(parent).isDirectory()) throw new GainragError('E_INVALID_ARG', `${label} ${out}: ${parent} is not a directory`);
      try {
        accessSync(parent, constants.W_OK | constants.X_OK);
      } catch (err) {
        throw ioError(err, `${label} ${out}: cannot create files in ${parent}`);
      }
      break;
    }
    const up = path.dirname(parent);
    if (up === parent) break;
    parent = up;
  }
  return abs;
}

function sameFile(a: string, b: string): boolean {
  try {
    const sa = statSync(a);
    const sb = statSync(b);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return path.resolve(a) === path.resolve(b);
  }
}

interface LockBody {
  format: 'gainrag-output-lock-1';
  pid: number;
  host: string;
  token: string;
  /** Date.now() of the owner's last refresh (absent in locks of older versions: the file's mtime counts). */
  heartbeat?: number;
}

/** A held output lock; release() is idempotent. */
export interface OutputLock {
  readonly path: string;
  release(): void;
  /** False when the lock file is no longer this holder's (taken over as stale, or removed). */
  owned(): boolean;
}

const held = new Map<string, string>(); // lock path -> our token
let exitHookInstalled = false;
let heartbeatTimer: NodeJS.Timeout | undefined;

/** How old another host's heartbeat may be before its lock is stale (ms). */
function staleAfterMs(): number {
  const s = Number(process.env.GAINRAG_LOCK_STALE_S);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 60_000;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readLock(p: string): LockBody | null {
  try {
    const body = JSON.parse(readFileSync(p, 'utf8')) as LockBody;
    if (!body || body.format !== 'gainrag-output-lock-1' || !Number.isInteger(body.pid)) return null;
    if (typeof body.heartbeat !== 'number') body.heartbeat = statSync(p).mtimeMs;
    return body;
  } catch {
    return null;
  }
}

/**
 * A lock's owner is gone when it is another process on this host whose pid no longer exists,
 * or a process on another host that has not refreshed its heartbeat for staleAfterMs().
 */
function lockIsStale(body: LockBody | null): boolean {
  if (!body) return true; // unreadable: locks are written whole before they get their name
  if (body.host !== hostname()) return Date.now() - (body.heartbeat ?? 0) > staleAfterMs();
  if (body.pid === process.pid) return !Array.from(held.values()).includes(body.token);
  return !pidAlive(body.pid);
}

function describeOwner(body: LockBody | null): string {
  if (!body) return 'another process';
  return body.host === hostname() ? `process ${body.pid}` : `process ${body.pid} on ${body.host} (heartbeat ${Math.round((Date.now() - (body.heartbeat ?? 0)) / 1000)} s ago)`;
}

// Rewrites the heartbeat of every lock this process holds. A lock that is no longer ours
// (taken over while this process was stopped) is left alone. Errors are skipped: the next
// beat retries, and only a long silence makes the lock stale.
function beat(): void {
  for (const [lockPath, token] of Array.from(held)) {
    const body = readLock(lockPath);
    if (body?.token !== token) continue;
    const tmp = `${lockPath}.${token}.beat`;
    try {
      writeFileSync(tmp, `${JSON.stringify({ ...body, heartbeat: Date.now() })}\n`);
      renameSync(tmp, lockPath);
    } catch {
      unlinkQuiet(tmp);
    }
  }
}

function startHeartbeat(): void {
  if (heartbeatTimer) return;
  heartbeatTimer = setInterval(beat, Math.min(10_000, staleAfterMs() / 4));
  heartbeatTimer.unref(); // never keeps the process alive
}

/** Takes `<out>.lock` for this process. Errors: E_LOCKED (a live process holds it), E_IO. */
export function acquireOutputLock(out: string): OutputLock {
  const lockPath = `${path.resolve(out)}.lock`;
  const token = `${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const body: LockBody = { format: 'gainrag-output-lock-1', pid: process.pid, host: hostname(), token, heartbeat: Date.now() };
  const tmp = `${lockPath}.${token}`;
  try {
    writeFileSync(tmp, `${JSON.stringify(body)}\n`, { flag: 'wx' });
  } catch (err) {
    throw ioError(err, `cannot create the lock for ${out}`);
  }
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        linkSync(tmp, lockPath); // atomic: fails with EEXIST when someone holds the name
        held.set(lockPath, token);
        installExitHook();
        startHeartbeat();
        return { path: lockPath, release: () => releaseLock(lockPath, token), owned: () => held.get(lockPath) === token && readLock(lockPath)?.token === token };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(err, `cannot lock ${out}`);
      }
      const owner = readLock(lockPath);
      if (!lockIsStale(owner)) {
        throw new GainragError('E_LOCKED', `${out} is being written by ${describeOwner(owner)} (${lockPath}); wait for it to finish or choose another output`);
      }
      // Stale: move it to a private name first, so that two processes taking it over cannot
      // both remove each other's fresh lock; then check that what we moved was the stale one.
      const aside = `${lockPath}.stale-${token}`;
      try {
        renameSync(lockPath, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw ioError(err, `cannot take over the stale lock ${lockPath}`);
      }
      const moved = readLock(aside);
      if (moved && owner && moved.token !== owner.token && !lockIsStale(moved)) {
        // Someone else took it over between our read and our rename: give it back.
        try {
          linkSync(aside, lockPath);
        } catch {
          /* the name is taken again: the new owner keeps it */
        }
        unlinkQuiet(aside);
        throw new GainragError('E_LOCKED', `${out} is being written by ${describeOwner(moved)} (${lockPath})`);
      }
      unlinkQuiet(aside);
    }
    throw new GainragError('E_LOCKED', `${out}: could not take the lock ${lockPath} (contended)`);
  } finally {
    unlinkQuiet(tmp);
  }
}

function unlinkQuiet(p: string): void {
  try {
    unlinkSync(p);
  } catch {
    /* already gone */
  }
}

function releaseLock(lockPath: string, token: string): void {
  if (held.get(lockPath) !== token) return;
  held.delete(lockPath);
  if (held.size === 0 && heartbeatTimer) {
    clearInterval(heartbeatTimer);
    heartbeatTimer = undefined;
  }
  // Only remove the lock if it is still ours (it cannot legitimately be anyone else's).
  if (readLock(lockPath)?.token === token) unlinkQuiet(lockPath);
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [lockPath, token] of Array.from(held)) releaseLock(lockPath, token);
  });
}

/** validateOutput + acquireOutputLock: what every writer does before its first byte. */
export function claimOutput(out: string, kind: OutputKind, options: ValidateOutputOptions = {}): { path: string; lock: OutputLock } {
  const abs = validateOutput(out, kind, options);
  return { path: abs, lock: acquireOutputLock(abs) };
}

/** Writes a small file as `<file>.partial` + fsync + rename (the caller validated/locked `file` if needed). */
export function writeFileAtomic(file: string, data: string | Uint8Array | Uint8Array[]): void {
  const tmp = `${file}.partial`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w');
    for (const part of Array.isArray(data) ? data : [data]) {
      const bytes = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, Math.min(1 << 26, bytes.length - off));
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    unlinkQuiet(tmp);
    throw ioError(err, `cannot write ${file}`);
  }
}
