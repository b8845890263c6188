// Greedy generation through an OpenAI-compatible HTTP server (vLLM, llama.cpp, TGI...), for users
// who already serve their LLM. Only answers/pseudo-passages are generated there: perplexities need
// full-vocabulary logits, which such servers do not return, so they stay native.
//
// URL forms: a base (`http://host:8000` or `http://host:8000/v1`) or `.../v1/completions` send the
// prompt string exactly as built here (chat template already applied locally, as the reference
// does with vLLM); `.../v1/chat/completions` sends [system, user] messages and lets the server
// apply its own template.
import { GainragError } from '../errors.js';
import { dropsSystemMessage } from '../models/chat-template.js';

/** A prompt as built (raw) and as the model sees it (chat template applied, when any). */
export interface GenerationPrompt {
  raw: string;
  wrapped: string;
}

/** Something that answers prompts greedily. */
export interface TextGenerator {
  readonly description: string;
  generate(prompts: GenerationPrompt[], options: { maxNewTokens: number; signal?: AbortSignal }): Promise<string[]>;
}

export interface OpenAIGeneratorOptions {
  url: string;
  /** `model` field of the request; default: the first id of GET /v1/models. */
  model?: string;
  /** Per request; default 120 s. */
  timeoutMs?: number;
  /** Requests in flight at once; default 8. */
  concurrency?: number;
  /** System message for the chat endpoint ('' for none). */
  systemPrompt?: string;
  /** Chat endpoint: no system message for a model whose id contains "mistral", as the reference (default true). */
  systemByName?: boolean;
  /** Bearer token; default: the variable named by `apiKeyEnv`. */
  apiKey?: string;
  /**
   * Environment variable holding the bearer token (the key stays off the command line and out of
   * every log); default OPENAI_API_KEY when set, else GAINRAG_GENERATE_API_KEY. Naming a variable
   * that is unset is an error rather than a silent unauthenticated request.
   */
  apiKeyEnv?: string;
  /** Retries after a network error, a timeout, HTTP 429 or a 5xx answer; default 3. */
  retries?: number;
  /** First backoff delay when the server sends no Retry-After (doubled per retry, with jitter); default 500 ms. */
  backoffMs?: number;
  /** Longest wait between two attempts, a Retry-After included; default 60 s. */
  maxDelayMs?: number;
}

type Endpoint = 'completions' | 'chat';

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

