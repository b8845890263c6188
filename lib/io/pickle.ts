// A restricted Python unpickler for the two kinds of pickle the GainRAG reference writes:
// Contriever's embedding shards (`pickle.dump((ids, embeddings), f)`) and FAISS's
// `index_meta.faiss` (a list of ids). It understands protocols 2-5 and only the opcodes that
// lists/tuples of str/int/bytes and numpy's ndarray/dtype pickling produce, plus the handful of
// numpy (and `_codecs.encode`, protocol 2's bytes) globals those need. Every other opcode or
// global is E_DATA naming it. Nothing is ever called or imported: a "global" is a name looked up
// in a fixed table, and REDUCE/BUILD only assemble plain descriptions of arrays.
//
// Large bytes objects (an array's data) are not read: they come back as {offset, length} into
// the file, so a multi-GB shard is parsed in constant memory and its rows are streamed later.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { GainragError, ioError } from '../errors.js';
import { checkRegularFile } from './input-file.js';

/** A Python tuple (lists are JS arrays). */
export class PyTuple {
  constructor(readonly items: PickleValue[]) {}
}

/** Bytes not read into memory: `length` bytes at byte `offset` of the pickle file. */
export class FileBytes {
  constructor(
    readonly offset: number,
    readonly length: number,
  ) {}
}

export type NdDType = 'float16' | 'float32' | 'float64' | 'int32' | 'int64' | 'uint32' | 'uint64';

/** A numpy array: shape, element type and where its (C or Fortran order) data is. */
export class NdArray {
  constructor(
    readonly dtype: NdDType,
    readonly shape: number[],
    readonly fortran: boolean,
    readonly data: Buffer | FileBytes,
  ) {}
}

export type PickleValue = null | boolean | number | bigint | string | Buffer | FileBytes | PickleValue[] | PyTuple | NdArray;

const ITEM_SIZE: Record<NdDType, number> = { float16: 2, float32: 4, float64: 8, int32: 4, int64: 8, uint32: 4, uint64: 8 };
// numpy's dtype descriptors for the types above (dtype('f2') pickles as REDUCE(dtype, ('f2', False, True))).
const DESCR: Record<string, NdDType> = { f2: 'float16', f4: 'float32', f8: 'float64', i4: 'int32', i8: 'int64', u4: 'uint32', u8: 'uint64' };

// The only globals a pickle may name, and what each stands for.
const GLOBALS: Record<string, string> = {
  'numpy.core.multiarray._reconstruct': 'reconstruct',
  'numpy._core.multiarray._reconstruct': 'reconstruct',
  'numpy.core.numeric._frombuffer': 'frombuffer',
  'numpy._core.numeric._frombuffer': 'frombuffer',
  'numpy.ndarray': 'ndarray',
  'numpy.dtype': 'dtype',
  '_codecs.encode': 'encode',
};

const OPCODE_NAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3',
  0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

// Objects that exist only while unpickling.
class Global {
  constructor(readonly role: string, readonly name: string) {}
}
class Mark {}
const MARK = new Mark();
class PendingArray {} // _reconstruct(ndarray, (0,), b'b') before its BUILD
class DType {
  constructor(readonly dtype: NdDType, public byteorder = '<') {}
}
type Item = PickleValue | Global | Mark | PendingArray | DType;

/** Reads a file (or a buffer) sequentially through a window, with every length checked against the size. */
class Source {
  private window = Buffer.alloc(0);
  private windowStart = 0;
  pos = 0;

  constructor(
    private readonly fd: number | null,
    readonly size: number,
    private readonly whole: Buffer | null,
    private readonly where: string,
  ) {}

  fail(msg: string): never {
    throw new GainragError('E_DATA', `${this.where}: ${msg}`);
  }

