// Types shared by SelectorTrainer (./selector-trainer.js) and its epoch loop (./train-loop.js):
// both import this module and neither imports the other's types, so there is no import cycle.
import type { CallOptions } from '../controls.js';
import type { Tokenizer } from '../tokenizer.js';
import type { TrainRecord } from './data.js';
import type { TrainGroup } from './sampling.js';

export type TrainDType = 'float32' | 'float16' | 'bfloat16';

export interface SelectorTrainerOptions {
  lr?: number;
  weightDecay?: number;
  /** 'linear' (HF get_linear_schedule_with_warmup, default) or 'constant' after warmup. */
  schedule?: 'linear' | 'constant';
  /** Explicit warmup / total optimizer steps; train() otherwise derives them from the data. */
  warmupSteps?: number;
  totalSteps?: number;
  /** Fraction of the total steps used for warmup when train() sets the schedule (default 0.1). */
  warmupRatio?: number;
  /** 0 turns clipping off (default 1.0). */
  maxGradNorm?: number;
  gradAccum?: number;
  /** Compute dtype; weights and optimizer state stay float32. float16 needs CUDA. */
  dtype?: TrainDType;
  device?: string;
  /**
   * Keep only each encoder layer's input during the forward and recompute the layer in the
   * backward pass (dropout masks replayed): activation memory of one layer instead of all, for
   * about one extra forward per step. Results are unchanged.
   */
  gradientCheckpointing?: boolean;
  seed?: number;
  /** Tokens per pair, special tokens included (default: the model's limit). */
  maxLength?: number;
}

export interface StepResult {
  loss: number;
  lr: number;
  /** Gradient norm before clipping; null on micro-steps that only accumulated. */
  gradNorm: number | null;
  updated: boolean;
  /** fp16 only: the update was skipped because gradients overflowed. */
  skipped: boolean;
  optimizerStep: number;
}

export interface TrainProgress {
  epoch: number;
  epochs: number;
  micro: number;
  totalMicro: number;
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number | null;
  pairsPerSec: number;
  etaSec: number;
}

export interface TrainOptions {
  /** FlagEmbedding JSONL file, or records already loaded with loadTrainingData. */
  data: string | TrainRecord[];
  outDir: string;
  epochs?: number;
  batchSize?: number;
  groupSize?: number;
  queryMaxLength?: number;
  passageMaxLength?: number;
  /**
   * Drop each epoch's last incomplete batch (default true, as the reference trains with
   * --dataloader_drop_last True), so step counts, warmup and the schedule match its run.
   */
  dropLast?: boolean;
  /** Checkpoint every N optimizer steps (0 = only the final model). */
  saveSteps?: number;
  /** Continue from the newest checkpoint in outDir (starts fresh when there is none). */
  resume?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: TrainProgress) => void;
  /** Called with notes (resume point, checkpoints written). */
  onLog?: (message: string) => void;
}

export interface TrainSummary {
  outDir: string;
  records: number;
  epochs: number;
  optimizerSteps: number;
  microSteps: number;
  resumedFrom: string | null;
  finalLoss: number | null;
  seconds: number;
  pairsPerSec: number;
}

/** What the epoch loop needs of a trainer (SelectorTrainer implements it). */
export interface Trainable {
  readonly modelDir: string;
  readonly maxLength: number;
  readonly tokenizer: Tokenizer;
  readonly optimizerStep: number;
  step(groups: TrainGroup[], options?: CallOptions & { maxLength?: number }): Promise<StepResult>;
  save(dir: string, options?: { withState?: boolean; merge?: boolean; files?: Record<string, string> }): Promise<void>;
  loadState(dir: string): Promise<void>;
  setSchedule(warmupSteps: number, totalSteps: number): void;
}
