// Parquet through parquet-wasm (the Rust arrow/parquet crates compiled to WebAssembly): Arrow
// record batches in, zstd Parquet out, and back. The Arrow schema (metadata included) travels
// in the file's ARROW:schema key, so a Parquet stage output reads back exactly as its Arrow form.
//
// Writing streams: batches are handed to the wasm writer one at a time and it emits a row group
// every ROW_GROUP_ROWS rows, so memory stays at about one row group (measured: 1M rows of 100-byte
// strings in 26 MB of wasm memory with 20k-row groups), not the whole table. Reading decodes one
// row group at a time, synchronously (see readGroup).
import { createRequire } from 'node:module';
import { openAsBlob, readFileSync } from 'node:fs';
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

/** Row count, rows per row group and Arrow schema (with its metadata) of a Parquet file. Errors: E_IO, E_DATA. */
export async function parquetInfo(file: string): Promise<{ rows: number; groups: number[]; schema: Schema }> {
  const pf = await open(file);
  try {
    const meta = pf.metadata();
    const rows = meta.fileMetadata().numRows();
    const groups = meta.rowGroups().map((g) => g.numRows());
    const schema = tableFromIPC(pf.schema().intoIPCStream()).schema;
    return { rows, groups, schema };
  } catch (err) {
    throw new GainragError('E_DATA', `${path.basename(file)}: damaged Parquet metadata (${String((err as Error)?.message ?? err)})`);
  } finally {
    pf.free();
  }
}

// One row group as a wasm table. Read synchronously on purpose: a damaged page makes the wasm
// code fail (or trap), and only a synchronous call hands that back to the caller as an error;
// in parquet-wasm's async readers it escapes as an uncaught exception and ends the process.
function readGroup(file: string, bytes: Uint8Array, g: number): PQ.Table {
  try {
    return parquetWasm().readParquet(bytes, { rowGroups: [g] });
  } catch (err) {
    if (err instanceof WebAssembly.RuntimeError) module = undefined; // a trap: use a fresh instance from now on
    throw new GainragError('E_DATA', `${path.basename(file)}: damaged Parquet data in row group ${g} (${String((err as Error)?.message ?? err)})`);
  }
}

/**
 * Arrow JS record batches of a Parquet file, one row group at a time, from row `offset` on (row
 * groups before it are not decoded; `left`: rows of the first batch yielded before the offset).
 * The file's bytes are held while it is read (Parquet outputs are compact; decoded data is one
 * row group). Each batch carries the file's schema, metadata included.
 */
export async function* parquetBatches(file: string, offset = 0): AsyncGenerator<{ batch: RecordBatch; left: number }> {
  const { groups, schema } = await parquetInfo(file);
  const bytes = readBytes(file);
  let skip = offset;
  for (let g = 0; g < groups.length; g++) {
    if (skip >= groups[g]) {
      skip -= groups[g];
      continue;
    }
    const table = tableFromIPC(readGroup(file, bytes, g).intoIPCStream());
    for (const b of table.batches) {
      if (skip >= b.numRows) {
        skip -= b.numRows;
        continue;
      }
      yield { batch: new RecordBatch(schema, b.data), left: skip };
      skip = 0;
    }
  }
}

/** The wasm record batches of Parquet files in order, with their schema (merge: no JS decoding). */
export async function* parquetFilesBatches(files: string[]): AsyncGenerator<PQ.RecordBatch> {
  for (const file of files) {
    const { groups } = await parquetInfo(file);
    const bytes = readBytes(file);
    const schema = parquetWasm().readSchema(bytes);
    for (let g = 0; g < groups.length; g++) {
      for (const b of readGroup(file, bytes, g).recordBatches()) yield b.withSchema(schema);
    }
  }
}

function readBytes(file: string): Uint8Array {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new GainragError('E_IO', `${file}: ${(err as Error).message}`, { cause: err });
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
