// OpenAI-compatible routes: GET /v1/models, POST /v1/embeddings, /v1/completions and
// /v1/chat/completions. Decoding is greedy (temperature 0; others are refused). Concurrent
// completion requests with the same max_tokens share one CausalLM generate call, whose
// continuous batching runs them together. Tokens are followed as the engine makes them
// (completion.ts): a `stop` string stops that answer's row in the engine, and `stream: true`
// answers with server-sent events in OpenAI's chunk format, written as the tokens come.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ChatMessage } from '../models/chat-template.js';
import { PassThrough } from 'node:stream';
import { badRequest, describeError, errorBody, notLoaded, ServeError } from './errors.js';
import type { GenerateItem, ServeContext } from './context.js';
import { CompletionRow, type FinishReason } from './completion.js';
import { checkFits, estimateTokens } from './tei.js';
import { bool, int, objectBody, optStr, texts, type Body } from './validate.js';

interface Choice {
  text: string;
  tokens: number;
  finish: FinishReason;
}

function stops(body: Body): string[] {
  const v = body.stop;
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length > 4 || list.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw badRequest(`'stop' must be a non-empty string or an array of up to 4 of them`);
  }
  return list as string[];
}

/** Refuses what greedy decoding cannot honour instead of silently ignoring it. */
function greedyOnly(body: Body): void {
  const t = body.temperature;
  if (t !== undefined && t !== null && t !== 0) throw new ServeError(400, 'E_UNSUPPORTED', `only greedy decoding is implemented: 'temperature' must be 0, got ${JSON.stringify(t)}`);
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw new ServeError(400, 'E_UNSUPPORTED', `'n' must be 1`);
  if (body.best_of !== undefined && body.best_of !== null && body.best_of !== 1) throw new ServeError(400, 'E_UNSUPPORTED', `'best_of' must be 1`);
  if (body.logprobs !== undefined && body.logprobs !== null && body.logprobs !== false) throw new ServeError(400, 'E_UNSUPPORTED', `'logprobs' is not supported`);
  if (body.echo === true) throw new ServeError(400, 'E_UNSUPPORTED', `'echo' is not supported`);
  if (body.suffix !== undefined && body.suffix !== null) throw new ServeError(400, 'E_UNSUPPORTED', `'suffix' is not supported`);
}

/**
 * Answers a stream: true request with server-sent events. Headers go out with the first delta
 * (an error before it is an ordinary JSON error answer); later chunks follow as tokens are made.
 */
async function streamReply(
  reply: FastifyReply,
  run: (onDelta: (index: number, delta: string) => void) => Promise<{ choices: Choice[] }>,
  chunks: { delta(index: number, text: string): object; first?(): object; last(index: number, c: Choice): object },
): Promise<FastifyReply> {
  const out = new PassThrough();
  const write = (c: object) => out.write(`data: ${JSON.stringify(c)}\n\n`);
  let first: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (first = resolve));
  const answer = run((index, delta) => {
    first();
    write(chunks.delta(index, delta));
  });
  if (chunks.first) write(chunks.first());
  await Promise.race([started, answer]);
  void answer.then(
    ({ choices }) => {
      choices.forEach((c, index) => write(chunks.last(index, c)));
      out.end('data: [DONE]\n\n');
    },
    (err) => {
      const d = describeError(err);
      write(errorBody(d.code, d.message));
      out.end();
    },
  );
  void reply.type('text/event-stream; charset=utf-8').header('cache-control', 'no-cache');
  return reply.send(out);
}

