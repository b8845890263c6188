// Text-backend flags: how the OpenAI-compatible client
// survives a real service (--retries, --api-key-env) and the reference's vLLM prompt quirk
// (--double-bos, beside --chat-template). One builder and one argv mapping, so that
// every command that takes --generate-url gets the same flags with one call each:
//   builder: withBackendFlags(y)       options: ...backendFlagOptions(argv)
import type { Argv } from 'yargs';
import { DEFAULT_RETRIES } from '../pipeline/openai-generate.js';

export interface BackendFlagArgs {
  retries: number;
  'api-key-env'?: string;
  'double-bos': boolean;
}

/** What the flags mean for the library: OpenAIGeneratorOptions fields. */
export interface BackendFlagOptions {
  retries: number;
  apiKeyEnv?: string;
  /** For promptWrapper (native generation; a vLLM server adds its own BOS already). */
  doubleBos: boolean;
}

export function withBackendFlags<T>(y: Argv<T>): Argv<T & BackendFlagArgs> {
  return y
    .option('retries', {
      type: 'number',
      default: DEFAULT_RETRIES,
      describe: "retries of a --generate-url request after HTTP 429 / 5xx, a timeout or a network error (waits as the server's Retry-After says, else backs off exponentially)",
    })
    .option('api-key-env', {
      type: 'string',
      describe: 'environment variable holding the bearer token for --generate-url (default: OPENAI_API_KEY when set); the key itself stays off the command line and out of logs',
    })
    .option('double-bos', {
      type: 'boolean',
      default: false,
      describe: 'chat-templated prompts start with two BOS tokens, as vLLM 0.7.3 (the reference) tokenised them; gainrag uses one by default (see README)',
    }) as unknown as Argv<T & BackendFlagArgs>;
}

export function backendFlagOptions(argv: Partial<BackendFlagArgs>): BackendFlagOptions {
  const retries = argv.retries ?? DEFAULT_RETRIES;
  if (!Number.isInteger(retries) || retries < 0) throw new RangeError(`--retries must be a non-negative integer, got ${argv.retries}`);
  const out: BackendFlagOptions = { retries, doubleBos: argv['double-bos'] ?? false };
  if (argv['api-key-env'] !== undefined) out.apiKeyEnv = argv['api-key-env'];
  return out;
}
