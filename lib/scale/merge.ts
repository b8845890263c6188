// Merging shard outputs: concatenation in shard order. JSONL files are copied byte for byte;
// Arrow streams keep the first schema message, every record batch and one end marker
// (lib/io/arrow-records.ts). The result goes to OUT.partial and is renamed when complete.
import { closeSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { GainragError } from '../errors.js';
import { mergeArrowFiles } from '../io/arrow-records.js';
import { countRecords, inputFormat, type RecordFormat } from '../io/records.js';

export interface MergeSummary {
  out: string;
  format: RecordFormat;
  inputs: number;
  records: number;
  bytes: number;
}

export async function mergeOutputs(inputs: string[], out: string): Promise<MergeSummary> {
  if (inputs.length === 0) throw new GainragError('E_INVALID_ARG', 'merge: no input files');
  const resolved = path.resolve(out);
  if (inputs.some((f) => path.resolve(f) === resolved)) throw new GainragError('E_INVALID_ARG', `merge: --out ${out} is also one of the inputs`);
  const formats = inputs.map((f) => inputFormat(f));
  const format = formats[0];
  const odd = inputs.findIndex((_, i) => formats[i] !== format);
  if (odd >= 0) throw new GainragError('E_DATA', `merge: ${inputs[odd]} is ${formats[odd]} but ${inputs[0]} is ${format}; shards of one job share a format`);
  const partial = `${out}.partial`;
  let fd: number;
  try {
    fd = openSync(partial, 'w');
  } catch (err) {
    throw new GainragError('E_IO', `cannot open ${partial} for writing: ${(err as Error).message}`, { cause: err });
  }
  let bytes = 0;
  const write = (data: Uint8Array) => {
    for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off, bytes + off);
    bytes += data.length;
  };
  let records = 0;
  try {
    if (format === 'arrow') {
      records = mergeArrowFiles(inputs, write);
    } else {
      const buf = Buffer.allocUnsafe(1 << 20);
      for (const file of inputs) {
        records += await countRecords(file);
        const src = openSync(file, 'r');
        try {
          let last = 10;
          for (let pos = 0; ; ) {
            const n = readSync(src, buf, 0, buf.length, pos);
            if (n === 0) break;
            write(buf.subarray(0, n));
            last = buf[n - 1];
            pos += n;
          }
          // A shard written by gainrag ends with a newline; one that does not would glue two records.
          if (last !== 10) write(Buffer.from('\n'));
        } finally {
          closeSync(src);
        }
      }
    }
    fsyncSync(fd);
    closeSync(fd);
    renameSync(partial, out);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(partial, { force: true });
    if (err instanceof GainragError) throw err;
    throw new GainragError('E_IO', `merge into ${out}: ${(err as Error).message}`, { cause: err });
  }
  return { out, format, inputs: inputs.length, records, bytes };
}
