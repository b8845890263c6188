// Greedy generation through an OpenAI-compatible HTTP server (vLLM, llama.cpp, TGI...), for users
// who already serve their LLM. Only answers/pseudo-passages are generated there: perplexities need
// full-vocabulary logits, which such servers do not return, so they stay native.
//
// URL forms: a base (`http://host:8000` or `http://host:8000/v1`) or `.../v1/completions` send the
// prompt string exactly as built here (chat template already applied locally, as the reference
// does with vLLM); `.../v1/chat/completions` sends [system, user] messages and lets the server
// apply its own template.
import { GainragError } from '../errors.js';
import { JsonClient } from './http-client.js';
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

export { DEFAULT_RETRIES, retryAfterMs } from './http-client.js';

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
  private readonly http: JsonClient;

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
    if (!(this.timeoutMs > 0)) throw new RangeError('generate timeout must be > 0');
    this.http = new JsonClient({ ...options, timeoutMs: this.timeoutMs, cancelledMessage: 'generation was cancelled' });
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

  private request(url: URL, body: unknown, signal?: AbortSignal): Promise<unknown> {
    return this.http.request(url, body, signal);
  }

}
