// SelectorTrainer: fine-tunes a cross-encoder (the GainRAG selector) by listwise distillation
// of teacher gains. `step()` is the deterministic primitive (explicit groups, no sampling);
// `train()` drives epochs over FlagEmbedding data with group sampling, checkpoints, resume,
// a JSONL log, progress and cancellation. Tokenisation happens here, one encodePairs call per
// step; the native side gets flat Int32Arrays and runs forward, backward and AdamW.
import path from 'node:path';
import { withControls, type CallOptions } from '../controls.js';
import { NativeOwner } from '../lifetime.js';
import { native, type NativeControls } from '../native.js';
import { Tokenizer } from '../tokenizer.js';
import { resolveModel } from '../models/hub.js';
import type { TrainGroup } from './sampling.js';
import { checkNumber, runTraining } from './train-loop.js';
import type { SelectorTrainerOptions, StepResult, Trainable, TrainOptions, TrainSummary } from './types.js';

// The option and result types live in ./types.js so that the epoch loop (./train-loop.js) can use
// them without importing this module back; re-exported here, where users look for them.
export type { SelectorTrainerOptions, StepResult, TrainDType, TrainOptions, TrainProgress, TrainSummary } from './types.js';

interface NativeSelectorTrainer {
  step(ids: Int32Array, offsets: Int32Array, typeIds: Int32Array | undefined, teacher: Float32Array, groups: number,
    groupSize: number, controls?: NativeControls): Promise<StepResult>;
  score(ids: Int32Array, offsets: Int32Array, typeIds: Int32Array | undefined, controls?: NativeControls): Promise<Float32Array>;
  save(dir: string, opts: { withState?: boolean; replace?: boolean; files?: Record<string, string> }): Promise<void>;
  loadState(dir: string): Promise<void>;
  setSchedule(warmupSteps: number, totalSteps: number): void;
  info(): { modelType: string; hiddenSize: number; numLayers: number; maxTokens: number; parameters: number; optimizerStep: number; microStep: number; lossScale: number };
  dispose(): void;
}

interface TrainerAddon {
  createSelectorTrainer(dir: string, opts: Record<string, unknown>): Promise<NativeSelectorTrainer>;
}

export class SelectorTrainer extends NativeOwner<NativeSelectorTrainer> implements Trainable {
  readonly modelDir: string;
  readonly tokenizer: Tokenizer;
  readonly maxLength: number;
  private readonly options: SelectorTrainerOptions;
  // Steps run strictly in call order: tokenising is async, so without this chain two unawaited
  // step() calls could reach the engine in either order (and train on a different sequence).
  private stepQueue: Promise<unknown> = Promise.resolve();

  private constructor(modelDir: string, tokenizer: Tokenizer, trainer: NativeSelectorTrainer, options: SelectorTrainerOptions) {
    super(trainer, 'SelectorTrainer', (t) => t.dispose());
    this.modelDir = modelDir;
    this.tokenizer = tokenizer;
    this.step = this.life.guard(this.step);
    this.score = this.life.guard(this.score);
    this.save = this.life.guard(this.save);
    this.loadState = this.life.guard(this.loadState);
    this.options = options;
    const limit = trainer.info().maxTokens;
    this.maxLength = Math.min(options.maxLength ?? limit, limit);
  }

  /** Loads `modelDir` (a sequence-classification checkpoint) as trainable fp32 weights. */
  static async create(modelRef: string, options: SelectorTrainerOptions = {}): Promise<SelectorTrainer> {
    if (typeof modelRef !== 'string' || modelRef.length === 0) throw new TypeError('modelDir must be a non-empty string');
    checkNumber('lr', options.lr, Number.MIN_VALUE);
    checkNumber('weightDecay', options.weightDecay, 0);
    checkNumber('warmupRatio', options.warmupRatio, 0);
    if (options.warmupRatio !== undefined && options.warmupRatio > 1) throw new RangeError(`warmupRatio must be <= 1, got ${options.warmupRatio}`);
    checkNumber('maxGradNorm', options.maxGradNorm, 0);
    checkNumber('gradAccum', options.gradAccum, 1, true);
    checkNumber('warmupSteps', options.warmupSteps, 0, true);
    checkNumber('totalSteps', options.totalSteps, 0, true);
    checkNumber('seed', options.seed, 0, true);
    checkNumber('maxLength', options.maxLength, 4, true);
    if (options.dtype !== undefined && !['float32', 'float16', 'bfloat16'].includes(options.dtype)) {
      throw new TypeError(`dtype must be float32, float16 or bfloat16, got ${String(options.dtype)}`);
    }
    const modelDir = await resolveModel(modelRef); // a directory, or a hub id (downloaded into the HF cache)
    const tokenizer = Tokenizer.load(modelDir);
    const addon = native() as unknown as TrainerAddon;
    const trainer = await addon.createSelectorTrainer(modelDir, {
      lr: options.lr,
      weightDecay: options.weightDecay,
      schedule: options.schedule,
      warmupSteps: options.warmupSteps,
      totalSteps: options.totalSteps,
      maxGradNorm: options.maxGradNorm,
      gradAccum: options.gradAccum,
      dtype: options.dtype,
      device: options.device,
      gradientCheckpointing: options.gradientCheckpointing,
      seed: options.seed,
    });
    return new SelectorTrainer(modelDir, tokenizer, trainer, options);
  }

