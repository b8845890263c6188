// Arrow IPC streams between pipeline stages.
//
// A stage output in Arrow is one IPC stream: a schema message, one record batch per stage batch
// (flush()), and the end-of-stream marker. Two record layouts ("kinds", named in the schema
// metadata under gainrag.kind):
//   retrieval  question fields + List<Int64> ctx_ids (index rows), List<Float32> ctx_scores and
//              List<Bool> ctx_hasanswer. Passage id/title/text are not stored: a reader resolves
//              them from the passage store of the index named in gainrag.index.
//   json       one Utf8 column `record` holding each record as JSON (the later stages' outputs,
//              whose records are small next to retrieval's).
// Question fields are kept as `question` (Utf8), `answers` (List<Utf8>, null when absent) and
// `fields`: the input record as JSON with the question/answers values replaced by 0. The
// placeholders keep the record's key order, so a record read back from Arrow serialises to the
// same JSON as the one read from JSONL, and so do the records later stages build from it.
//
// Streams are framed here at the message level (continuation marker, metadata length, metadata,
// body), which is what lets `merge` concatenate shard outputs without re-encoding anything.
import { closeSync, createReadStream, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import {
  Bool, Field, Float32, Int64, List, Message, RecordBatch, RecordBatchStreamReader, RecordBatchStreamWriter, Schema, Struct, Utf8, makeData, vectorFromArray,
  type Data,
} from 'apache-arrow';
import { GainragError } from '../errors.js';
import type { ManifestSpec } from './manifest.js';
import { PartialFile } from './partial-file.js';
import { indexIdentity } from './index-identity.js';
import { parseJson, stringifyJson } from './json-values.js';
import { PassageStore } from './passages.js';

export type ArrowKind = 'retrieval' | 'json';

/** One retrieved question, as retrieve hands it to the Arrow writer. */
export interface RetrievalRow {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  record: any;
  /** Index rows, best first (a view into the search result; copied once per batch). */
  ids: BigInt64Array;
  scores: Float32Array;
  hasanswer: boolean[];
}

const utf8List = () => new List(new Field('item', new Utf8(), true));

function schemaFor(kind: ArrowKind, metadata: Record<string, string>): Schema {
  const meta = new Map(Object.entries({ ...metadata, 'gainrag.kind': kind }).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  if (kind === 'json') return new Schema([new Field('record', new Utf8(), false)], meta);
  return new Schema(
    [
      new Field('question', new Utf8(), false),
      new Field('answers', utf8List(), true),
      new Field('fields', new Utf8(), false),
      new Field('ctx_ids', new List(new Field('item', new Int64(), false)), false),
      new Field('ctx_scores', new List(new Field('item', new Float32(), false)), false),
      new Field('ctx_hasanswer', new List(new Field('item', new Bool(), false)), false),
    ],
    meta,
  );
}

// The record as JSON with question/answers replaced by 0 (see the top of this file).
function fieldsJson(record: Record<string, unknown>): string {
  const shell: Record<string, unknown> = {};
  for (const k of Object.keys(record)) shell[k] = k === 'question' || k === 'answers' ? 0 : record[k];
  return stringifyJson(shell) as string; // +/-Infinity as 1e999 (json-values.ts), not null
}

function listData<T extends Int64 | Float32 | Bool>(type: T, values: Data<T>, offsets: Int32Array): Data<List<T>> {
  const listType = new List(new Field('item', type, false));
  return makeData({ type: listType, length: offsets.length - 1, nullCount: 0, valueOffsets: offsets, child: values });
}

function encode(kind: ArrowKind, schema: Schema, rows: unknown[]): RecordBatch {
  if (kind === 'json') {
    const col = vectorFromArray(rows.map((r) => stringifyJson(r) as string), new Utf8());
    return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children: [col.data[0]] }));
  }
  const rs = rows as RetrievalRow[];
  const offsets = new Int32Array(rs.length + 1);
  rs.forEach((r, i) => (offsets[i + 1] = offsets[i] + r.ids.length));
  const n = offsets[rs.length];
  const ids = new BigInt64Array(n);
  const scores = new Float32Array(n);
  const hits = new Uint8Array((n + 7) >> 3);
  rs.forEach((r, i) => {
    ids.set(r.ids, offsets[i]);
    scores.set(r.scores, offsets[i]);
    r.hasanswer.forEach((h, j) => {
      const bit = offsets[i] + j;
      if (h) hits[bit >> 3] |= 1 << (bit & 7);
    });
  });
  const answers = vectorFromArray(rs.map((r) => (Array.isArray(r.record.answers) ? r.record.answers : null)), utf8List());
  const children = [
    vectorFromArray(rs.map((r) => r.record.question as string), new Utf8()).data[0],
    answers.data[0],
    vectorFromArray(rs.map((r) => fieldsJson(r.record)), new Utf8()).data[0],
    listData(new Int64(), makeData({ type: new Int64(), length: n, nullCount: 0, data: ids }), offsets),
    listData(new Float32(), makeData({ type: new Float32(), length: n, nullCount: 0, data: scores }), offsets),
    listData(new Bool(), makeData({ type: new Bool(), length: n, nullCount: 0, data: hits }), offsets),
  ];
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rs.length, nullCount: 0, children }));
}

