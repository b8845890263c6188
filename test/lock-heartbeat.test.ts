// Output locks on a shared filesystem (issue #20, item 5): a lock names host, pid and a
// heartbeat its owner refreshes; another host's lock whose heartbeat is older than
// GAINRAG_LOCK_STALE_S is taken over (its pid cannot be checked from here), a fresh one is not.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

process.env.GAINRAG_LOCK_STALE_S = '2'; // read when locks are judged and when the heartbeat starts
const { acquireOutputLock } = await import('../lib/io/output.js');

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-lock-'));
after(() => rmSync(work, { recursive: true, force: true }));
const f = (name: string) => path.join(work, name);
const foreign = (out: string, body: Record<string, unknown>) =>
  writeFileSync(`${out}.lock`, JSON.stringify({ format: 'gainrag-output-lock-1', pid: 12345, host: 'other-host.example', token: 'theirs', ...body }));

test('another host\'s lock: fresh heartbeat is E_LOCKED, an old one is taken over', () => {
  const out = f('a.jsonl');
  foreign(out, { heartbeat: Date.now() });
  assert.throws(() => acquireOutputLock(out), { code: 'E_LOCKED', message: /process 12345 on other-host\.example/ });
  foreign(out, { heartbeat: Date.now() - 60_000 });
  const lock = acquireOutputLock(out);
  const body = JSON.parse(readFileSync(`${out}.lock`, 'utf8'));
  assert.equal(body.pid, process.pid);
  assert.equal(typeof body.heartbeat, 'number');
  lock.release();
  assert.equal(existsSync(`${out}.lock`), false);
});

test('a lock of an older version (no heartbeat) from another host is judged by its mtime', () => {
  const out = f('b.jsonl');
  foreign(out, {});
  assert.throws(() => acquireOutputLock(out), { code: 'E_LOCKED' });
  const old = new Date(Date.now() - 60_000);
  utimesSync(`${out}.lock`, old, old);
  acquireOutputLock(out).release();
});

test('the owner refreshes its heartbeat while it holds the lock', async () => {
  const out = f('c.jsonl');
  const lock = acquireOutputLock(out);
  try {
    const first = JSON.parse(readFileSync(`${out}.lock`, 'utf8')).heartbeat as number;
    // Wait for the refresh (every STALE/4 = 0.5 s here); the test runner's timeout bounds a hang.
    let now = first;
    while (now === first) {
      await new Promise((r) => setTimeout(r, 100));
      now = JSON.parse(readFileSync(`${out}.lock`, 'utf8')).heartbeat as number;
    }
    assert.ok(now > first);
    assert.equal(JSON.parse(readFileSync(`${out}.lock`, 'utf8')).pid, process.pid);
  } finally {
    lock.release();
  }
});

test('a writer whose lock was taken over meanwhile does not publish', async () => {
  const { openStageOutput } = await import('../lib/io/records.js');
  const out = f('d.jsonl');
  const w = openStageOutput(out, { format: 'jsonl' });
  w.write({ a: 1 });
  // Another host judged this run dead (it was stopped past the limit) and took the lock.
  foreign(out, { heartbeat: Date.now() });
  assert.throws(() => w.close(), { code: 'E_LOCKED', message: /taken over/ });
  assert.equal(existsSync(out), false);
  assert.equal(JSON.parse(readFileSync(`${out}.lock`, 'utf8')).host, 'other-host.example', 'their lock is left alone');
});