export function registerOpenAI(app: FastifyInstance, ctx: ServeContext): void {
  const { encoder, lm, names } = ctx.models;
  const modelIds = [names.llm, names.encoder, names.reranker].filter((n): n is string => n !== undefined);

  const checkModel = (body: Body, served: string | undefined): string => {
    const asked = optStr(body, 'model');
    if (asked !== undefined && asked !== served) throw new ServeError(404, 'E_INVALID_ARG', `model '${asked}' is not served here for this route (it serves '${served}')`);
    return served!;
  };

  app.get('/v1/models', async () => ({
    object: 'list',
    data: modelIds.map((id) => ({ id, object: 'model', created: ctx.startedAt, owned_by: 'gainrag' })),
  }));

  app.post('/v1/embeddings', async (request) => {
    if (!encoder || !ctx.embed) throw notLoaded('encoder', '--encoder DIR');
    const body = objectBody(request.body);
    const model = checkModel(body, names.encoder);
    const input = texts(body, 'input').list;
    const format = optStr(body, 'encoding_format') ?? 'float';
    if (format !== 'float' && format !== 'base64') throw badRequest(`'encoding_format' must be 'float' or 'base64'`);
    const dims = int(body, 'dimensions', encoder.dim, 1);
    if (dims !== encoder.dim) throw new ServeError(400, 'E_UNSUPPORTED', `'dimensions' must be the model's ${encoder.dim}`);
    // OpenAI's endpoint refuses over-long inputs rather than cutting them.
    await checkFits(encoder, input, 'input');
    const specials = encoder.tokenizer.specialTokens.single;
    const estimate = input.reduce((n, t) => n + estimateTokens(Buffer.byteLength(t), specials, encoder.maxLength), 0);
    const [rows, counted] = await Promise.all([
      ctx.embed.submit(input, estimate, 'normalized', ctx.signal(request)),
      encoder.tokenizer.encodeBatch(input, { maxLength: encoder.maxLength }),
    ]);
    const tokens = counted.offsets[input.length];
    return {
      object: 'list',
      data: rows.map((r, index) => ({
        object: 'embedding',
        index,
        embedding: format === 'float' ? Array.from(r) : Buffer.from(r.buffer, r.byteOffset, r.byteLength).toString('base64'),
      })),
      model,
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
  });

  /**
   * Greedy completions of `prompts`, batched with other requests; each token is followed as it
   * comes (stop strings stop the engine's row; `onDelta` gets the text as it becomes final).
   */
  const complete = async (request: FastifyRequest, prompts: string[], maxTokens: number, stopList: string[], onDelta?: (index: number, delta: string) => void) => {
    if (!lm || !ctx.generate) throw notLoaded('LLM', '--llm DIR');
    const ids = await lm.tokenizer.encodeRaw(prompts);
    ids.forEach((p, i) => {
      if (p.length === 0) throw badRequest(`prompt ${i} has no tokens`);
      if (p.length + maxTokens > lm.contextLength) {
        throw badRequest(`prompt ${i} has ${p.length} tokens; with max_tokens ${maxTokens} that exceeds the model's ${lm.contextLength} positions`);
      }
    });
    const tokens = ids.reduce((n, p) => n + p.length + maxTokens, 0);
    const signal = ctx.signal(request);
    const eos = new Set(lm.info.eosTokenIds);
    const rows = ids.map((_, i) => new CompletionRow(lm.tokenizer, maxTokens, stopList, eos, onDelta && ((d) => onDelta(i, d))));
    const items: GenerateItem[] = ids.map((p, i) => ({ ids: p, onToken: (t) => rows[i].push(t), stop: AbortSignal.any([signal, rows[i].stop.signal]) }));
    // A row may end (EOS, max_tokens, a stop string) before the engine call that holds it.
    ctx.generate.submit(items, tokens, String(maxTokens), signal).then(
      () => rows.forEach((r) => r.complete()),
      (err) => rows.forEach((r) => r.fail(err)),
    );
    const texts = await Promise.all(rows.map((r) => r.done));
    const choices: Choice[] = rows.map((r, i) => ({ text: texts[i], tokens: r.tokens.length, finish: r.finish }));
    const promptTokens = ids.reduce((n, p) => n + p.length, 0);
    const completionTokens = choices.reduce((n, c) => n + c.tokens, 0);
    ctx.metrics.tokens.inc({ queue: 'generate', kind: 'prompt' }, promptTokens);
    ctx.metrics.tokens.inc({ queue: 'generate', kind: 'completion' }, completionTokens);
    return { choices, usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens } };
  };

  const generationLimits = (body: Body, maxField: number | undefined) => {
    greedyOnly(body);
    if (!lm) throw notLoaded('LLM', '--llm DIR');
    return { maxTokens: maxField ?? int(body, 'max_tokens', 16, 1, lm.contextLength), stopList: stops(body), stream: bool(body, 'stream', false) };
  };

  app.post('/v1/completions', async (request, reply) => {
    const body = objectBody(request.body);
    const { maxTokens, stopList, stream } = generationLimits(body, undefined);
    const model = checkModel(body, names.llm);
    const prompts = texts(body, 'prompt').list;
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (!stream) {
      const { choices, usage } = await complete(request, prompts, maxTokens, stopList);
      return {
        id, object: 'text_completion', created, model,
        choices: choices.map((c, index) => ({ index, text: c.text, logprobs: null, finish_reason: c.finish })),
        usage,
      };
    }
    const chunk = (index: number, text: string, finish: string | null) =>
      ({ id, object: 'text_completion', created, model, choices: [{ index, text, logprobs: null, finish_reason: finish }] });
    return streamReply(reply, (onDelta) => complete(request, prompts, maxTokens, stopList, onDelta), {
      delta: (index, text) => chunk(index, text, null),
      last: (index, c) => chunk(index, '', c.finish),
    });
  });

  app.post('/v1/chat/completions', async (request, reply) => {
    const body = objectBody(request.body);
    const limit = body.max_completion_tokens ?? undefined;
    const { maxTokens, stopList, stream } = generationLimits(body, limit === undefined || limit === null ? undefined : int(body, 'max_completion_tokens', 16, 1, lm?.contextLength));
    const model = checkModel(body, names.llm);
    const messages = chatMessages(body);
    if (!lm!.tokenizer.config.chatTemplate) throw new ServeError(400, 'E_UNSUPPORTED', `the model '${model}' has no chat template; use /v1/completions`);
    const prompt = lm!.applyChatTemplate(messages, { addGenerationPrompt: true });
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (!stream) {
      const { choices, usage } = await complete(request, [prompt], maxTokens, stopList);
      const c = choices[0];
      return {
        id, object: 'chat.completion', created, model,
        choices: [{ index: 0, message: { role: 'assistant', content: c.text }, logprobs: null, finish_reason: c.finish }],
        usage,
      };
    }
    const head = { id, object: 'chat.completion.chunk', created, model };
    return streamReply(reply, (onDelta) => complete(request, [prompt], maxTokens, stopList, onDelta), {
      first: () => ({ ...head, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] }),
      delta: (_index, text) => ({ ...head, choices: [{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }] }),
      last: (_index, c) => ({ ...head, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: c.finish }] }),
    });
  });
}

/** Messages with string content, or content parts of type 'text' (joined). */
function chatMessages(body: Body): ChatMessage[] {
  const v = body.messages;
  if (!Array.isArray(v) || v.length === 0) throw badRequest(`'messages' must be a non-empty array`);
  return v.map((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string') throw badRequest(`'messages[${i}]' must be {role, content}`);
    let content = m.content;
    if (Array.isArray(content)) {
      if (!content.every((p) => typeof p === 'object' && p !== null && p.type === 'text' && typeof p.text === 'string')) {
        throw new ServeError(400, 'E_UNSUPPORTED', `'messages[${i}].content': only text parts are supported`);
      }
      content = content.map((p: { text: string }) => p.text).join('');
    }
    if (typeof content !== 'string') throw badRequest(`'messages[${i}].content' must be a string`);
    return { role: m.role, content } as ChatMessage;
  });
}
