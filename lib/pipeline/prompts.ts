// Prompt templates of the GainRAG reference (rag_workflow/prompts.py, llm_supervision and
// llm_inference/build_prompts.py). The strings must match byte for byte: the gain signals are
// perplexities of the answer given these exact prompts (checked against
// shared/fixtures/llama-tiny.reference.json in test/synthesize.test.ts).
import { dropsSystemMessage } from '../models/chat-template.js';

/** Prompt without retrieval ("standard" prompt). */
export const INSTRUCTION_WITHOUT_RETRIEVAL = '### Instruction:\n{instruction}\n\n### Input:\n{input}\n';
/** Prompt with one passage block in front. */
export const INSTRUCTION_WITH_RETRIEVAL = '{passage}\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n';

/**
 * Task instructions by name (the reference's TASK_INST; every open-QA task uses the same text).
 * `--task NAME` picks one; `--instruction TEXT` supplies any other.
 */
export const TASK_INSTRUCTIONS: Readonly<Record<string, string>> = Object.freeze({
  QA: 'Answer the question below concisely in a few words.',
  NaturalQA: 'Answer the question below concisely in a few words.',
  TriviaQA: 'Answer the question below concisely in a few words.',
  WebQuestions: 'Answer the question below concisely in a few words.',
  '2WikiMultiHopQA': 'Answer the question below concisely in a few words.',
  SQuAD: 'Answer the question below concisely in a few words.',
  HotpotQA: 'Answer the question below concisely in a few words.',
});

export const DEFAULT_TASK = 'QA';

/** The instruction for a task name (case-insensitive); RangeError naming the known tasks. */
export function taskInstruction(name: string = DEFAULT_TASK): string {
  const key = Object.keys(TASK_INSTRUCTIONS).find((k) => k.toLowerCase() === name.toLowerCase());
  if (key === undefined) {
    throw new RangeError(`unknown task "${name}" (known: ${Object.keys(TASK_INSTRUCTIONS).join(', ')}; or pass --instruction TEXT)`);
  }
  return TASK_INSTRUCTIONS[key];
}

/**
 * Instruction of the pseudo-passage ("background") prompt, verbatim from the reference,
 * including the space before the blank line and the one after it.
 */
export const BACKGROUND_INSTRUCTION =
  'Please provide background for the question below in 100 words. Do not respond with anything other than background. ' +
  'If you do not know or are unsure, please generate "N/A" directly. \n\n';

/**
 * System message the reference puts in front of every prompt for chat models (its
 * llama2_prompt / llama3_prompt); a shortened form of Meta's Llama-2 default system prompt.
 */
export const DEFAULT_SYSTEM_PROMPT =
  'You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being factually coherent. ' +
  "If you don't know the answer to a question, please don't share false information.";

// str.format_map with the three fields the templates use; `{` in the values is left alone.
function fill(template: string, fields: Record<string, string>): string {
  return template.replace(/\{(instruction|input|passage)\}/g, (_, key: string) => fields[key]);
}

export function standardPrompt(instruction: string, question: string): string {
  return fill(INSTRUCTION_WITHOUT_RETRIEVAL, { instruction, input: question });
}

/** The reference's one-passage evidence block (always numbered #1, two spaces before title/text). */
export function passageBlock(title: string, text: string): string {
  return `Passage #1  title:${title}\nPassage #1  text:${text}\n\n`;
}

export function retrievedPrompt(instruction: string, question: string, title: string, text: string): string {
  return fill(INSTRUCTION_WITH_RETRIEVAL, { passage: passageBlock(title, text), instruction, input: question });
}

/**
 * The reference's evaluation evidence (rag_generation.py): for each passage i (1-based)
 * `Passage #{i}{title}\nPassage #{i}{text}`, no space and no `title:`/`text:` labels (unlike the
 * synthesis block above), the passages joined by a blank line.
 */
export function evaluationEvidence(passages: readonly { title: string; text: string }[]): string {
  return passages.map((p, k) => `Passage #${k + 1}${p.title}\nPassage #${k + 1}${p.text}`).join('\n\n');
}

/**
 * The reference's evaluation prompt: `{evidence}\n\n### Instruction:...` over the given
 * passages, or the passage-free standard prompt when `passages` is null (--no-retrieval).
 */
export function evaluationPrompt(instruction: string, question: string, passages: readonly { title: string; text: string }[] | null): string {
  if (passages === null) return standardPrompt(instruction, question);
  return fill(INSTRUCTION_WITH_RETRIEVAL, { passage: evaluationEvidence(passages), instruction, input: question });
}

export function backgroundPrompt(question: string): string {
  return `${BACKGROUND_INSTRUCTION} Question: ${question}`;
}

export type ChatTemplateMode = 'auto' | 'none';

export interface ChatTemplater {
  /** Renders messages with the model's chat template; throws when the model has none. */
  applyChatTemplate(messages: { role: string; content: string }[], options?: { addGenerationPrompt?: boolean; doubleBos?: boolean }): string;
  /** The model's directory or name (CausalLM has it); see PromptWrapperOptions.modelName. */
  readonly dir?: string;
}

export interface PromptWrapperOptions {
  /**
   * Model name or path for the reference's rule: a name containing "mistral" (any case) gets no
   * system message. Default: the templater's `dir`.
   */
  modelName?: string;
  /** false: drop the system message only when the template rejects it, whatever the name. Default true. */
  systemByName?: boolean;
  /** Prompts as vLLM 0.7.3 tokenised them: BOS once more in front (ChatTemplateOptions.doubleBos). Default false. */
  doubleBos?: boolean;
}

/**
 * Returns a function that turns a raw prompt into the string the model sees. `auto` wraps it as
 * [system, user] with a generation prompt when the model has a chat template (as the reference
 * does for Llama-2/3 chat models) and leaves it raw otherwise. Mistral-family models get the user
 * message alone, as the reference's mistral_prompt: chosen by name as the reference does (see
 * PromptWrapperOptions), and also for any template that rejects a system role.
 */
export function promptWrapper(
  model: ChatTemplater,
  mode: ChatTemplateMode,
  hasTemplate: boolean,
  systemPrompt = DEFAULT_SYSTEM_PROMPT,
  options: PromptWrapperOptions = {},
): (prompt: string) => string {
  if (mode === 'none' || !hasTemplate) return (p) => p;
  const byName = (options.systemByName ?? true) && dropsSystemMessage(options.modelName ?? model.dir);
  let withSystem = systemPrompt.length > 0 && !byName;
  const render = { addGenerationPrompt: true, doubleBos: options.doubleBos ?? false };
  return (prompt) => {
    if (withSystem) {
      try {
        return model.applyChatTemplate(
          [
            { role: 'system', content: systemPrompt },
            { role: 'user', content: prompt },
          ],
          render,
        );
      } catch {
        withSystem = false;
      }
    }
    return model.applyChatTemplate([{ role: 'user', content: prompt }], render);
  };
}
