// `gainrag serve`: one Fastify app over models loaded once. Routes live in tei.ts (TEI
// /embed /rerank /info /health), openai.ts (/v1/...) and gain.ts (/retrieve /gain); this file
// holds what they share: batch queues, per-request cancellation (timeout, client gone), the
// bearer key, error bodies, metrics and graceful close.
import { timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { GainragError } from '../errors.js';
import { DEFAULT_SYSTEM_PROMPT } from '../pipeline/prompts.js';
import { Batcher } from './batcher.js';
import { describeError, errorBody, ServeError } from './errors.js';
import { ServeMetrics } from './metrics.js';
import { loadServeModels, type ServeModels } from './models.js';
import type { GenerateItem, PairItem, ResolvedServeOptions, ServeContext, ServeOptions } from './context.js';
import { registerTei } from './tei.js';
import { registerOpenAI } from './openai.js';
import { registerGain } from './gain.js';

export type { ServeOptions, ResolvedServeOptions, EmbedItem, PairItem, GenerateItem, ServeContext } from './context.js';

export interface GainragServer {
  readonly app: FastifyInstance;
  readonly url: string;
  readonly context: ServeContext;
  /** Stops accepting, lets requests in flight finish, then frees the models. Idempotent. */
  close(): Promise<void>;
}

function positive(name: string, v: number, min = 1): number {
  if (!Number.isFinite(v) || v < min) throw new GainragError('E_INVALID_ARG', `${name} must be a number >= ${min}, got ${String(v)}`);
  return v;
}

export function resolveServeOptions(o: ServeOptions): ResolvedServeOptions {
  const r: ResolvedServeOptions = {
    ...o,
    host: o.host ?? '127.0.0.1',
    port: o.port ?? 8080,
    maxBatchTokens: positive('max-batch-tokens', o.maxBatchTokens ?? 16384),
    maxWaitMs: positive('max-wait-ms', o.maxWaitMs ?? 2, 0),
    maxQueue: positive('max-queue', o.maxQueue ?? 512),
    maxBodyBytes: positive('max-body-bytes', o.maxBodyBytes ?? 2 * 1024 * 1024),
    requestTimeoutMs: positive('request-timeout-ms', o.requestTimeoutMs ?? 60_000),
    chatTemplate: o.chatTemplate ?? 'auto',
    systemPrompt: o.systemPrompt ?? DEFAULT_SYSTEM_PROMPT,
  };
  if (!Number.isInteger(r.port) || r.port < 0 || r.port > 65535) throw new GainragError('E_INVALID_ARG', `port must be an integer in [0, 65535], got ${String(o.port)}`);
  if (o.apiKey !== undefined && o.apiKey.length === 0) throw new GainragError('E_INVALID_ARG', 'the API key is empty');
  return r;
}

/** Loads the models and starts listening. */
export async function startServer(options: ServeOptions): Promise<GainragServer> {
  const resolved = resolveServeOptions(options);
  const models = await loadServeModels(resolved);
  try {
    return await listen(models, resolved);
  } catch (err) {
    await models.dispose();
    throw err;
  }
}

const work = Symbol('gainrag.work');
type WithWork = FastifyRequest & { [work]?: { controller: AbortController; timer: NodeJS.Timeout; t0: number } };

/** Starts the HTTP server over models already loaded (they are disposed by close()). */
export async function listen(models: ServeModels, o: ResolvedServeOptions): Promise<GainragServer> {
  const metrics = new ServeMetrics();
  let closing = false;
  let inflight = 0;
  metrics.inflight.track({}, () => inflight);
  const app = Fastify({ bodyLimit: o.maxBodyBytes, logger: false, return503OnClosing: false, forceCloseConnections: 'idle' });
  const common = { maxWaitMs: o.maxWaitMs, maxQueue: o.maxQueue, maxBatchTokens: o.maxBatchTokens, metrics };
  const { encoder, reranker, lm } = models;
  const ctx: ServeContext = {
    models,
    options: o,
    metrics,
    embed: encoder && new Batcher<string, Float32Array>({
      ...common,
      name: 'embed',
      async run(texts, key, signal) {
        const flat = await encoder.embed(texts, { normalize: key === 'normalized', signal });
        const d = encoder.dim;
        return texts.map((_, i) => flat.subarray(i * d, (i + 1) * d));
      },
    }),
    rerank: reranker && new Batcher<PairItem, number>({
      ...common,
      name: 'rerank',
      async run(pairs, _key, signal) {
        const out = await reranker.score(pairs.map((p) => p.query), pairs.map((p) => p.text), { signal });
        return Array.from(out);
      },
    }),
    generate: lm && new Batcher<GenerateItem, number[]>({
      ...common,
      name: 'generate',
      maxBatchItems: 256,
      async run(items, key, signal) {
        const offsets = new Int32Array(items.length + 1);
        items.forEach((p, i) => (offsets[i + 1] = offsets[i] + p.ids.length));
        const ids = new Int32Array(offsets[items.length]);
        items.forEach((p, i) => ids.set(p.ids, offsets[i]));
        // Each step's tokens go to their requests as they are made; a request's stop (a stop
        // string, its client gone) stops its rows while the others keep decoding.
        const onTokens = (rows: Int32Array, tokens: Int32Array) => {
          for (let k = 0; k < rows.length; k++) items[rows[k]].onToken?.(tokens[k]);
        };
        return lm.generateIds({ ids, offsets }, Number(key), { signal, onTokens, rowSignals: items.map((p) => p.stop) });
      },
    }),
    signal(request) {
      const w = (request as WithWork)[work];
      if (!w) throw new GainragError('E_INTERNAL', 'request has no work controller');
      return w.controller.signal;
    },
    startedAt: Math.floor(Date.now() / 1000),
    get closing() {
      return closing;
    },
  };

  const key = o.apiKey === undefined ? undefined : Buffer.from(`Bearer ${o.apiKey}`);
  app.addHook('onRequest', async (request, reply) => {
    inflight++;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new ServeError(504, 'E_CANCELLED', `request timed out after ${o.requestTimeoutMs} ms`)), o.requestTimeoutMs);
    (request as WithWork)[work] = { controller, timer, t0: performance.now() };
    // 'close' before the answer was written: the client went away; its work is cancelled.
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) controller.abort(new ServeError(499, 'E_CANCELLED', 'the client closed the connection'));
    });
    // Draining: a request that arrives on a connection still open gets 503 in our error format.
    if (closing) throw new ServeError(503, 'E_DISPOSED', 'the server is shutting down', { retryAfter: 1 });
    if (key !== undefined && request.url !== '/health') {
      const got = Buffer.from(request.headers.authorization ?? '');
      if (got.length !== key.length || !timingSafeEqual(got, key)) {
        reply.header('www-authenticate', 'Bearer');
        throw new ServeError(401, 'E_INVALID_ARG', 'missing or wrong API key (Authorization: Bearer ...)');
      }
    }
  });
  // While draining, every answer closes its connection: an idle keep-alive connection would
  // otherwise hold close() until the client's keep-alive timeout.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (closing) void reply.header('connection', 'close');
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    finish(request as WithWork, reply.statusCode);
  });
  const finish = (request: WithWork, status: number) => {
    const w = request[work];
    if (!w) return;
    request[work] = undefined;
    inflight--;
    clearTimeout(w.timer);
    const route = request.routeOptions?.url ?? 'unmatched';
    metrics.requests.inc({ route, status: String(status) });
    metrics.latency.observe({ route }, (performance.now() - w.t0) / 1000);
  };
  // A request that ended without a response (connection torn down mid-work) is counted too.
  app.addHook('onRequestAbort', async (request) => finish(request as WithWork, 499));

  app.setErrorHandler((err, request, reply) => {
    // The request's own cancellation reason (timeout, disconnect) says more than E_CANCELLED.
    const reason = (request as WithWork)[work]?.controller.signal.reason;
    const d = describeError((err as { code?: string }).code === 'E_CANCELLED' && reason ? reason : err);
    if (d.status >= 500) process.stderr.write(`gainrag serve: ${request.method} ${request.url}: ${d.message} (${d.code})\n`);
    if (d.retryAfter !== undefined) reply.header('retry-after', String(d.retryAfter));
    void reply.code(d.status).send(errorBody(d.code, d.message));
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(errorBody('E_INVALID_ARG', `no route ${request.method} ${request.url.split('?')[0]}`));
  });

  app.get('/metrics', async (_request, reply) => {
    void reply.type('text/plain; version=0.0.4; charset=utf-8');
    return metrics.render();
  });
  registerTei(app, ctx);
  registerOpenAI(app, ctx);
  registerGain(app, ctx);

  await app.listen({ host: o.host, port: o.port });
  const addr = app.server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  let closed: Promise<void> | undefined;
  return {
    app,
    url: `http://${host}:${addr.port}`,
    context: ctx,
    close() {
      closing = true;
      // Fastify stops listening and waits for the requests in flight (new ones on open
      // connections get 503 from the onRequest hook); the models go after the last one.
      closed ??= app.close().then(() => models.dispose());
      return closed;
    },
  };
}
