// Reading typed stage columns (lib/io/columns.ts) back: one record batch at a time, as records
// (the JSONL form, key order included) or as columns a stage reads without building records.
//
// Cells are read straight from the column buffers (offsets, values, validity bits) rather than
// through Vector.get, which builds a sub-vector for every list cell: several times faster. The
// numeric list columns (ctx_ids, ctx_scores, passage_PPL_CD...) are handed out as typed-array
// views over the batch's own buffers (numericList): no copy, no per-row object.
//
// A retrieval output written with --no-text has no ctx_title / ctx_text columns: given the
// passage store of its index (lib/io/stage-input.ts finds it), the batch reads title and text of
// each ctx from the store by the row in ctx_ids, as if the columns were there (after ctx id,
// where retrieve writes them), so its records are those of the output with text.
import type { Data, RecordBatch, Vector } from 'apache-arrow';
import { GainragError } from '../errors.js';
import { parseJson } from './json-values.js';
import { REST_COLUMN, isGroup, isPlain, type ColumnType, type Group, type Layout, type Leaf, type Obj, type Scalar } from './columns.js';
import type { Passage } from './passages.js';

type Reader = (i: number) => unknown; // the JS value of cell i, null when null

function validity(d: Data): (i: number) => boolean {
  const bits = d.nullBitmap;
  if (d.nullCount === 0 || !bits || bits.length === 0) return () => true;
  const off = d.offset;
  return (i) => ((bits[(off + i) >> 3] >> ((off + i) & 7)) & 1) === 1;
}

function scalarReader(d: Data, t: Scalar): Reader {
  const valid = validity(d);
  const off = d.offset;
  switch (t) {
    case 'utf8': case 'json': {
      const o = d.valueOffsets as Int32Array;
      const v = d.values as Uint8Array;
      const buf = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      if (t === 'utf8') return (i) => (valid(i) ? buf.toString('utf8', o[off + i], o[off + i + 1]) : null);
      return (i) => (valid(i) ? parseJson(buf.toString('utf8', o[off + i], o[off + i + 1])) : null);
    }
    case 'bool': {
      const v = d.values as Uint8Array;
      return (i) => (valid(i) ? ((v[(off + i) >> 3] >> ((off + i) & 7)) & 1) === 1 : null);
    }
    case 'int64': {
      const v = d.values as BigInt64Array;
      return (i) => (valid(i) ? Number(v[off + i]) : null);
    }
    case 'float32': case 'float64': {
      const v = d.values as Float32Array | Float64Array;
      return (i) => (valid(i) ? v[off + i] + 0 : null); // + 0: -0 is written as 0 in JSONL
    }
    default: {
      const v = d.values as Int8Array | Int32Array;
      return (i) => (valid(i) ? v[off + i] : null);
    }
  }
}

/** A list column: the item range of row i (null when null) and a reader of its items. */
interface ListReader {
  range(i: number): [number, number] | null;
  item: Reader;
}
function listReader(d: Data, item: Scalar): ListReader {
  const valid = validity(d);
  const o = d.valueOffsets as Int32Array;
  const off = d.offset;
  return { range: (i) => (valid(i) ? [o[off + i], o[off + i + 1]] : null), item: scalarReader(d.children[0], item) };
}

function leafReader(d: Data, t: ColumnType): Reader {
  if (!t.startsWith('list<')) return scalarReader(d, t as Scalar);
  const l = listReader(d, t.slice(5, -1) as Scalar);
  return (i) => {
    const r = l.range(i);
    if (!r) return null;
    const out = new Array(r[1] - r[0]);
    for (let k = r[0]; k < r[1]; k++) out[k - r[0]] = l.item(k);
    return out;
  };
}

/**
 * A numeric list column as views over the batch's buffers: row i's values are
 * `values[offsets[i]] .. values[offsets[i + 1] - 1]` (offsets already shifted to the slice).
 * `valid(k)` says whether item k is non-null.
 */
export interface NumericList<T extends Float32Array | Float64Array | BigInt64Array | Int8Array | Int32Array> {
  offsets: Int32Array;
  values: T;
  valid(k: number): boolean;
}

/** Rows decoded as whole records and group elements (ctxs, passages) built as objects, since start: what a stage's columnar path saves (tests, bench). */
export const decodeCounts = { records: 0, elements: 0 };

