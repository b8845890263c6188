// The models one `gainrag serve` process holds: loaded once at start, shared by every request,
// disposed at shutdown.
import path from 'node:path';
import { GainragError } from '../errors.js';
import { CausalLM } from '../models/causal-lm.js';
import { CrossEncoder } from '../models/cross-encoder.js';
import { Encoder, type Device, type EncoderDType, type MatmulPrecision, type Pooling } from '../models/encoder.js';
import { DenseIndex } from '../retrieval/dense-index.js';
import { PassageStore } from '../io/passages.js';

export interface ServeModelOptions {
  /** Bi-encoder directory: /embed, /v1/embeddings, and the queries of /retrieve. */
  encoder?: string;
  /** Cross-encoder directory (a reranker or a trained selector): /rerank. */
  reranker?: string;
  /** Causal LM directory: /v1/completions, /v1/chat/completions, /gain. */
  llm?: string;
  /** Index directory (gainrag index build): /retrieve; needs `encoder`. */
  index?: string;
  device?: Device;
  dtype?: EncoderDType;
  /** The encoder's and reranker's float32 products: 'highest' (default) or 'high' (bf16x3). */
  matmulPrecision?: MatmulPrecision;
  pooling?: Pooling;
  /** Tokens per encoder input / reranker pair (default: the model's). */
  maxLength?: number;
}

export interface ServeModels {
  encoder?: Encoder;
  reranker?: CrossEncoder;
  lm?: CausalLM;
  index?: { index: DenseIndex; store: PassageStore; dir: string };
  /** Model names, as /v1/models and /info give them (directory base names). */
  names: { encoder?: string; reranker?: string; llm?: string };
  dispose(): Promise<void>;
}

function nameOf(dir: string): string {
  return path.basename(path.resolve(dir));
}

/** Loads what the options name; E_INVALID_ARG when they name nothing or an index without an encoder. */
export async function loadServeModels(o: ServeModelOptions): Promise<ServeModels> {
  if (!o.encoder && !o.reranker && !o.llm) throw new GainragError('E_INVALID_ARG', 'serve needs at least one model: --encoder, --reranker/--selector or --llm');
  if (o.index && !o.encoder) throw new GainragError('E_INVALID_ARG', '--index needs --encoder (the queries are embedded with it)');
  const m: ServeModels = {
    names: {},
    async dispose() {
      m.index?.store.close();
      await Promise.all([m.encoder?.dispose(), m.reranker?.dispose(), m.lm?.dispose(), m.index?.index.dispose()]);
    },
  };
  try {
    if (o.encoder) {
      m.encoder = await Encoder.load(o.encoder, { device: o.device, dtype: o.dtype, matmulPrecision: o.matmulPrecision, pooling: o.pooling, maxLength: o.maxLength });
      m.names.encoder = nameOf(o.encoder);
    }
    if (o.reranker) {
      m.reranker = await CrossEncoder.load(o.reranker, { device: o.device, dtype: o.dtype, matmulPrecision: o.matmulPrecision, maxLength: o.maxLength });
      m.names.reranker = nameOf(o.reranker);
      if (m.reranker.numLabels !== 1) {
        throw new GainragError('E_MODEL_CONFIG', `${o.reranker}: /rerank needs a single-logit cross-encoder, this one has ${m.reranker.numLabels} labels`);
      }
    }
    if (o.llm) {
      m.lm = await CausalLM.load(o.llm, { device: o.device, dtype: o.dtype });
      m.names.llm = nameOf(o.llm);
    }
    if (o.index) {
      const index = await DenseIndex.open(o.index);
      const store = PassageStore.open(o.index);
      m.index = { index, store, dir: o.index };
      if (store.size !== index.size) throw new GainragError('E_INDEX', `${o.index}: the passage store has ${store.size} passages but the index ${index.size} vectors`);
      if (m.encoder!.dim !== index.dim) throw new GainragError('E_SHAPE', `the encoder embeds in ${m.encoder!.dim} dimensions but the index has ${index.dim}`);
    }
  } catch (err) {
    await m.dispose().catch(() => undefined);
    throw err;
  }
  return m;
}
