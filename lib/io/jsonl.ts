// Streaming record I/O for QA data and pipeline outputs.
//
// readRecords streams JSONL line by line, and also accepts a file holding one JSON array of
// records (the reference code's `.json` format) without parsing it in one piece: the array is
// split into its top-level elements while streaming, so a multi-GB array never becomes one string.
// The format is decided by content (first non-blank character `[`), not by the file extension.
//
// Python's NaN / Infinity / -Infinity tokens are accepted, and non-finite numbers are written as
// valid JSON (+/-Infinity as 1e999 / -1e999, NaN as null): see json-values.ts. Inputs must be
// regular files (input-file.ts) of UTF-8 text (utf8-chunks.ts) with records of at most
// MAX_RECORD_CHARS; anything else is refused with FILE:LINE rather than read loosely.
//
// AtomicJsonlWriter writes to `<path>.partial` and renames onto `<path>` only in close(), so a
// reader never sees a half-written output under the final name, and a resumable job can reopen
// the partial file with {append: true} and continue where it stopped.
import { createReadStream, fstatSync, ftruncateSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';
import type { OutputLock } from './output.js';
import type { ManifestSpec } from './manifest.js';
import { PartialFile } from './partial-file.js';
import { parseJson, stringifyJson } from './json-values.js';
import { checkRegularFile } from './input-file.js';
import { Utf8Chunks } from './utf8-chunks.js';
import { inputFormat } from './formats.js';

// Columnar by its first bytes (regular files only: a pipe's bytes cannot be peeked at); a file
// that cannot be opened is left to the JSONL reader's errors.
function columnar(file: string): boolean {
  try {
    return statSync(file).isFile() && inputFormat(file) !== 'jsonl';
  } catch {
    return false;
  }
}

export interface RecordAt {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  record: any;
  /** 1-based line where the record starts. */
  line: number;
}

/**
 * Streams the records of a JSONL file or of a JSON array file; an Arrow or Parquet stage output
 * (recognised by its first bytes, lib/io/formats.ts) is read through lib/io/arrow-records.ts, with
 * `line` its 1-based record number. Errors: E_IO, E_DATA 'FILE:LINE: ...'.
 */
export async function* readRecords(file: string, from?: { byte: number; line: number }): AsyncGenerator<RecordAt> {
  if (!from && columnar(file)) {
    // Imported when needed: arrow-records reads the passage store, which reads JSONL through here.
    const { readArrowRecords } = await import('./arrow-read.js');
    let line = 0;
    for await (const record of readArrowRecords(file)) yield { record, line: ++line };
    return;
  }
  // `from` starts a JSONL file mid-way, at a line start (lib/io/records.ts finds shard offsets).
  checkRegularFile(file);
  const stream = createReadStream(file, { highWaterMark: 1 << 20, start: from?.byte ?? 0 });
  const name = path.basename(file);
  let mode: 'unknown' | 'jsonl' | 'array' = from && from.byte > 0 ? 'jsonl' : 'unknown';
  const lines = new LineSplitter(name);
  if (from) lines.line = from.line;
  const array = new ArraySplitter(name);
  const utf8 = new Utf8Chunks(name);
  try {
    for await (const bytes of stream as AsyncIterable<Buffer>) {
      let text = utf8.decode(bytes, mode === 'array' ? array.line : lines.line);
      if (mode === 'unknown') {
        if (lines.line === 1 && lines.pendingEmpty() && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
        const first = text.search(/\S/);
        if (first < 0) {
          lines.push(text, () => undefined); // only whitespace so far: keep line numbers right
          continue;
        }
        mode = text[first] === '[' ? 'array' : 'jsonl';
        if (mode === 'array') array.startAt(lines.line);
      }
      if (mode === 'jsonl') {
        // Lines are parsed as they are consumed: a reader that stops early (a shard's range)
        // never trips over a damaged line after its end.
        const out: [string, number][] = [];
        lines.push(text, (line, no) => out.push([line, no]));
        for (const [line, no] of out) yield parseLine(line, no, name);
      } else {
        yield* array.push(text);
      }
    }
    utf8.end(mode === 'array' ? array.line : lines.line);
    if (mode === 'jsonl') {
      const out: [string, number][] = [];
      lines.end((line, no) => out.push([line, no]));
      for (const [line, no] of out) yield parseLine(line, no, name);
    } else if (mode === 'array') {
      array.end();
    }
  } catch (err) {
    if (err instanceof GainragError) throw err;
    throw ioError(err, `cannot read ${file}`);
  } finally {
    stream.destroy();
  }
}

// Records deeper than this are refused when read: V8 parses any depth, but every recursive step
// after it (JSON.stringify in a writer, validation walks) overflows the stack with an uncoded
// RangeError. Real QA records are < 10 levels deep.
export const MAX_RECORD_DEPTH = 256;

/** E_DATA 'NAME:LINE: ...' when `text` (one JSON document) nests deeper than MAX_RECORD_DEPTH. */
export function checkDepth(text: string, line: number, name: string): void {
  // Cheap bound first: a document cannot be deeper than its number of opening brackets.
  let opens = 0;
  for (let i = text.indexOf('[') ; i >= 0 && opens <= MAX_RECORD_DEPTH; i = text.indexOf('[', i + 1)) opens++;
  for (let i = text.indexOf('{') ; i >= 0 && opens <= MAX_RECORD_DEPTH; i = text.indexOf('{', i + 1)) opens++;
  if (opens <= MAX_RECORD_DEPTH) return;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) {
      if (++depth > MAX_RECORD_DEPTH) throw new GainragError('E_DATA', `${name}:${line}: record is nested deeper than ${MAX_RECORD_DEPTH} levels`);
    } else if (c === 93 || c === 125) depth--;
  }
}

