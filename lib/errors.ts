// Error codes shared by the native engine and the TypeScript layer. Native failures arrive as
// Error objects whose `code` is one of these; JS-side validation throws TypeError/RangeError,
// or GainragError for data problems found in files.
//
// ERROR_CODES is the same list, in the same order, as GAINRAG_ERROR_CODES in
// native/core/error.h (TypeScript cannot include a C++ header); test/error-contract.test.ts
// parses both files and fails when they differ. Callers branch on `code`, never on message text.

export const ERROR_CODES = [
  'E_INVALID_ARG',
  'E_SAFETENSORS',
  'E_MODEL_CONFIG',
  'E_SHAPE',
  'E_OOM',
  'E_CANCELLED',
  'E_IO',
  'E_INDEX',
  'E_DATA',
  'E_UNSUPPORTED',
  'E_TORCH',
  'E_INTERNAL',
  'E_NO_ADDON',
  'E_TOKENIZER',
  'E_LOCKED',
  'E_DISPOSED',
  'E_MODEL_NOT_FOUND',
  'E_UNAUTHORIZED',
  'E_NETWORK',
  'E_BUSY',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class GainragError extends Error {
  readonly code: ErrorCode;
  /** For E_IO: the Node/OS error code behind it ('ENOSPC', 'EROFS', 'EACCES', ...). */
  readonly errno?: string;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; errno?: string }) {
    super(message, options);
    this.name = 'GainragError';
    this.code = code;
    if (options?.errno !== undefined) this.errno = options.errno;
  }
}

/** True when `err` carries the given gainrag error code (native or JS). */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** True when `code` is one of ERROR_CODES. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code);
}

/**
 * The one mapping of Node fs / OS failures onto gainrag errors: E_IO with the errno kept
 * (`errno`, and the original error as `cause`). A GainragError passes through unchanged.
 * `what` says what was being done ("cannot write out.jsonl").
 */
export function ioError(err: unknown, what: string): GainragError {
  if (err instanceof GainragError) return err;
  const e = err as NodeJS.ErrnoException;
  const errno = typeof e?.code === 'string' ? e.code : undefined;
  const detail = errno === 'ENOSPC' ? 'no space left on the device' : errno === 'EROFS' ? 'read-only file system' : e?.message ?? String(err);
  return new GainragError('E_IO', `${what}: ${detail}${errno && !detail.includes(errno) ? ` (${errno})` : ''}`, { cause: err, errno });
}

/**
 * E_INVALID_ARG for a typed array over a SharedArrayBuffer. The engine borrows input memory for
 * the whole call; shared memory can be changed by another thread meanwhile (and Node-API cannot
 * borrow it at all). Copy it into an ordinary typed array first.
 */
export function checkNotShared(view: ArrayBufferView, name: string): void {
  if (typeof SharedArrayBuffer !== 'undefined' && view.buffer instanceof SharedArrayBuffer) {
    throw new GainragError('E_INVALID_ARG', `${name} is backed by a SharedArrayBuffer, which the engine cannot borrow; copy it into a regular ${view.constructor.name}`);
  }
}

/**
 * Gives an uncoded error from the native layer a code, in place (class and message kept):
 * argument checks (TypeError/RangeError) become E_INVALID_ARG, anything else E_INTERNAL (by
 * class, never by message text). Coded errors pass unchanged.
 */
export function withCode<T>(err: T): T {
  if (typeof err !== 'object' || err === null || isErrorCode((err as { code?: unknown }).code)) return err;
  const e = err as unknown as Error & { code?: string };
  const arg = e instanceof TypeError || e instanceof RangeError;
  try {
    Object.defineProperty(e, 'code', { value: arg ? 'E_INVALID_ARG' : 'E_INTERNAL', enumerable: true, configurable: true, writable: true });
  } catch {
    /* frozen error object: leave it */
  }
  return err;
}
