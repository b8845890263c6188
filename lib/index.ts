// gainrag public API. Everything here is typed; the native addon stays private.
export { engineInfo, setThreads, type EngineInfo } from './engine.js';
export { SafetensorsFile, readSafetensors, decode16, type TensorMeta, type TensorData, type SafetensorsDType } from './safetensors.js';
export { GainragError, hasCode, type ErrorCode } from './errors.js';
export { type CallOptions } from './controls.js';
export { Tokenizer, type TokenBatch, type PairOptions, type TruncationStrategy } from './tokenizer.js';
