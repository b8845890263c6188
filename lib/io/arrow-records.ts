// Arrow IPC (file and stream format) and Parquet stage outputs, and their records back.
//
// A columnar stage output is a schema message, one record batch per stage batch (flush()) and the
// end-of-stream marker; the file format (.arrow) puts ARROW1 before that and a footer (the batch
// offsets) after it, the stream format (.arrows) is just that, and Parquet (.parquet) is written
// as an Arrow stream in OUT.partial and converted (lib/io/parquet.ts) when the output is closed.
// Layouts (kinds, named in the schema metadata under gainrag.kind):
//   columns    typed, flat columns (lib/io/columns.ts), what every stage writes now;
//   json       one Utf8 column `record` holding each record as JSON (what later stages wrote
//              before the columns; read, and written on request);
//   retrieval  older retrieval outputs (question fields, List<Int64> ctx_ids, List<Float32>
//              ctx_scores, List<Bool> ctx_hasanswer; passage text resolved from the passage
//              store of the index in gainrag.index): read only.
//
// Streams are framed here at the message level (continuation marker, metadata length, metadata,
// body), which is what lets `merge` concatenate shard outputs without re-encoding anything
// (lib/io/arrow-merge.ts), and --resume cut a partial output back to its last complete batch.
// Reading files back: lib/io/arrow-read.ts.
import { closeSync, createReadStream, fstatSync, ftruncateSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import {
  Field, Message, MetadataVersion, RecordBatch, RecordBatchFileReader, RecordBatchStreamReader, RecordBatchStreamWriter, Schema, Struct, Utf8, makeData, vectorFromArray,
} from 'apache-arrow';
import { FileBlock, Footer } from 'apache-arrow/ipc/metadata/file';
import { GainragError } from '../errors.js';
import type { ManifestSpec } from './manifest.js';
import { PartialFile } from './partial-file.js';
import { parseJson, stringifyJson } from './json-values.js';
import { encodeBatch, inferLayout, layoutSchema, schemaLayout, type Layout } from './columns.js';
import { decodeBatch } from './columns-read.js';
import { inputFormat } from './formats.js';
import { parquetInfo, writeParquetStream } from './parquet.js';

export type ArrowKind = 'columns' | 'json';
/** How a columnar output is stored: Arrow IPC file or stream format, or Parquet. */
export type ArrowContainer = 'file' | 'stream' | 'parquet';

export const MAGIC = new Uint8Array([0x41, 0x52, 0x52, 0x4f, 0x57, 0x31, 0, 0]); // "ARROW1" + padding to 8
export const EOS = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

function jsonSchema(metadata: Record<string, string>): Schema {
  const meta = new Map(Object.entries({ ...metadata, 'gainrag.kind': 'json' }).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return new Schema([new Field('record', new Utf8(), false)], meta);
}

function encodeJson(schema: Schema, rows: unknown[]): RecordBatch {
  const col = vectorFromArray(rows.map((r) => stringifyJson(r) as string), new Utf8());
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children: [col.data[0]] }));
}

/** Byte ranges of the messages of an IPC stream held in memory. */
export interface MessageSpan {
  start: number;
  end: number;
  /** Bytes before the body: length prefix and metadata (the file footer's metaDataLength). */
  meta: number;
  header: number; // MessageHeader: 1 schema, 2 dictionary batch, 3 record batch
  rows: number;
}

function parseAt(buf: Uint8Array, at: number, name: string): MessageSpan | 'eos' {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (at + 8 > buf.length) throw new GainragError('E_DATA', `${name}: Arrow stream is truncated (no end-of-stream marker)`);
  let meta = at + 4;
  let len = dv.getUint32(at, true);
  if (len === 0xffffffff) {
    len = dv.getInt32(at + 4, true);
    meta = at + 8;
  }
  if (len === 0) return 'eos';
  if (len < 0 || meta + len > buf.length) throw new GainragError('E_DATA', `${name}: Arrow message at byte ${at} is truncated or damaged`);
  let msg: Message;
  try {
    msg = Message.decode(buf.subarray(meta, meta + len));
  } catch (err) {
    throw new GainragError('E_DATA', `${name}: Arrow message at byte ${at} is not valid (${(err as Error).message})`);
  }
  const end = meta + len + Number(msg.bodyLength);
  if (end > buf.length) throw new GainragError('E_DATA', `${name}: Arrow message at byte ${at} is truncated`);
  const rows = msg.isRecordBatch() ? Number((msg.header() as { length: number }).length) : 0;
  return { start: at, end, meta: meta + len - at, header: msg.headerType, rows };
}

