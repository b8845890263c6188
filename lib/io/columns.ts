// Typed, flat columns for stage records (Arrow and Parquet outputs); reading them back is
// lib/io/columns-read.ts.
//
// A layout maps a record's keys to columns. It is decided once per output, from the records of
// its first batch and the known fields below (KNOWN, GROUPS), and stored as JSON in the schema
// metadata (gainrag.layout) with gainrag.schema = COLUMNS_SCHEMA, so that a reader needs nothing
// else. Rules:
// - a scalar key is one column of its type: strings Utf8, booleans Bool, numbers Float64 unless
//   known (EM Int8, hit ranks Int64, ...); an array of strings / numbers / booleans is a List;
//   anything else (objects, mixed arrays) is a Utf8 column of JSON, marked type `json`;
// - an array of objects (`ctxs`, `passages`) is exploded: one List column per element key, all
//   with the same offsets (`ctx_title`, `ctx_scores`, `passage_PPL_CD`, ...);
// - a null row (or list item) means the key is absent, except for the fields known to hold JSON
//   nulls (nulls: 'null', e.g. a pseudo-passage's has_answer), which are then always present;
// - a record that does not fit (a key the layout lacks, another type, another key order, a null
//   where absence is meant) keeps in the Utf8 column `_record` its JSON with every value that did
//   fit a column replaced by 0; `_record` is null for every record that fits.
// So every record reads back as exactly the JSONL record (same values, same key order), while the
// columns stay typed for DuckDB, Polars, pandas... Extra columns (retrieve's `ctx_ids`, the
// index rows) are written beside the record's and are not part of it.
import {
  Bool, Field, Float32, Float64, Int8, Int32, Int64, List, RecordBatch, Schema, Struct, Utf8, makeData, vectorFromArray,
  type DataType,
} from 'apache-arrow';
import { GainragError } from '../errors.js';
import { stringifyJson } from './json-values.js';

export const COLUMNS_SCHEMA = 'gainrag-columns-1';
/** The column holding the JSON of records that do not fit the typed columns. */
export const REST_COLUMN = '_record';

export type Scalar = 'utf8' | 'bool' | 'int8' | 'int32' | 'int64' | 'float32' | 'float64' | 'json';
export type ColumnType = Scalar | 'list<utf8>' | 'list<float64>' | 'list<float32>' | 'list<bool>' | 'list<int64>';

export interface Leaf {
  key: string;
  column: string;
  type: ColumnType;
  /** What a null row/item means: the key is absent, or its value is JSON null (then always present). */
  nulls: 'absent' | 'null';
}
export interface Group {
  key: string;
  items: Leaf[];
}
export type Entry = Leaf | Group;
export interface Layout {
  entries: Entry[];
  extra: { column: string; type: ColumnType }[];
}

export const isGroup = (e: Entry): e is Group => 'items' in e;

// Fields whose type (and null rule) is known, wherever they appear at the top of a record.
const KNOWN: Record<string, Omit<Leaf, 'key' | 'column'> & { always?: string[] }> = {
  question: { type: 'utf8', nulls: 'absent' },
  answers: { type: 'list<utf8>', nulls: 'absent' },
  prompt_standard: { type: 'utf8', nulls: 'absent' },
  pseudo_passage: { type: 'utf8', nulls: 'absent' },
  generated: { type: 'utf8', nulls: 'absent' },
  EM: { type: 'int8', nulls: 'absent' },
  F1: { type: 'float64', nulls: 'absent' },
  truncated: { type: 'bool', nulls: 'absent', always: ['generate'] },
  origin_hit_rank: { type: 'int64', nulls: 'null' },
  rerank_hit_rank: { type: 'int64', nulls: 'null' },
};

