// Which build of an index a retrieval output's passage rows refer to. An Arrow retrieval output
// stores index rows, not passages; read after the index was rebuilt at the same path, the rows
// would resolve to other passages. The identity is the index manifest's own checksum (which
// covers the vectors, ids, count, dim and dtype) plus the passage store's size: cheap to read,
// and a rebuild from other passages changes it.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';

/** The identity of the index in `dir`; undefined for indexes whose manifest has no checksum (older builds). */
export function indexIdentity(dir: string): string | undefined {
  try {
    const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { checksums?: { manifest?: unknown } };
    const sum = m.checksums?.manifest;
    if (typeof sum !== 'string') return undefined;
    return `${sum}-${statSync(path.join(dir, 'passages.jsonl')).size}`;
  } catch {
    return undefined;
  }
}
