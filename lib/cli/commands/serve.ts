// `gainrag serve`: the encoder, reranker / selector and LLM behind TEI- and OpenAI-compatible
// HTTP endpoints (lib/serve). Runs until SIGTERM / SIGINT, then drains: no new connections,
// requests in flight finish, exit 0.
import type { CommandModule } from 'yargs';
import { GainragError } from '../../errors.js';
import type { ChatTemplateMode } from '../../pipeline/prompts.js';

interface Args {
  json: boolean;
  encoder?: string;
  reranker?: string;
  selector?: string;
  llm?: string;
  index?: string;
  host: string;
  port: number;
  device?: string;
  dtype?: 'float32' | 'float16' | 'bfloat16' | 'int8';
  'matmul-precision'?: 'highest' | 'high';
  pooling: 'mean' | 'cls';
  'max-length'?: number;
  'max-batch-tokens': number;
  'max-wait-ms': number;
  'max-queue': number;
  'max-body-bytes': number;
  'request-timeout-ms': number;
  'api-key-env'?: string;
  'chat-template': ChatTemplateMode;
  'system-prompt'?: string;
}

export const serveCommand: CommandModule<{ json: boolean }, Args> = {
  command: 'serve',
  describe: 'serve the encoder, reranker/selector and LLM over TEI- and OpenAI-compatible HTTP (with cross-request batching)',
  builder: (y) =>
    y
      .option('encoder', { type: 'string', describe: 'bi-encoder directory: /embed, /v1/embeddings, /retrieve' })
      .option('reranker', { type: 'string', describe: 'cross-encoder directory: /rerank' })
      .option('selector', { type: 'string', describe: 'trained selector (gainrag train): /rerank', conflicts: 'reranker' })
      .option('llm', { type: 'string', describe: 'causal LM directory: /v1/completions, /v1/chat/completions, /gain' })
      .option('index', { type: 'string', describe: 'index directory (gainrag index build): /retrieve; needs --encoder' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to bind (0.0.0.0: every interface)' })
      .option('port', { type: 'number', default: 8080, describe: 'port (0: a free one, printed at start)' })
      .option('device', { type: 'string', describe: 'cpu, cuda, cuda:N' })
      .option('dtype', { choices: ['float32', 'float16', 'bfloat16', 'int8'] as const, describe: 'model weights type (default float32; int8: dynamic int8 products, CPU with oneDNN)' })
      .option('matmul-precision', { choices: ['highest', 'high'] as const, describe: "encoder/reranker float32 products: highest (default) or high (bf16x3 on the bf16 units, CPU with oneDNN)" })
      .option('pooling', { choices: ['mean', 'cls'] as const, default: 'mean' as const, describe: 'encoder pooling' })
      .option('max-length', { type: 'number', describe: 'tokens per encoder input / reranker pair (default: the model maximum)' })
      .option('max-batch-tokens', { type: 'number', default: 16384, describe: 'estimated tokens packed into one engine call across requests' })
      .option('max-wait-ms', { type: 'number', default: 2, describe: 'longest a request waits for others to batch with' })
      .option('max-queue', { type: 'number', default: 512, describe: 'requests waiting per queue; more get 429 with Retry-After' })
      .option('max-body-bytes', { type: 'number', default: 2 * 1024 * 1024, describe: 'request body limit (larger: 413)' })
      .option('request-timeout-ms', { type: 'number', default: 60_000, describe: 'per-request limit; the work is cancelled and the answer is 504' })
      .option('api-key-env', { type: 'string', describe: 'environment variable holding a bearer key every route but /health requires' })
      .option('chat-template', { choices: ['auto', 'none'] as const, default: 'auto' as ChatTemplateMode, describe: "/gain prompts: the LLM's chat template (auto) or raw" })
      .option('system-prompt', { type: 'string', describe: "/gain prompts: system message (default: synthesize's)" }) as never,
  handler: async (argv) => {
    let apiKey: string | undefined;
    if (argv['api-key-env'] !== undefined) {
      apiKey = process.env[argv['api-key-env']];
      if (!apiKey) throw new GainragError('E_INVALID_ARG', `--api-key-env ${argv['api-key-env']}: that environment variable is not set or empty`);
    }
    // Loaded here: Fastify is not needed by the other commands.
    const { startServer } = await import('../../serve/server.js');
    const server = await startServer({
      encoder: argv.encoder,
      reranker: argv.reranker ?? argv.selector,
      llm: argv.llm,
      index: argv.index,
      device: argv.device as never,
      dtype: argv.dtype,
      matmulPrecision: argv['matmul-precision'],
      pooling: argv.pooling,
      maxLength: argv['max-length'],
      host: argv.host,
      port: argv.port,
      maxBatchTokens: argv['max-batch-tokens'],
      maxWaitMs: argv['max-wait-ms'],
      maxQueue: argv['max-queue'],
      maxBodyBytes: argv['max-body-bytes'],
      requestTimeoutMs: argv['request-timeout-ms'],
      apiKey,
      chatTemplate: argv['chat-template'],
      systemPrompt: argv['system-prompt'],
    });
    const routes = Object.keys(server.context.models.names).join(', ');
    process.stdout.write(argv.json ? `${JSON.stringify({ url: server.url, models: server.context.models.names })}\n` : `gainrag serve: listening on ${server.url} (${routes})\n`);
    await new Promise<void>((resolve, reject) => {
      const stop = (signal: string) => {
        process.stderr.write(`gainrag serve: ${signal}: draining\n`);
        server.close().then(resolve, reject);
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    process.stderr.write('gainrag serve: stopped\n');
  },
};
