// Reading Arrow (IPC file or stream format) and Parquet stage files back, batch by batch: the
// record batches of a file from a row on (batchesOf), and the records they hold (readArrowRecords)
// for every layout lib/io/arrow-records.ts describes, tables of other tools included.
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { RecordBatchStreamReader, type RecordBatch, type Schema } from 'apache-arrow';
import { GainragError } from '../errors.js';
import { countArrowRows, foreignBatches, foreignFile, streamStart } from './arrow-records.js';
import { COLUMNS_SCHEMA, schemaLayout, type Layout } from './columns.js';
import { decodeBatch } from './columns-read.js';
import { inputFormat } from './formats.js';
import { indexIdentity } from './index-identity.js';
import { parseJson } from './json-values.js';
import { parquetBatches } from './parquet.js';
import { TEXT_IN_INDEX, TEXT_KEY, openPassageSource, type IndexReference } from './passage-source.js';
import { PassageStore } from './passages.js';

export interface ArrowReadOptions {
  /** Index directory whose passage store resolves index rows: older retrieval outputs, --no-text ones (default: found from the file's metadata, lib/io/passage-source.ts). */
  indexDir?: string;
}

// The record batches of an Arrow (file or stream format) or Parquet file, from row `skip` on:
// whole batches before it are not decoded; `left` rows of the first one yielded are to be skipped.
export async function* batchesOf(file: string, skip: number): AsyncGenerator<{ batch: RecordBatch; left: number }> {
  const name = path.basename(file);
  const format = inputFormat(file);
  if (format === 'parquet') {
    yield* parquetBatches(file, skip);
    return;
  }
  if (foreignFile(file)) {
    let left = skip;
    for (const batch of foreignBatches(file)) {
      if (left >= batch.numRows) {
        left -= batch.numRows;
        continue;
      }
      yield { batch, left };
      left = 0;
    }
    return;
  }
  // The framing is checked first (headers only): a truncated stream is an error, not fewer rows.
  countArrowRows(file);
  const stream = createReadStream(file, { highWaterMark: 1 << 20, start: streamStart(file) });
  try {
    let reader: AsyncIterable<RecordBatch>;
    try {
      reader = (await RecordBatchStreamReader.from(stream as never)) as unknown as AsyncIterable<RecordBatch>;
    } catch (err) {
      throw new GainragError('E_DATA', `${name}: not an Arrow IPC file (${(err as Error).message})`);
    }
    let left = skip;
    const it = reader[Symbol.asyncIterator]();
    for (;;) {
      let step: IteratorResult<RecordBatch>;
      try {
        step = await it.next();
      } catch (err) {
        throw new GainragError('E_DATA', `${name}: damaged Arrow data (${(err as Error).message})`);
      }
      if (step.done) break;
      const batch = step.value;
      if (left >= batch.numRows) {
        left -= batch.numRows; // a whole batch before the range: not decoded
        continue;
      }
      yield { batch, left };
      left = 0;
    }
  } finally {
    stream.destroy();
  }
}

/**
 * Streams the records of an Arrow or Parquet stage output, batch by batch, as the plain objects
 * the JSONL form holds (older retrieval rows get their ctxs back from the passage store).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function* readArrowRecords(file: string, options: ArrowReadOptions = {}, skip = 0): AsyncGenerator<any> {
  const name = path.basename(file);
  let store: PassageStore | undefined;
  let layout: Layout | undefined;
  let passages: ReturnType<typeof openPassageSource> | undefined;
  try {
    for await (const { batch, left } of batchesOf(file, skip)) {
      const kind = batch.schema.metadata.get('gainrag.kind');
      if (kind === 'columns') {
        if (batch.schema.metadata.get('gainrag.schema') !== COLUMNS_SCHEMA) throw new GainragError('E_DATA', `${name}: columns schema ${batch.schema.metadata.get('gainrag.schema')} is not ${COLUMNS_SCHEMA} (made by a newer gainrag?)`);
        layout ??= schemaLayout(batch.schema, name);
        if (!passages && batch.schema.metadata.get(TEXT_KEY) === TEXT_IN_INDEX) passages = openPassageSource(file, indexReference(batch.schema), options.indexDir);
        yield* decodeBatch(layout, batch, left, name, passages);
      } else if (kind === 'json') {
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
      } else if (kind === undefined) {
        yield* plainRows(batch, left); // a table made elsewhere (pandas, Polars, DuckDB...): its rows as records
      } else {
        throw new GainragError('E_DATA', `${name}: unknown gainrag.kind ${JSON.stringify(kind)} in the Arrow schema (made by a newer gainrag?)`);
      }
    }
  } finally {
    store?.close();
    passages?.close();
  }
}

/** How a columnar retrieval output names its index (schema metadata). */
export function indexReference(schema: Schema): IndexReference {
  const m = schema.metadata;
  const passages = m.get('gainrag.passages');
  return { name: m.get('gainrag.index_name'), id: m.get('gainrag.index_id'), passages: passages === undefined ? undefined : Number(passages) };
}

// A cell of a table gainrag did not write, as JSON would hold it: lists as arrays, structs and
// maps as objects, 64-bit integers as numbers, dates as ISO strings, nulls as null.
function plainValue(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'number') return v === 0 ? 0 : v;
  if (typeof v !== 'object') return v;
  if (v instanceof Date) return v.toISOString();
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  const o = v as { toArray?: () => unknown; toJSON?: () => unknown; [Symbol.iterator]?: unknown };
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number | bigint>, plainValue);
  if (typeof o[Symbol.iterator] === 'function' && typeof (v as { length?: unknown }).length === 'number') return Array.from(v as Iterable<unknown>, plainValue);
  const json = typeof o.toJSON === 'function' ? (o.toJSON() as Record<string, unknown>) : (v as Record<string, unknown>);
  if (json instanceof Map) return Object.fromEntries([...json].map(([k, x]) => [String(k), plainValue(x)]));
  return Object.fromEntries(Object.entries(json).map(([k, x]) => [k, plainValue(x)]));
}

function* plainRows(batch: RecordBatch, from: number): Generator<Record<string, unknown>> {
  const cols = batch.schema.fields.map((field, i) => [field.name, batch.getChildAt(i)!] as const);
  for (let i = from; i < batch.numRows; i++) {
    const r: Record<string, unknown> = {};
    for (const [k, col] of cols) {
      const v = col.get(i);
      if (v !== null && v !== undefined) r[k] = plainValue(v); // a null cell: the key is absent
    }
    yield r;
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
