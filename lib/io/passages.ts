// Passage corpora: streaming readers for DPR TSV and JSONL, and the passage store kept inside an
// index directory so that `retrieve` can turn result rows back into {id, title, text}.
//
// Store layout (next to manifest.json / vectors.bin / ids.bin):
//   passages.jsonl  one {"id","title","text"} per line, in index row order
//   passages.idx    (count + 1) little-endian float64 byte offsets into passages.jsonl
// Lookups read single lines by offset, so a 21M-passage corpus needs only the offsets (8 bytes a
// passage) in memory.
import { createReadStream, closeSync, fstatSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { GainragError } from '../errors.js';
import { readRecords } from './jsonl.js';

export interface Passage {
  id: string;
  title: string;
  text: string;
}

export const PASSAGES_FILE = 'passages.jsonl';
export const PASSAGE_OFFSETS_FILE = 'passages.idx';

/** Streams passages from a DPR TSV (header with id/text/title columns) or a JSON/JSONL file. */
export async function* readPassages(file: string): AsyncGenerator<Passage> {
  if (/\.tsv$/i.test(file)) {
    yield* readTsvPassages(file);
    return;
  }
  const name = path.basename(file);
  for await (const { record, line } of readRecords(file)) yield toPassage(record, `${name}:${line}`);
}

function toPassage(record: unknown, where: string): Passage {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) throw new GainragError('E_DATA', `${where}: passage must be an object {id, title, text}`);
  const r = record as Record<string, unknown>;
  if (typeof r.text !== 'string') throw new GainragError('E_DATA', `${where}: passage has no string 'text'`);
  if (typeof r.id !== 'string' && typeof r.id !== 'number') throw new GainragError('E_DATA', `${where}: passage has no 'id' (string or number)`);
  if (r.title !== undefined && r.title !== null && typeof r.title !== 'string') throw new GainragError('E_DATA', `${where}: passage 'title' must be a string`);
  return { id: String(r.id), title: (r.title as string | undefined) ?? '', text: r.text };
}

// Python csv (DPR reads psgs_w100.tsv with csv.reader(delimiter='\t')): a field that starts with a
// quote runs to the closing quote, "" inside it is one quote. DPR's fields never span lines.
function splitTsvLine(line: string, where: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let value = '';
      let j = i + 1;
      for (;;) {
        const q = line.indexOf('"', j);
        if (q < 0) throw new GainragError('E_DATA', `${where}: unterminated quoted field`);
        value += line.slice(j, q);
        if (line[q + 1] === '"') {
          value += '"';
          j = q + 2;
          continue;
        }
        i = q + 1;
        break;
      }
      const tab = line.indexOf('\t', i);
      value += tab < 0 ? line.slice(i) : line.slice(i, tab); // csv keeps text after the closing quote
      fields.push(value);
      if (tab < 0) return fields;
      i = tab + 1;
    } else {
      const tab = line.indexOf('\t', i);
      if (tab < 0) {
        fields.push(line.slice(i));
        return fields;
      }
      fields.push(line.slice(i, tab));
      i = tab + 1;
    }
  }
}