/** The passages a --no-text retrieval batch takes its ctx title and text from. */
export interface PassageSource {
  get(row: number): Passage;
  /** For messages: the index directory. */
  readonly where: string;
}

/** One element field of a group (an item of `ctxs`, `passages`): its type and a reader of item k. */
export interface GroupItem {
  key: string;
  /** Its list column (none for the text a --no-text batch takes from the passage store). */
  column?: string;
  type: ColumnType;
  nulls: Leaf['nulls'];
  read: Reader;
}

/** An exploded array of objects: where row i's elements are, and each element field. */
export interface GroupColumns {
  span(row: number): [number, number] | null;
  item(key: string): GroupItem | undefined;
  /** Element k as the JSONL record holds it. */
  element(k: number): Obj;
}

/**
 * One record batch of a COLUMNS_SCHEMA file. `record(row)` is the row's JSONL record; for rows
 * that fit the columns (`fits(row)`: the `_record` cell is null), `leaf`, `group` and
 * `numericList` read single fields without building the record.
 */
export class ColumnarBatch {
  readonly length: number;
  private readonly leaves = new Map<string, { leaf: Leaf; read: Reader }>();
  private readonly groups = new Map<string, GroupColumns>();
  private readonly rest: Reader;
  private readonly order: { key: string; group: boolean; nulls: Leaf['nulls'] }[];

  constructor(readonly layout: Layout, readonly batch: RecordBatch, readonly name: string, passages?: PassageSource) {
    this.length = batch.numRows;
    for (const e of layout.entries) {
      if (isGroup(e)) this.groups.set(e.key, this.groupColumns(e, e.key === 'ctxs' ? passages : undefined));
      else this.leaves.set(e.key, { leaf: e, read: leafReader(this.data(e.column), e.type) });
    }
    this.rest = scalarReader(this.data(REST_COLUMN), 'utf8');
    this.order = layout.entries.map((e) => ({ key: e.key, group: isGroup(e), nulls: isGroup(e) ? 'absent' : e.nulls }));
  }

  private data(column: string): Data {
    const v = this.batch.getChild(column) as Vector | null;
    if (!v) throw new GainragError('E_DATA', `${this.name}: the layout names column ${column}, which the file lacks`);
    if (v.data.length !== 1) throw new GainragError('E_DATA', `${this.name}: column ${column} is split into ${v.data.length} chunks within one batch`);
    return v.data[0];
  }

  has(column: string): boolean {
    return this.batch.getChild(column) !== null;
  }

  /** The row's values are all in the columns (no `_record` JSON). */
  fits(row: number): boolean {
    return this.rest(row) === null;
  }

  /** A top-level scalar or list field: its column type and a reader (null: absent, or JSON null where nulls mean null). */
  leaf(key: string): { type: ColumnType; nulls: Leaf['nulls']; read: Reader } | undefined {
    const l = this.leaves.get(key);
    return l && { type: l.leaf.type, nulls: l.leaf.nulls, read: l.read };
  }

  group(key: string): GroupColumns | undefined {
    return this.groups.get(key);
  }

  /** A List<Float32|Float64|Int64|Int8|Int32> column (a group item's or an extra one) as views; undefined when absent or of another type. */
  numericList(column: string): NumericList<Float32Array | Float64Array | BigInt64Array | Int8Array | Int32Array> | undefined {
    if (!this.has(column)) return undefined;
    const d = this.data(column);
    const child = d.children?.[0];
    if (!child || !ArrayBuffer.isView(child.values) || child.values instanceof Uint8Array) return undefined;
    const offsets = (d.valueOffsets as Int32Array).subarray(d.offset, d.offset + d.length + 1);
    const values = (child.values as Float32Array).subarray(child.offset);
    const valid = validity(child);
    return { offsets, values, valid } as NumericList<Float32Array>;
  }