function parseLine(text: string, line: number, name: string): RecordAt {
  checkDepth(text, line, name);
  try {
    return { record: parseJson(text), line };
  } catch (err) {
    throw new GainragError('E_DATA', `${name}:${line}: invalid JSON (${(err as Error).message})`);
  }
}

// One record (a JSONL line or a JSON array element) longer than this is refused: without a bound
// a file with no newline (or /dev/zero behind a link) grows one string until the process dies.
export const MAX_RECORD_CHARS = 64 * 1024 * 1024;

function tooLong(name: string, line: number): GainragError {
  return new GainragError('E_DATA', `${name}:${line}: record is longer than ${MAX_RECORD_CHARS / (1024 * 1024)} Mi characters (is this a JSONL file?)`);
}

class LineSplitter {
  line = 1;
  // The unfinished line as pieces: joined once when its newline comes, not once per chunk.
  private rest: string[] = [];
  private restChars = 0;
  constructor(private readonly name: string) {}
  pendingEmpty(): boolean {
    return this.restChars === 0;
  }
  push(text: string, emit: (line: string, no: number) => void): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      this.emitLine(text.slice(start, nl), emit);
      start = nl + 1;
    }
    if (start < text.length) {
      this.rest.push(start === 0 ? text : text.slice(start));
      this.restChars += text.length - start;
      if (this.restChars > MAX_RECORD_CHARS) throw tooLong(this.name, this.line);
    }
  }
  end(emit: (line: string, no: number) => void): void {
    if (this.restChars > 0) this.emitLine('', emit);
  }
  private emitLine(tail: string, emit: (line: string, no: number) => void): void {
    let text = tail;
    if (this.rest.length > 0) {
      this.rest.push(tail);
      text = this.rest.join('');
      this.rest = [];
      this.restChars = 0;
    }
    if (text.length > MAX_RECORD_CHARS) throw tooLong(this.name, this.line);
    const line = text.trim();
    if (line.length > 0) emit(line, this.line);
    this.line++;
  }
}

// Splits `[ {...}, {...} ]` into element texts by tracking string/escape state and nesting depth.
class ArraySplitter {
  private depth = 0; // 1 = inside the top-level array
  private inString = false;
  private escape = false;
  private element: string[] = [];
  private elementChars = 0;
  private elementStart = -1; // line of the element's first character
  /** Line of the next character. */
  line = 1;
  private closed = false;
  private sawElement = false;
  private expectComma = false;
  constructor(private readonly name: string) {}

  startAt(line: number): void {
    this.line = line;
  }

  *push(text: string): Generator<RecordAt> {
    let segStart = -1; // start of the current element inside `text`
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10) this.line++;
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (c === 92) this.escape = true;
        else if (c === 34) this.inString = false;
        continue;
      }
      if (this.closed) {
        if (!isBlank(c)) this.fail('unexpected content after the closing ]');
        continue;
      }
      if (this.depth === 0) {
        if (c === 91) this.depth = 1;
        else if (!isBlank(c)) this.fail('expected [');
        continue;
      }
      if (this.depth === 1) {
        if (isBlank(c)) continue;
        if (c === 44) {
          if (!this.expectComma) this.fail('unexpected ,');
          this.expectComma = false;
          continue;
        }
        if (c === 93) {
          if (!this.expectComma && this.sawElement) this.fail('trailing , before ]');
          this.closed = true;
          continue;
        }
        if (this.expectComma) this.fail('expected , or ] between array elements');
        // An element starts here. Scalars are not records: insist on objects.
        if (c !== 123) this.fail('array elements must be JSON objects');
        this.elementStart = this.line;
        segStart = i;
        this.depth = 2;
        continue;
      }
      if (c === 34) this.inString = true;
      else if (c === 123 || c === 91) this.depth++;
      else if (c === 125 || c === 93) {
        this.depth--;
        if (this.depth === 1) {
          this.element.push(text.slice(segStart < 0 ? 0 : segStart, i + 1));
          const body = this.element.join('');
          this.element = [];
          this.elementChars = 0;
          if (body.length > MAX_RECORD_CHARS) throw tooLong(this.name, this.elementStart);
          segStart = -1;
          this.sawElement = true;
          this.expectComma = true;
          yield parseLine(body, this.elementStart, this.name);
        }
      }
    }
    if (this.depth >= 2) {
      const piece = text.slice(segStart < 0 ? 0 : segStart);
      this.element.push(piece);
      this.elementChars += piece.length;
      if (this.elementChars > MAX_RECORD_CHARS) throw tooLong(this.name, this.elementStart);
    }
  }

  end(): void {
    if (!this.closed) this.fail('unterminated JSON array');
  }

  private fail(message: string): never {
    throw new GainragError('E_DATA', `${this.name}:${this.line}: ${message}`);
  }
}