// Arrays of objects: column prefix, renamed columns, and the element fields known.
const GROUPS: Record<string, { prefix: string; names: Record<string, string>; known: Record<string, Omit<Leaf, 'key' | 'column'> & { always?: string[] }> }> = {
  ctxs: {
    prefix: 'ctx_',
    names: { id: 'ctx_passage_ids', score: 'ctx_scores' },
    known: {
      id: { type: 'utf8', nulls: 'absent' }, title: { type: 'utf8', nulls: 'absent' }, text: { type: 'utf8', nulls: 'absent' },
      score: { type: 'float32', nulls: 'absent' }, hasanswer: { type: 'bool', nulls: 'absent' }, selector_score: { type: 'float32', nulls: 'absent' },
      pseudo: { type: 'bool', nulls: 'absent', always: ['select'] },
    },
  },
  passages: {
    prefix: 'passage_',
    names: {},
    known: {
      title: { type: 'utf8', nulls: 'absent' }, text: { type: 'utf8', nulls: 'absent' },
      has_answer: { type: 'bool', nulls: 'null' }, retrieval_score: { type: 'float64', nulls: 'null' },
      prompt_retrieved: { type: 'utf8', nulls: 'absent' }, PPL_CD: { type: 'float64', nulls: 'null' }, retrieved_ppl: { type: 'float64', nulls: 'null' },
      EM_with_retrieval: { type: 'bool', nulls: 'absent' }, F1_with_retrieval: { type: 'float64', nulls: 'absent' }, generated: { type: 'utf8', nulls: 'absent' },
      pseudo: { type: 'bool', nulls: 'absent', always: ['synthesize', 'filter'] }, truncated: { type: 'bool', nulls: 'absent', always: ['synthesize', 'filter'] },
    },
  },
};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = Record<string, any>;
export const isPlain = (v: unknown): v is Obj => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const p = Object.getPrototypeOf(v);
  return (p === Object.prototype || p === null) && typeof (v as Obj).toJSON !== 'function';
};
// Values JSON.stringify leaves out of an object: the key is absent.
const omitted = (v: unknown) => v === undefined || typeof v === 'function' || typeof v === 'symbol';
const wellFormed = (s: string) => (s as unknown as { isWellFormed?: () => boolean }).isWellFormed?.() ?? !/[\ud800-\udfff]/.test(s);

// ---- inference -------------------------------------------------------------------------------

type Kind = ColumnType | 'list?' | 'group';

function kindOf(v: unknown, inGroup: boolean): Kind | undefined {
  if (v === null || omitted(v) || (typeof v === 'number' && Number.isNaN(v))) return undefined;
  if (typeof v === 'string') return 'utf8';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return 'float64';
  if (Array.isArray(v)) {
    if (v.length === 0) return 'list?';
    if (v.every((x) => typeof x === 'string')) return 'list<utf8>';
    if (v.every((x) => typeof x === 'number' && !Number.isNaN(x))) return 'list<float64>';
    if (v.every((x) => typeof x === 'boolean')) return 'list<bool>';
    if (!inGroup && v.every((x) => isPlain(x) && Object.keys(x).length > 0)) return 'group';
  }
  return 'json';
}

function mergeKind(a: Kind | undefined, b: Kind | undefined): Kind | undefined {
  if (a === undefined || a === b) return b ?? a;
  if (b === undefined) return a;
  if (a === 'list?' && (b.startsWith('list<') || b === 'group')) return b;
  if (b === 'list?' && (a.startsWith('list<') || a === 'group')) return a;
  return 'json';
}

const finalType = (k: Kind | undefined): ColumnType => (k === undefined || k === 'group' ? 'json' : k === 'list?' ? 'list<utf8>' : k);

// Keys in order of first appearance over `objs`, with the kind of their values.
function survey(objs: Obj[], inGroup: boolean): Map<string, Kind | undefined> {
  const keys = new Map<string, Kind | undefined>();
  for (const o of objs) {
    for (const k of Object.keys(o)) {
      const v = o[k];
      if (omitted(v)) continue;
      keys.set(k, mergeKind(keys.get(k), kindOf(v, inGroup)));
    }
  }
  return keys;
}

/**
 * The layout for an output whose first batch is `rows` (see the top of this file). Optional
 * fields `stage` writes (generate's `truncated`, select's `ctxs[].pseudo`...) get their columns
 * even when the first batch has none.
 */
export function inferLayout(rows: unknown[], extra: Layout['extra'] = [], stage?: string): Layout {
  const always = (k: { always?: string[] }) => stage !== undefined && (k.always?.includes(stage) ?? false);
  const used = new Set<string>([REST_COLUMN, ...extra.map((e) => e.column)]);
  const name = (want: string) => {
    let n = want;
    while (used.has(n)) n = `${n}_`;
    used.add(n);
    return n;
  };
  const objs = rows.filter(isPlain);
  const top = survey(objs, false);
  const entries: Entry[] = [];
  const leaf = (key: string, column: string, kind: Kind | undefined, known?: Omit<Leaf, 'key' | 'column'>): Leaf =>
    ({ key, column: name(column), type: known?.type ?? finalType(kind), nulls: known?.nulls ?? 'absent' });
  for (const [key, kind] of top) {
    const g = GROUPS[key];
    if (kind === 'group' || (g && kind === 'list?')) {
      const spec = g ?? { prefix: `${key}_`, names: {}, known: {} };
      const elements = objs.flatMap((o) => (Array.isArray(o[key]) ? (o[key] as unknown[]).filter(isPlain) : []));
      const items: Leaf[] = [];
      const inner = survey(elements, true);
      for (const k of Object.keys(spec.known)) if (always(spec.known[k]) && !inner.has(k)) inner.set(k, undefined);
      // Known element fields keep the order the stage writes them in (pseudo before truncated),
      // whichever the first batch happened to show first; the others stay where they appeared.
      const order = [...inner.keys()];
      const knownAt = order.map((k, i) => (k in spec.known ? i : -1)).filter((i) => i >= 0);
      const knownKeys = knownAt.map((i) => order[i]).sort((a, b) => Object.keys(spec.known).indexOf(a) - Object.keys(spec.known).indexOf(b));
      knownAt.forEach((i, j) => (order[i] = knownKeys[j]));
      // Element values are scalars; anything else (arrays too) is a JSON item.
      const scalar = (k: Kind | undefined): Kind | undefined => (k === undefined || k === 'list?' || k === 'group' || k.startsWith('list<') ? (k === undefined ? k : 'json') : k);
      for (const k of order) items.push(leaf(k, spec.names[k] ?? `${spec.prefix}${k}`, scalar(inner.get(k)), spec.known[k]));
      entries.push({ key, items });
    } else {
      entries.push(leaf(key, key, kind, KNOWN[key]));
    }
  }
  for (const k of Object.keys(KNOWN)) if (always(KNOWN[k]) && !top.has(k)) entries.push(leaf(k, k, undefined, KNOWN[k]));
  return { entries, extra };
}

