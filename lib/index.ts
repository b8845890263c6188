// gainrag public API. Everything here is typed; the native addon stays private.
export { engineInfo, setThreads, type EngineInfo } from './engine.js';
export { SafetensorsFile, readSafetensors, decode16, type TensorMeta, type TensorData, type SafetensorsDType } from './safetensors.js';
export { GainragError, hasCode, type ErrorCode } from './errors.js';
export { type CallOptions } from './controls.js';
export { Tokenizer, type TokenBatch, type PairOptions, type TruncationStrategy } from './tokenizer.js';
export { Encoder, embeddingsToArrow, type EncoderLoadOptions, type EmbedOptions, type TextInput, type Pooling } from './models/encoder.js';
export { CrossEncoder, type ScoreOptions } from './models/cross-encoder.js';
export { CausalLM, type CausalLMOptions, type CausalLMInfo, type CausalLMStats, type ContrastiveItem, type ContrastiveResult, type ContrastiveOptions, type GenerateOptions, type GenerateResult } from './models/causal-lm.js';
export { renderChatTemplate, type ChatMessage, type ChatTemplateOptions } from './models/chat-template.js';
export { SelectorTrainer, type SelectorTrainerOptions, type StepResult, type TrainOptions, type TrainProgress, type TrainSummary, type TrainDType } from './training/selector-trainer.js';
export { loadTrainingData, checkRecord, type TrainRecord } from './training/data.js';
export { latestCheckpoint } from './training/train-loop.js';
export { normalizeAnswer, regexMatch, exactMatch, tokenF1, emMaxOverGold, f1MaxOverGold } from './metrics/index.js';
export { synthesize, checkSynthesizeOptions, nativeGenerator, type SynthesisModel, type SynthesizeOptions, type SynthesizeSummary } from './pipeline/synthesize.js';
export { filterSynthesized, bestPassageIndex, type FilterSummary } from './pipeline/filter.js';
export { toSelector, selectorRecord, gainScore, SELECTOR_PROMPT, type SelectorRecord, type ToSelectorSummary } from './pipeline/to-selector.js';
export { OpenAIGenerator, type OpenAIGeneratorOptions, type TextGenerator, type GenerationPrompt } from './pipeline/openai-generate.js';
export { TASK_INSTRUCTIONS, taskInstruction, standardPrompt, retrievedPrompt, backgroundPrompt, DEFAULT_SYSTEM_PROMPT, type ChatTemplateMode } from './pipeline/prompts.js';
