// `gainrag cluster submit|worker`: a stage spread over workers through BullMQ on Redis
// (lib/scale/cluster.ts). The stage's own flags follow `--`:
//   gainrag cluster submit --stage retrieve --data Q.jsonl --out R.arrow --redis redis://127.0.0.1:6379 -- --index I --encoder E
//   gainrag cluster worker --redis redis://127.0.0.1:6379 --device cuda:0
import type { CommandModule } from 'yargs';
import { DEFAULT_QUEUE, runWorker, submit } from '../../scale/cluster.js';
import { STAGES } from '../../scale/stages.js';

interface SubmitArgs {
  json: boolean;
  stage: string;
  data: string;
  out: string;
  redis: string;
  queue: string;
  'chunk-size': number;
  'work-dir'?: string;
  attempts: number;
  '--'?: (string | number)[];
}

interface WorkerArgs {
  json: boolean;
  redis: string;
  queue: string;
  device?: string;
  'lock-ms': number;
  'stalled-ms': number;
}

const log = (line: string) => process.stderr.write(`${line}\n`);

const submitCommand: CommandModule<{ json: boolean }, SubmitArgs> = {
  command: 'submit',
  describe: 'split a stage input into chunks, queue them, wait for the workers, merge in input order',
  builder: (y) =>
    y
      .parserConfiguration({ 'populate--': true })
      .option('stage', { choices: STAGES, demandOption: true, describe: 'stage to run; its own flags go after --' })
      .option('data', { type: 'string', demandOption: true, describe: "stage input (every worker must see this path)" })
      .option('out', { type: 'string', demandOption: true, describe: 'merged output (format by extension or the stage flag --format)' })
      .option('redis', { type: 'string', demandOption: true, describe: 'redis://host:port[/db]' })
      .option('queue', { type: 'string', default: DEFAULT_QUEUE, describe: 'BullMQ queue name' })
      .option('chunk-size', { type: 'number', default: 4096, describe: "records per chunk (rounded up to a multiple of the stage's batch size)" })
      .option('work-dir', { type: 'string', describe: 'shared directory for chunk outputs (default OUT.chunks)' })
      .option('attempts', { type: 'number', default: 3, describe: 'tries per chunk before it is reported as failed' }) as never,
  handler: async (argv) => {
    const summary = await submit({
      stage: argv.stage,
      args: (argv['--'] ?? []).map(String),
      data: argv.data,
      out: argv.out,
      redis: argv.redis,
      queue: argv.queue,
      chunkSize: argv['chunk-size'],
      workDir: argv['work-dir'],
      attempts: argv.attempts,
      log,
    });
    if (argv.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else process.stdout.write(`wrote ${summary.out}: ${summary.records} records from ${summary.chunks} chunks (${summary.seconds.toFixed(1)} s)\n`);
  },
};

const workerCommand: CommandModule<{ json: boolean }, WorkerArgs> = {
  command: 'worker',
  describe: 'take chunks from the queue and run them (models stay loaded); stops on SIGINT/SIGTERM',
  builder: (y) =>
    y
      .option('redis', { type: 'string', demandOption: true, describe: 'redis://host:port[/db]' })
      .option('queue', { type: 'string', default: DEFAULT_QUEUE, describe: 'BullMQ queue name' })
      .option('device', { type: 'string', describe: "this worker's device (cpu, cuda:N); overrides the stage's --device" })
      .option('lock-ms', { type: 'number', default: 30_000, describe: 'job lock: a worker silent this long is taken for dead' })
      .option('stalled-ms', { type: 'number', default: 30_000, describe: 'interval of the stalled-job check' }) as never,
  handler: async (argv) => {
    const controller = new AbortController();
    const stop = () => controller.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const r = await runWorker({ redis: argv.redis, queue: argv.queue, device: argv.device, lockMs: argv['lock-ms'], stalledMs: argv['stalled-ms'], log, signal: controller.signal });
    if (argv.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  },
};

export const clusterCommand: CommandModule<{ json: boolean }, object> = {
  command: 'cluster <command>',
  describe: 'run a stage on workers through BullMQ/Redis (submit, worker)',
  builder: (y) => y.command(submitCommand as never).command(workerCommand as never).demandCommand(1) as never,
  handler: () => undefined,
};