// ---- schema ----------------------------------------------------------------------------------

function arrowType(t: ColumnType): DataType {
  switch (t) {
    case 'utf8': case 'json': return new Utf8();
    case 'bool': return new Bool();
    case 'int8': return new Int8();
    case 'int32': return new Int32();
    case 'int64': return new Int64();
    case 'float32': return new Float32();
    case 'float64': return new Float64();
    default: return new List(new Field('item', arrowType(t.slice(5, -1) as Scalar), true));
  }
}

const listOf = (t: ColumnType) => new List(new Field('item', arrowType(t), true));

/** The Arrow schema of a layout; `metadata` is added to the schema's (sorted, for stable bytes). */
export function layoutSchema(layout: Layout, metadata: Record<string, string>): Schema {
  const fields: Field[] = [];
  for (const e of layout.entries) {
    if (isGroup(e)) for (const it of e.items) fields.push(new Field(it.column, listOf(it.type), true, it.type === 'json' ? new Map([['gainrag.json', '1']]) : undefined));
    else fields.push(new Field(e.column, arrowType(e.type), true, e.type === 'json' ? new Map([['gainrag.json', '1']]) : undefined));
  }
  for (const x of layout.extra) fields.push(new Field(x.column, arrowType(x.type), true));
  fields.push(new Field(REST_COLUMN, new Utf8(), true, new Map([['gainrag.json', '1']])));
  const all = { ...metadata, 'gainrag.kind': 'columns', 'gainrag.schema': COLUMNS_SCHEMA, 'gainrag.layout': JSON.stringify(layout) };
  return new Schema(fields, new Map(Object.entries(all).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))));
}

/** The layout stored in a schema's metadata. Errors: E_DATA. */
export function schemaLayout(schema: Schema, name: string): Layout {
  const text = schema.metadata.get('gainrag.layout');
  try {
    const l = JSON.parse(text ?? '') as Layout;
    if (Array.isArray(l.entries) && Array.isArray(l.extra)) return l;
  } catch {
    // reported below
  }
  throw new GainragError('E_DATA', `${name}: the ${COLUMNS_SCHEMA} schema has no valid gainrag.layout`);
}

// ---- encoding --------------------------------------------------------------------------------

// The column value of `v` for a scalar type, or NO when it does not fit. NaN is JSON null.
const NO = Symbol('no');
function cell(t: ColumnType, v: unknown): unknown {
  switch (t) {
    case 'utf8': return typeof v === 'string' && wellFormed(v) ? v : NO;
    case 'bool': return typeof v === 'boolean' ? v : NO;
    case 'int8': return Number.isInteger(v) && (v as number) >= -128 && (v as number) <= 127 ? v : NO;
    case 'int32': return Number.isInteger(v) && (v as number) >= -(2 ** 31) && (v as number) < 2 ** 31 ? v : NO;
    case 'int64': return Number.isSafeInteger(v) ? BigInt(v as number) : NO;
    case 'float32': return typeof v === 'number' && Math.fround(v) === v ? v : NO;
    case 'float64': return typeof v === 'number' && !Number.isNaN(v) ? v : NO;
    case 'json': {
      const s = stringifyJson(v);
      return s === undefined ? NO : s;
    }
    default: {
      if (!Array.isArray(v)) return NO;
      const it = t.slice(5, -1) as Scalar;
      const out = new Array(v.length);
      for (let i = 0; i < v.length; i++) {
        const c = cell(it, v[i]);
        if (c === NO) return NO;
        out[i] = c;
      }
      return out;
    }
  }
}