/** The bearer token the options name, never echoed anywhere. */
function resolveApiKey(options: OpenAIGeneratorOptions): string | undefined {
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

function cancelled(): GainragError {
  return new GainragError('E_CANCELLED', 'generation was cancelled');
}

/** A wait that a cancel ends at once. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
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

function resolveEndpoint(raw: string): { endpoint: Endpoint; url: URL; base: string } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TypeError(`--generate-url: not a URL: ${raw}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`--generate-url: expected http(s), got ${url.protocol}`);
  const p = url.pathname.replace(/\/+$/, '');
  if (p.endsWith('/chat/completions')) return { endpoint: 'chat', url, base: url.origin + p.slice(0, -'/chat/completions'.length) };
  if (p.endsWith('/completions')) return { endpoint: 'completions', url, base: url.origin + p.slice(0, -'/completions'.length) };
  const base = url.origin + (p.endsWith('/v1') ? p : `${p}/v1`);
  return { endpoint: 'completions', url: new URL(`${base}/completions`), base };
}

export class OpenAIGenerator implements TextGenerator {
  readonly description: string;
  private readonly endpoint: Endpoint;
  private readonly url: URL;
  private readonly base: string;
  private model: string | undefined;
  private readonly timeoutMs: number;
  private readonly concurrency: number;
  private readonly systemPrompt: string;
  private readonly systemByName: boolean;
  private readonly apiKey: string | undefined;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly maxDelayMs: number;

  constructor(options: OpenAIGeneratorOptions) {
    const { endpoint, url, base } = resolveEndpoint(options.url);
    this.endpoint = endpoint;
    this.url = url;
    this.base = base;
    this.model = options.model;
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 8));
    this.systemPrompt = options.systemPrompt ?? '';
    this.systemByName = options.systemByName ?? true;
    this.apiKey = resolveApiKey(options);
    this.retries = options.retries ?? DEFAULT_RETRIES;
    if (!Number.isInteger(this.retries) || this.retries < 0) throw new RangeError(`retries must be a non-negative integer, got ${options.retries}`);
    this.backoffMs = options.backoffMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
    if (!(this.backoffMs >= 0) || !(this.maxDelayMs >= 0)) throw new RangeError('backoffMs and maxDelayMs must be >= 0');
    if (!(this.timeoutMs > 0)) throw new RangeError('generate timeout must be > 0');
    this.description = `${endpoint === 'chat' ? 'chat completions' : 'completions'} at ${url.href}`;
  }

  async generate(prompts: GenerationPrompt[], options: { maxNewTokens: number; signal?: AbortSignal }): Promise<string[]> {
    if (this.model === undefined) this.model = await this.discoverModel(options.signal);
    const out = new Array<string>(prompts.length);
    let next = 0;
    // A small worker pool: servers batch concurrent requests themselves (vLLM continuous batching).
    const worker = async () => {
      while (next < prompts.length) {
        const i = next++;
        out[i] = await this.one(prompts[i], options.maxNewTokens, options.signal);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, prompts.length) }, worker));
    return out;
  }

  private async discoverModel(signal?: AbortSignal): Promise<string> {
    const json = (await this.request(new URL(`${this.base}/models`), undefined, signal)) as { data?: { id?: unknown }[] };
    const id = json?.data?.[0]?.id;
    if (typeof id !== 'string') throw new GainragError('E_DATA', `${this.base}/models: no model id in the answer; pass --generate-model NAME`);
    return id;
  }

  private async one(prompt: GenerationPrompt, maxTokens: number, signal?: AbortSignal): Promise<string> {
    const common = { model: this.model, max_tokens: maxTokens, temperature: 0, top_p: 1, n: 1, stream: false };
    if (this.endpoint === 'chat') {
      const system = this.systemPrompt && !(this.systemByName && dropsSystemMessage(this.model));
      const messages = system ? [{ role: 'system', content: this.systemPrompt }] : [];
      messages.push({ role: 'user', content: prompt.raw });
      const json = (await this.request(this.url, { ...common, messages }, signal)) as { choices?: { message?: { content?: unknown } }[] };
      const text = json?.choices?.[0]?.message?.content;
      if (typeof text !== 'string') throw new GainragError('E_DATA', `${this.url.href}: answer has no choices[0].message.content`);
      return text;
    }
    const json = (await this.request(this.url, { ...common, prompt: prompt.wrapped }, signal)) as { choices?: { text?: unknown }[] };
    const text = json?.choices?.[0]?.text;
    if (typeof text !== 'string') throw new GainragError('E_DATA', `${this.url.href}: answer has no choices[0].text`);
    return text;
  }

  private async request(url: URL, body: unknown, signal?: AbortSignal): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw cancelled();
      const timeout = AbortSignal.timeout(this.timeoutMs);
      const headers: Record<string, string> = { accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
      // What went wrong this attempt, when another attempt may help.
      let failure: { detail: string; errno?: string; waitMs?: number };
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
        // 429 (rate limit) and 5xx are the server's passing trouble; any other 4xx is our request's
        // fault and repeats identically, so it fails at once.
        if (res.status !== 429 && res.status < 500) {
          const hint = res.status === 401 || res.status === 403 ? ' (check the API key: --api-key-env names the variable holding it)' : '';
          throw new GainragError('E_IO', detail + hint, { errno });
        }
        failure = { detail, errno, waitMs: retryAfterMs(res.headers.get('retry-after')) };
      } catch (err) {
        if (err instanceof GainragError) throw err;
        if (signal?.aborted) throw cancelled();
        if (timeout.aborted) failure = { detail: `${url.href}: no answer within ${this.timeoutMs} ms`, errno: 'ETIMEDOUT' };
        else {
          const cause = (err as { cause?: { message?: string; code?: string } }).cause;
          failure = { detail: `${url.href}: request failed: ${cause?.message ?? (err as Error).message}`, errno: cause?.code };
        }
      }
      if (attempt >= this.retries) {
        throw new GainragError('E_IO', `${failure.detail} (gave up after ${attempt + 1} attempt${attempt === 0 ? '' : 's'}; --retries ${this.retries})`, { errno: failure.errno });
      }
      // Jitter spreads the retries of many concurrent requests so they do not hit the server together.
      const backoff = this.backoffMs * 2 ** attempt * (0.5 + Math.random() / 2);
      await pause(Math.min(failure.waitMs ?? backoff, this.maxDelayMs), signal);
    }
  }
}