  private groupColumns(g: Group, passages?: PassageSource): GroupColumns {
    const lists = g.items.map((it) => listReader(this.data(it.column), it.type as Scalar));
    const items: GroupItem[] = g.items.map((it, m) => ({ key: it.key, column: it.column, type: it.type, nulls: it.nulls, read: lists[m].item }));
    if (passages && !g.items.some((it) => it.key === 'text')) {
      // --no-text: title and text from the passage store, by index row (checked against the ctx id).
      const rows = this.numericList('ctx_ids');
      if (!rows) throw new GainragError('E_DATA', `${this.name}: a retrieval output without passage text needs its ctx_ids column, which it lacks`);
      // Item k of the ctx columns is item k of ctx_ids: the same offsets, as retrieve writes them.
      for (let i = 0; i < this.length; i++) {
        const span = lists[0].range(i);
        if (span && (rows.offsets[i] !== span[0] || rows.offsets[i + 1] !== span[1])) throw new GainragError('E_DATA', `${this.name}: ctx_ids and the ctx columns disagree on row ${i}'s passages`);
      }
      const idItem = items.find((it) => it.key === 'id');
      const cache = new Map<number, Passage>();
      const passage = (k: number): Passage => {
        const row = Number(rows.values[k]);
        let p = cache.get(row);
        if (!p) {
          try {
            p = passages.get(row);
          } catch (err) {
            throw new GainragError('E_DATA', `${this.name}: ctx row ${row} is not in the passage store of ${passages.where} (another index?): ${(err as Error).message}`);
          }
          const id = idItem?.read(k);
          if (typeof id === 'string' && id !== p.id) throw new GainragError('E_DATA', `${this.name}: ctx row ${row} is passage "${id}" but ${passages.where} holds "${p.id}" there: not the index this output was retrieved from`);
          cache.set(row, p);
        }
        return p;
      };
      const at = idItem ? items.indexOf(idItem) + 1 : 0;
      items.splice(at, 0,
        { key: 'title', type: 'utf8', nulls: 'absent', read: (k) => passage(k).title },
        { key: 'text', type: 'utf8', nulls: 'absent', read: (k) => passage(k).text });
    }
    const byKey = new Map(items.map((it) => [it.key, it]));
    return {
      span: lists[0].range,
      item: (key) => byKey.get(key),
      element: (k) => {
        decodeCounts.elements++;
        const el: Obj = {};
        for (const it of items) {
          const x = it.read(k);
          if (x !== null) el[it.key] = x;
          else if (it.nulls === 'null') el[it.key] = null;
        }
        return el;
      },
    };
  }

  // The value of top-level `key` at `row`, or undefined when the row holds none (absent, or in `_record`).
  private value(key: string, group: boolean, row: number): unknown {
    if (!group) {
      const v = this.leaves.get(key)!.read(row);
      return v === null ? undefined : v;
    }
    const g = this.groups.get(key)!;
    const span = g.span(row);
    if (!span) return undefined;
    const out: Obj[] = new Array(span[1] - span[0]);
    for (let j = span[0]; j < span[1]; j++) out[j - span[0]] = g.element(j);
    return out;
  }

  /**
   * The JSONL record of `row`. `placeholders`: top-level keys whose values are not decoded (left
   * undefined, in their place), for a stage that replaces them (select's ctxs); fitting rows only.
   */
  record(row: number, placeholders?: ReadonlySet<string>): unknown {
    decodeCounts.records++;
    const shellText = this.rest(row) as string | null;
    if (shellText === null) {
      const r: Obj = {};
      for (const e of this.order) {
        if (placeholders?.has(e.key)) {
          if (e.group ? this.groups.get(e.key)!.span(row) !== null : this.leaves.get(e.key)!.read(row) !== null) r[e.key] = undefined;
          continue;
        }
        const v = this.value(e.key, e.group, row);
        if (v !== undefined) r[e.key] = v;
        else if (e.nulls === 'null') r[e.key] = null;
      }
      return r;
    }
    const shell = parseJson(shellText);
    if (!isPlain(shell)) return shell;
    for (const key of Object.keys(shell)) {
      const e = this.order.find((x) => x.key === key);
      if (!e) continue;
      const v = this.value(key, e.group, row);
      if (v !== undefined) shell[key] = v; // else the value is the shell's own
    }
    return shell;
  }
}

/** The records of one batch of a COLUMNS_SCHEMA file, from row `from` on. */
export function* decodeBatch(layout: Layout, batch: RecordBatch, from: number, name: string, passages?: PassageSource): Generator<unknown> {
  const b = new ColumnarBatch(layout, batch, name, passages);
  for (let row = from; row < b.length; row++) yield b.record(row);
}
