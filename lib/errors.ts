// Error codes shared by the native engine and the TypeScript layer. Native failures arrive as
// Error objects whose `code` is one of these; JS-side validation throws TypeError/RangeError,
// or GainragError for data problems found in files.

export type ErrorCode =
  | 'E_INVALID_ARG'
  | 'E_SAFETENSORS'
  | 'E_MODEL_CONFIG'
  | 'E_SHAPE'
  | 'E_OOM'
  | 'E_CANCELLED'
  | 'E_IO'
  | 'E_INDEX'
  | 'E_DATA'
  | 'E_UNSUPPORTED'
  | 'E_TORCH'
  | 'E_INTERNAL'
  | 'E_NO_ADDON'
  | 'E_TOKENIZER';

export class GainragError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GainragError';
    this.code = code;
  }
}

/** True when `err` carries the given gainrag error code (native or JS). */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
