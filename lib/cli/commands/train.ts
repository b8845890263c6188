// gainrag train: fine-tune the selector (a cross-encoder) on FlagEmbedding JSONL by listwise
// distillation of the gain signals. Checkpoints go to OUT/checkpoint-N (with optimizer state,
// for --resume), the final model to OUT itself, the per-step log to OUT/train_log.jsonl.
import cliProgress from 'cli-progress';
import type { CommandModule } from 'yargs';
import { SelectorTrainer, type TrainDType, type TrainProgress } from '../../training/selector-trainer.js';

interface TrainArgs {
  json: boolean;
  model: string;
  data: string;
  out: string;
  'group-size': number;
  'batch-size': number;
  epochs: number;
  lr: number;
  'warmup-ratio': number;
  'weight-decay': number;
  'max-grad-norm': number;
  'query-max-len': number;
  'passage-max-len': number;
  'grad-accum': number;
  dtype: TrainDType;
  device: string;
  'gradient-checkpointing': boolean;
  'save-steps': number;
  'drop-last': boolean;
  seed: number;
  resume: boolean;
}

function formatEta(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  const s = Math.round(sec);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export const trainCommand: CommandModule<{ json: boolean }, TrainArgs> = {
  command: 'train',
  describe: 'train the selector (cross-encoder) by listwise distillation of gain scores',
  builder: (y) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'starting cross-encoder (HF directory, e.g. bge-reranker-base)' })
      .option('data', { type: 'string', demandOption: true, describe: 'FlagEmbedding JSONL (query, pos, neg, pos_scores, neg_scores)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory (final model, checkpoint-N/, train_log.jsonl)' })
      .option('group-size', { type: 'number', default: 16, describe: 'passages per query: 1 positive + sampled negatives' })
      .option('batch-size', { type: 'number', default: 8, describe: 'queries per micro-batch' })
      .option('epochs', { type: 'number', default: 2 })
      .option('lr', { type: 'number', default: 6e-5 })
      .option('warmup-ratio', { type: 'number', default: 0.1 })
      .option('weight-decay', { type: 'number', default: 0.01, describe: 'AdamW decay (not on biases/LayerNorm)' })
      .option('max-grad-norm', { type: 'number', default: 1.0, describe: '0 turns clipping off' })
      .option('query-max-len', { type: 'number', default: 512 })
      .option('passage-max-len', { type: 'number', default: 512, describe: 'pairs are cut to query+passage max len (and the model limit), passage first' })
      .option('grad-accum', { type: 'number', default: 1, describe: 'micro-batches per optimizer step' })
      .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, default: 'float32' as const, describe: 'compute dtype (weights stay float32); float16 needs CUDA' })
      .option('device', { type: 'string', default: 'cpu', describe: 'cpu | cuda | cuda:N' })
      .option('gradient-checkpointing', { type: 'boolean', default: false, describe: 'recompute each encoder layer in the backward pass instead of storing its activations (less memory, ~1 extra forward)' })
      .option('save-steps', { type: 'number', default: 0, describe: 'checkpoint every N optimizer steps (0 = final model only)' })
      .option('drop-last', {
        type: 'boolean',
        default: true,
        describe: "drop each epoch's last incomplete batch, as the reference (--dataloader_drop_last True), so step counts and the warmup/decay schedule match; --no-drop-last keeps it",
      })
      .option('seed', { type: 'number', default: 42 })
      .option('resume', { type: 'boolean', default: false, describe: 'continue from the newest checkpoint in --out' }) as never,
  handler: async (argv) => {
    const controller = new AbortController();
    const onSignal = () => controller.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const trainer = await SelectorTrainer.create(argv.model, {
      lr: argv.lr,
      weightDecay: argv['weight-decay'],
      warmupRatio: argv['warmup-ratio'],
      maxGradNorm: argv['max-grad-norm'],
      gradAccum: argv['grad-accum'],
      dtype: argv.dtype,
      device: argv.device,
      gradientCheckpointing: argv['gradient-checkpointing'],
      seed: argv.seed,
    });
    const tty = process.stderr.isTTY === true;
    const bar = tty
      ? new cliProgress.SingleBar(
          { stream: process.stderr, hideCursor: true, format: 'train [{bar}] {value}/{total} batches | epoch {epoch} | loss {loss} | lr {lr} | {pps} pairs/s | ETA {eta_h}' },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
    let barStarted = false;
    let lastLine = 0;
    const note = (m: string) => process.stderr.write(`${bar && barStarted ? '\n' : ''}train: ${m}\n`);
    const onProgress = (p: TrainProgress) => {
      const fields = { epoch: `${p.epoch}/${p.epochs}`, loss: p.loss.toFixed(4), lr: p.lr.toExponential(2), pps: p.pairsPerSec.toFixed(1), eta_h: formatEta(p.etaSec) };
      if (bar) {
        if (!barStarted) bar.start(p.totalMicro, p.micro, fields);
        barStarted = true;
        bar.update(p.micro, fields);
      } else if (Date.now() - lastLine > 5000 || p.micro === p.totalMicro) {
        lastLine = Date.now();
        process.stderr.write(`train: batch ${p.micro}/${p.totalMicro} step ${p.step}/${p.totalSteps} epoch ${fields.epoch} loss ${fields.loss} lr ${fields.lr} ${fields.pps} pairs/s ETA ${fields.eta_h}\n`);
      }
    };
    try {
      const summary = await trainer.train({
        data: argv.data,
        outDir: argv.out,
        epochs: argv.epochs,
        batchSize: argv['batch-size'],
        groupSize: argv['group-size'],
        queryMaxLength: argv['query-max-len'],
        passageMaxLength: argv['passage-max-len'],
        saveSteps: argv['save-steps'],
        dropLast: argv['drop-last'],
        resume: argv.resume,
        signal: controller.signal,
        onProgress,
        onLog: note,
      });
      bar?.stop();
      if (argv.json) {
        process.stdout.write(`${JSON.stringify(summary)}\n`);
      } else {
        process.stdout.write(
          `trained ${summary.optimizerSteps} steps (${summary.epochs} epochs over ${summary.records} queries) in ${summary.seconds.toFixed(1)} s, ` +
            `${summary.pairsPerSec.toFixed(1)} pairs/s, final loss ${summary.finalLoss?.toFixed(4) ?? 'n/a'}; model in ${summary.outDir}\n`,
        );
      }
    } finally {
      bar?.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};
