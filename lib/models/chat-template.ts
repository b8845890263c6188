// Chat templates from tokenizer_config.json, rendered with @huggingface/jinja the way
// transformers' apply_chat_template renders them (messages, add_generation_prompt, and the
// special tokens as bos_token / eos_token).
import { Template } from '@huggingface/jinja';
import { GainragError } from '../errors.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** Append the assistant header so the model answers next (default true). */
  addGenerationPrompt?: boolean;
  /** Extra template variables (e.g. `date_string`). */
  variables?: Record<string, unknown>;
  /**
   * Put bos_token once more in front of the rendered text. vLLM 0.7.3 (which the reference ran)
   * tokenises a rendered prompt with the tokenizer's special tokens, so a template that renders
   * BOS itself reaches the model with two; gainrag tokenises rendered prompts without them (one
   * BOS). Default false.
   */
  doubleBos?: boolean;
}

/**
 * Whether the reference gives this model its prompt without a system message: it picks its
 * Mistral prompt by model name (any name or path containing "mistral", any case), not by what
 * the template accepts.
 */
export function dropsSystemMessage(modelName: string | undefined): boolean {
  return modelName !== undefined && /mistral/i.test(modelName);
}

/**
 * A chat templater over a tokenizer's config alone (no weights), e.g. for a served model whose
 * directory only lends its template; `dir` names the model for dropsSystemMessage.
 */
export function configTemplater(config: { chatTemplate?: string; bosToken?: string; eosToken?: string }, dir: string) {
  return {
    dir,
    applyChatTemplate: (messages: ChatMessage[], options?: ChatTemplateOptions) =>
      renderChatTemplate(config.chatTemplate, messages, { bosToken: config.bosToken, eosToken: config.eosToken }, options, dir),
  };
}

const compiled = new Map<string, Template>();

export function renderChatTemplate(
  template: string | undefined,
  messages: ChatMessage[],
  specials: { bosToken?: string; eosToken?: string },
  options: ChatTemplateOptions = {},
  where = 'this model',
): string {
  if (!template) {
    throw new GainragError('E_MODEL_CONFIG', `${where} has no chat_template in tokenizer_config.json; build the prompt text yourself`);
  }
  if (!Array.isArray(messages) || messages.length === 0) throw new RangeError('messages must be a non-empty array');
  for (const [i, m] of messages.entries()) {
    if (!m || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw new TypeError(`messages[${i}] must be {role: string, content: string}`);
    }
  }
  let t = compiled.get(template);
  if (!t) {
    try {
      t = new Template(template);
    } catch (err) {
      throw new GainragError('E_MODEL_CONFIG', `${where}: chat_template does not parse: ${(err as Error).message}`, { cause: err });
    }
    compiled.set(template, t);
  }
  let text: string;
  try {
    text = t.render({
      ...options.variables,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: specials.bosToken ?? '',
      eos_token: specials.eosToken ?? '',
    });
  } catch (err) {
    throw new GainragError('E_DATA', `${where}: chat_template failed to render: ${(err as Error).message}`, { cause: err });
  }
  return options.doubleBos && specials.bosToken ? specials.bosToken + text : text;
}
