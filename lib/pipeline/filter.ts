// GainRAG step 3a: keep the questions whose best passage (lowest PPL_CD) makes the LLM answer
// correctly (EM_with_retrieval), as the reference's data_filter.py. Ties keep the first passage,
// as Python's stable sort does. Input: synthesize output (JSONL, or a JSON array as the reference
// writes); output: JSONL, published when complete.
import { readRecords, AtomicJsonlWriter } from '../io/jsonl.js';
import { GainragError } from '../errors.js';

export interface SynthPassage {
  title: string;
  text: string;
  PPL_CD: number | null;
  EM_with_retrieval: boolean | number;
  [key: string]: unknown;
}

export interface FilterSummary {
  records: number;
  kept: number;
  skipped: number;
}

/** A passage's PPL_CD as a sortable number; missing or non-finite counts as +Infinity. */
export function pplOf(p: { PPL_CD?: unknown }): number {
  return typeof p.PPL_CD === 'number' && Number.isFinite(p.PPL_CD) ? p.PPL_CD : Infinity;
}

/** Index of the first passage with the lowest PPL_CD. */
export function bestPassageIndex(passages: readonly { PPL_CD?: unknown }[]): number {
  let best = 0;
  for (let i = 1; i < passages.length; i++) if (pplOf(passages[i]) < pplOf(passages[best])) best = i;
  return best;
}

/** Records without a non-empty `passages` array are skipped with a warning naming FILE:LINE. */
export async function filterSynthesized(options: { data: string; out: string; signal?: AbortSignal; warn?: (m: string) => void }): Promise<FilterSummary> {
  const summary: FilterSummary = { records: 0, kept: 0, skipped: 0 };
  const writer = AtomicJsonlWriter.open(options.out);
  try {
    for await (const { record, line } of readRecords(options.data)) {
      if (options.signal?.aborted) throw new GainragError('E_CANCELLED', 'filter was cancelled');
      summary.records++;
      const passages = record?.passages;
      if (!Array.isArray(passages) || passages.length === 0 || !passages.every((p) => p && typeof p === 'object')) {
        summary.skipped++;
        options.warn?.(`skipped ${options.data}:${line}: record has no "passages" array of objects (E_DATA)`);
        continue;
      }
      if (passages[bestPassageIndex(passages)].EM_with_retrieval) {
        writer.write(record);
        summary.kept++;
      }
    }
    writer.close();
  } catch (err) {
    writer.abort();
    throw err;
  }
  return summary;
}
