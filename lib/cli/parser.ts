// The CLI's yargs parser with its global options and commands, built in one place so that the
// tests parse argv exactly as `gainrag` does (test/stage-table.test.ts).
import yargs, { type Argv, type CommandModule } from 'yargs';
import { refuseRepeatedOptions } from '../stages/flags.js';

export function cliParser(args: string[], commands: readonly CommandModule<never, never>[]): Argv {
  let cli = yargs(args)
    .scriptName('gainrag')
    .usage('$0 <command> [options]')
    .option('json', { type: 'boolean', default: false, describe: 'print results as JSON on stdout' })
    .strict()
    .demandCommand(1, 'name a command (see --help)')
    .recommendCommands()
    .middleware(refuseRepeatedOptions as never, true)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .help();
  for (const command of commands) cli = cli.command(command as never);
  return cli as unknown as Argv;
}
