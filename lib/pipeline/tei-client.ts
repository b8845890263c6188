// Clients of a Text Embeddings Inference server (Hugging Face TEI, or `gainrag serve`): the
// reranker select and compare score with (`POST /rerank`), and the bi-encoder index build and
// retrieve embed with (`POST /embed`), so a stack that already runs TEI needs no local models.
// Requests are batched (one /rerank call per question with all its candidates, cut into
// `batchSize` texts; /embed calls of `batchSize` texts), several in flight, retried like every
// service call (lib/pipeline/http-client.ts). Scores are TEI's raw logits (`raw_scores: true`),
// what the local CrossEncoder returns, and texts are truncated by the server (`truncate: true`),
// as the local models truncate.
import { GainragError } from '../errors.js';
import { JsonClient, type JsonClientOptions } from './http-client.js';

export interface TeiClientOptions extends JsonClientOptions {
  /** The server's base URL, e.g. http://127.0.0.1:8080. */
  url: string;
  /** Texts per request (default 32; TEI's default max-client-batch-size). */
  batchSize?: number;
  /** Requests in flight (default 4). */
  concurrency?: number;
}

function baseUrl(raw: string, flag: string): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new GainragError('E_INVALID_ARG', `${flag}: not a URL: ${JSON.stringify(raw)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new GainragError('E_INVALID_ARG', `${flag}: expected http(s)://, got ${u.protocol}`);
  u.pathname = u.pathname.replace(/\/+(embed|rerank|info)?\/*$/, '') + '/';
  return u;
}

/** Runs `jobs` with at most `n` in flight; results in job order. */
async function pool<T>(jobs: (() => Promise<T>)[], n: number): Promise<T[]> {
  const out = new Array<T>(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, jobs.length) }, worker));
  return out;
}

abstract class TeiClient {
  readonly description: string;
  protected readonly base: URL;
  protected readonly http: JsonClient;
  protected batchSize: number;
  protected readonly concurrency: number;

  constructor(options: TeiClientOptions, flag: string) {
    this.base = baseUrl(options.url, flag);
    this.http = new JsonClient({ ...options, cancelledMessage: `${flag} request was cancelled` });
    this.batchSize = options.batchSize ?? 32;
    this.concurrency = options.concurrency ?? 4;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${options.batchSize}`);
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${options.concurrency}`);
    this.description = `TEI at ${this.base.href}`;
  }

  /** Texts per request; a server's own limit (TEI's max_client_batch_size) lowers it. */
  get textsPerRequest(): number {
    return this.batchSize;
  }

  limitBatchSize(max: number): void {
    if (Number.isInteger(max) && max >= 1) this.batchSize = Math.min(this.batchSize, max);
  }

  protected endpoint(name: string): URL {
    return new URL(name, this.base);
  }
}

/** A reranker served by TEI: what select needs of a PairScorer (one relevance logit per pair). */
export class TeiReranker extends TeiClient {
  readonly numLabels = 1;

  constructor(options: TeiClientOptions) {
    super(options, '--rerank-url');
  }

  /** Raw logits of (queries[i], passages[i]); pairs of one query go together, `batchSize` texts a call. */
  async score(queries: string[], passages: string[], options: { signal?: AbortSignal } = {}): Promise<Float32Array> {
    if (queries.length !== passages.length) throw new RangeError(`queries and passages differ in length: ${queries.length} vs ${passages.length}`);
    const out = new Float32Array(queries.length);
    const jobs: (() => Promise<void>)[] = [];
    for (let start = 0; start < queries.length; ) {
      // A run of equal queries (select sends each question's candidates together), cut into batches.
      let end = start + 1;
      while (end < queries.length && end - start < this.batchSize && queries[end] === queries[start]) end++;
      const [from, to] = [start, end];
      jobs.push(async () => {
        const body = { query: queries[from], texts: passages.slice(from, to), raw_scores: true, truncate: true, return_text: false };
        const answer = await this.http.request(this.endpoint('rerank'), body, options.signal);
        if (!Array.isArray(answer)) throw new GainragError('E_DATA', `${this.endpoint('rerank').href}: answer is not a list of {index, score}`);
        const seen = new Set<number>();
        for (const r of answer as { index?: unknown; score?: unknown }[]) {
          const i = r?.index;
          if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= to - from || typeof r.score !== 'number' || seen.has(i)) {
            throw new GainragError('E_DATA', `${this.endpoint('rerank').href}: bad entry ${JSON.stringify(r)} for ${to - from} texts`);
          }
          seen.add(i);
          out[from + i] = r.score;
        }
        if (seen.size !== to - from) throw new GainragError('E_DATA', `${this.endpoint('rerank').href}: ${seen.size} scores for ${to - from} texts`);
      });
      start = end;
    }
    await pool(jobs, this.concurrency);
    return out;
  }

  /** Every query leaves room for a passage on the server side (it truncates); nothing to skip here. */
  async queryFits(): Promise<boolean> {
    return true;
  }
}

/** A bi-encoder served by TEI (`POST /embed`): vectors as the server gives them (its pooling and normalisation). */
export class TeiEmbedder extends TeiClient {
  /** Known after the first call. */
  dim = 0;

  constructor(options: TeiClientOptions) {
    super(options, '--embed-url');
  }

  /** The server's GET /info (TEI's fields: model_id, model_type.embedding.pooling, max_client_batch_size ...). */
  async info(options: { signal?: AbortSignal } = {}): Promise<Record<string, unknown>> {
    const answer = await this.http.request(this.endpoint('info'), undefined, options.signal);
    if (typeof answer !== 'object' || answer === null || Array.isArray(answer)) throw new GainragError('E_DATA', `${this.endpoint('info').href}: answer is not an object`);
    return answer as Record<string, unknown>;
  }

  /** n x dim, row-major. `normalize`: L2-normalised by the server (TEI's default, true) or as pooled. */
  async embed(texts: string[], options: { signal?: AbortSignal; normalize?: boolean } = {}): Promise<Float32Array> {
    const jobs: (() => Promise<number[][]>)[] = [];
    const normalize = options.normalize ?? true;
    for (let s = 0; s < texts.length; s += this.batchSize) {
      const part = texts.slice(s, s + this.batchSize);
      jobs.push(async () => {
        const answer = await this.http.request(this.endpoint('embed'), { inputs: part, truncate: true, normalize }, options.signal);
        if (!Array.isArray(answer) || answer.length !== part.length || !answer.every((v) => Array.isArray(v) && v.every((x) => typeof x === 'number'))) {
          throw new GainragError('E_DATA', `${this.endpoint('embed').href}: answer is not ${part.length} vectors of numbers`);
        }
        return answer as number[][];
      });
    }
    const rows = (await pool(jobs, this.concurrency)).flat();
    if (rows.length > 0) {
      const dim = rows[0].length;
      if (dim === 0 || rows.some((r) => r.length !== dim) || (this.dim !== 0 && dim !== this.dim)) throw new GainragError('E_DATA', `${this.endpoint('embed').href}: vectors of different sizes`);
      this.dim = dim;
    }
    const out = new Float32Array(rows.length * this.dim);
    rows.forEach((r, i) => out.set(r, i * this.dim));
    return out;
  }
}
