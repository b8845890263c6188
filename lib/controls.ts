// AbortSignal + progress callback -> the native controls object every long call accepts.
import { native, type NativeControls } from './native.js';
import { GainragError, withCode } from './errors.js';

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
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new GainragError('E_INVALID_ARG', `options must be an object, got ${options === null ? 'null' : typeof options}`);
  }
  const signal = options?.signal;
  // Checked here, not left to fail as "addEventListener is not a function" mid-call.
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new GainragError('E_INVALID_ARG', `signal must be an AbortSignal, got ${signal === null ? 'null' : typeof signal}`);
  }
  if (options?.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new GainragError('E_INVALID_ARG', `onProgress must be a function, got ${typeof options.onProgress}`);
  }
  if (signal?.aborted) throw new GainragError('E_CANCELLED', 'operation was cancelled before it started');
  const token = new (native().CancelToken)();
  const onAbort = () => token.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await start({ cancel: token, onProgress: options?.onProgress });
  } catch (err) {
    throw withCode(err); // every failure of a native call carries a code
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
