// The types the server and its route modules (tei.ts, openai.ts, gain.ts) share, apart from
// server.ts so that the routes do not import the module that registers them.
import type { FastifyRequest } from 'fastify';
import type { ChatTemplateMode } from '../pipeline/prompts.js';
import type { Batcher } from './batcher.js';
import type { ServeMetrics } from './metrics.js';
import type { ServeModelOptions, ServeModels } from './models.js';

export interface ServeOptions extends ServeModelOptions {
  /** Default 127.0.0.1: only this machine can connect unless told otherwise. */
  host?: string;
  /** Default 8080; 0 picks a free port (see GainragServer.url). */
  port?: number;
  /** Estimated tokens packed into one engine call (default 16384). */
  maxBatchTokens?: number;
  /** Longest wait of a request for others to batch with (default 2 ms). */
  maxWaitMs?: number;
  /** Requests waiting per queue before 429 (default 512). */
  maxQueue?: number;
  /** Request body limit, bytes (default 2 MiB); larger: 413. */
  maxBodyBytes?: number;
  /** Per-request limit (default 60 s): the request's work is cancelled, answer 504. */
  requestTimeoutMs?: number;
  /** When set, every route but /health needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Chat template for /gain prompts (default 'auto', as synthesize). */
  chatTemplate?: ChatTemplateMode;
  /** System prompt for /gain prompts (default: synthesize's). */
  systemPrompt?: string;
}

export type ResolvedServeOptions = Required<Pick<ServeOptions, 'host' | 'port' | 'maxBatchTokens' | 'maxWaitMs' | 'maxQueue' | 'maxBodyBytes' | 'requestTimeoutMs' | 'chatTemplate' | 'systemPrompt'>> & ServeOptions;

/** Queue items: embed texts, rerank pairs, generation prompts (token ids). */
export interface EmbedItem { text: string }
export interface PairItem { query: string; text: string }
/** A prompt's token ids; `onToken` sees each new token as the engine makes it; `stop` aborting stops this prompt alone. */
export interface GenerateItem { ids: number[]; onToken?: (token: number) => void; stop?: AbortSignal }

/** What every route module gets. */
export interface ServeContext {
  models: ServeModels;
  options: ResolvedServeOptions;
  metrics: ServeMetrics;
  /** Key: 'normalized' or 'raw'. */
  embed?: Batcher<string, Float32Array>;
  rerank?: Batcher<PairItem, number>;
  /** Key: the batch's max new tokens. */
  generate?: Batcher<GenerateItem, number[]>;
  /** Aborts on the request's timeout or when its client goes away. */
  signal(request: FastifyRequest): AbortSignal;
  readonly startedAt: number;
  readonly closing: boolean;
}

