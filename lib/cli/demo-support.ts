// The demo's plumbing, apart from its stage list (lib/cli/commands/demo.ts): checking every flag
// before the first stage, running a stage's command so that its failure keeps its error code, and
// the settings key that says whether a stage's finished output is still the one these flags ask for.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';
import { GainragError, isErrorCode, type ErrorCode } from '../errors.js';
import { checkRegularFile } from '../io/input-file.js';
import { validateOutput } from '../io/output.js';

export interface DemoFlags {
  out: string;
  questions: number;
  synthesize: number;
  'test-share': number;
  'top-k': number;
  'k-docs': string;
  'max-new-tokens': number;
  encoder?: string;
  reranker?: string;
  llm?: string;
  passages?: string;
  data?: string;
}

function positiveInt(flag: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new GainragError('E_INVALID_ARG', `--${flag} must be a positive integer, got ${String(v)}`);
  return v;
}

/**
 * Every flag checked before anything runs (E_INVALID_ARG; E_IO for an input that cannot be read):
 * a mistake in --k-docs must not surface as a failed compare after an hour of stages.
 */
export function checkDemoFlags(a: DemoFlags, files: { passages: string; data: string; models: Record<string, string> }): { ks: number[]; maxK: number } {
  for (const flag of ['questions', 'synthesize', 'top-k', 'max-new-tokens'] as const) positiveInt(flag, a[flag]);
  const share = a['test-share'];
  if (typeof share !== 'number' || !(share > 0 && share < 1)) throw new GainragError('E_INVALID_ARG', `--test-share must be in (0, 1), got ${String(share)}`);
  const ks = String(a['k-docs']).split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (ks.length === 0 || ks.some((k) => !Number.isSafeInteger(k) || k < 1)) {
    throw new GainragError('E_INVALID_ARG', `--k-docs must be a comma-separated list of positive integers, got ${JSON.stringify(a['k-docs'])}`);
  }
  const maxK = Math.max(...ks);
  if (maxK > a['top-k']) throw new GainragError('E_INVALID_ARG', `--k-docs ${maxK} is more than the --top-k ${a['top-k']} passages retrieved`);
  for (const [flag, dir] of Object.entries(files.models)) {
    let isDir = false;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      /* reported below */
    }
    if (!isDir) throw new GainragError('E_INVALID_ARG', `--${flag} ${dir} is not a model directory`);
  }
  checkRegularFile(files.passages);
  checkRegularFile(files.data);
  validateOutput(a.out, 'dir', { label: '--out', inputs: [files.passages, files.data] });
  return { ks, maxK };
}

/** What identifies an input file without reading it: a rewrite changes its size or mtime. */
export function fileIdentity(file: string): { path: string; size: number; mtimeMs: number } {
  const st = statSync(file);
  return { path: path.resolve(file), size: st.size, mtimeMs: st.mtimeMs };
}

/**
 * The key of a stage's settings, chained to the stage before it: a stage's output is reused only
 * when its own settings and everything upstream are unchanged.
 */
export function chainKey(previous: string, settings: unknown): string {
  return createHash('sha256').update(previous).update('\0').update(JSON.stringify(settings)).digest('hex');
}

/**
 * Runs `gainrag ARGS --json` as a child process; stderr is passed through as it comes. Resolves
 * to the child's stdout; a failure rejects with the child's own error code and message (the
 * `gainrag: MESSAGE (CODE)` line it ends with), E_CANCELLED when it was interrupted.
 */
export function runGainrag(mainJs: string, args: string[], stage: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [mainJs, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let tail = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      process.stderr.write(b);
      tail = (tail + b.toString('utf8')).slice(-16384);
    });
    child.on('error', reject);
    child.on('close', (status, signal) => {
      if (status === 0) return resolve(Buffer.concat(out).toString('utf8'));
      const hint = 'rerun the demo to continue from the finished stages';
      if (status === 130 || signal === 'SIGINT' || signal === 'SIGTERM') return reject(new GainragError('E_CANCELLED', `demo stage '${stage}' was interrupted; ${hint}`));
      const last = tail.split('\n').reverse().find((l) => l.startsWith('gainrag: ') && !l.startsWith('gainrag: warning:'));
      const m = last ? /^gainrag: (.*) \((E_[A-Z_]+)\)$/.exec(last) : null;
      const code: ErrorCode = m && isErrorCode(m[2]) ? m[2] : 'E_INTERNAL';
      const why = m ? m[1] : `exit ${status ?? signal}`;
      reject(new GainragError(code, `demo stage '${stage}' failed: ${why}; ${hint}`));
    });
  });
}
