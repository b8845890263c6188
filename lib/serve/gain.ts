// Our own routes: POST /retrieve (top-k passages of the index for queries, embedded through the
// embed queue, so they batch with /embed traffic) and POST /gain (what synthesize computes per
// passage: the contrastive perplexity PPL_CD of the gold answers given the passage, and the
// plain perplexity retrieved_ppl, with synthesize's prompts and chat-template wrapping).
import type { FastifyInstance } from 'fastify';
import { MAX_ALPHA } from '../pipeline/synthesize.js';
import { promptWrapper, retrievedPrompt, standardPrompt, taskInstruction, type ChatTemplateMode } from '../pipeline/prompts.js';
import { badRequest, notLoaded } from './errors.js';
import type { ServeContext } from './context.js';
import { estimateTokens } from './tei.js';
import { bool, int, num, objectBody, optStr, str, texts } from './validate.js';

/** JSON has no NaN / Infinity: a broken score is null (synthesize writes null for NaN too). */
function finite(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}

export function registerGain(app: FastifyInstance, ctx: ServeContext): void {
  const { encoder, lm } = ctx.models;

  app.post('/retrieve', async (request) => {
    const idx = ctx.models.index;
    if (!idx || !encoder || !ctx.embed) throw notLoaded('index', '--index DIR --encoder DIR');
    const body = objectBody(request.body);
    const { list, single } = texts(body, 'query');
    const k = int(body, 'top_k', 10, 1, idx.index.size);
    const withText = bool(body, 'return_text', true);
    const signal = ctx.signal(request);
    const specials = encoder.tokenizer.specialTokens.single;
    const estimate = list.reduce((n, t) => n + estimateTokens(Buffer.byteLength(t), specials, encoder.maxLength), 0);
    // As `gainrag retrieve`: raw (unnormalised) query embeddings; the index applies its metric.
    const rows = await ctx.embed.submit(list, estimate, 'raw', signal);
    const queries = new Float32Array(rows.length * encoder.dim);
    rows.forEach((r, i) => queries.set(r, i * encoder.dim));
    const { ids, scores } = await idx.index.search(queries, k, { signal });
    const results = list.map((_, q) => {
      const hits = [];
      for (let j = 0; j < k; j++) {
        const row = Number(ids[q * k + j]);
        if (row < 0) break; // fewer than k finite scores
        const p = idx.store.get(row);
        hits.push({ row, id: p.id, score: scores[q * k + j], ...(withText ? { title: p.title, text: p.text } : {}) });
      }
      return hits;
    });
    return { results: single ? results[0] : results };
  });

  app.post('/gain', async (request) => {
    if (!lm) throw notLoaded('LLM', '--llm DIR');
    const body = objectBody(request.body);
    const question = str(body, 'question');
    const answers = texts(body, 'answers').list;
    const passages = body.passages;
    if (!Array.isArray(passages) || passages.length === 0) throw badRequest(`'passages' must be a non-empty array of {title, text}`);
    const ps = passages.map((p, i) => {
      if (typeof p !== 'object' || p === null || typeof p.text !== 'string') throw badRequest(`'passages[${i}]' must be {title?: string, text: string}`);
      if (p.title !== undefined && p.title !== null && typeof p.title !== 'string') throw badRequest(`'passages[${i}].title' must be a string`);
      return { title: (p.title ?? '') as string, text: p.text as string };
    });
    const alpha = num(body, 'alpha', 0.5, 0, MAX_ALPHA);
    let instruction: string;
    try {
      instruction = optStr(body, 'instruction') ?? taskInstruction(optStr(body, 'task'));
    } catch (err) {
      throw badRequest((err as Error).message);
    }
    const mode = (optStr(body, 'chat_template') ?? ctx.options.chatTemplate) as ChatTemplateMode;
    if (mode !== 'auto' && mode !== 'none') throw badRequest(`'chat_template' must be 'auto' or 'none'`);
    const systemPrompt = optStr(body, 'system_prompt') ?? ctx.options.systemPrompt;
    const wrap = promptWrapper(lm, mode, Boolean(lm.tokenizer.config.chatTemplate), systemPrompt);
    const standard = standardPrompt(instruction, question);
    const raw = ps.map((p) => retrievedPrompt(instruction, question, p.title, p.text));
    const [r] = await lm.contrastivePerplexity(
      [{ standardPrompt: wrap(standard), contextPrompts: raw.map(wrap), answers }],
      { alpha, signal: ctx.signal(request) },
    );
    return {
      prompt_standard: standard,
      alpha,
      passages: ps.map((_, j) => ({
        index: j,
        prompt_retrieved: raw[j],
        PPL_CD: finite(r.min[j]),
        retrieved_ppl: finite(r.plainMin[j]),
        PPL_CD_per_answer: r.perAnswer.map((a) => finite(a[j])),
      })),
    };
  });
}