const isNull = (v: unknown) => v === null || (typeof v === 'number' && Number.isNaN(v));

// A leaf's stored value: a fitting value, null for a JSON null where nulls mean null, else NO.
function leafCell(l: Leaf, v: unknown): unknown {
  if (isNull(v)) return l.nulls === 'null' ? null : NO;
  return cell(l.type, v);
}

// Present keys of `o` in order must follow `entries`; those whose nulls mean null must all be present.
function* walk<E extends { key: string; nulls?: string }>(o: Obj, entries: E[]): Generator<[E, unknown] | typeof NO> {
  let at = 0;
  for (const k of Object.keys(o)) {
    const v = o[k];
    if (omitted(v)) continue;
    let j = at;
    while (j < entries.length && entries[j].key !== k) {
      if (entries[j].nulls === 'null') {
        yield NO;
        return;
      }
      j++;
    }
    if (j === entries.length) {
      yield NO;
      return;
    }
    yield [entries[j], v];
    at = j + 1;
  }
  for (; at < entries.length; at++) if (entries[at].nulls === 'null') yield NO;
}

// The element columns of a group value, or NO.
function groupCells(g: Group, v: unknown): unknown[][] | typeof NO {
  if (!Array.isArray(v)) return NO;
  const cols = g.items.map(() => new Array(v.length).fill(null));
  for (let i = 0; i < v.length; i++) {
    const el = v[i];
    if (!isPlain(el)) return NO;
    for (const step of walk(el, g.items)) {
      if (step === NO) return NO;
      const c = leafCell(step[0], step[1]);
      if (c === NO) return NO;
      cols[g.items.indexOf(step[0])][i] = c;
    }
  }
  return cols;
}

/** Encodes `rows` (with their extra columns) as one record batch of `schema` (made by layoutSchema). */
export function encodeBatch(layout: Layout, schema: Schema, rows: unknown[], extras: (Record<string, unknown> | undefined)[]): RecordBatch {
  const n = rows.length;
  const leaves = new Map<Entry, unknown[]>();
  const groups = new Map<Group, unknown[][]>();
  for (const e of layout.entries) {
    if (isGroup(e)) groups.set(e, e.items.map(() => new Array(n).fill(null)));
    else leaves.set(e, new Array(n).fill(null));
  }
  const rest: (string | null)[] = new Array(n).fill(null);
  const byKey = new Map(layout.entries.map((e) => [e.key, e]));
  const top = layout.entries.map((e) => (isGroup(e) ? { key: e.key, nulls: 'absent', e } : { key: e.key, nulls: e.nulls, e }));
  rows.forEach((r, i) => {
    if (!isPlain(r)) {
      rest[i] = stringifyJson(r) ?? 'null';
      return;
    }
    // Fast path: the record fits as a whole.
    const cells: [Entry, unknown][] = [];
    let fits = true;
    for (const step of walk(r, top)) {
      if (step === NO) {
        fits = false;
        break;
      }
      const e = step[0].e;
      const c = isGroup(e) ? groupCells(e, step[1]) : leafCell(e, step[1]);
      if (c === NO) {
        fits = false;
        break;
      }
      cells.push([e, c]);
    }
    if (!fits) {
      // The record in `_record`, its fitting non-null values in the columns (placeholder 0 there).
      cells.length = 0;
      const shell: Obj = {};
      for (const k of Object.keys(r)) {
        const v = r[k];
        const e = byKey.get(k);
        const c = omitted(v) || isNull(v) || !e ? NO : isGroup(e) ? groupCells(e, v) : cell(e.type, v);
        if (c === NO) shell[k] = v;
        else {
          shell[k] = 0;
          cells.push([e!, c]);
        }
      }
      rest[i] = stringifyJson(shell) ?? 'null';
    }
    for (const [e, c] of cells) {
      if (isGroup(e)) groups.get(e)!.forEach((col, j) => (col[i] = (c as unknown[][])[j]));
      else leaves.get(e)![i] = c;
    }
  });
  const children = [];
  for (const e of layout.entries) {
    if (isGroup(e)) e.items.forEach((it, j) => children.push(vectorFromArray(groups.get(e)![j], listOf(it.type)).data[0]));
    else children.push(vectorFromArray(leaves.get(e)!, arrowType(e.type)).data[0]);
  }
  for (const x of layout.extra) {
    children.push(vectorFromArray(extras.map((ex) => (ex?.[x.column] === undefined ? null : ex[x.column])) as never, arrowType(x.type)).data[0]);
  }
  children.push(vectorFromArray(rest, new Utf8()).data[0]);
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children }));
}
