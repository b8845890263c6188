// Greedy generation through an OpenAI-compatible HTTP server (vLLM, llama.cpp, TGI...), for users
// who already serve their LLM. Only answers/pseudo-passages are generated there: perplexities need
// full-vocabulary logits, which such servers do not return, so they stay native.
//
// URL forms: a base (`http://host:8000` or `http://host:8000/v1`) or `.../v1/completions` send the
// prompt string exactly as built here (chat template already applied locally, as the reference
// does with vLLM); `.../v1/chat/completions` sends [system, user] messages and lets the server
// apply its own template.
import { GainragError } from '../errors.js';

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
  /** Bearer token; default: $GAINRAG_GENERATE_API_KEY. */
  apiKey?: string;
  /** Attempts after a network error or a 5xx answer; default 2. */
  retries?: number;
}

type Endpoint = 'completions' | 'chat';

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
  private readonly apiKey: string | undefined;
  private readonly retries: number;

  constructor(options: OpenAIGeneratorOptions) {
    const { endpoint, url, base } = resolveEndpoint(options.url);
    this.endpoint = endpoint;
    this.url = url;
    this.base = base;
    this.model = options.model;
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 8));
    this.systemPrompt = options.systemPrompt ?? '';
    this.apiKey = options.apiKey ?? process.env.GAINRAG_GENERATE_API_KEY;
    this.retries = Math.max(0, Math.floor(options.retries ?? 2));
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
      const messages = this.systemPrompt ? [{ role: 'system', content: this.systemPrompt }] : [];
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
      if (signal?.aborted) throw new GainragError('E_CANCELLED', 'generation was cancelled');
      const timeout = AbortSignal.timeout(this.timeoutMs);
      const headers: Record<string, string> = { accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
      let retryable: string;
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
        if (res.status < 500) throw new GainragError('E_IO', detail);
        retryable = detail;
      } catch (err) {
        if (err instanceof GainragError) throw err;
        if (signal?.aborted) throw new GainragError('E_CANCELLED', 'generation was cancelled');
        if (timeout.aborted) retryable = `${url.href}: no answer within ${this.timeoutMs} ms`;
        else {
          const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
          retryable = `${url.href}: request failed: ${cause}`;
        }
      }
      if (attempt >= this.retries) throw new GainragError('E_IO', `${retryable} (after ${attempt + 1} attempts)`);
      await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    }
  }
}
