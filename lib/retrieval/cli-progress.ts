// Progress on stderr for the CLI's long commands: a bar on a terminal, a line every 10 s (and at
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

/** A warning that is routine in a long run: printed `limit` times, then summarised once as `more`. */
export interface RoutineWarning {
  match: string;
  more: string;
  limit?: number;
}

/** Prints `gainrag: warning: ...` on stderr next to `progress`, thinning out routine warnings. */
export function stageWarner(progress: ProgressReporter, routine: readonly RoutineWarning[] = []): (message: string) => void {
  const seen = routine.map(() => 0);
  return (message) => {
    const i = routine.findIndex((r) => message.includes(r.match));
    if (i >= 0) {
      const limit = routine[i].limit ?? 3;
      seen[i] += 1;
      if (seen[i] > limit + 1) return;
      if (seen[i] === limit + 1) message = routine[i].more;
    }
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
