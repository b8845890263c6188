#!/usr/bin/env node
// gainrag CLI: one command per file in ./commands. Results go to stdout (`--json` for
// machines), logs and progress bars to stderr.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commands } from './commands/index.js';
import { GainragError, withCode } from '../errors.js';

// yargs turns an option given twice into an array of both values, which every command would then
// misread (`'1,5'.split` on an array, NaN from Number([1, 2])). No option of ours means "give it
// again to add more" except those declared as arrays, so any other repeated option is refused.
function refuseRepeatedOptions(argv: Record<string, unknown>, y: { getOptions(): { array?: string[] } }): void {
  const arrays = new Set(y.getOptions().array ?? []);
  for (const [key, value] of Object.entries(argv)) {
    // yargs also sets a camelCase copy of every dashed name: the dashed one is reported. `_` and
    // `--` hold the positional words and what follows a bare `--` (cluster submit's stage flags).
    if (key === '_' || key === '--' || key === '$0' || !Array.isArray(value) || arrays.has(key) || /[A-Z]/.test(key)) continue;
    throw new GainragError('E_INVALID_ARG', `--${key} was given ${value.length} times (${value.map((v) => JSON.stringify(v)).join(', ')}); give it once`);
  }
}

async function main(): Promise<void> {
  let cli = yargs(hideBin(process.argv))
    .scriptName('gainrag')
    .usage('$0 <command> [options]')
    .option('json', { type: 'boolean', default: false, describe: 'print results as JSON on stdout' })
    .strict()
    .demandCommand(1, 'name a command (see --help)')
    .recommendCommands()
    .middleware(refuseRepeatedOptions as never, true)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .help()
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`gainrag: ${msg}\n\n`);
      y.showHelp((s: string) => process.stderr.write(`${s}\n`));
      process.exit(2);
    });
  for (const command of commands) cli = cli.command(command as never);
  await cli.parseAsync();
}

main().catch((caught: Error & { code?: string }) => {
  // Every failure leaves with a code from the shared list (lib/errors.ts), also a stray one.
  const err: Error & { code?: string } = withCode(caught instanceof Error ? caught : new Error(String(caught)));
  process.stderr.write(`gainrag: ${err.message}${err.code ? ` (${err.code})` : ''}\n`);
  if (process.env.GAINRAG_DEBUG) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
