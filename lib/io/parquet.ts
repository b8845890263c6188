// Parquet through parquet-wasm (the Rust arrow/parquet crates compiled to WebAssembly): Arrow
// record batches in, zstd Parquet out, and back. The Arrow schema (metadata included) travels
// in the file's ARROW:schema key, so a Parquet stage output reads back exactly as its Arrow form.
//
// Writing streams: batches are handed to the wasm writer one at a time and it emits a row group
// every ROW_GROUP_ROWS rows, so memory stays at about one row group (measured: 1M rows of 100-byte
// strings in 26 MB of wasm memory with 20k-row groups), not the whole table.
import { createRequire } from 'node:module';
import { openAsBlob } from 'node:fs';
import path from 'node:path';
import { RecordBatch, Schema, tableFromIPC } from 'apache-arrow';
import type * as PQ from 'parquet-wasm/node';
import { GainragError } from '../errors.js';

export const ROW_GROUP_ROWS = 1 << 16;

let module: typeof PQ | undefined;
/** parquet-wasm's node build, loaded (and its wasm compiled) on first use. */
export function parquetWasm(): typeof PQ {
  return (module ??= createRequire(import.meta.url)('parquet-wasm/node') as typeof PQ);
}

async function open(file: string): Promise<PQ.ParquetFile> {
  const name = path.basename(file);
  let blob: Blob;
  try {
    blob = await openAsBlob(file);
  } catch (err) {
    throw new GainragError('E_IO', `${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return await parquetWasm().ParquetFile.fromFile(blob);
  } catch (err) {
    throw new GainragError('E_DATA', `${name}: not a readable Parquet file (${String((err as Error)?.message ?? err)})`);
  }
}

/** Row count and Arrow schema (with its metadata) of a Parquet file. Errors: E_IO, E_DATA. */
export async function parquetInfo(file: string): Promise<{ rows: number; schema: Schema }> {
  const pf = await open(file);
  try {
    const rows = pf.metadata().fileMetadata().numRows();
    const schema = tableFromIPC(pf.schema().intoIPCStream()).schema;
    return { rows, schema };
  } catch (err) {
    throw new GainragError('E_DATA', `${path.basename(file)}: damaged Parquet metadata (${String((err as Error)?.message ?? err)})`);
  } finally {
    pf.free();
  }
}

/** The wasm record batches of a Parquet file from row `offset` on (for rewriting without decoding). */
async function* wasmBatches(file: string, offset = 0): AsyncGenerator<PQ.RecordBatch> {
  const pf = await open(file);
  const name = path.basename(file);
  try {
    let stream: ReadableStream<PQ.RecordBatch>;
    try {
      stream = (await pf.stream({ batchSize: 4096, offset })) as ReadableStream<PQ.RecordBatch>;
    } catch (err) {
      throw new GainragError('E_DATA', `${name}: cannot read Parquet (${String((err as Error)?.message ?? err)})`);
    }
    const reader = stream.getReader();
    // Streamed batches lose the schema-level metadata (gainrag.layout): the file's schema back on.
    const schema = pf.schema();
    try {
      for (;;) {
        let step: ReadableStreamReadResult<PQ.RecordBatch>;
        try {
          step = await reader.read();
        } catch (err) {
          throw new GainragError('E_DATA', `${name}: damaged Parquet data (${String((err as Error)?.message ?? err)})`);
        }
        if (step.done) return;
        yield step.value.withSchema(schema);
      }
    } finally {
      reader.releaseLock();
    }
  } finally {
    pf.free();
  }
}

/** Arrow JS record batches of a Parquet file from row `offset` on, each with the file's schema. */
export async function* parquetBatches(file: string, offset = 0): AsyncGenerator<RecordBatch> {
  const { schema } = await parquetInfo(file);
  for await (const wb of wasmBatches(file, offset)) {
    for (const b of tableFromIPC(wb.intoIPCStream()).batches) {
      // The streamed batches lose the schema-level metadata; the columns are the file's.
      yield new RecordBatch(schema, b.data);
    }
  }
}

function writerProperties(): PQ.WriterProperties {
  const pq = parquetWasm();
  return new pq.WriterPropertiesBuilder().setCompression(pq.Compression.ZSTD).setMaxRowGroupSize(ROW_GROUP_ROWS).build();
}

/**
 * Writes Parquet from Arrow IPC streams, each one complete stream (schema + one or more batches
 * + end marker) in memory, to `write` as it is produced. `schemaStream` (schema only) is used
 * when there is no batch at all. Errors: E_DATA (a batch parquet-wasm refuses).
 */
export async function writeParquetStream(batches: AsyncIterable<Uint8Array | PQ.RecordBatch>, schemaStream: Uint8Array, write: (bytes: Uint8Array) => void): Promise<void> {
  const pq = parquetWasm();
  const it = batches[Symbol.asyncIterator]();
  const toWasm = (b: Uint8Array | PQ.RecordBatch): PQ.RecordBatch => {
    if (!(b instanceof Uint8Array)) return b;
    const t = pq.Table.fromIPCStream(b);
    try {
      return t.recordBatch(0)!;
    } finally {
      t.free();
    }
  };
  let pending: IteratorResult<Uint8Array | PQ.RecordBatch> | undefined = await it.next();
  try {
    if (pending.done) {
      write(pq.writeParquet(pq.Table.fromIPCStream(schemaStream), writerProperties()));
      return;
    }
    const source = new ReadableStream<PQ.RecordBatch>({
      async pull(controller) {
        const step = pending ?? (await it.next());
        pending = undefined;
        if (step.done) controller.close();
        else controller.enqueue(toWasm(step.value));
      },
    });
    const out = (await pq.transformParquetStream(source, writerProperties())) as ReadableStream<Uint8Array>;
    const reader = out.getReader();
    for (;;) {
      const step = await reader.read();
      if (step.done) break;
      write(step.value);
    }
  } catch (err) {
    if (err instanceof GainragError) throw err;
    throw new GainragError('E_DATA', `cannot write Parquet (${String((err as Error)?.message ?? err)})`, { cause: err });
  }
}

/** The wasm batches of Parquet files in order (merge: row groups are rewritten, not decoded). */
export async function* parquetFilesBatches(files: string[]): AsyncGenerator<PQ.RecordBatch> {
  for (const f of files) yield* wasmBatches(f);
}
