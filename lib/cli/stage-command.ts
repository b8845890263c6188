// A CLI command from a stage definition (lib/stages): the same flags and the same options as
// the cluster runner builds from `cluster submit --stage NAME -- ARGS`. Results on stdout
// (`--json` for machines), progress and warnings on stderr; Ctrl-C stops at a batch boundary.
import type { Argv, CommandModule } from 'yargs';
import type { StageDefinition, StageRunBase } from '../stages/definition.js';
import type { ParsedArgs } from '../stages/flags.js';
import { bundledModelsNote } from '../models/bundled.js';
import { progressReporter, runResumable, stageWarner, withInterrupt } from './progress.js';

export function stageCommand<O extends StageRunBase, M, S>(def: StageDefinition<O, M, S>): CommandModule<{ json: boolean }, ParsedArgs> {
  return {
    command: def.name,
    describe: def.describe,
    builder: (y) => def.builder(y as unknown as Argv) as never,
    handler: async (argv) => {
      const options = def.optionsFromArgs(argv);
      def.check(options); // before the (slow) model loads
      const models = await def.load(options, new Map());
      const progress = progressReporter(def.name, def.unit);
      const job = (signal: AbortSignal) =>
        def.run(models, { ...options, signal, warn: stageWarner(progress), onProgress: (done: number, total?: number) => progress.update(done, total) });
      let summary: S;
      try {
        summary = def.resumeHint ? await runResumable(() => progress, def.resumeHint(options), job) : await withInterrupt(job);
      } finally {
        progress.stop();
      }
      const verdict = def.verdict?.(summary);
      if (verdict) {
        process.stderr.write(`gainrag: error: ${verdict}\n`);
        process.exitCode = 1;
      }
      const note = bundledModelsNote(def.models?.(options) ?? []);
      if (argv.json) {
        process.stdout.write(`${JSON.stringify(summary)}\n`);
        process.stderr.write(note);
      } else process.stdout.write(def.format(summary) + note);
    },
  };
}
