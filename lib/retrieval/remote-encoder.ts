// A bi-encoder on a Text Embeddings Inference server (TEI, or `gainrag serve --encoder`), for
// `index build --embed-url` and `retrieve --embed-url`: what those commands use of an Encoder
// (dim, embedQueries, embedPassages, record) over POST /embed. The server pools and truncates;
// normalisation is asked per request (TEI's `normalize`), and the query / passage prefixes are
// put in front here, as the local Encoder does. GET /info names the model (recorded in the
// index manifest instead of a weights fingerprint) and its per-request batch limit.
import { GainragError } from '../errors.js';
import type { CallOptions } from '../controls.js';
import { Encoder, type Device, type EncoderLoadOptions, type EncoderRecord } from '../models/encoder.js';
import { TeiEmbedder, type TeiClientOptions } from '../pipeline/tei-client.js';

/** What index build and retrieve need of an encoder; Encoder and RemoteEncoder both are one. */
export interface TextEncoder {
  readonly dim: number;
  embedQueries(texts: string[], options?: CallOptions): Promise<Float32Array>;
  embedPassages(texts: string[], options?: CallOptions): Promise<Float32Array>;
  record(): EncoderRecord;
  dispose(): void | Promise<void>;
}

export interface RemoteEncoderOptions extends TeiClientOptions {
  /** L2-normalise (default true, TEI's default). */
  normalize?: boolean;
  queryPrefix?: string;
  passagePrefix?: string;
  signal?: AbortSignal;
}

export class RemoteEncoder implements TextEncoder {
  private constructor(
    private readonly client: TeiEmbedder,
    readonly dim: number,
    readonly normalize: boolean,
    readonly queryPrefix: string,
    readonly passagePrefix: string,
    /** The server's /info model_id and pooling. */
    readonly modelId: string | null,
    readonly pooling: string,
    readonly url: string,
  ) {}

  /** Reads the server's /info and embeds one probe text for the dimension. Errors: E_IO (unreachable, refused), E_DATA (not a TEI answer). */
  static async open(options: RemoteEncoderOptions): Promise<RemoteEncoder> {
    const client = new TeiEmbedder(options);
    const info = await client.info({ signal: options.signal });
    const limit = info.max_client_batch_size;
    if (typeof limit === 'number') client.limitBatchSize(limit);
    const modelId = typeof info.model_id === 'string' ? info.model_id : null;
    const type = info.model_type as { embedding?: { pooling?: unknown } } | undefined;
    if (type !== undefined && type !== null && typeof type === 'object' && !('embedding' in type)) {
      throw new GainragError('E_INVALID_ARG', `--embed-url ${options.url}: the server serves ${JSON.stringify(Object.keys(type))}, not an embedding model`);
    }
    const pooling = typeof type?.embedding?.pooling === 'string' ? type.embedding.pooling : 'unknown';
    const normalize = options.normalize ?? true;
    await client.embed(['dimension probe'], { signal: options.signal, normalize });
    return new RemoteEncoder(client, client.dim, normalize, options.queryPrefix ?? '', options.passagePrefix ?? '', modelId, pooling, client.description.replace(/^TEI at /, ''));
  }

  private embed(texts: string[], prefix: string, options: CallOptions = {}): Promise<Float32Array> {
    return this.client.embed(prefix ? texts.map((t) => prefix + t) : texts, { signal: options.signal, normalize: this.normalize });
  }

  embedQueries(texts: string[], options?: CallOptions): Promise<Float32Array> {
    return this.embed(texts, this.queryPrefix, options);
  }

  embedPassages(texts: string[], options?: CallOptions): Promise<Float32Array> {
    return this.embed(texts, this.passagePrefix, options);
  }

  record(): EncoderRecord {
    return {
      ref: this.url, revision: null, weights: null, pooling: this.pooling, normalize: this.normalize,
      queryPrefix: this.queryPrefix, passagePrefix: this.passagePrefix, url: this.url, modelId: this.modelId,
    };
  }

  dispose(): void {}
}

/** The --embed-url client settings beside the URL. */
export type EmbedClientOptions = Omit<TeiClientOptions, 'url'>;

/** Where the vectors come from: a local model (`encoder`) or a server (`embedUrl`), exactly one. */
export interface TextEncoderSource extends Pick<EncoderLoadOptions, 'pooling' | 'normalize' | 'queryPrefix' | 'passagePrefix' | 'hub' | 'matmulPrecision'> {
  encoder?: string;
  /** The local encoder's dtype (float32, bfloat16, int8, float16). */
  encoderDType?: EncoderLoadOptions['dtype'];
  embedUrl?: string;
  embedClient?: EmbedClientOptions;
  device?: Device;
  maxLength?: number;
  signal?: AbortSignal;
}

/** Loads the local encoder or opens the server's; E_INVALID_ARG for both, neither, or local-only settings with a URL. */
export async function openTextEncoder(o: TextEncoderSource): Promise<TextEncoder> {
  if ((o.encoder === undefined) === (o.embedUrl === undefined)) throw new GainragError('E_INVALID_ARG', 'give one of --encoder (a local model) or --embed-url URL (a TEI-compatible server)');
  if (o.embedUrl === undefined) {
    const { pooling, normalize, queryPrefix, passagePrefix, hub, matmulPrecision } = o;
    return Encoder.load(o.encoder!, { device: o.device, dtype: o.encoderDType, matmulPrecision, maxLength: o.maxLength, pooling, normalize, queryPrefix, passagePrefix, hub });
  }
  // The server owns these; taking them silently would promise what it does not do.
  for (const [key, flag] of [['device', '--device'], ['maxLength', '--max-length'], ['pooling', '--pooling'], ['encoderDType', '--encoder-dtype'], ['matmulPrecision', '--matmul-precision']] as const) {
    if (o[key] !== undefined) throw new GainragError('E_INVALID_ARG', `${flag} does not apply with --embed-url: the server runs, pools and truncates the model`);
  }
  return RemoteEncoder.open({ ...o.embedClient, url: o.embedUrl, normalize: o.normalize, queryPrefix: o.queryPrefix, passagePrefix: o.passagePrefix, signal: o.signal });
}
