#!/usr/bin/env node
// gainrag CLI: one command per file in ./commands. Results go to stdout (`--json` for
// machines), logs and progress bars to stderr.
import { hideBin } from 'yargs/helpers';
import { commands } from './commands/index.js';
import { cliParser } from './parser.js';
import { withCode } from '../errors.js';
import { setDefaultDownloadProgress } from '../models/hub.js';
import { downloadReporter } from './commands/pull.js';

async function main(): Promise<void> {
  setDefaultDownloadProgress(downloadReporter().report); // a model load that downloads shows it on stderr
  await cliParser(hideBin(process.argv), commands as never)
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`gainrag: ${msg}\n\n`);
      y.showHelp((s: string) => process.stderr.write(`${s}\n`));
      process.exit(2);
    })
    .parseAsync();
}

main().catch((caught: Error & { code?: string }) => {
  // Every failure leaves with a code from the shared list (lib/errors.ts), also a stray one.
  const err: Error & { code?: string } = withCode(caught instanceof Error ? caught : new Error(String(caught)));
  process.stderr.write(`gainrag: ${err.message}${err.code ? ` (${err.code})` : ''}\n`);
  if (process.env.GAINRAG_DEBUG) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
