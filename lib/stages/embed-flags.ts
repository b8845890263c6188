// The --embed-url flags of index build and retrieve: embed on a Text Embeddings Inference
// server (TEI or gainrag serve) instead of a local --encoder, batched and retried
// (lib/retrieval/remote-encoder.ts, lib/pipeline/tei-client.ts).
import type { Argv } from 'yargs';
import { DEFAULT_RETRIES } from '../pipeline/http-client.js';
import type { EmbedClientOptions } from '../retrieval/remote-encoder.js';

export interface EmbedUrlArgs {
  'embed-url'?: string;
  'embed-batch': number;
  retries: number;
  'embed-timeout': number;
  'api-key-env'?: string;
}

export function withEmbedUrlFlags<T>(y: Argv<T>): Argv<T & EmbedUrlArgs> {
  return y
    .option('embed-url', { type: 'string', conflicts: 'encoder', describe: 'embed on a Text Embeddings Inference server instead of --encoder (TEI or gainrag serve: POST /embed)' })
    .option('embed-batch', { type: 'number', default: 32, describe: "texts per --embed-url request (lowered to the server's max_client_batch_size)" })
    .option('retries', { type: 'number', default: DEFAULT_RETRIES, describe: "retries of an --embed-url request after HTTP 429 / 5xx, a timeout or a network error (after the server's Retry-After, else an exponential backoff)" })
    .option('embed-timeout', { type: 'number', default: 120, describe: 'seconds per --embed-url request' })
    .option('api-key-env', { type: 'string', describe: 'environment variable holding the bearer token for --embed-url (the key stays off the command line)' }) as unknown as Argv<T & EmbedUrlArgs>;
}

export function embedClientFromArgs(a: Partial<EmbedUrlArgs>): EmbedClientOptions {
  return {
    batchSize: a['embed-batch'] ?? 32,
    retries: a.retries ?? DEFAULT_RETRIES,
    timeoutMs: (a['embed-timeout'] ?? 120) * 1000,
    ...(a['api-key-env'] !== undefined ? { apiKeyEnv: a['api-key-env'] } : {}),
  };
}
