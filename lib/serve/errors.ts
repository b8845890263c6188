// HTTP side of gainrag errors: every error body is {error: {message, code}} with a code from
// lib/errors.ts; the status comes from the error (ServeError) or from its code.
import { GainragError, isErrorCode, type ErrorCode } from '../errors.js';

/** A gainrag error that also says which HTTP status it answers with. */
export class ServeError extends GainragError {
  readonly status: number;
  /** Seconds, for 429 / 503 answers. */
  readonly retryAfter?: number;
  constructor(status: number, code: ErrorCode, message: string, options?: { cause?: unknown; retryAfter?: number }) {
    super(code, message, options);
    this.status = status;
    if (options?.retryAfter !== undefined) this.retryAfter = options.retryAfter;
  }
}

export function badRequest(message: string): ServeError {
  return new ServeError(400, 'E_INVALID_ARG', message);
}

/** A route whose model this server did not load. */
export function notLoaded(what: string, flag: string): ServeError {
  return new ServeError(404, 'E_UNSUPPORTED', `no ${what} is loaded on this server (start it with ${flag})`);
}

// Status by code for errors that do not carry one: the caller's mistakes are 4xx, the
// engine's and the machine's are 5xx.
const STATUS: Partial<Record<ErrorCode, number>> = {
  E_INVALID_ARG: 400,
  E_DATA: 400,
  E_TOKENIZER: 400,
  E_SHAPE: 400,
  E_UNSUPPORTED: 400,
  E_CANCELLED: 499,
  E_OOM: 503,
  E_DISPOSED: 503,
  E_BUSY: 429,
};

/** Status, code and message for any thrown value (Fastify's own errors included). */
export function describeError(err: unknown): { status: number; code: ErrorCode; message: string; retryAfter?: number } {
  const e = err as { code?: unknown; statusCode?: unknown; message?: unknown; validation?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (err instanceof ServeError) return { status: err.status, code: err.code, message, retryAfter: err.retryAfter };
  if (isErrorCode(e?.code)) return { status: STATUS[e.code] ?? 500, code: e.code, message };
  // Fastify: body too large (413), unparsable JSON (400), wrong content type (415), ...
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return { status: e.statusCode, code: 'E_INVALID_ARG', message };
  if (err instanceof TypeError || err instanceof RangeError) return { status: 400, code: 'E_INVALID_ARG', message };
  return { status: 500, code: 'E_INTERNAL', message };
}

export function errorBody(code: ErrorCode, message: string): { error: { message: string; code: ErrorCode } } {
  return { error: { message, code } };
}