  /** Throws unless `n` more bytes exist (a length field larger than the file is refused before any allocation). */
  need(n: number, what: string): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.size - this.pos) {
      this.fail(`${what} of ${n} bytes at byte ${this.pos} runs past the end of the file (${this.size} bytes): truncated or not a pickle`);
    }
  }

  bytes(n: number, what: string): Buffer {
    this.need(n, what);
    if (this.whole) {
      const out = this.whole.subarray(this.pos, this.pos + n);
      this.pos += n;
      return out;
    }
    const rel = this.pos - this.windowStart;
    if (rel < 0 || rel + n > this.window.length) {
      // Refill: at least 1 MiB, or exactly what a larger read needs.
      const len = Math.min(this.size - this.pos, Math.max(n, 1 << 20));
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const r = readSync(this.fd as number, buf, got, len - got, this.pos + got);
        if (r === 0) this.fail(`the file ended at byte ${this.pos + got} while reading (changed while being read?)`);
        got += r;
      }
      this.window = buf;
      this.windowStart = this.pos;
    }
    const start = this.pos - this.windowStart;
    this.pos += n;
    return this.window.subarray(start, start + n);
  }

  skip(n: number, what: string): void {
    this.need(n, what);
    this.pos += n;
  }

  u8(): number {
    return this.bytes(1, 'opcode argument')[0];
  }
}

export interface UnpickleOptions {
  /** bytes objects of at least this size stay in the file as FileBytes (default 1 MiB; Infinity: always read). */
  lazyBytes?: number;
}

// JS strings hold at most ~2^29 characters; a larger str is not something these files contain.
const MAX_STRING_BYTES = 256 << 20;

function describe(v: Item): string {
  if (v === null) return 'None';
  if (v instanceof Global) return v.name;
  if (v instanceof PyTuple) return 'tuple';
  if (Array.isArray(v)) return 'list';
  if (v instanceof NdArray) return 'ndarray';
  if (v instanceof DType) return 'dtype';
  if (v instanceof PendingArray) return 'ndarray (unbuilt)';
  if (v instanceof FileBytes || Buffer.isBuffer(v)) return 'bytes';
  return typeof v;
}

