// `gainrag pull ID[@REV]`: downloads a hub model into the Hugging Face cache ahead of a batch
// job (which then resolves it offline), asking the hub what the revision is now.
import type { Argv, CommandModule } from 'yargs';
import { hubCacheDir, pullModel } from '../../models/hub.js';
import { progressReporter, withInterrupt } from '../progress.js';

interface PullArgs {
  json: boolean;
  model: string;
  'hub-url'?: string;
  'cache-dir'?: string;
}

export const pullCommand: CommandModule<{ json: boolean }, PullArgs> = {
  command: 'pull <model>',
  describe: 'download a hub model (org/name[@revision]) into the Hugging Face cache, only the files gainrag loads',
  builder: (y: Argv<{ json: boolean }>) =>
    y
      .positional('model', { type: 'string', demandOption: true, describe: 'hub id, e.g. BAAI/bge-base-en-v1.5 or org/name@<branch|tag|commit>' })
      .option('hub-url', { type: 'string', describe: 'hub endpoint (default: env HF_ENDPOINT, else https://huggingface.co)' })
      .option('cache-dir', { type: 'string', describe: 'cache directory (default: env HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)' }) as never,
  handler: async (argv) => {
    const progress = progressReporter(`pull ${argv.model}`, 'MB');
    let file = '';
    const mb = (n: number) => Math.round(n / 1e5) / 10;
    let result;
    try {
      result = await withInterrupt((signal) =>
        pullModel(argv.model, {
          hubUrl: argv['hub-url'],
          cacheDir: argv['cache-dir'],
          signal,
          onProgress: (p) => {
            if (p.file !== file) {
              progress.stop();
              file = p.file;
            }
            progress.update(mb(p.bytes), mb(p.total));
          },
        }),
      );
    } finally {
      progress.stop();
    }
    const fetched = result.files.filter((f) => f.downloaded);
    const bytes = fetched.reduce((n, f) => n + f.bytes, 0);
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ...result, cacheDir: argv['cache-dir'] ?? hubCacheDir() })}\n`);
    } else {
      process.stdout.write(
        `${result.repo}@${result.revision} -> commit ${result.commit}: ${result.files.length} files in ${result.dir}` +
          ` (${fetched.length} downloaded, ${mb(bytes)} MB)\n`,
      );
    }
  },
};