  /** The native trainer, or E_DISPOSED after dispose(). */
  private get trainer(): NativeSelectorTrainer {
    this.life.check();
    return this.life.get();
  }

  get optimizerStep(): number {
    return this.trainer.info().optimizerStep;
  }

  get parameters(): number {
    return this.trainer.info().parameters;
  }

  /**
   * One micro-step on explicit groups (all the same size, >= 2 passages each); an optimizer
   * update happens every `gradAccum` micro-steps.
   */
  async step(groups: TrainGroup[], options: CallOptions & { maxLength?: number } = {}): Promise<StepResult> {
    if (!Array.isArray(groups) || groups.length === 0) throw new TypeError('groups must be a non-empty array');
    const size = groups[0]?.passages?.length;
    const queries: string[] = [];
    const passages: string[] = [];
    const teacher = new Float32Array(groups.length * (size ?? 0));
    groups.forEach((g, i) => {
      if (typeof g?.query !== 'string' || !Array.isArray(g.passages) || !Array.isArray(g.teacherScores)) {
        throw new TypeError(`groups[${i}] must be {query: string, passages: string[], teacherScores: number[]}`);
      }
      if (g.passages.length !== size || g.teacherScores.length !== size || size < 2) {
        throw new RangeError(`groups[${i}] must have ${size} passages and ${size} teacher scores (at least 2; all groups the same size)`);
      }
      for (let j = 0; j < size; j++) {
        if (typeof g.passages[j] !== 'string') throw new TypeError(`groups[${i}].passages[${j}] must be a string`);
        const s = g.teacherScores[j];
        if (typeof s !== 'number' || !Number.isFinite(s)) throw new TypeError(`groups[${i}].teacherScores[${j}] must be a finite number`);
        queries.push(g.query);
        passages.push(g.passages[j]);
        teacher[i * size + j] = s;
      }
    });
    const maxLength = options.maxLength ?? this.maxLength;
    const run = this.stepQueue.then(() =>
      withControls(options, async (controls) => {
        const batch = await this.tokenizer.encodePairs(queries, passages, { maxLength, truncation: 'only_second' });
        return this.trainer.step(batch.ids, batch.offsets, batch.typeIds, teacher, groups.length, size, controls);
      }),
    );
    this.stepQueue = run.catch(() => undefined);
    return run;
  }

  /** Scores of (queries[i], passages[i]) under the current weights (dropout off). */
  async score(queries: string[], passages: string[], options: CallOptions & { maxLength?: number } = {}): Promise<Float32Array> {
    if (queries.length === 0) return new Float32Array(0);
    const maxLength = options.maxLength ?? this.maxLength;
    return withControls(options, async (controls) => {
      const batch = await this.tokenizer.encodePairs(queries, passages, { maxLength, truncation: 'only_second' });
      return this.trainer.score(batch.ids, batch.offsets, batch.typeIds, controls);
    });
  }

  /**
   * Writes a Hugging Face checkpoint (config.json, model.safetensors, tokenizer files)
   * atomically. `withState` adds optimizer.safetensors for resuming; `merge` writes into an
   * existing directory instead of replacing it.
   */
  async save(dir: string, options: { withState?: boolean; merge?: boolean; files?: Record<string, string> } = {}): Promise<void> {
    if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir must be a non-empty string');
    await this.trainer.save(path.resolve(dir), { withState: options.withState ?? false, replace: !options.merge, files: options.files });
  }

  /** Restores weights, optimizer moments and counters from a checkpoint saved withState. */
  async loadState(dir: string): Promise<void> {
    await this.trainer.loadState(path.resolve(dir));
  }

  setSchedule(warmupSteps: number, totalSteps: number): void {
    this.trainer.setSchedule(warmupSteps, totalSteps);
  }

  /** Trains over FlagEmbedding data; see TrainOptions. */
  async train(options: TrainOptions): Promise<TrainSummary> {
    return runTraining(this, options, this.options);
  }
}
