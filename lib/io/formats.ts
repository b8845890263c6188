// Stage file formats: which one an output is written in, and which one an existing file is.
//
// Outputs are chosen by --format, else by extension, and an unknown extension is refused (a
// `.parquet` that silently holds JSONL is worse than an error). Inputs are recognised by their
// first bytes, whatever they are called:
//   jsonl    .jsonl .json    JSON lines, or one JSON array of records (lib/io/jsonl.ts)
//   arrow    .arrow .feather Arrow IPC file format: starts (and ends) with ARROW1
//   arrows   .arrows .ipc    Arrow IPC stream format: messages from the first byte (0xFFFFFFFF)
//   parquet  .parquet        Parquet (zstd): starts (and ends) with PAR1
// `.ipc` stays the stream format: it is what gainrag wrote for `.ipc` before the file format existed.
import { closeSync, openSync, readSync } from 'node:fs';
import { GainragError } from '../errors.js';
import { checkRegularFile } from './input-file.js';

export type RecordFormat = 'jsonl' | 'arrow' | 'arrows' | 'parquet';

export const FORMATS: readonly RecordFormat[] = ['jsonl', 'arrow', 'arrows', 'parquet'];

const BY_EXTENSION: Record<string, RecordFormat> = {
  '.jsonl': 'jsonl', '.json': 'jsonl', '.arrow': 'arrow', '.feather': 'arrow', '.arrows': 'arrows', '.ipc': 'arrows', '.parquet': 'parquet',
};

const LIST = '.jsonl/.json (JSONL), .arrow/.feather (Arrow IPC file), .arrows/.ipc (Arrow IPC stream), .parquet (Parquet)';

/** Arrow or Parquet: the columnar formats (lib/io/arrow-records.ts). */
export function isColumnar(format: RecordFormat): boolean {
  return format !== 'jsonl';
}

/**
 * The format a stage writes: `explicit` (--format) unless auto, else by the extension of `file`.
 * Errors: E_INVALID_ARG for an unknown --format or, with auto, an unknown extension.
 */
export function outputFormat(file: string, explicit?: string): RecordFormat {
  if (explicit !== undefined && explicit !== 'auto') {
    if ((FORMATS as readonly string[]).includes(explicit)) return explicit as RecordFormat;
    throw new GainragError('E_INVALID_ARG', `--format must be auto, ${FORMATS.join(', ')}; got ${JSON.stringify(explicit)}`);
  }
  const m = /\.[^./\\]+$/.exec(file);
  const format = m ? BY_EXTENSION[m[0].toLowerCase()] : undefined;
  if (!format) {
    throw new GainragError('E_INVALID_ARG', `${file}: unknown output format${m ? ` ${m[0]}` : ' (no extension)'}; name it ${LIST}, or pass --format ${FORMATS.join('|')}`);
  }
  return format;
}

/** The format of an existing file, by its first bytes (anything else is read as JSON). Errors: E_IO. */
export function inputFormat(file: string): RecordFormat {
  checkRegularFile(file); // before open(): a FIFO would block this thread
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw new GainragError('E_IO', `${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const b = Buffer.alloc(6);
    const n = readSync(fd, b, 0, 6, 0);
    if (n === 6 && b.toString('latin1') === 'ARROW1') return 'arrow';
    if (n >= 4 && b.readUInt32LE(0) === 0xffffffff) return 'arrows';
    if (n >= 4 && b.toString('latin1', 0, 4) === 'PAR1') return 'parquet';
    return 'jsonl';
  } finally {
    closeSync(fd);
  }
}
