// Explicit lifetimes for objects that own native memory (models, indexes, trainers).
//
// dispose() is async and idempotent: new calls fail with E_DISPOSED from the moment it is
// called, calls already running finish normally (dispose waits for them), and only then is
// the native object released. A call "runs" from the moment its method is entered, tokenising
// included, so a dispose() during the JS part of a call cannot pull the model out from under it.
// Nested calls (one public method calling another of the same object) are recognised through
// AsyncLocalStorage, so they are not refused by a dispose() that arrived meanwhile.
import { AsyncLocalStorage } from 'node:async_hooks';
import { GainragError } from './errors.js';

const runningIn = new AsyncLocalStorage<Lifetime<unknown>>();

export class Lifetime<T> {
  private handle: T | null;
  private closing = false;
  private inflight = 0;
  private waiters: (() => void)[] = [];

  constructor(
    handle: T,
    private readonly what: string,
    private readonly release: (handle: T) => void,
  ) {
    this.handle = handle;
  }

  /** The native object; E_DISPOSED once it was released. */
  get(): T {
    if (this.handle === null) throw new GainragError('E_DISPOSED', `this ${this.what} was disposed`);
    return this.handle;
  }

  /** True from the moment dispose() was called. */
  get disposed(): boolean {
    return this.closing;
  }

  /** E_DISPOSED (thrown) if dispose() was called; for synchronous members. */
  check(): void {
    if (this.closing && runningIn.getStore() !== this) throw new GainragError('E_DISPOSED', `this ${this.what} was disposed`);
  }

  /** Wraps an async method: refused once dispose() was called, counted as running otherwise. */
  guard<F extends (...args: never[]) => Promise<unknown>>(method: F): F {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const life = this as Lifetime<unknown>;
    const wrapped = function (this: unknown, ...args: Parameters<F>): Promise<unknown> {
      if (runningIn.getStore() === life) return method.apply(this, args);
      if (life.closing) return Promise.reject(new GainragError('E_DISPOSED', `this ${life.what} was disposed`));
      life.inflight++;
      let result: Promise<unknown>;
      try {
        result = runningIn.run(life, () => method.apply(this, args));
      } catch (err) {
        result = Promise.reject(err);
      }
      return result.finally(() => {
        if (--life.inflight === 0 && life.closing) {
          life.releaseNow();
          for (const wake of life.waiters.splice(0)) wake();
        }
      });
    };
    return wrapped as unknown as F;
  }

  /**
   * Refuses new calls, waits for running ones, then releases the native object. Idempotent.
   * Called from inside one of this object's calls it does not wait (that would wait for
   * itself): the release happens when the last running call ends.
   */
  async dispose(): Promise<void> {
    this.closing = true;
    if (this.inflight === 0) this.releaseNow();
    else if (runningIn.getStore() !== this) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private releaseNow(): void {
    const h = this.handle;
    this.handle = null;
    if (h !== null) this.release(h);
  }
}

/**
 * Base of the public classes that own one native object (Encoder, CrossEncoder, CausalLM,
 * SelectorTrainer): the same dispose(), `Symbol.asyncDispose` and `disposed` for all of them.
 */
export abstract class NativeOwner<T> {
  protected readonly life: Lifetime<T>;

  protected constructor(handle: T, what: string, release: (handle: T) => void) {
    this.life = new Lifetime(handle, what, release);
  }

  /**
   * Frees the native memory. Idempotent. New calls fail with E_DISPOSED at once; calls already
   * running (tokenising and queued trainer steps included) finish first, then it is released.
   */
  async dispose(): Promise<void> {
    await this.life.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.life.dispose();
  }

  get disposed(): boolean {
    return this.life.disposed;
  }
}
