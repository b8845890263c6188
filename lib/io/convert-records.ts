// Converts a stage file between formats (JSONL, Arrow IPC file/stream, Parquet): the records are
// read from any of them and written in the format `out` names, with the stage's typed columns
// (the stage is taken from the input's schema metadata or manifest, for the optional columns).
import { columnarSchema } from './arrow-records.js';
import { inputFormat, outputFormat, type RecordFormat } from './formats.js';
import { readManifest } from './manifest.js';
import { openStageOutput, readStageInput } from './records.js';

export interface ConvertRecordsSummary {
  input: string;
  output: string;
  from: RecordFormat;
  to: RecordFormat;
  records: number;
}

/** Errors: E_INVALID_ARG (unknown output format, output = input), E_DATA, E_IO, E_LOCKED. */
export async function convertRecords(options: { data: string; out: string; format?: string; batch?: number; signal?: AbortSignal }): Promise<ConvertRecordsSummary> {
  const to = outputFormat(options.out, options.format);
  const from = inputFormat(options.data);
  const stage = from === 'jsonl' ? readManifest(options.data)?.stage : (await columnarSchema(options.data)).metadata.get('gainrag.stage') ?? readManifest(options.data)?.stage;
  const batch = options.batch ?? 1024;
  const writer = openStageOutput(options.out, { format: to, inputs: [options.data], metadata: stage ? { 'gainrag.stage': stage } : {} });
  let records = 0;
  try {
    for await (const { record } of readStageInput(options.data)) {
      options.signal?.throwIfAborted();
      writer.write(record);
      if (++records % batch === 0) writer.flush();
    }
    await writer.close();
  } catch (err) {
    writer.abort();
    throw err;
  }
  return { input: options.data, output: options.out, from, to, records };
}
