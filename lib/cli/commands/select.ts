// `gainrag select`: rerank retrieved passages plus the LLM's pseudo-passage with the trained
// selector and keep the top K (lib/stages/select.ts). Ctrl-C stops at the next group and keeps
// `<out>.partial` for `--resume`.
import { selectStage } from '../../stages/select.js';
import { textBackendArgs, textBackendFlags } from '../../stages/flags.js';
import { openTextBackend } from '../../pipeline/text-backend.js';
import type { TextGenerator } from '../../pipeline/openai-generate.js';
import type { ChatTemplateMode } from '../../pipeline/prompts.js';
import { stageCommand } from '../stage-command.js';

export const selectCommand = stageCommand(selectStage);

/** The text-backend flags (lib/stages/flags.ts), for commands that take them (compare). */
export interface GeneratorArgs {
  llm?: string;
  'generate-url'?: string;
  'generate-model'?: string;
  'generate-timeout': number;
  'generate-concurrency': number;
  'chat-template': ChatTemplateMode;
  'system-prompt': string;
  device?: string;
  dtype?: 'float32' | 'float16' | 'bfloat16';
}

export const generatorOptions = textBackendFlags;

/** The pseudo-passage writer the flags ask for (lib/pipeline/text-backend.ts); undefined without --llm or --generate-url. */
export async function pseudoWriter(argv: GeneratorArgs): Promise<{ generator: TextGenerator; wrap: (p: string) => string } | undefined> {
  const backend = await openTextBackend(textBackendArgs(argv));
  return backend && { generator: backend.generator, wrap: backend.wrap };
}
