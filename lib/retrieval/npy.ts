// Small .npy reader/writer for float32 matrices in JS (queries, test data, benchmarks). Large
// corpora are mapped natively instead (DenseIndex.fromNpy / `gainrag index import`).
import { readFileSync } from 'node:fs';
import { GainragError, ioError } from '../errors.js';
import { validateOutput, writeFileAtomic } from '../io/output.js';

export interface NpyMatrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

/** Reads a little-endian float32, C-order, 2-D .npy file (v1-v3 headers). Errors: E_DATA. */
export function readNpyFloat32(path: string): NpyMatrix {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    throw ioError(err, `cannot read ${path}`);
  }
  const fail = (msg: string): never => {
    throw new GainragError('E_DATA', `${path}: ${msg}`);
  };
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== '\x93NUMPY') fail('not a .npy file');
  const major = buf[6];
  const headerStart = major === 1 ? 10 : 12;
  if (major !== 1 && major !== 2 && major !== 3) fail(`unsupported .npy version ${major}`);
  if (buf.length < headerStart) fail('truncated .npy header');
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const offset = headerStart + headerLen;
  if (offset > buf.length) fail('truncated .npy header');
  const header = buf.toString('latin1', headerStart, offset);
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr !== '<f4') fail(`dtype ${String(descr)} is not little-endian float32 ('<f4')`);
  if (fortran !== 'False') fail('array is not in C order');
  const dims = (shape ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (dims.length !== 2 || !dims.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`expected a 2-D array, shape is (${shape})`);
  const [rows, cols] = dims;
  if (buf.length - offset !== rows * cols * 4) fail(`data has ${buf.length - offset} bytes, shape (${rows}, ${cols}) needs ${rows * cols * 4}`);
  // Copy into an aligned buffer: the data offset inside the file buffer need not be 4-aligned in memory.
  const data = new Float32Array(rows * cols);
  new Uint8Array(data.buffer).set(buf.subarray(offset));
  return { data, rows, cols };
}

/** Writes a float32 matrix as .npy v1 (temp file + rename). */
export function writeNpyFloat32(path: string, data: Float32Array, rows: number, cols: number): void {
  if (data.length !== rows * cols) throw new RangeError(`data has ${data.length} values, shape (${rows}, ${cols}) needs ${rows * cols}`);
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  // Pad so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  const head = Buffer.alloc(10 + header.length);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  head.write(header, 10, 'latin1');
  validateOutput(path, 'file', { label: 'path' });
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  writeFileAtomic(path, [head, bytes]);
}