function run(src: Source, options: UnpickleOptions): PickleValue {
  const lazy = options.lazyBytes ?? 1 << 20;
  const stack: Item[] = [];
  const marks: number[] = [];
  // An array, not a Map: a Map holds at most 2^24 entries and index_meta.faiss of DPR memoizes 21M ids.
  const memo: Item[] = [];
  let memoCount = 0;
  const pop = (): Item => {
    const v = stack.pop();
    if (v === undefined || v instanceof Mark) src.fail('stack underflow (malformed pickle)');
    return v as Item;
  };
  const top = (what: string): Item => {
    if (stack.length === 0) src.fail(`${what} on an empty stack (malformed pickle)`);
    return stack[stack.length - 1];
  };
  const popMark = (): Item[] => {
    const m = marks.pop();
    if (m === undefined) src.fail('no MARK for a TUPLE/LIST/APPENDS (malformed pickle)');
    return stack.splice(m);
  };
  const value = (v: Item, what: string): PickleValue => {
    if (v instanceof Global || v instanceof Mark || v instanceof PendingArray || v instanceof DType) src.fail(`${what}: ${describe(v)} cannot be used here`);
    return v;
  };
  // Tuples also carry the arguments of REDUCE/BUILD, which name globals and dtypes; the object
  // returned at STOP is checked for any left over (see plain()).
  const tupleItem = (v: Item): PickleValue => {
    if (v instanceof Mark || v instanceof PendingArray) src.fail(`tuple item: ${describe(v)} cannot be used here`);
    return v as PickleValue;
  };
  const u32 = () => src.bytes(4, 'length').readUInt32LE(0);
  const u64 = () => {
    const n = src.bytes(8, 'length').readBigUInt64LE(0);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) src.fail(`a length of ${n} bytes at byte ${src.pos - 8} runs past the end of the file (${src.size} bytes): truncated or hostile pickle`);
    return Number(n);
  };
  const text = (n: number) => {
    src.need(n, 'str'); // a hostile length fails here, before any allocation
    if (n > MAX_STRING_BYTES) src.fail(`a str of ${n} bytes is larger than this reader accepts (${MAX_STRING_BYTES})`);
    return src.bytes(n, 'str').toString('utf8');
  };
  const bytes = (n: number): Buffer | FileBytes => {
    src.need(n, 'bytes');
    if (n >= lazy) {
      const at = src.pos;
      src.skip(n, 'bytes');
      return new FileBytes(at, n);
    }
    return Buffer.from(src.bytes(n, 'bytes'));
  };

  const first = src.bytes(1, 'opcode')[0];
  if (first !== 0x80) src.fail(`not a pickle of protocol 2-5 (starts with ${OPCODE_NAMES[first] ?? `byte 0x${first.toString(16)}`}, not PROTO)`);
  src.pos = 0;
  for (;;) {
    const at = src.pos;
    const op = src.bytes(1, 'opcode')[0];
    switch (op) {
      case 0x80: {
        const proto = src.u8();
        if (proto < 2 || proto > 5) src.fail(`pickle protocol ${proto} is not supported (2-5)`);
        break;
      }
      case 0x95: // FRAME: only its length is checked (frames are contiguous in the file)
        src.need(u64(), 'frame');
        break;
      case 0x2e: {
        const result = pop();
        if (stack.length > 0 || marks.length > 0) src.fail('data left on the stack at STOP (malformed pickle)');
        return plain(src, value(result, 'the pickled object'));
      }
      case 0x28:
        marks.push(stack.length);
        stack.push(MARK);
        break;
      case 0x5d:
        stack.push([]);
        break;
      case 0x29:
        stack.push(new PyTuple([]));
        break;
      case 0x74: {
        const items = popMark();
        items.shift();
        stack.push(new PyTuple(items.map(tupleItem)));
        break;
      }
      case 0x6c: {
        const items = popMark();
        items.shift();
        stack.push(items.map((v) => value(v, 'list item')));
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {
        const n = op - 0x84;
        const items: PickleValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(tupleItem(pop()));
        stack.push(new PyTuple(items));
        break;
      }
      case 0x61: {
        const item = value(pop(), 'list item');
        const list = top('APPEND');
        if (!Array.isArray(list)) src.fail(`APPEND to a ${describe(list)}, not a list`);
        (list as PickleValue[]).push(item);
        break;
      }
      case 0x65: {
        const items = popMark();
        items.shift();
        const list = top('APPENDS');
        if (!Array.isArray(list)) src.fail(`APPENDS to a ${describe(list)}, not a list`);
        for (const it of items) (list as PickleValue[]).push(value(it, 'list item'));
        break;
      }
      case 0x4a:
        stack.push(src.bytes(4, 'int').readInt32LE(0));
        break;
      case 0x4b:
        stack.push(src.u8());
        break;
      case 0x4d:
        stack.push(src.bytes(2, 'int').readUInt16LE(0));
        break;
      case 0x8a:
      case 0x8b: {
        const n = op === 0x8a ? src.u8() : u32();
        src.need(n, 'int');
        if (n > 64) src.fail(`an int of ${n} bytes is larger than this reader accepts`);
        const b = src.bytes(n, 'int');
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (n > 0 && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x4e:
        stack.push(null);
        break;
      case 0x88:
        stack.push(true);
        break;
      case 0x89:
        stack.push(false);
        break;
      case 0x8c:
        stack.push(text(src.u8()));
        break;
      case 0x58:
        stack.push(text(u32()));
        break;
      case 0x8d:
        stack.push(text(u64()));
        break;
      case 0x43:
        stack.push(bytes(src.u8()));
        break;
      case 0x42:
        stack.push(bytes(u32()));
        break;
      case 0x8e:
      case 0x96:
        stack.push(bytes(u64()));
        break;
      case 0x71:
      case 0x72:
      case 0x94: {
        const key = op === 0x71 ? src.u8() : op === 0x72 ? u32() : memoCount;
        if (memo[key] === undefined) memoCount++;
        memo[key] = top(OPCODE_NAMES[op]);
        break;
      }
      case 0x68:
      case 0x6a: {
        const key = op === 0x68 ? src.u8() : u32();
        if (memo[key] === undefined) src.fail(`memo entry ${key} does not exist (malformed pickle)`);
        stack.push(memo[key]);
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n": read up to two newlines (bounded: names are short).
        const lines: string[] = [];
        let cur = '';
        while (lines.length < 2) {
          const c = src.u8();
          if (c === 10) lines.push(cur), (cur = '');
          else if (cur.length > 200) src.fail('GLOBAL name too long (malformed pickle)');
          else cur += String.fromCharCode(c);
        }
        stack.push(lookupGlobal(src, lines[0], lines[1]));
        break;
      }
      case 0x93: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') src.fail('STACK_GLOBAL needs two strings');
        stack.push(lookupGlobal(src, module as string, name as string));
        break;
      }
      case 0x52: {
        const args = pop();
        const fn = pop();
        stack.push(reduce(src, fn, args));
        break;
      }
      case 0x62: {
        const state = pop();
        const obj = pop();
        stack.push(build(src, obj, state));
        break;
      }
      default: {
        const name = OPCODE_NAMES[op];
        src.fail(name ? `opcode ${name} at byte ${at} is not allowed (only lists/tuples of str/int and numpy arrays are read)` : `unknown opcode 0x${op.toString(16)} at byte ${at} (not a pickle?)`);
      }
    }
  }
}

// The result may hold only data: a global or dtype left inside a tuple is refused.
function plain(src: Source, v: PickleValue): PickleValue {
  // An explicit stack: a hostile pickle can nest lists a million deep in two bytes a level.
  const seen = new Set<object>();
  const todo: unknown[] = [v];
  while (todo.length > 0) {
    const x = todo.pop();
    if (x instanceof Global || x instanceof DType) src.fail(`the pickled object holds ${describe(x as Item)}, which is only allowed as numpy's array reconstruction`);
    const items = x instanceof PyTuple ? x.items : Array.isArray(x) ? x : null;
    if (!items || seen.has(items)) continue;
    seen.add(items);
    for (const it of items) if (typeof it === 'object' && it !== null) todo.push(it);
  }
  return v;
}

function lookupGlobal(src: Source, module: string, name: string): Global {
  const full = `${module}.${name}`;
  const role = GLOBALS[full];
  if (!role) src.fail(`global ${full} is not allowed (only numpy's array reconstruction is read; nothing is ever executed)`);
  return new Global(role, full);
}

function tupleItems(src: Source, v: Item, what: string): Item[] {
  if (!(v instanceof PyTuple)) src.fail(`${what}: expected a tuple, got ${describe(v)}`);
  return (v as PyTuple).items;
}

function dtypeOf(src: Source, descr: unknown): NdDType {
  const t = typeof descr === 'string' ? DESCR[descr] : undefined;
  if (!t) src.fail(`numpy dtype ${JSON.stringify(descr)} is not supported (float16/32/64, int32/64, uint32/64)`);
  return t as NdDType;
}

function shapeOf(src: Source, v: Item): number[] {
  const items = tupleItems(src, v, 'array shape');
  return items.map((d) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) src.fail(`array shape holds ${String(d)}, not a dimension`);
    return d as number;
  });
}

