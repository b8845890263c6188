// Progress on stderr for the CLI's long commands (the CLI's own: the library reports progress
// through onProgress callbacks and never prints or exits): a bar on a terminal, a line every 10 s (and at
// the end) otherwise. Also wires SIGINT/SIGTERM to an AbortSignal so an interrupted job stops at a
// batch boundary and leaves no half-written output behind, and prints warnings without tearing
// the bar.
import cliProgress from 'cli-progress';
import { hasCode } from '../errors.js';

export interface ProgressReporter {
  update(done: number, total?: number): void;
  stop(): void;
  /** True while a bar is drawn on the terminal (a message must start on a new line). */
  readonly drawing: boolean;
}

export function progressReporter(label: string, unit: string): ProgressReporter {
  const tty = process.stderr.isTTY === true;
  const bar = tty
    ? new cliProgress.SingleBar(
        { stream: process.stderr, format: `${label} [{bar}] {value}/{total} ${unit} | {eta_formatted} left`, hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let started = false;
  let lastLog = 0;
  return {
    get drawing() {
      return started && bar !== undefined;
    },
    update(done, total) {
      if (bar) {
        if (!started) bar.start(total ?? done, done);
        started = true;
        if (total !== undefined) bar.setTotal(total);
        bar.update(done);
      } else if (Date.now() - lastLog > 10_000 || done === total) {
        lastLog = Date.now();
        process.stderr.write(`${label}: ${done}${total !== undefined ? `/${total}` : ''} ${unit}\n`);
      }
    },
    stop() {
      if (started) bar?.stop();
      started = false;
    },
  };
}

/** Runs `job` with an AbortSignal fired by SIGINT/SIGTERM. */
export async function withInterrupt<T>(job: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await job(controller.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** A warning that is routine in a long run: its own text for the line that ends it. */
export interface RoutineWarning {
  match: string;
  more: string;
  limit?: number;
}

/** How many warnings of one kind are printed before the rest are only counted. */
export const WARNINGS_PER_KIND = 3;

/**
 * The kind of a warning: its text without the FILE:LINE it names, quoted strings and numbers,
 * so that "data.jsonl:12: passage "X" cut to 40 of 900 tokens" and the same at line 13 are one kind.
 */
export function warningKind(message: string): string {
  return message
    .replace(/^skipped /, 'skipped:')
    .replace(/^\S+:\d+: /, '')
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, '#');
}

/**
 * Prints `gainrag: warning: ...` on stderr next to `progress`, with one thinning rule for every
 * stage: each kind of warning (warningKind) is printed WARNINGS_PER_KIND times, then one line
 * says that more of that kind follow uncounted here (the summary counts them), then it is quiet.
 * `routine` gives some kinds their own closing line and limit.
 */
export function stageWarner(progress: ProgressReporter, routine: readonly RoutineWarning[] = []): (message: string) => void {
  const seen = new Map<string, number>();
  return (message) => {
    const special = routine.find((r) => message.includes(r.match));
    const kind = special ? `routine:${special.match}` : warningKind(message);
    const limit = special?.limit ?? WARNINGS_PER_KIND;
    const n = (seen.get(kind) ?? 0) + 1;
    seen.set(kind, n);
    if (n > limit + 1) return;
    if (n === limit + 1) message = special?.more ?? `more warnings like the last one follow; they are not printed (the summary counts what was skipped, cut or dropped)`;
    process.stderr.write(`${progress.drawing ? '\n' : ''}gainrag: warning: ${message}\n`);
  };
}

/**
 * Runs a resumable stage for the CLI: SIGINT/SIGTERM abort it, and an interrupted run exits 130
 * after saying where the finished work is (`resumeHint`) instead of printing an error.
 */
export async function runResumable<T>(progress: () => ProgressReporter, resumeHint: string, job: (signal: AbortSignal) => Promise<T>): Promise<T> {
  let aborted = false;
  try {
    return await withInterrupt((signal) => {
      signal.addEventListener('abort', () => void (aborted = true), { once: true });
      return job(signal);
    });
  } catch (err) {
    if (hasCode(err, 'E_CANCELLED') || aborted) {
      progress().stop();
      process.stderr.write(`gainrag: interrupted; ${resumeHint}\n`);
      process.exit(130);
    }
    throw err;
  } finally {
    progress().stop();
  }
}
