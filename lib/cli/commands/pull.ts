// `gainrag pull ID[@REV]`: downloads a hub model into the Hugging Face cache ahead of a batch
// job (which then resolves it offline), asking the hub what the revision is now.
import type { Argv, CommandModule } from 'yargs';
import { hubCacheDir, pullModel, type DownloadProgress } from '../../models/hub.js';
import { progressReporter, withInterrupt, type ProgressReporter } from '../progress.js';

interface PullArgs {
  json: boolean;
  model: string;
  'hub-url'?: string;
  'cache-dir'?: string;
}

const mb = (n: number) => Math.round(n / 1e5) / 10;

/** Download progress on stderr, one bar (or line every 10 s) per file; also for downloads a model load starts. */
export function downloadReporter(): { report: (p: DownloadProgress) => void; stop: () => void } {
  let bar: ProgressReporter | undefined;
  let current = '';
  return {
    report: (p) => {
      const name = `${p.repo} ${p.file}`;
      if (name !== current) {
        bar?.stop();
        bar = progressReporter(`download ${name}`, 'MB');
        current = name;
      }
      bar!.update(mb(p.bytes), mb(p.total));
    },
    stop: () => bar?.stop(),
  };
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
    const progress = downloadReporter();
    let result;
    try {
      result = await withInterrupt((signal) => pullModel(argv.model, { hubUrl: argv['hub-url'], cacheDir: argv['cache-dir'], signal, onProgress: progress.report }));
    } finally {
      progress.stop();
    }
    const fetched = result.files.filter((f) => f.downloaded);
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ...result, cacheDir: argv['cache-dir'] ?? hubCacheDir() })}\n`);
    } else {
      process.stdout.write(
        `${result.repo}@${result.revision} -> commit ${result.commit}: ${result.files.length} files in ${result.dir}` +
          ` (${fetched.length} downloaded, ${mb(fetched.reduce((n, f) => n + f.bytes, 0))} MB)\n`,
      );
    }
  },
};