function makeArray(src: Source, dtype: DType, shape: number[], fortran: boolean, data: Item): NdArray {
  if (dtype.byteorder !== '<' && dtype.byteorder !== '|' && dtype.byteorder !== '=') src.fail(`array byte order '${dtype.byteorder}' is not supported (little-endian only)`);
  if (!Buffer.isBuffer(data) && !(data instanceof FileBytes)) src.fail(`array data must be bytes, got ${describe(data)}`);
  const want = shape.reduce((a, b) => a * b, 1) * ITEM_SIZE[dtype.dtype];
  const have = (data as Buffer | FileBytes).length;
  if (want !== have) src.fail(`array of shape (${shape.join(', ')}) ${dtype.dtype} needs ${want} bytes of data, the pickle holds ${have}`);
  return new NdArray(dtype.dtype, shape, fortran, data as Buffer | FileBytes);
}

function reduce(src: Source, fn: Item, args: Item): Item {
  if (!(fn instanceof Global)) src.fail(`REDUCE on a ${describe(fn)}: only the allowed numpy globals can be reduced`);
  const g = fn as Global;
  const a = tupleItems(src, args, `${g.name} arguments`);
  switch (g.role) {
    case 'reconstruct': // _reconstruct(ndarray, (0,), b'b'): an empty array that BUILD fills
      if (!(a[0] instanceof Global) || (a[0] as Global).role !== 'ndarray') src.fail(`${g.name} must reconstruct numpy.ndarray`);
      return new PendingArray();
    case 'dtype':
      return new DType(dtypeOf(src, a[0]));
    case 'frombuffer': {
      // _frombuffer(buffer, dtype, shape, order): protocol 5's in-band PickleBuffer.
      if (!(a[1] instanceof DType)) src.fail(`${g.name}: second argument must be a dtype`);
      if (a[3] !== 'C' && a[3] !== 'F') src.fail(`${g.name}: order must be 'C' or 'F'`);
      return makeArray(src, a[1] as DType, shapeOf(src, a[2]), a[3] === 'F', a[0]);
    }
    case 'encode': // protocol 2 pickles bytes as _codecs.encode(str, 'latin1')
      if (typeof a[0] !== 'string' || a[1] !== 'latin1') src.fail(`${g.name}: only (str, 'latin1') is accepted`);
      return Buffer.from(a[0] as string, 'latin1');
    default:
      return src.fail(`${g.name} cannot be called`);
  }
}

