// `merge` of Arrow stage outputs: shard outputs concatenated at the message level (lib/io/arrow-records.ts
// frames the messages), so nothing is decoded or re-encoded.
import path from 'node:path';
import { GainragError } from '../errors.js';
import { ArrowMessageFile, EOS, MAGIC, fileFooter, splitSchema, streamStart, type FileMessage } from './arrow-records.js';

/**
 * Concatenates Arrow stage outputs (all file format or all stream format) in order: the schema
 * message, every record batch, the end marker (and the file format's footer). The schemas must be
 * byte-identical (same stage, same settings); an output without rows is left out.
 */
export function mergeArrowFiles(inputs: string[], write: (bytes: Uint8Array) => void, container: 'file' | 'stream' = 'stream'): number {
  // Headers first (bodies skipped): which inputs have rows, and their schemas.
  const infos = inputs.map((file) => {
    const f = new ArrowMessageFile(file, streamStart(file));
    try {
      const first = f.next();
      if (!first || first.header !== 1) throw new GainragError('E_DATA', `${path.basename(file)}: Arrow stream does not start with a schema`);
      const msgs: FileMessage[] = [];
      for (let m = f.next(false); m; m = f.next(false)) {
        if (m.header === 2) throw new GainragError('E_DATA', `${path.basename(file)}: dictionary batches cannot be merged`);
        msgs.push(m);
      }
      return { file, schema: first.bytes, msgs, rows: msgs.reduce((a, m) => a + m.rows, 0) };
    } finally {
      f.close();
    }
  });
  if (infos.length === 0) return 0;
  // An output's schema is decided by its first batch (lib/io/columns.ts): an empty shard's says nothing.
  const ref = infos.find((i) => i.rows > 0) ?? infos[0];
  for (const i of infos) {
    if (i.rows > 0 && !i.schema.equals(ref.schema)) {
      throw new GainragError('E_DATA', `${path.basename(i.file)}: its Arrow schema differs from ${path.basename(ref.file)}'s (outputs of different stages or settings?)`);
    }
  }
  let pos = 0;
  const out = (b: Uint8Array) => {
    write(b);
    pos += b.length;
  };
  const blocks: { offset: number; meta: number; body: number }[] = [];
  if (container === 'file') out(MAGIC);
  out(ref.schema);
  let rows = 0;
  for (const i of infos) {
    if (i.rows === 0) continue;
    const f = new ArrowMessageFile(i.file);
    try {
      for (const m of i.msgs) {
        if (m.header === 3) blocks.push({ offset: pos, meta: m.meta, body: m.body });
        out(f.read(m.meta + m.body, m.offset));
        rows += m.rows;
      }
    } finally {
      f.close();
    }
  }
  out(container === 'file' ? fileFooter(splitSchema(ref.schema), blocks) : EOS);
  return rows;
}
