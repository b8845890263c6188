// JSON over HTTP for the clients of services (an OpenAI-compatible LLM server, a TEI embedding or
// rerank server): one request with a timeout, bearer token, and retries of what a busy service
// answers -- HTTP 429, an E_BUSY error body, 5xx, timeouts, dropped connections -- after its
// Retry-After (seconds or an HTTP date) or else an exponential backoff with jitter. Any other
// 4xx fails at once. A server still busy after the last retry is E_BUSY, anything else E_IO.
import { GainragError } from '../errors.js';

export const DEFAULT_RETRIES = 3;

/**
 * Milliseconds a Retry-After header asks for: delay-seconds or an HTTP date (RFC 9110 10.2.3);
 * undefined when absent or unreadable (the caller then backs off on its own).
 */
export function retryAfterMs(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // HTTP dates name the day and month; without this, Date.parse reads '-1' as the year -1.
  const at = /[a-z]{3}/i.test(v) ? Date.parse(v) : NaN;
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The `code` of a JSON error body ({error: {code}} as gainrag serve answers, or {code}); undefined otherwise. */
function bodyCode(text: string): unknown {
  try {
    const b = JSON.parse(text) as { error?: { code?: unknown }; code?: unknown };
    return (typeof b?.error === 'object' && b.error !== null ? b.error.code : undefined) ?? b?.code;
  } catch {
    return undefined;
  }
}

/** The bearer token the options name, never echoed anywhere. */
function resolveApiKey(options: { apiKey?: string; apiKeyEnv?: string }): string | undefined {
  if (options.apiKey !== undefined) return options.apiKey || undefined;
  if (options.apiKeyEnv !== undefined) {
    const name = options.apiKeyEnv;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new RangeError(`--api-key-env: not an environment variable name: ${JSON.stringify(name)}`);
    const key = process.env[name];
    if (!key) throw new GainragError('E_INVALID_ARG', `--api-key-env ${name}: that environment variable is not set (or empty)`);
    return key;
  }
  return process.env.OPENAI_API_KEY || process.env.GAINRAG_GENERATE_API_KEY || undefined;
}


/** A wait that a cancel ends at once. */
function pause(ms: number, signal: AbortSignal | undefined, cancelled: () => GainragError): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(cancelled());
    const onAbort = () => {
      clearTimeout(timer);
      reject(cancelled());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface JsonClientOptions {
  /** Per request (default 120 s). */
  timeoutMs?: number;
  /** Attempts after the first (default DEFAULT_RETRIES). */
  retries?: number;
  /** Bearer token; default: the variable named by `apiKeyEnv`, else $OPENAI_API_KEY. */
  apiKey?: string;
  apiKeyEnv?: string;
  /** First backoff (default 500 ms) and the longest wait (default 60 s). */
  backoffMs?: number;
  maxDelayMs?: number;
  /** The E_CANCELLED message. */
  cancelledMessage?: string;
}

export class JsonClient {
  private readonly timeoutMs: number;
  private readonly apiKey: string | undefined;
  readonly retries: number;
  private readonly backoffMs: number;
  private readonly maxDelayMs: number;
  private readonly cancelledMessage: string;

  constructor(options: JsonClientOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 120_000;
    if (!(this.timeoutMs > 0)) throw new RangeError('timeout must be > 0');
    this.apiKey = resolveApiKey(options);
    this.retries = options.retries ?? DEFAULT_RETRIES;
    if (!Number.isInteger(this.retries) || this.retries < 0) throw new RangeError(`retries must be a non-negative integer, got ${options.retries}`);
    this.backoffMs = options.backoffMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
    if (!(this.backoffMs >= 0) || !(this.maxDelayMs >= 0)) throw new RangeError('backoffMs and maxDelayMs must be >= 0');
    this.cancelledMessage = options.cancelledMessage ?? 'the request was cancelled';
  }

  private cancelled(): GainragError {
    return new GainragError('E_CANCELLED', this.cancelledMessage);
  }

  /** GET (body undefined) or POST JSON; the parsed answer. Errors: E_IO (errno HTTP_<status>, ETIMEDOUT ...), E_DATA (not JSON), E_CANCELLED. */
  async request(url: URL, body: unknown, signal?: AbortSignal): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw this.cancelled();
      const timeout = AbortSignal.timeout(this.timeoutMs);
      const headers: Record<string, string> = { accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
      // What went wrong this attempt, when another attempt may help.
      let failure: { detail: string; errno?: string; waitMs?: number; busy?: boolean };
      try {
        const res = await fetch(url, {
          method: body === undefined ? 'GET' : 'POST',
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
        });
        const text = await res.text();
        if (res.ok) {
          try {
            return JSON.parse(text);
          } catch {
            throw new GainragError('E_DATA', `${url.href}: answer is not JSON: ${text.slice(0, 200)}`);
          }
        }
        const detail = `${url.href}: HTTP ${res.status} ${res.statusText}: ${text.slice(0, 300)}`;
        const errno = `HTTP_${res.status}`;
        // 429 (rate limit), a body saying E_BUSY (gainrag serve's full queue) and 5xx are the
        // server's passing trouble; any other 4xx is our request's fault and repeats
        // identically, so it fails at once.
        const busy = res.status === 429 || bodyCode(text) === 'E_BUSY';
        if (!busy && res.status < 500) {
          const hint = res.status === 401 || res.status === 403 ? ' (check the API key: --api-key-env names the variable holding it)' : '';
          throw new GainragError('E_IO', detail + hint, { errno });
        }
        failure = { detail, errno, waitMs: retryAfterMs(res.headers.get('retry-after')), busy };
      } catch (err) {
        if (err instanceof GainragError) throw err;
        if (signal?.aborted) throw this.cancelled();
        if (timeout.aborted) failure = { detail: `${url.href}: no answer within ${this.timeoutMs} ms`, errno: 'ETIMEDOUT' };
        else {
          const cause = (err as { cause?: { message?: string; code?: string } }).cause;
          failure = { detail: `${url.href}: request failed: ${cause?.message ?? (err as Error).message}`, errno: cause?.code };
        }
      }
      if (attempt >= this.retries) {
        // Still busy after every retry: E_BUSY, so a caller can tell "come back later" from a fault.
        throw new GainragError(failure.busy ? 'E_BUSY' : 'E_IO', `${failure.detail} (gave up after ${attempt + 1} attempt${attempt === 0 ? '' : 's'}; --retries ${this.retries})`, { errno: failure.errno });
      }
      // Jitter spreads the retries of many concurrent requests so they do not hit the server together.
      const backoff = this.backoffMs * 2 ** attempt * (0.5 + Math.random() / 2);
      await pause(Math.min(failure.waitMs ?? backoff, this.maxDelayMs), signal, () => this.cancelled());
    }
  }}
