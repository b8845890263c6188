// AbortSignal + progress callback -> the native controls object every long call accepts.
import { native, type NativeControls } from './native.js';
import { GainragError } from './errors.js';

export interface CallOptions {
  /** Cancels the call: the native side stops at its next batch boundary (E_CANCELLED). */
  signal?: AbortSignal;
  /** Called on the JS thread as work advances. */
  onProgress?: (done: number, total: number, note: string) => void;
}

/**
 * Runs `start(controls)` with a native CancelToken wired to `signal`; rejects at once with
 * E_CANCELLED if the signal was already aborted.
 */
export async function withControls<T>(options: CallOptions | undefined, start: (controls: NativeControls) => Promise<T>): Promise<T> {
  const signal = options?.signal;
  if (signal?.aborted) throw new GainragError('E_CANCELLED', 'operation was cancelled before it started');
  const token = new (native().CancelToken)();
  const onAbort = () => token.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await start({ cancel: token, onProgress: options?.onProgress });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