async function* readTsvPassages(file: string): AsyncGenerator<Passage> {
  const name = path.basename(file);
  const input = createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 });
  input.on('error', () => undefined); // surfaced through the line iterator below
  const lines = createInterface({ input, crlfDelay: Infinity });
  let lineNo = 0;
  let cols: { id: number; text: number; title: number } | undefined;
  try {
    for await (const raw of lines) {
      lineNo++;
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.length === 0) continue;
      const fields = splitTsvLine(line, `${name}:${lineNo}`);
      if (!cols) {
        const header = fields.map((f) => f.trim().toLowerCase());
        cols = { id: header.indexOf('id'), text: header.indexOf('text'), title: header.indexOf('title') };
        if (cols.id < 0 || cols.text < 0) throw new GainragError('E_DATA', `${name}:${lineNo}: TSV header must name the columns id, text and title (DPR: "id\\ttext\\ttitle")`);
        continue;
      }
      const width = Math.max(cols.id, cols.text, cols.title) + 1;
      if (fields.length < width) throw new GainragError('E_DATA', `${name}:${lineNo}: expected ${width} tab-separated fields, found ${fields.length}`);
      yield { id: fields[cols.id], text: fields[cols.text], title: cols.title >= 0 ? fields[cols.title] : '' };
    }
  } catch (err) {
    if (err instanceof GainragError) throw err;
    throw new GainragError('E_IO', `${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    input.destroy();
  }
}

/** Writes passages.jsonl + passages.idx into `dir` (the caller publishes the directory atomically). */
export class PassageStoreWriter {
  private readonly fd: number;
  private readonly offsets: number[] = [0];
  private position = 0;
  private pending: string[] = [];
  private pendingBytes = 0;
  private closed = false;

  constructor(private readonly dir: string) {
    this.fd = openSync(path.join(dir, PASSAGES_FILE), 'w');
  }

  get count(): number {
    return this.offsets.length - 1;
  }

  add(p: Passage): void {
    const line = `${JSON.stringify({ id: p.id, title: p.title, text: p.text })}\n`;
    const bytes = Buffer.byteLength(line, 'utf8');
    this.position += bytes;
    this.offsets.push(this.position);
    this.pending.push(line);
    this.pendingBytes += bytes;
    if (this.pendingBytes >= 1 << 20) this.flush();
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    const data = Buffer.from(this.pending.join(''), 'utf8');
    this.pending = [];
    this.pendingBytes = 0;
    for (let off = 0; off < data.length; ) off += writeSync(this.fd, data, off, data.length - off);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.flush();
    closeSync(this.fd);
    const offsets = Float64Array.from(this.offsets);
    const fd = openSync(path.join(this.dir, PASSAGE_OFFSETS_FILE), 'w');
    try {
      const bytes = new Uint8Array(offsets.buffer);
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    } finally {
      closeSync(fd);
    }
  }

  abort(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

/** Random access to the passages of an index directory by row. */
export class PassageStore {
  // null once closed: the number must never be used again, because the OS hands the same fd
  // to the next file anyone opens (a read would return another file's bytes, a second close
  // would close someone else's file).
  private fd: number | null;

  private constructor(
    fd: number,
    private readonly offsets: Float64Array,
    private readonly file: string,
  ) {
    this.fd = fd;
  }

  static open(dir: string): PassageStore {
    const file = path.join(dir, PASSAGES_FILE);
    const idx = path.join(dir, PASSAGE_OFFSETS_FILE);
    let raw: Buffer;
    let fd: number;
    try {
      raw = readFileSync(idx);
      fd = openSync(file, 'r');
    } catch (err) {
      throw new GainragError('E_INDEX', `${dir} has no passage store (${PASSAGES_FILE} + ${PASSAGE_OFFSETS_FILE}); build the index with \`gainrag index build\` or \`index import\``, { cause: err });
    }
    if (raw.length % 8 !== 0 || raw.length < 8) throw new GainragError('E_INDEX', `${idx}: size ${raw.length} is not a whole number of offsets`);
    // Large reads get their own 8-aligned buffer, so this is normally a view, not a copy.
    const offsets = raw.byteOffset % 8 === 0 ? new Float64Array(raw.buffer, raw.byteOffset, raw.length / 8) : new Float64Array(new Uint8Array(raw).buffer);
    const size = fstatSync(fd).size;
    if (offsets[offsets.length - 1] !== size) {
      closeSync(fd);
      throw new GainragError('E_INDEX', `${file} has ${size} bytes but ${PASSAGE_OFFSETS_FILE} ends at ${offsets[offsets.length - 1]} (truncated or mismatched)`);
    }
    return new PassageStore(fd, offsets, file);
  }

  get size(): number {
    return this.offsets.length - 1;
  }

  /** Passage at `row` (0-based index row). */
  get(row: number): Passage {
    if (!Number.isInteger(row) || row < 0 || row >= this.size) throw new GainragError('E_INDEX', `passage row ${row} is outside the store (size ${this.size})`);
    const start = this.offsets[row];
    const end = this.offsets[row + 1];
    // Checked per lookup (O(1)) rather than over all offsets at open: a corrupt passages.idx is
    // E_INDEX here instead of a RangeError from Buffer.allocUnsafe or a read past the file.
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > this.offsets[this.offsets.length - 1]) {
      throw new GainragError('E_INDEX', `${this.file}: ${PASSAGE_OFFSETS_FILE} holds invalid offsets ${start}..${end} for row ${row} (store corrupted?)`);
    }
    const length = end - start;
    const fd = this.openFd();
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, start + got);
      if (n === 0) throw new GainragError('E_INDEX', `${this.file}: unexpected end of file at row ${row}`);
      got += n;
    }
    try {
      return JSON.parse(buf.toString('utf8')) as Passage;
    } catch {
      throw new GainragError('E_INDEX', `${this.file}: row ${row} is not valid JSON (store corrupted?)`);
    }
  }

  private openFd(): number {
    if (this.fd === null) throw new GainragError('E_DISPOSED', `passage store ${this.file} was closed`);
    return this.fd;
  }

  get closed(): boolean {
    return this.fd === null;
  }

  /** Closes the file. Idempotent; get() afterwards is E_DISPOSED. */
  close(): void {
    const fd = this.fd;
    this.fd = null;
    if (fd !== null) closeSync(fd);
  }

  /** close() as the async dispose protocol (`await using store = PassageStore.open(dir)`). */
  async dispose(): Promise<void> {
    this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}