function build(src: Source, obj: Item, state: Item): Item {
  if (obj instanceof DType) {
    // (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
    const s = tupleItems(src, state, 'dtype state');
    if (typeof s[1] !== 'string' || s[2] !== null || s[3] !== null || s[4] !== null) src.fail('only plain numeric dtypes are supported (no structured or sub-array dtypes)');
    obj.byteorder = s[1] as string;
    return obj;
  }
  if (obj instanceof PendingArray) {
    // (version, shape, dtype, is_fortran, rawdata)
    const s = tupleItems(src, state, 'ndarray state');
    if (s.length !== 5 || !(s[2] instanceof DType) || typeof s[3] !== 'boolean') src.fail('ndarray state must be (version, shape, dtype, is_fortran, data)');
    return makeArray(src, s[2] as DType, shapeOf(src, s[1]), s[3] as boolean, s[4]);
  }
  return src.fail(`BUILD on a ${describe(obj)} is not allowed`);
}

/** Unpickles a file; large bytes (array data) stay in the file as FileBytes. Errors: E_DATA, E_IO. */
export function unpickleFile(file: string, options: UnpickleOptions = {}): PickleValue {
  checkRegularFile(file);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw ioError(err, `cannot read ${file}`);
  }
  try {
    return run(new Source(fd, fstatSync(fd).size, null, file), options);
  } finally {
    closeSync(fd);
  }
}

/** Unpickles bytes in memory (FileBytes offsets are into `buf`). */
export function unpickleBuffer(buf: Buffer, where = 'pickle', options: UnpickleOptions = {}): PickleValue {
  return run(new Source(null, buf.length, buf, where), { lazyBytes: Infinity, ...options });
}

/** A protocol-4 pickle of a list of str (what FAISS's index_meta.faiss holds in the reference). */
export function pickleStringList(items: readonly string[]): Buffer[] {
  const parts: Buffer[] = [Buffer.from([0x80, 4, 0x5d])];
  for (let i = 0; i < items.length; i += 1000) {
    const chunk: Buffer[] = [Buffer.from([0x28])];
    for (const s of items.slice(i, i + 1000)) {
      const b = Buffer.from(s, 'utf8');
      const head = b.length < 256 ? Buffer.from([0x8c, b.length]) : Buffer.alloc(5);
      if (b.length >= 256) head.writeUInt8(0x58, 0), head.writeUInt32LE(b.length, 1);
      chunk.push(head, b);
    }
    chunk.push(Buffer.from([0x65]));
    parts.push(Buffer.concat(chunk));
  }
  parts.push(Buffer.from([0x2e]));
  return parts;
}