/** Byte ranges of the messages of an IPC stream held in memory. */
export interface MessageSpan {
  start: number;
  end: number;
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
  return { start: at, end, header: msg.headerType, rows };
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

const EOS = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

// Streams the messages of an IPC file from disk without holding more than one message.
export class ArrowMessageFile {
  private readonly fd: number;
  private readonly size: number;
  private pos = 0;
  constructor(readonly file: string) {
    try {
      this.fd = openSync(file, 'r');
      this.size = fstatSync(this.fd).size;
    } catch (err) {
      throw new GainragError('E_IO', `${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  private read(n: number, at: number): Buffer {
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
  next(readBody = true): { bytes: Buffer; header: number; rows: number } | undefined {
    const prefix = this.read(8, this.pos);
    const name = path.basename(this.file);
    if (prefix.length < 8) throw new GainragError('E_DATA', `${name}: Arrow stream is truncated (no end-of-stream marker)`);
    const cont = prefix.readUInt32LE(0) === 0xffffffff;
    const len = cont ? prefix.readInt32LE(4) : prefix.readInt32LE(0);
    if (len === 0) return undefined;
    const metaStart = this.pos + (cont ? 8 : 4);
    const meta = this.read(Math.max(len, 0), metaStart);
    const headerBuf = Buffer.concat([prefix.subarray(0, cont ? 8 : 4), meta]);
    // parseAt needs the whole message; read the body length first, then the body.
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
    this.pos = metaStart + len + bodyLength;
    const rows = msg.isRecordBatch() ? Number((msg.header() as { length: number }).length) : 0;
    return { bytes: Buffer.concat([headerBuf, body]), header: msg.headerType, rows };
  }
  close(): void {
    closeSync(this.fd);
  }
}

/** Rows in an Arrow stream file, from the record batch headers (bodies are skipped over, not decoded). */
export function countArrowRows(file: string): number {
  const f = new ArrowMessageFile(file);
  try {
    let rows = 0;
    for (let m = f.next(false); m; m = f.next(false)) rows += m.rows;
    return rows;
  } finally {
    f.close();
  }
}

/**
 * Atomic Arrow stream writer: rows are buffered, flush() writes them as one record batch to
 * `<path>.partial`, close() adds the end marker, fsyncs and renames onto `<path>`.
 */
export interface AtomicArrowWriterOptions {
  metadata?: Record<string, string>;
  inputs?: string[];
  /** Publish `<path>.gainrag.json` with the output (lib/io/manifest.ts). */
  manifest?: ManifestSpec;
}

export class AtomicArrowWriter {
  readonly partialPath: string;
  readonly resumedRecords = 0;
  private rows: unknown[] = [];
  private written = 0;
  private wroteSchema = false;
  private readonly schema: Schema;
  // Validated and locked like every output (lib/io/partial-file.ts): no second writer, no link/FIFO.
  private readonly file: PartialFile;

  constructor(readonly path: string, readonly kind: ArrowKind, options: AtomicArrowWriterOptions = {}) {
    this.schema = schemaFor(kind, options.metadata ?? {});
    this.file = PartialFile.open(path, { inputs: options.inputs, manifest: options.manifest });
    this.partialPath = this.file.partialPath;
  }

  /** Queues one record (kind json: any JSON value; kind retrieval: a RetrievalRow). */
  write(row: unknown): void {
    if (!this.file.open) throw new GainragError('E_IO', `${this.path}: writer is closed`);
    if (this.kind === 'json' && stringifyJson(row) === undefined) throw new TypeError('AtomicArrowWriter.write: record is not JSON-serialisable');
    this.rows.push(row);
    this.written++;
  }

  /** Writes the queued rows as one record batch (nothing when none are queued). */
  flush(): void {
    if (!this.file.open || this.rows.length === 0) return;
    const batch = encode(this.kind, this.schema, this.rows);
    this.rows = [];
    const w = new RecordBatchStreamWriter();
    w.write(batch);
    w.finish();
    const bytes = w.toUint8Array(true);
    const spans = splitStream(bytes);
    const from = this.wroteSchema ? spans[0].end : 0; // the schema goes out once, at the start
    this.file.write(bytes.subarray(from, spans[spans.length - 1].end));
    this.wroteSchema = true;
  }

  close(): void {
    if (!this.file.open) return;
    this.flush();
    if (!this.wroteSchema) {
      const w = new RecordBatchStreamWriter();
      w.reset(undefined, this.schema);
      w.finish();
      const bytes = w.toUint8Array(true);
      this.file.write(bytes.subarray(0, splitStream(bytes)[0].end));
    }
    this.file.write(EOS);
    this.file.publish(this.written);
  }

  abort(_options: { keepPartial?: boolean } = {}): void {
    this.file.discard(false); // Arrow outputs are not resumable
  }
}

export interface ArrowReadOptions {
  /** Index directory whose passage store resolves retrieval rows (default: the stream's gainrag.index). */
  indexDir?: string;
}

/**
 * Streams the records of an Arrow stage output, batch by batch, as the plain objects the JSONL
 * form holds (retrieval rows get their ctxs back from the passage store).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function* readArrowRecords(file: string, options: ArrowReadOptions = {}, skip = 0): AsyncGenerator<any> {
  const name = path.basename(file);
  // The framing is checked first (headers only): a truncated stream is an error, not fewer rows.
  countArrowRows(file);
  const stream = createReadStream(file, { highWaterMark: 1 << 20 });
  let store: PassageStore | undefined;
  try {
    let reader: AsyncIterable<RecordBatch>;
    try {
      reader = (await RecordBatchStreamReader.from(stream as never)) as unknown as AsyncIterable<RecordBatch>;
    } catch (err) {
      throw new GainragError('E_DATA', `${name}: not an Arrow IPC stream (${(err as Error).message})`);
    }
    let kind: string | undefined;
    let left = skip;
    const it = reader[Symbol.asyncIterator]();
    for (;;) {
      let step: IteratorResult<RecordBatch>;
      try {
        step = await it.next();
      } catch (err) {
        throw new GainragError('E_DATA', `${name}: damaged Arrow stream (${(err as Error).message})`);
      }
      if (step.done) break;
      const batch = step.value;
      if (left >= batch.numRows) {
        left -= batch.numRows; // a whole batch before the range: not decoded
        continue;
      }
      kind ??= batch.schema.metadata.get('gainrag.kind');
      if (kind === 'json') {
        const col = batch.getChildAt(0)!;
        for (let i = left; i < batch.numRows; i++) yield parseJson(col.get(i) as string); // 1e999 back to Infinity
      } else if (kind === 'retrieval') {
        if (!store) {
          const dir = options.indexDir ?? batch.schema.metadata.get('gainrag.index');
          if (!dir) throw new GainragError('E_DATA', `${name}: retrieval stream names no index (gainrag.index); pass the index directory`);
          store = PassageStore.open(dir);
          const expect = batch.schema.metadata.get('gainrag.passages');
          if (expect !== undefined && Number(expect) !== store.size) throw new GainragError('E_INDEX', `${name} was retrieved from an index of ${expect} passages, but ${dir} holds ${store.size}`);
          const id = batch.schema.metadata.get('gainrag.index_id');
          if (id !== undefined && indexIdentity(dir) !== id) {
            throw new GainragError('E_DATA', `${name} was retrieved from another build of the index than the one now in ${dir} (rebuilt since?): its passage rows would resolve to other passages; retrieve again`);
          }
        }
        yield* decodeRetrieval(batch, store, left);
      } else {
        throw new GainragError('E_DATA', `${name}: unknown gainrag.kind ${JSON.stringify(kind)} in the Arrow schema`);
      }
      left = 0;
    }
  } finally {
    store?.close();
    stream.destroy();
  }
}

function* decodeRetrieval(batch: RecordBatch, store: PassageStore, from: number): Generator<Record<string, unknown>> {
  const col = (n: string) => {
    const v = batch.getChild(n);
    if (!v) throw new GainragError('E_DATA', `retrieval stream has no column ${n}`);
    return v;
  };
  const question = col('question');
  const answers = col('answers');
  const fields = col('fields');
  // The list columns are read through their offsets and child buffers: no per-row Vector objects.
  const listOf = (n: string) => {
    const d = col(n).data[0];
    return { offsets: d.valueOffsets as Int32Array, values: d.children[0], base: d.offset };
  };
  const ids = listOf('ctx_ids');
  const scores = listOf('ctx_scores');
  const hits = listOf('ctx_hasanswer');
  const idValues = ids.values.values as BigInt64Array;
  const scoreValues = scores.values.values as Float32Array;
  const hitBits = hits.values.values as Uint8Array;
  const cache = new Map<number, { id: string; title: string; text: string }>();
  for (let i = from; i < batch.numRows; i++) {
    const record = parseJson(fields.get(i) as string) as Record<string, unknown>;
    record.question = question.get(i);
    if ('answers' in record) record.answers = [...(answers.get(i) as Iterable<string>)];
    const ctxs = [];
    const a = ids.offsets[ids.base + i];
    const b = ids.offsets[ids.base + i + 1];
    const sa = scores.offsets[scores.base + i];
    const ha = hits.offsets[hits.base + i] + hits.values.offset;
    for (let j = 0; j < b - a; j++) {
      const row = Number(idValues[ids.values.offset + a + j]);
      let p = cache.get(row);
      if (!p) cache.set(row, (p = store.get(row)));
      const bit = ha + j;
      ctxs.push({ id: p.id, title: p.title, text: p.text, score: scoreValues[scores.values.offset + sa + j], hasanswer: (hitBits[bit >> 3] & (1 << (bit & 7))) !== 0 });
    }
    record.ctxs = ctxs;
    yield record;
  }
}

/**
 * Concatenates Arrow stage outputs in order into one stream: the first schema message, every
 * record batch, one end marker. The schemas must be byte-identical (same stage, same settings).
 */
export function mergeArrowFiles(inputs: string[], write: (bytes: Uint8Array) => void): number {
  let schema: Buffer | undefined;
  let rows = 0;
  for (const file of inputs) {
    const f = new ArrowMessageFile(file);
    try {
      const first = f.next();
      if (!first || first.header !== 1) throw new GainragError('E_DATA', `${path.basename(file)}: Arrow stream does not start with a schema`);
      if (!schema) {
        schema = first.bytes;
        write(schema);
      } else if (!schema.equals(first.bytes)) {
        throw new GainragError('E_DATA', `${path.basename(file)}: its Arrow schema differs from ${path.basename(inputs[0])}'s (outputs of different stages or settings?)`);
      }
      for (let m = f.next(); m; m = f.next()) {
        if (m.header === 2) throw new GainragError('E_DATA', `${path.basename(file)}: dictionary batches cannot be merged`);
        rows += m.rows;
        write(m.bytes);
      }
    } finally {
      f.close();
    }
  }
  if (schema) write(EOS);
  return rows;
}
