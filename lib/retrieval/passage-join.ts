// Joining vectors that carry passage ids (Contriever shards, FAISS's index_meta.faiss) to the rows
// of a passage file. The passage store of an index is addressed by row, and retrieval needs one
// vector per stored passage, so: every vector's id must name a passage of the file, no passage
// twice; passages without a vector are left out of the store (the others keep file order), and
// each vector gets the store row of its passage as its index id.
import { GainragError } from '../errors.js';
import { readPassages, type PassageStoreWriter } from '../io/passages.js';

// DPR ids are 1..21M: a dense table by number costs 4 bytes an id where a Map would cost ~80
// (and a V8 Map holds at most 2^24 entries). Other ids go to Maps of at most 8M entries each.
const MAP_LIMIT = 8_000_000;
const CANONICAL_INT = /^(0|[1-9][0-9]{0,9})$/;

export class PassageIds {
  private byNumber = new Int32Array(1024); // row + 1; 0 = absent
  private readonly maps: Map<string, number>[] = [new Map()];
  count = 0;

  private static numeric(id: string): number {
    if (!CANONICAL_INT.test(id)) return -1;
    const n = Number(id);
    return n < 0x7fffffff ? n : -1;
  }

  /** Adds the next file row; E_DATA when `id` was seen before (the join would be ambiguous). */
  add(id: string, where: string): void {
    const row = this.count;
    if (this.get(id) >= 0) throw new GainragError('E_DATA', `${where}: passage id ${JSON.stringify(id)} appears twice`);
    const n = PassageIds.numeric(id);
    // A numeric id far beyond the passage count would make the table mostly empty: use a Map.
    if (n >= 0 && n < 4 * (row + 1) + (1 << 20)) {
      if (n >= this.byNumber.length) {
        const grown = new Int32Array(Math.max(n + 1, this.byNumber.length * 2));
        grown.set(this.byNumber);
        this.byNumber = grown;
      }
      this.byNumber[n] = row + 1;
    } else {
      let map = this.maps[this.maps.length - 1];
      if (map.size >= MAP_LIMIT) this.maps.push((map = new Map()));
      map.set(id, row);
    }
    this.count++;
  }

  /** File row of `id`, or -1. */
  get(id: string): number {
    const n = PassageIds.numeric(id);
    if (n >= 0 && n < this.byNumber.length && this.byNumber[n] > 0) return this.byNumber[n] - 1;
    for (const m of this.maps) {
      const r = m.get(id);
      if (r !== undefined) return r;
    }
    return -1;
  }

  static async read(file: string): Promise<PassageIds> {
    const ids = new PassageIds();
    for await (const p of readPassages(file)) ids.add(p.id, file);
    if (ids.count === 0) throw new GainragError('E_DATA', `${file} has no passages`);
    return ids;
  }
}

/** Which passages have a vector, in the order the vectors come. */
export class PassageJoin {
  private readonly covered: Uint8Array;
  vectors = 0;
  private rank: Int32Array | null = null;

  constructor(
    private readonly ids: PassageIds,
    private readonly passagesFile: string,
  ) {
    this.covered = new Uint8Array(ids.count);
  }

  /** File rows of one block of vector ids (str or int, as pickled); E_DATA for an unknown or repeated id. */
  map(vectorIds: readonly unknown[], where: string): Int32Array {
    const rows = new Int32Array(vectorIds.length);
    for (let i = 0; i < vectorIds.length; i++) {
      const v = vectorIds[i];
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'bigint') {
        throw new GainragError('E_DATA', `${where}: id ${i} is ${v === null ? 'None' : typeof v}, not a str or int`);
      }
      const id = String(v);
      const row = this.ids.get(id);
      if (row < 0) throw new GainragError('E_DATA', `${where}: id ${JSON.stringify(id)} (vector ${i}) is not in ${this.passagesFile}`);
      if (this.covered[row]) throw new GainragError('E_DATA', `${where}: passage id ${JSON.stringify(id)} has a second vector (vector ${i})`);
      this.covered[row] = 1;
      rows[i] = row;
    }
    this.vectors += rows.length;
    return rows;
  }

  /** Passages without a vector (left out of the store). */
  get missing(): number {
    return this.ids.count - this.vectors;
  }

  /** Index ids (store rows) for a block of file rows; call after every map(). */
  storeIds(fileRows: Int32Array): BigInt64Array {
    if (!this.rank) {
      this.rank = new Int32Array(this.covered.length);
      let next = 0;
      for (let r = 0; r < this.covered.length; r++) this.rank[r] = this.covered[r] ? next++ : -1;
    }
    const out = new BigInt64Array(fileRows.length);
    for (let i = 0; i < fileRows.length; i++) out[i] = BigInt(this.rank[fileRows[i]]);
    return out;
  }

  /** Writes the passages that have a vector, in file order. */
  async writeStore(store: PassageStoreWriter): Promise<void> {
    let row = 0;
    for await (const p of readPassages(this.passagesFile)) {
      if (row >= this.covered.length) throw new GainragError('E_DATA', `${this.passagesFile} changed while being imported`);
      if (this.covered[row++]) store.add(p);
    }
    if (store.count !== this.vectors) throw new GainragError('E_DATA', `${this.passagesFile} changed while being imported`);
  }
}
