// OpenAI-compatible routes: GET /v1/models, POST /v1/embeddings, /v1/completions and
// /v1/chat/completions. Decoding is greedy (temperature 0; others are refused). Concurrent
// completion requests with the same max_tokens share one CausalLM generate call, whose
// continuous batching runs them together. `stop` strings are applied to the decoded text
// (the engine stops only at EOS or max_tokens). `stream: true` answers with server-sent events
// in OpenAI's chunk format, written when the request's generation is done (the engine does not
// report tokens during a call), one chunk per token.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ChatMessage } from '../models/chat-template.js';
import { badRequest, notLoaded, ServeError } from './errors.js';
import type { ServeContext } from './context.js';
import { checkFits, estimateTokens } from './tei.js';
import { bool, int, objectBody, optStr, texts, type Body } from './validate.js';

interface Choice {
  text: string;
  tokens: number;
  finish: 'stop' | 'length';
  /** Text decoded after each token (for stream chunks), already cut at a stop string. */
  deltas: string[];
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

function earliestStop(text: string, stopList: string[]): number {
  let cut = -1;
  for (const s of stopList) {
    const at = text.indexOf(s);
    if (at >= 0 && (cut < 0 || at < cut)) cut = at;
  }
  return cut;
}

function sse(reply: FastifyReply, chunks: object[]): string {
  void reply.type('text/event-stream; charset=utf-8').header('cache-control', 'no-cache');
  return chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n';
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

  /** Greedy completions of `prompts`, batched with other requests. */
  const complete = async (request: FastifyRequest, prompts: string[], maxTokens: number, stopList: string[], withDeltas: boolean) => {
    if (!lm || !ctx.generate) throw notLoaded('LLM', '--llm DIR');
    const ids = await lm.tokenizer.encodeRaw(prompts);
    ids.forEach((p, i) => {
      if (p.length === 0) throw badRequest(`prompt ${i} has no tokens`);
      if (p.length + maxTokens > lm.contextLength) {
        throw badRequest(`prompt ${i} has ${p.length} tokens; with max_tokens ${maxTokens} that exceeds the model's ${lm.contextLength} positions`);
      }
    });
    const tokens = ids.reduce((n, p) => n + p.length + maxTokens, 0);
    const rows = await ctx.generate.submit(ids, tokens, String(maxTokens), ctx.signal(request));
    const eos = new Set(lm.info.eosTokenIds);
    const full = await lm.tokenizer.decodeBatch(rows, true);
    const choices: Choice[] = [];
    for (let i = 0; i < rows.length; i++) {
      let text = full[i];
      const cut = earliestStop(text, stopList);
      if (cut >= 0) text = text.slice(0, cut);
      const ended = cut >= 0 || (rows[i].length > 0 && eos.has(rows[i][rows[i].length - 1]));
      let deltas: string[] = [];
      if (withDeltas) {
        // The text after each token, cut to the final text; a token that completes no
        // character yet (split UTF-8) adds nothing until one that does.
        const prefixes = await lm.tokenizer.decodeBatch(rows[i].map((_, k) => rows[i].slice(0, k + 1)), true);
        let sent = '';
        for (const p of prefixes) {
          const upto = p.length > text.length ? text : p;
          if (upto.length > sent.length && upto.startsWith(sent) && !upto.endsWith('\ufffd')) {
            deltas.push(upto.slice(sent.length));
            sent = upto;
          }
        }
        if (sent !== text) deltas = [text];
      }
      choices.push({ text, tokens: rows[i].length, finish: ended ? 'stop' : 'length', deltas });
    }
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
    const { choices, usage } = await complete(request, prompts, maxTokens, stopList, stream);
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (!stream) {
      return {
        id, object: 'text_completion', created, model,
        choices: choices.map((c, index) => ({ index, text: c.text, logprobs: null, finish_reason: c.finish })),
        usage,
      };
    }
    const chunks: object[] = [];
    const chunk = (index: number, text: string, finish: string | null) =>
      chunks.push({ id, object: 'text_completion', created, model, choices: [{ index, text, logprobs: null, finish_reason: finish }] });
    choices.forEach((c, index) => {
      for (const d of c.deltas) chunk(index, d, null);
      chunk(index, '', c.finish);
    });
    return sse(reply, chunks);
  });

  app.post('/v1/chat/completions', async (request, reply) => {
    const body = objectBody(request.body);
    const limit = body.max_completion_tokens ?? undefined;
    const { maxTokens, stopList, stream } = generationLimits(body, limit === undefined || limit === null ? undefined : int(body, 'max_completion_tokens', 16, 1, lm?.contextLength));
    const model = checkModel(body, names.llm);
    const messages = chatMessages(body);
    if (!lm!.tokenizer.config.chatTemplate) throw new ServeError(400, 'E_UNSUPPORTED', `the model '${model}' has no chat template; use /v1/completions`);
    const prompt = lm!.applyChatTemplate(messages, { addGenerationPrompt: true });
    const { choices, usage } = await complete(request, [prompt], maxTokens, stopList, stream);
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const c = choices[0];
    if (!stream) {
      return {
        id, object: 'chat.completion', created, model,
        choices: [{ index: 0, message: { role: 'assistant', content: c.text }, logprobs: null, finish_reason: c.finish }],
        usage,
      };
    }
    const head = { id, object: 'chat.completion.chunk', created, model };
    const chunks: object[] = [{ ...head, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] }];
    for (const d of c.deltas) chunks.push({ ...head, choices: [{ index: 0, delta: { content: d }, logprobs: null, finish_reason: null }] });
    chunks.push({ ...head, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: c.finish }] });
    return sse(reply, chunks);
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
