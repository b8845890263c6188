// Cross-request dynamic batching: requests queue here and are packed into one engine call up to
// a token budget, after waiting at most maxWaitMs for company; the call's outputs are split back
// per request. One engine call runs at a time per queue (the engine already uses every core for
// it); the next batch is packed from whatever arrived meanwhile, so under load batches grow by
// themselves. A request whose signal aborts leaves the queue at once; inside a running batch it
// is answered at once and its results are dropped, and when every request of the batch is gone
// the batch's own signal aborts the engine call.
import { GainragError } from '../errors.js';
import { ServeError } from './errors.js';
import type { ServeMetrics } from './metrics.js';

export interface BatcherOptions<I, O> {
  /** Queue name in metrics and messages ('embed', 'rerank', 'generate'). */
  name: string;
  /** Token budget of one engine call (a single larger request still runs, alone). */
  maxBatchTokens: number;
  /** Inputs per engine call at most. */
  maxBatchItems?: number;
  /** How long the oldest request waits for others before its batch starts. */
  maxWaitMs: number;
  /** Requests that may wait; one more is refused with 429. */
  maxQueue: number;
  /** The engine call: outputs in input order. `key` is the batch's key (requests of one key only). */
  run(items: I[], key: string, signal: AbortSignal): Promise<O[]>;
  metrics?: ServeMetrics;
}

interface Job<I, O> {
  items: I[];
  tokens: number;
  key: string;
  signal: AbortSignal;
  queuedAt: number;
  settled: boolean;
  resolve(out: O[]): void;
  reject(err: unknown): void;
  /** Set while its batch runs: notes that this job is gone. */
  onGone?: () => void;
}

function cancelled(signal: AbortSignal): unknown {
  return signal.reason instanceof Error ? signal.reason : new GainragError('E_CANCELLED', 'request was cancelled');
}

export class Batcher<I, O> {
  private readonly queue: Job<I, O>[] = [];
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly maxItems: number;

  constructor(private readonly o: BatcherOptions<I, O>) {
    this.maxItems = o.maxBatchItems ?? Infinity;
    o.metrics?.queueDepth.track({ queue: o.name }, () => this.queue.length);
  }

  /** Requests waiting (not yet in a running batch). */
  get depth(): number {
    return this.queue.length;
  }

  /**
   * Queues one request's inputs (`tokens`: its estimated size); resolves with its outputs.
   * Refused with 429 (ServeError, Retry-After) when the queue is full.
   */
  submit(items: I[], tokens: number, key: string, signal: AbortSignal): Promise<O[]> {
    if (signal.aborted) return Promise.reject(cancelled(signal));
    if (items.length === 0) return Promise.resolve([]);
    if (this.queue.length >= this.o.maxQueue) {
      this.o.metrics?.rejected.inc({ queue: this.o.name });
      return Promise.reject(new ServeError(429, 'E_BUSY', `server busy: the ${this.o.name} queue is full (${this.o.maxQueue} requests waiting); retry later`, { retryAfter: 1 }));
    }
    return new Promise<O[]>((resolve, reject) => {
      const job: Job<I, O> = { items, tokens, key, signal, queuedAt: performance.now(), settled: false, resolve, reject };
      const onAbort = () => {
        if (job.settled) return;
        job.settled = true;
        this.o.metrics?.cancelled.inc({ queue: this.o.name });
        const at = this.queue.indexOf(job);
        if (at >= 0) {
          this.queue.splice(at, 1);
          // The wait timer was set for the oldest request; set it again for the one now first.
          if (this.timer !== undefined) {
            clearTimeout(this.timer);
            this.timer = undefined;
          }
          this.schedule();
        } else job.onGone?.();
        reject(cancelled(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      job.resolve = (out) => {
        signal.removeEventListener('abort', onAbort);
        resolve(out);
      };
      job.reject = (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      };
      this.queue.push(job);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running > 0 || this.queue.length === 0) return;
    const head = this.queue[0];
    let tokens = 0;
    let items = 0;
    for (const j of this.queue) {
      if (j.key !== head.key) continue;
      tokens += j.tokens;
      items += j.items.length;
    }
    const waited = performance.now() - head.queuedAt;
    if (tokens < this.o.maxBatchTokens && items < this.maxItems && waited < this.o.maxWaitMs) {
      // Wait for company, but no longer than the oldest request's deadline.
      if (this.timer === undefined) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.schedule();
        }, Math.max(0, this.o.maxWaitMs - waited));
      }
      return;
    }
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    void this.dispatch(this.take(head.key));
  }

  /** Removes and returns the jobs of one batch: queue order, `key` only, within the budgets. */
  private take(key: string): Job<I, O>[] {
    const batch: Job<I, O>[] = [];
    let tokens = 0;
    let items = 0;
    for (let i = 0; i < this.queue.length; ) {
      const j = this.queue[i];
      if (j.key !== key) {
        i++;
        continue;
      }
      if (batch.length > 0 && (tokens + j.tokens > this.o.maxBatchTokens || items + j.items.length > this.maxItems)) break;
      batch.push(j);
      tokens += j.tokens;
      items += j.items.length;
      this.queue.splice(i, 1);
    }
    return batch;
  }

  private async dispatch(batch: Job<I, O>[]): Promise<void> {
    this.running++;
    const controller = new AbortController();
    let live = batch.length;
    for (const j of batch) {
      j.onGone = () => {
        if (--live === 0) controller.abort(new GainragError('E_CANCELLED', 'every request of the batch was cancelled'));
      };
    }
    const items = batch.flatMap((j) => j.items);
    const m = this.o.metrics;
    const labels = { queue: this.o.name };
    m?.batchRequests.observe(labels, batch.length);
    m?.batchItems.observe(labels, items.length);
    m?.tokens.inc({ ...labels, kind: 'estimated' }, batch.reduce((n, j) => n + j.tokens, 0));
    const t0 = performance.now();
    try {
      const out = await this.o.run(items, batch[0].key, controller.signal);
      if (out.length !== items.length) throw new GainragError('E_INTERNAL', `${this.o.name}: the engine returned ${out.length} results for ${items.length} inputs`);
      let at = 0;
      for (const j of batch) {
        const mine = out.slice(at, (at += j.items.length));
        if (!j.settled) {
          j.settled = true;
          j.resolve(mine);
        }
      }
    } catch (err) {
      for (const j of batch) {
        if (!j.settled) {
          j.settled = true;
          j.reject(err);
        }
      }
    } finally {
      for (const j of batch) j.onGone = undefined;
      m?.batchSeconds.observe(labels, (performance.now() - t0) / 1000);
      this.running--;
      this.schedule();
    }
  }
}
