// `--resume` onto a file that is already complete. Every resumable stage treats that as "nothing
// to do" and replays the finished records into its summary; but only after checking that the file
// really is this stage's output for this input, so that an unrelated file at --out (or --out equal
// to --data) is refused instead of being reported "already complete" with exit 0.
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../io/output.js';
import { readRecords } from '../io/jsonl.js';
import { GainragError } from '../errors.js';

export interface FinishedOutputCheck<R> {
  /** The stage's name, for messages ("synthesize", "select", ...). */
  stage: string;
  /** True for a record this stage writes. */
  isStageRecord: (record: unknown) => record is R;
  /** What such a record needs, for the error message ("question and passages[].PPL_CD"). */
  needs: string;
}

/**
 * Reads the finished output `out` of a run over `data`, calling `onRecord` for each record.
 * Errors: E_INVALID_ARG when a record is not this stage's output, E_DATA when its question is
 * not found in `data` at or after the previous record's position.
 */
export async function replayFinishedOutput<R extends { question: unknown }>(out: string, data: string, check: FinishedOutputCheck<R>, onRecord: (record: R) => void): Promise<number> {
  const inputs = readRecords(data)[Symbol.asyncIterator]();
  let count = 0;
  try {
    for await (const { record, line } of readRecords(out)) {
      if (!check.isStageRecord(record)) {
        throw new GainragError('E_INVALID_ARG', `${out}:${line}: not a ${check.stage} output (records need ${check.needs}); refusing --resume onto it`);
      }
      const question = record.question;
      let found = false;
      for (let next = await inputs.next(); !next.done; next = await inputs.next()) {
        if (next.value.record?.question === question) {
          found = true;
          break;
        }
      }
      if (!found) {
        throw new GainragError('E_DATA', `${out}:${line}: question "${String(question).slice(0, 80)}" is not in ${data} (in order); it is the output of another input, start without --resume`);
      }
      count++;
      onRecord(record);
    }
  } finally {
    await inputs.return?.(undefined);
  }
  return count;
}

/**
 * The settings an output depends on, kept beside its partial file (`OUT.partial.settings.json`):
 * when `resuming`, refuses settings that differ from the interrupted run's (two kinds of records
 * in one file); then records the current ones atomically. Returns the settings file's path.
 */
export function recordResumeSettings(out: string, settings: Record<string, unknown>, resuming: boolean): string {
  const settingsPath = `${out}.partial.settings.json`;
  if (resuming && existsSync(settingsPath)) {
    const before = JSON.parse(readFileSync(settingsPath, 'utf8')) as Record<string, unknown>;
    const changed = Object.keys(settings).filter((k) => JSON.stringify(before[k]) !== JSON.stringify(settings[k]));
    if (changed.length > 0) {
      const diff = changed.map((k) => `${k}: ${JSON.stringify(before[k])} -> ${JSON.stringify(settings[k])}`).join('; ');
      throw new GainragError('E_INVALID_ARG', `--resume with settings that differ from the interrupted run (${diff}); use the same ones, or start without --resume`);
    }
  }
  writeFileAtomic(settingsPath, JSON.stringify(settings, null, 1));
  return settingsPath;
}