/** Splits one complete IPC stream in memory into its messages (without the end marker). */
export function splitStream(buf: Uint8Array, name = 'stream'): MessageSpan[] {
  const out: MessageSpan[] = [];
  for (let at = 0; ; ) {
    const m = parseAt(buf, at, name);
    if (m === 'eos') return out;
    out.push(m);
    at = m.end;
  }
}

/** One message read from a file. */
export interface FileMessage {
  bytes: Buffer;
  header: number;
  rows: number;
  /** File offset of the message, and its metaDataLength / bodyLength (file footer blocks). */
  offset: number;
  meta: number;
  body: number;
}

// Streams the messages of an IPC stream (from byte `start` of a file) without holding more than one.
export class ArrowMessageFile {
  private readonly fd: number;
  readonly size: number;
  pos: number;
  constructor(readonly file: string, start = 0) {
    this.pos = start;
    try {
      this.fd = openSync(file, 'r');
      this.size = fstatSync(this.fd).size;
    } catch (err) {
      throw new GainragError('E_IO', `${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  read(n: number, at: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const k = readSync(this.fd, b, got, n - got, at + got);
      if (k === 0) break;
      got += k;
    }
    return got === n ? b : b.subarray(0, got);
  }
  /** Next message as raw bytes plus its kind; undefined at the end-of-stream marker. */
  next(readBody = true): FileMessage | undefined {
    const prefix = this.read(8, this.pos);
    const name = path.basename(this.file);
    if (prefix.length < 8) throw new GainragError('E_DATA', `${name}: Arrow stream is truncated (no end-of-stream marker)`);
    const cont = prefix.readUInt32LE(0) === 0xffffffff;
    const len = cont ? prefix.readInt32LE(4) : prefix.readInt32LE(0);
    if (len === 0) return undefined;
    const metaStart = this.pos + (cont ? 8 : 4);
    const meta = this.read(Math.max(len, 0), metaStart);
    const headerBuf = Buffer.concat([prefix.subarray(0, cont ? 8 : 4), meta]);
    let msg: Message;
    try {
      if (meta.length < len || len < 0) throw new Error('truncated');
      msg = Message.decode(meta);
    } catch (err) {
      throw new GainragError('E_DATA', `${name}: Arrow message at byte ${this.pos} is damaged (${(err as Error).message})`);
    }
    const bodyLength = Number(msg.bodyLength);
    if (metaStart + len + bodyLength > this.size) throw new GainragError('E_DATA', `${name}: Arrow message at byte ${this.pos} is truncated`);
    const body = readBody ? this.read(bodyLength, metaStart + len) : Buffer.alloc(0);
    const offset = this.pos;
    this.pos = metaStart + len + bodyLength;
    const rows = msg.isRecordBatch() ? Number((msg.header() as { length: number }).length) : 0;
    return { bytes: Buffer.concat([headerBuf, body]), header: msg.headerType, rows, offset, meta: metaStart + len - offset, body: bodyLength };
  }
  close(): void {
    closeSync(this.fd);
  }
}

/** Where the stream of an Arrow file starts: 8 for the file format (after ARROW1), else 0. */
export function streamStart(file: string): number {
  return inputFormat(file) === 'arrow' ? MAGIC.length : 0;
}

// The file format ends with footer, footer length and ARROW1: a file cut short is damaged.
function checkFileTail(f: ArrowMessageFile): void {
  const tail = f.read(10, f.size - 10);
  if (f.size < 26 || tail.toString('latin1', 4) !== 'ARROW1') throw new GainragError('E_DATA', `${path.basename(f.file)}: Arrow file is truncated (no footer)`);
}

// An Arrow IPC file another tool wrote (no gainrag.kind in its schema). Not every writer puts the
// end-of-stream marker before the footer (apache-arrow's does not), so such files are read
// through their footer, by apache-arrow's file reader, in memory.
export function foreignFile(file: string): boolean {
  if (streamStart(file) === 0) return false;
  const f = new ArrowMessageFile(file, MAGIC.length);
  try {
    const m = f.next();
    return !m || m.header !== 1 || !splitSchema(m.bytes).metadata.has('gainrag.kind');
  } catch {
    return true;
  } finally {
    f.close();
  }
}

export function foreignBatches(file: string): RecordBatch[] {
  try {
    return [...RecordBatchFileReader.from(readFileSync(file))];
  } catch (err) {
    throw new GainragError('E_DATA', `${path.basename(file)}: not a readable Arrow IPC file (${(err as Error).message})`);
  }
}

/** Rows in an Arrow file (file or stream format), from the record batch headers (bodies are skipped). */
export function countArrowRows(file: string): number {
  if (foreignFile(file)) return foreignBatches(file).reduce((n, b) => n + b.numRows, 0);
  const start = streamStart(file);
  const f = new ArrowMessageFile(file, start);
  try {
    if (start > 0) checkFileTail(f);
    let rows = 0;
    for (let m = f.next(false); m; m = f.next(false)) rows += m.rows;
    return rows;
  } finally {
    f.close();
  }
}

/** The file format's ending: end marker, footer (schema + batch blocks), footer length, ARROW1. */
export function fileFooter(schema: Schema, blocks: { offset: number; meta: number; body: number }[]): Uint8Array {
  const fileBlocks = blocks.map((b) => new FileBlock(b.meta, b.body, b.offset));
  const footer = Footer.encode(new Footer(schema, MetadataVersion.V5, fileBlocks, []));
  const len = new Uint8Array(4);
  new DataView(len.buffer).setInt32(0, footer.byteLength, true);
  const out = new Uint8Array(EOS.length + footer.byteLength + 4 + 6);
  out.set(EOS, 0);
  out.set(footer, EOS.length);
  out.set(len, EOS.length + footer.byteLength);
  out.set(MAGIC.subarray(0, 6), EOS.length + footer.byteLength + 4);
  return out;
}

/** The schema message alone, as a complete stream (schema + end marker): comparable bytes. */
export function schemaStreamBytes(schema: Schema): Uint8Array {
  return schemaOnlyStream(schema);
}

function schemaOnlyStream(schema: Schema): Uint8Array {
  const w = new RecordBatchStreamWriter();
  w.reset(undefined, schema);
  w.finish();
  return w.toUint8Array(true);
}

/** Converts the Arrow stream in `streamFile` to Parquet, batch by batch, into `write`. */
export async function arrowStreamToParquet(streamFile: string, write: (bytes: Uint8Array) => void): Promise<void> {
  const f = new ArrowMessageFile(streamFile, streamStart(streamFile));
  try {
    const schema = f.next();
    if (!schema || schema.header !== 1) throw new GainragError('E_DATA', `${path.basename(streamFile)}: Arrow stream does not start with a schema`);
    async function* batches(): AsyncGenerator<Uint8Array> {
      for (let m = f.next(); m; m = f.next()) if (m.header === 3) yield Buffer.concat([schema!.bytes, m.bytes, EOS]);
    }
    await writeParquetStream(batches(), Buffer.concat([schema.bytes, EOS]), write);
  } finally {
    f.close();
  }
}

export interface AtomicArrowWriterOptions {
  /** Continue an existing `<path>.partial` (--resume). */
  append?: boolean;
  /** Arrow IPC file format, stream format (default), or Parquet. */
  container?: ArrowContainer;
  metadata?: Record<string, string>;
  /** Columns written beside the records' own (kind columns), given per record to write(). */
  extra?: Layout['extra'];
  inputs?: string[];
  /** Publish `<path>.gainrag.json` with the output (lib/io/manifest.ts). */
  manifest?: ManifestSpec;
}

/**
 * Atomic columnar writer: rows are buffered, flush() writes them as one record batch to
 * `<path>.partial`, close() ends the stream (file format: adds the footer; Parquet: converts),
 * fsyncs and renames onto `<path>`.
 */
export class AtomicArrowWriter {
  readonly partialPath: string;
  private resumed = 0;
  private readonly appendMode: boolean;
  private wroteSchema = false;
  /** End of the last complete message of a resumed partial (where its resumed records end). */
  private resumedEnd = 0;
  readonly container: ArrowContainer;
  private rows: unknown[] = [];
  private extras: (Record<string, unknown> | undefined)[] = [];
  private written = 0;
  private schema: Schema | undefined;
  private layout: Layout | undefined;
  private readonly metadata: Record<string, string>;
  private readonly extra: Layout['extra'];
  private blocks: { offset: number; meta: number; body: number }[] = [];
  // Validated and locked like every output (lib/io/partial-file.ts): no second writer, no link/FIFO.
  private readonly file: PartialFile;

  constructor(readonly path: string, readonly kind: ArrowKind, options: AtomicArrowWriterOptions = {}) {
    this.container = options.container ?? 'stream';
    this.metadata = options.metadata ?? {};
    this.extra = options.extra ?? [];
    if (kind === 'json') this.schema = jsonSchema(this.metadata);
    this.appendMode = options.append ?? false;
    this.file = PartialFile.open(path, { append: options.append, inputs: options.inputs, manifest: options.manifest });
    this.partialPath = this.file.partialPath;
    try {
      if (this.file.resumed) this.recover();
    } catch (err) {
      this.file.discard(true);
      throw err;
    }
    if (this.container === 'file' && this.file.position === 0) this.file.write(MAGIC);
  }

  /** Records already in the partial output when it was reopened with {append: true}. */
  get resumedRecords(): number {
    return this.resumed;
  }

  // A reopened OUT.partial: its schema and complete record batches are kept, a torn message
  // after them is cut off (as JSONL cuts a torn line), and writing continues after them.
  private recover(): void {
    const name = path.basename(this.partialPath);
    const start = this.container === 'file' ? MAGIC.length : 0;
    const f = new ArrowMessageFile(this.partialPath, start);
    let schemaBytes: Buffer | undefined;
    const blocks: { offset: number; meta: number; body: number }[] = [];
    let rows = 0;
    let end = 0;
    try {
      if (f.size > 0 && start > 0 && !f.read(MAGIC.length, 0).equals(Buffer.from(MAGIC))) {
        throw new GainragError('E_DATA', `${name} is not a partial Arrow IPC file (written in another format?); start without --resume`);
      }
      for (;;) {
        let m: FileMessage | undefined;
        try {
          m = f.next();
        } catch {
          break; // torn at the end: cut here
        }
        if (!m) break;
        if (!schemaBytes) {
          if (m.header !== 1) throw new GainragError('E_DATA', `${name} does not start with an Arrow schema; start without --resume`);
          schemaBytes = m.bytes;
        } else if (m.header === 3) {
          blocks.push({ offset: m.offset, meta: m.meta, body: m.body });
          rows += m.rows;
        }
        end = f.pos;
      }
    } finally {
      f.close();
    }
    if (!schemaBytes) end = 0; // nothing complete: start over
    ftruncateSync(this.file.fd, end);
    this.file.position = end;
    this.resumedEnd = end;
    if (!schemaBytes) return;
    const schema = splitSchema(schemaBytes);
    const kind = schema.metadata.get('gainrag.kind');
    if (kind !== this.kind) throw new GainragError('E_DATA', `${name} holds ${kind} records, not ${this.kind}; start without --resume`);
    this.schema = schema;
    if (kind === 'columns') this.layout = schemaLayout(schema, name);
    this.blocks = blocks;
    this.resumed = rows;
    this.wroteSchema = true;
  }

  /** The records already in a resumed partial output (lib/pipeline/run-stage.ts matches them to the input). */
  async *readResumed(): AsyncGenerator<unknown> {
    if (this.resumed === 0) return;
    const start = this.container === 'file' ? MAGIC.length : 0;
    const stream = createReadStream(this.partialPath, { start, end: this.resumedEnd - 1 });
    try {
      const reader = (await RecordBatchStreamReader.from(stream as never)) as unknown as AsyncIterable<RecordBatch>;
      const name = path.basename(this.partialPath);
      for await (const batch of reader) {
        if (this.kind === 'json') {
          const col = batch.getChildAt(0)!;
          for (let i = 0; i < batch.numRows; i++) yield parseJson(col.get(i) as string);
        } else {
          yield* decodeBatch(this.layout!, batch, 0, name);
        }
      }
    } finally {
      stream.destroy();
    }
  }

  /** Queues one record (any JSON value), with the values of its extra columns. */
  write(row: unknown, extra?: Record<string, unknown>): void {
    if (!this.file.open) throw new GainragError('E_IO', `${this.path}: writer is closed`);
    // What JSON cannot hold at all (the JSONL writer's TypeError); deeper problems surface when encoded.
    if (row === undefined || typeof row === 'function' || typeof row === 'symbol') throw new TypeError('AtomicArrowWriter.write: record is not JSON-serialisable');
    this.rows.push(row);
    this.extras.push(extra);
    this.written++;
  }

  // The schema: fixed for kind json, else from the first batch's records.
  private ensureSchema(): Schema {
    if (!this.schema) {
      this.layout = inferLayout(this.rows, this.extra, this.metadata['gainrag.stage']);
      this.schema = layoutSchema(this.layout, this.metadata);
    }
    return this.schema;
  }

  /** Writes the queued rows as one record batch (nothing when none are queued). */
  flush(): void {
    if (!this.file.open || this.rows.length === 0) return;
    const first = !this.wroteSchema;
    const schema = this.ensureSchema();
    const batch = this.kind === 'json' ? encodeJson(schema, this.rows) : encodeBatch(this.layout!, schema, this.rows, this.extras);
    this.rows = [];
    this.extras = [];
    const w = new RecordBatchStreamWriter();
    w.write(batch);
    w.finish();
    const bytes = w.toUint8Array(true);
    const spans = splitStream(bytes);
    const from = first ? 0 : spans[0].end; // the schema goes out once, at the start
    const base = this.file.position - from;
    for (const s of spans) if (s.header === 3) this.blocks.push({ offset: base + s.start, meta: s.meta, body: s.end - s.start - s.meta });
    this.file.write(bytes.subarray(from, spans[spans.length - 1].end));
    this.wroteSchema = true;
  }

  /** Ends and publishes the output (a Parquet output is converted first: hence the promise). */
  close(): void | Promise<void> {
    if (!this.file.open) return;
    this.flush();
    const schema = this.ensureSchema();
    if (!this.wroteSchema) {
      const bytes = schemaOnlyStream(schema);
      this.file.write(bytes.subarray(0, splitStream(bytes)[0].end));
    }
    if (this.container === 'file') {
      this.file.write(fileFooter(schema, this.blocks));
    } else {
      this.file.write(EOS);
    }
    const records = this.resumed + this.written;
    if (this.container !== 'parquet') {
      this.file.publish(records);
      return;
    }
    return this.file.publishConverted(records, (write) => arrowStreamToParquet(this.partialPath, write));
  }

  /**
   * Stops without publishing. OUT.partial (complete batches only: rows queued since the last
   * flush are dropped, so a resumed run batches as an uninterrupted one) is kept when the writer
   * was opened with {append: true} unless keepPartial is false, or when keepPartial is true.
   */
  abort(options: { keepPartial?: boolean } = {}): void {
    this.file.discard(options.keepPartial ?? this.appendMode);
  }
}

/** The schema of an Arrow (file or stream format) or Parquet file. Errors: E_DATA. */
export async function columnarSchema(file: string): Promise<Schema> {
  if (inputFormat(file) === 'parquet') return (await parquetInfo(file)).schema;
  const f = new ArrowMessageFile(file, streamStart(file));
  try {
    const m = f.next();
    if (!m || m.header !== 1) throw new GainragError('E_DATA', `${path.basename(file)}: Arrow data does not start with a schema`);
    return splitSchema(m.bytes);
  } finally {
    f.close();
  }
}

// The Schema of one schema message.
export function splitSchema(bytes: Uint8Array): Schema {
  const span = splitStream(Buffer.concat([bytes, EOS]))[0];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const metaStart = dv.getUint32(0, true) === 0xffffffff ? 8 : 4;
  return Message.decode(bytes.subarray(metaStart, span.meta)).header() as Schema;
}