function isBlank(c: number): boolean {
  return c === 32 || c === 10 || c === 13 || c === 9;
}

export interface AtomicJsonlWriterOptions {
  /**
   * Continue an existing `<path>.partial` (a resumed job). A trailing incomplete line left by a
   * crash is cut off first, so every line in the file is a complete record.
   */
  append?: boolean;
  /** Files the job reads: opening refuses an output that is one of them (E_INVALID_ARG). */
  inputs?: string[];
  /** Publish `<path>.gainrag.json` with the output (lib/io/manifest.ts). */
  manifest?: ManifestSpec;
  /** A lock the caller holds on the output (then not released here). */
  lock?: OutputLock;
}

/** JSONL writer that only publishes the file under its final name once complete. */
export class AtomicJsonlWriter {
  readonly path: string;
  readonly partialPath: string;
  /** Records already in the partial file when it was opened with {append: true}. */
  readonly resumedRecords: number;
  private buffer: string[] = [];
  private buffered = 0;
  private written = 0;
  private readonly appendMode: boolean;
  private readonly file: PartialFile;

  private constructor(file: PartialFile, resumed: number, append: boolean) {
    this.file = file;
    this.path = file.path;
    this.partialPath = file.partialPath;
    this.resumedRecords = resumed;
    this.appendMode = append;
  }

  /**
   * Validates the output (see lib/io/output.ts: no directory, link, FIFO or input file) and
   * locks it before anything is written. Errors: E_INVALID_ARG, E_LOCKED, E_IO.
   */
  static open(file: string, options: AtomicJsonlWriterOptions = {}): AtomicJsonlWriter {
    const pf = PartialFile.open(file, { append: options.append, inputs: options.inputs, manifest: options.manifest, lock: options.lock });
    let kept = { lines: 0, bytes: 0 };
    if (pf.resumed) {
      try {
        kept = cutToLastNewline(pf.fd);
      } catch (err) {
        pf.discard(true);
        throw ioError(err, `cannot resume ${pf.partialPath}`);
      }
    }
    pf.position = kept.bytes;
    return new AtomicJsonlWriter(pf, kept.lines, options.append ?? false);
  }

  /**
   * Queues one record (one line). +/-Infinity are written as 1e999 / -1e999, NaN as null.
   * Throws TypeError for values JSON cannot represent.
   */
  write(record: unknown): void {
    if (!this.file.open) throw new GainragError('E_IO', `${this.path}: writer is closed`);
    const line = stringifyJson(record);
    if (line === undefined) throw new TypeError('AtomicJsonlWriter.write: record is not JSON-serialisable');
    this.buffer.push(line, '\n');
    this.buffered += line.length + 1;
    this.written++;
    if (this.buffered >= 1 << 20) this.flush();
  }

  /** Writes queued records to the partial file (not fsynced). */
  flush(): void {
    if (!this.file.open || this.buffer.length === 0) return;
    const data = Buffer.from(this.buffer.join(''), 'utf8');
    this.buffer = [];
    this.buffered = 0;
    this.file.write(data);
  }

  /** Flushes, fsyncs and renames `<path>.partial` onto `<path>` (then its manifest, if any). */
  close(): void {
    if (!this.file.open) return;
    this.flush(); // a failure leaves the writer open for abort()
    this.file.publish(this.resumedRecords + this.written);
  }

  /**
   * Stops without publishing. The partial file is kept when the writer was opened with
   * {append: true} (so the job can resume) unless keepPartial is false; otherwise it is removed.
   */
  abort(options: { keepPartial?: boolean } = {}): void {
    if (!this.file.open) return;
    const keep = options.keepPartial ?? this.appendMode;
    try {
      if (keep) this.flush();
    } finally {
      this.file.discard(keep);
    }
  }
}

// Truncates after the last '\n'; returns the complete lines kept and the new size.
function cutToLastNewline(fd: number): { lines: number; bytes: number } {
  const size = fstatSync(fd).size;
  const chunk = Buffer.allocUnsafe(1 << 16);
  let end = size;
  let keep = 0;
  // Find the last newline scanning backwards.
  outer: while (end > 0) {
    const start = Math.max(0, end - chunk.length);
    const n = readSync(fd, chunk, 0, end - start, start);
    for (let i = n - 1; i >= 0; i--) {
      if (chunk[i] === 10) {
        keep = start + i + 1;
        break outer;
      }
    }
    end = start;
  }
  if (keep !== size) ftruncateSync(fd, keep);
  // Count lines (one pass; partial files are outputs of this writer, so this is cheap next to a job).
  let lines = 0;
  for (let pos = 0; pos < keep; ) {
    const n = readSync(fd, chunk, 0, Math.min(chunk.length, keep - pos), pos);
    for (let i = 0; i < n; i++) if (chunk[i] === 10) lines++;
    pos += n;
  }
  return { lines, bytes: keep };
}
