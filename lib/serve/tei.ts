// Text Embeddings Inference routes: POST /embed, POST /rerank, GET /info, GET /health. Bodies
// and answers follow TEI's (https://huggingface.github.io/text-embeddings-inference/); errors
// use our {error: {message, code}} body.
import type { FastifyInstance } from 'fastify';
import type { Encoder } from '../models/encoder.js';
import type { CrossEncoder } from '../models/cross-encoder.js';
import { badRequest, notLoaded, ServeError } from './errors.js';
import type { PairItem, ServeContext } from './context.js';
import { bool, objectBody, rightTruncation, str, texts } from './validate.js';

const VERSION = '0.1.0';

/** Token estimate for packing batches (no tokenising): ~4 UTF-8 bytes a token, capped. */
export function estimateTokens(bytes: number, specials: number, maxLength: number): number {
  return Math.min(maxLength, Math.ceil(bytes / 4) + specials);
}

/** 413 unless every text fits the encoder's maxLength (TEI's truncate=false). */
export async function checkFits(encoder: Encoder, list: string[], what: string): Promise<void> {
  const specials = encoder.tokenizer.specialTokens.single;
  const budget = encoder.maxLength - specials;
  // Never more than two tokens a byte: short texts fit without tokenising.
  const unsure = list.map((t, i) => [t, i] as const).filter(([t]) => 2 * Buffer.byteLength(t) > budget);
  if (unsure.length === 0) return;
  const ids = await encoder.tokenizer.encodeRaw(unsure.map(([t]) => t), { maxTokens: budget });
  const over = ids.findIndex((t) => t.length > budget);
  if (over >= 0) {
    throw new ServeError(413, 'E_INVALID_ARG', `${what}[${unsure[over][1]}] has more than ${encoder.maxLength} tokens, the model's limit; send truncate: true to cut it`);
  }
}

async function checkPairsFit(reranker: CrossEncoder, query: string, list: string[]): Promise<void> {
  const budget = reranker.maxLength - reranker.tokenizer.specialTokens.pair;
  const qBytes = Buffer.byteLength(query);
  const unsure = list.map((t, i) => [t, i] as const).filter(([t]) => 2 * (qBytes + Buffer.byteLength(t)) > budget);
  if (unsure.length === 0) return;
  const [q] = await reranker.tokenizer.encodeRaw([query], { maxTokens: budget });
  const ids = await reranker.tokenizer.encodeRaw(unsure.map(([t]) => t), { maxTokens: budget });
  const over = ids.findIndex((t) => q.length + t.length > budget);
  if (over >= 0) {
    throw new ServeError(413, 'E_INVALID_ARG', `query + texts[${unsure[over][1]}] have more than ${reranker.maxLength} tokens, the model's limit; send truncate: true to cut the text`);
  }
}

export function registerTei(app: FastifyInstance, ctx: ServeContext): void {
  const { encoder, reranker, lm } = ctx.models;

  app.post('/embed', async (request) => {
    if (!encoder || !ctx.embed) throw notLoaded('encoder', '--encoder DIR');
    const body = objectBody(request.body);
    const inputs = texts(body, 'inputs').list;
    const normalize = bool(body, 'normalize', true);
    const truncate = bool(body, 'truncate', false);
    rightTruncation(body);
    if (body.prompt_name !== undefined && body.prompt_name !== null) throw badRequest(`'prompt_name' is not supported`);
    if (!truncate) await checkFits(encoder, inputs, 'inputs');
    const specials = encoder.tokenizer.specialTokens.single;
    const tokens = inputs.reduce((n, t) => n + estimateTokens(Buffer.byteLength(t), specials, encoder.maxLength), 0);
    const rows = await ctx.embed.submit(inputs, tokens, normalize ? 'normalized' : 'raw', ctx.signal(request));
    return rows.map((r) => Array.from(r));
  });

  app.post('/rerank', async (request) => {
    if (!reranker || !ctx.rerank) throw notLoaded('reranker', '--reranker DIR or --selector DIR');
    const body = objectBody(request.body);
    const query = str(body, 'query');
    const list = texts(body, 'texts').list;
    const raw = bool(body, 'raw_scores', false);
    const returnText = bool(body, 'return_text', false);
    const truncate = bool(body, 'truncate', false);
    rightTruncation(body);
    if (!(await reranker.queryFits(query))) throw new ServeError(413, 'E_INVALID_ARG', `the query leaves no room for a text in the reranker's ${reranker.maxLength} tokens`);
    if (!truncate) await checkPairsFit(reranker, query, list);
    const specials = reranker.tokenizer.specialTokens.pair;
    const qBytes = Buffer.byteLength(query);
    const pairs: PairItem[] = list.map((text) => ({ query, text }));
    const tokens = list.reduce((n, t) => n + estimateTokens(qBytes + Buffer.byteLength(t), specials, reranker.maxLength), 0);
    const logits = await ctx.rerank.submit(pairs, tokens, 'pairs', ctx.signal(request));
    const ranked = logits.map((logit, index) => ({
      index,
      score: raw ? logit : 1 / (1 + Math.exp(-logit)),
      ...(returnText ? { text: list[index] } : {}),
    }));
    // Best first; equal scores keep input order.
    ranked.sort((a, b) => b.score - a.score || a.index - b.index);
    return ranked;
  });

  app.get('/health', async (_request, reply) => {
    if (ctx.closing) {
      void reply.code(503);
      return { status: 'shutting down' };
    }
    return { status: 'ok' };
  });

  app.get('/info', async () => {
    const o = ctx.options;
    const names = ctx.models.names;
    const primary = encoder ? { id: names.encoder, type: { embedding: { pooling: encoder.pooling } }, max: encoder.maxLength }
      : reranker ? { id: names.reranker, type: { reranker: { id2label: { 0: 'LABEL_0' } } }, max: reranker.maxLength }
      : { id: names.llm, type: { generation: {} }, max: lm!.contextLength };
    return {
      // TEI's fields, for the first model of encoder / reranker / llm.
      model_id: primary.id,
      model_sha: null,
      model_dtype: o.dtype ?? 'float32',
      model_type: primary.type,
      max_concurrent_requests: o.maxQueue,
      max_input_length: primary.max,
      max_batch_tokens: o.maxBatchTokens,
      max_batch_requests: null,
      max_client_batch_size: null,
      tokenization_workers: null,
      version: VERSION,
      // Everything this process serves.
      models: {
        ...(encoder ? { encoder: { id: names.encoder, dim: encoder.dim, max_length: encoder.maxLength, pooling: encoder.pooling, model_type: encoder.modelType } } : {}),
        ...(reranker ? { reranker: { id: names.reranker, max_length: reranker.maxLength, model_type: reranker.modelType } } : {}),
        ...(lm ? { llm: { id: names.llm, context_length: lm.contextLength, model_type: lm.info.modelType, chat_template: Boolean(lm.tokenizer.config.chatTemplate) } } : {}),
        ...(ctx.models.index ? { index: { size: ctx.models.index.index.size, dim: ctx.models.index.index.dim, metric: ctx.models.index.index.metric } } : {}),
      },
      device: o.device ?? 'cpu',
      max_wait_ms: o.maxWaitMs,
      max_body_bytes: o.maxBodyBytes,
      request_timeout_ms: o.requestTimeoutMs,
    };
  });
}
