// What the streaming stages read (lib/pipeline/run-stage.ts): the rows of their input in a
// range, whatever its format, each able to give its record and, for a gainrag Arrow or Parquet
// file, the typed columns it sits in.
//
// A JSONL input (or a nested dataset, an Arrow table of another tool, an older gainrag layout)
// gives records, parsed as they are read. A gainrag columnar input is read one record batch at a
// time (Parquet: one row group; rows before the range are not decoded) and its rows are cursors
// into the batch: a stage reads the fields it needs from the columns (ColumnarBatch: strings from
// the value buffers, numeric lists as typed-array views) and builds only the output it writes.
// `record()` decodes the whole record when a stage needs it (a row that does not fit the typed
// columns, or a stage that copies the input record into its output).
//
// A row has `columns` only when its question and answers are in them (Utf8, List<Utf8>) and no
// dataset mapping applies (--question-field...): then the record the columns stand for is the
// one the record path would see, and a stage's columnar path and record path agree.
import path from 'node:path';
import { GainragError } from '../errors.js';
import { columnarSchema } from './arrow-records.js';
import { batchesOf, indexReference } from './arrow-read.js';
import { COLUMNS_SCHEMA, schemaLayout } from './columns.js';
import { ColumnarBatch } from './columns-read.js';
import { isNestedDataset, mapRecord, type DatasetOptions } from './datasets.js';
import { inputFormat } from './formats.js';
import { TEXT_IN_INDEX, TEXT_KEY, openPassageSource } from './passage-source.js';
import { readStageInput, type ReadOptions } from './records.js';

export interface StageRow {
  /** 0-based record position in the whole file. */
  position: number;
  /** The file line (JSONL) or the 1-based record number (other formats), for messages. */
  line: number;
  /** The record as the JSONL form holds it (dataset mapping applied); decoded on the first call. */
  record(): unknown;
  /** The record's `question` (from its column when it has one). */
  question(): unknown;
  /** The batch and the row in it, when the row's question and answers are in typed columns. */
  columns?: { batch: ColumnarBatch; row: number };
}

const mapsFields = (d?: DatasetOptions) =>
  d !== undefined && (d.questionField !== undefined || d.answersField !== undefined || d.idField !== undefined || (d.dataFormat !== undefined && d.dataFormat !== 'auto' && d.dataFormat !== 'records'));

/** Streams the rows of `file` in [range.start, range.end) (all without a range); see the top of this file. */
export async function* readStageRows(file: string, options: ReadOptions = {}): AsyncGenerator<StageRow> {
  const start = options.range?.start ?? 0;
  const end = options.range?.end ?? Infinity;
  if (start >= end) return;
  const columnar = !isNestedDataset(file, options.dataset) && inputFormat(file) !== 'jsonl' && !mapsFields(options.dataset);
  const schema = columnar ? await columnarSchema(file) : undefined;
  if (!schema || schema.metadata.get('gainrag.kind') !== 'columns') {
    for await (const r of readStageInput(file, options)) {
      const record = r.record as { question?: unknown } | null;
      yield { position: r.position, line: r.line, record: () => record, question: () => record?.question };
    }
    return;
  }
  const name = path.basename(file);
  if (schema.metadata.get('gainrag.schema') !== COLUMNS_SCHEMA) throw new GainragError('E_DATA', `${name}: columns schema ${schema.metadata.get('gainrag.schema')} is not ${COLUMNS_SCHEMA} (made by a newer gainrag?)`);
  const layout = schemaLayout(schema, name);
  const passages = schema.metadata.get(TEXT_KEY) === TEXT_IN_INDEX ? openPassageSource(file, indexReference(schema), options.indexDir) : undefined;
  try {
    let position = start;
    for await (const { batch, left } of batchesOf(file, start)) {
      const b = new ColumnarBatch(layout, batch, name, passages);
      const question = b.leaf('question');
      const answers = b.leaf('answers');
      const typed = question?.type === 'utf8' && answers?.type === 'list<utf8>';
      for (let row = left; row < b.length; row++, position++) {
        if (position >= end) return;
        let record: unknown;
        let decoded = false;
        const get = () => {
          if (!decoded) record = mapRecord(b.record(row), options.dataset);
          decoded = true;
          return record;
        };
        const fits = typed && b.fits(row) && question.read(row) !== null && answers.read(row) !== null;
        yield {
          position, line: position + 1, record: get,
          question: fits ? () => question.read(row) : () => (get() as { question?: unknown } | null)?.question,
          ...(fits ? { columns: { batch: b, row } } : {}),
        };
      }
    }
  } finally {
    passages?.close();
  }
}
