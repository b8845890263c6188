// Progress on stderr for the retrieval commands: a bar on a terminal, a line every 10 s otherwise.
// Also wires SIGINT/SIGTERM to an AbortSignal so an interrupted job stops at a batch boundary
// and leaves no half-written output behind.
import cliProgress from 'cli-progress';

export interface ProgressReporter {
  update(done: number, total?: number): void;
  stop(): void;
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
    update(done, total) {
      if (bar) {
        if (!started) bar.start(total ?? done, done);
        started = true;
        if (total !== undefined) bar.setTotal(total);
        bar.update(done);
      } else if (Date.now() - lastLog > 10_000) {
        lastLog = Date.now();
        process.stderr.write(`${label}: ${done}${total !== undefined ? `/${total}` : ''} ${unit}\n`);
      }
    },
    stop() {
      if (started) bar?.stop();
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
