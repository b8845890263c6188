// The question sets GainRAG evaluates on, in the form their official downloads take, read as the
// records every stage works on: {id?, question, answers: string[], ...the record's other fields}.
//
//   records          {question, answers}: the reference's JSONL and every gainrag output (as is)
//   nq-open          {question, answer: [..]}                       (NQ-open JSONL)
//   hotpotqa         {_id, question, answer: "..", context, ...}    (HotpotQA JSON array)
//   2wikimultihopqa  {_id, question, answer: "..", evidences, ...}  (2WikiMultiHopQA JSON array)
//   webquestions     {qId, qText, answers: [..]} or {url, utterance, targetValue: "(list (description X) ..)"}
//   triviaqa         {Data: [{QuestionId, Question, Answer: {Value, Aliases}}], ...}  (one JSON object)
//   squad            {data: [{title, paragraphs: [{context, qas: [{id, question, answers}]}]}]}  (one JSON object)
//
// Flat formats are mapped record by record (detected per record, so a file mixing none of them
// costs one property check each); the two nested ones are one JSON document each, read whole
// and flattened in file order (their official dev files are 5-600 MB of JSON). `--question-field`,
// `--answers-field` and `--id-field` (dot paths, e.g. Answer.Aliases) name other layouts.
import { closeSync, openSync, readSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';
import { parseJson } from './json-values.js';
import { checkRegularFile } from './input-file.js';

export const DATA_FORMATS = ['auto', 'records', 'nq-open', 'hotpotqa', '2wikimultihopqa', 'webquestions', 'triviaqa', 'squad'] as const;
export type DataFormat = (typeof DATA_FORMATS)[number];

export interface DatasetOptions {
  /** Default auto: detected from the file's start (nested formats) and each record's fields. */
  dataFormat?: DataFormat;
  /** Dot paths of the question, the answers (a string or a list of strings / {text}) and the id. */
  questionField?: string;
  answersField?: string;
  idField?: string;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Rec = Record<string, any>;

/** True when `o` asks for anything beyond auto-detection. */
export function checkDatasetOptions(o: DatasetOptions | undefined): void {
  if (!o) return;
  if (o.dataFormat !== undefined && !(DATA_FORMATS as readonly string[]).includes(o.dataFormat)) {
    throw new GainragError('E_INVALID_ARG', `--data-format must be one of ${DATA_FORMATS.join(', ')}, got ${JSON.stringify(o.dataFormat)}`);
  }
  for (const [flag, v] of [['--question-field', o.questionField], ['--answers-field', o.answersField], ['--id-field', o.idField]] as const) {
    if (v !== undefined && (typeof v !== 'string' || v.trim() === '' || v.split('.').some((k) => k === ''))) throw new GainragError('E_INVALID_ARG', `${flag} must be a field name or a dot path, got ${JSON.stringify(v)}`);
  }
}

function pick(r: Rec, dotted: string): unknown {
  let v: unknown = r;
  for (const k of dotted.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Rec)[k];
  }
  return v;
}

/** Answers in any of the shapes datasets use: a string, strings, or objects with `text`. */
function answerList(v: unknown): string[] | undefined {
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v)) return undefined;
  const out: string[] = [];
  for (const a of v) {
    if (typeof a === 'string') out.push(a);
    else if (a && typeof a === 'object' && typeof (a as Rec).text === 'string') out.push((a as Rec).text);
    else return undefined;
  }
  return [...new Set(out)];
}

/** WebQuestions' original `targetValue`: "(list (description Jazmine Sullivan) (description \"X\"))". */
export function parseTargetValue(v: string): string[] {
  const out: string[] = [];
  const re = /\(description\s+(?:"((?:[^"\\]|\\.)*)"|([^()]*?))\)/g;
  for (let m = re.exec(v); m; m = re.exec(v)) out.push((m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]).trim());
  return out;
}

function rebuild(r: Rec, question: unknown, answers: string[] | undefined, id: unknown, drop: string[]): Rec {
  const rest: Rec = {};
  for (const [k, v] of Object.entries(r)) if (!drop.includes(k) && k !== 'question' && k !== 'answers' && k !== 'id') rest[k] = v;
  return { ...(id !== undefined ? { id } : r.id !== undefined ? { id: r.id } : {}), question, ...(answers !== undefined ? { answers } : {}), ...rest };
}

/** One flat record in the records layout (see the top of this file); anything unknown is returned as is. */
export function mapRecord(record: unknown, o: DatasetOptions = {}): unknown {
  if (record === null || typeof record !== 'object' || Array.isArray(record)) return record;
  const r = record as Rec;
  if (o.questionField || o.answersField || o.idField) {
    const q = o.questionField ? pick(r, o.questionField) : r.question;
    const a = o.answersField ? answerList(pick(r, o.answersField)) : answerList(r.answers);
    const id = o.idField ? pick(r, o.idField) : undefined;
    const drop = [o.questionField, o.answersField, o.idField].filter((f): f is string => Boolean(f) && !f!.includes('.'));
    return rebuild(r, q, a, id, drop);
  }
  const format = o.dataFormat ?? 'auto';
  if (format === 'records') return r;
  if (typeof r.question === 'string' && Array.isArray(r.answers) && format === 'auto') return r; // the common case: no copy
  if ((format === 'auto' || format === 'webquestions') && typeof r.qText === 'string') return rebuild(r, r.qText, answerList(r.answers), r.qId, ['qText', 'qId']);
  if ((format === 'auto' || format === 'webquestions') && typeof r.utterance === 'string' && typeof r.targetValue === 'string') {
    return rebuild(r, r.utterance, parseTargetValue(r.targetValue), undefined, ['utterance', 'targetValue']);
  }
  if (format === 'auto' || format === 'nq-open' || format === 'hotpotqa' || format === '2wikimultihopqa') {
    if (typeof r.question === 'string' && r.answers === undefined && (typeof r.answer === 'string' || Array.isArray(r.answer))) {
      return rebuild(r, r.question, answerList(r.answer), r._id, ['answer', '_id']);
    }
  }
  return r;
}

/** The nested format a file holds, from its first bytes ('' for none). */
export function nestedFormat(file: string): 'squad' | 'triviaqa' | '' {
  checkRegularFile(file); // not a directory, FIFO or device (opening a FIFO would block)
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw ioError(err, `cannot open ${file}`);
  }
  try {
    const buf = Buffer.alloc(4096);
    const head = buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8').replace(/^\uFEFF/, '');
    if (!/^\s*\{/.test(head)) return '';
    // The top-level keys of the official files come first: SQuAD {"data"| "version"}, TriviaQA {"Data"| "Domain"| "Version"}.
    if (/^\s*\{\s*"(Data|Domain|Split|Version|VersionName)"\s*:/.test(head) && /"Data"\s*:\s*\[/.test(head)) return 'triviaqa';
    if (/^\s*\{\s*"(data|version)"\s*:/.test(head) && /"data"\s*:\s*\[/.test(head) && /"paragraphs"\s*:/.test(head)) return 'squad';
    return '';
  } finally {
    closeSync(fd);
  }
}

/** Whether `file` must be read through readNestedDataset (a SQuAD or TriviaQA document). */
export function isNestedDataset(file: string, o: DatasetOptions = {}): boolean {
  if (o.dataFormat === 'squad' || o.dataFormat === 'triviaqa') return true;
  if (o.dataFormat !== undefined && o.dataFormat !== 'auto') return false;
  return nestedFormat(file) !== '';
}

/** The questions of a SQuAD or TriviaQA document, flattened in file order; `line` is the 1-based question number. */
export async function* readNestedDataset(file: string, o: DatasetOptions = {}): AsyncGenerator<{ record: unknown; line: number }> {
  const name = path.basename(file);
  const format = o.dataFormat === 'squad' || o.dataFormat === 'triviaqa' ? o.dataFormat : nestedFormat(file);
  let doc: Rec;
  try {
    doc = parseJson(await readFile(file, 'utf8')) as Rec;
  } catch (err) {
    if ((err as { code?: string }).code === 'E_IO' || (err as NodeJS.ErrnoException).errno !== undefined) throw ioError(err, `cannot read ${file}`);
    throw new GainragError('E_DATA', `${name}: not a ${format} JSON document (${(err as Error).message})`, { cause: err });
  }
  let n = 0;
  if (format === 'squad') {
    if (!Array.isArray(doc?.data)) throw new GainragError('E_DATA', `${name}: a SQuAD file needs a top-level "data" array`);
    for (const [ai, article] of doc.data.entries()) {
      if (!Array.isArray(article?.paragraphs)) throw new GainragError('E_DATA', `${name}: data[${ai}] has no "paragraphs" array`);
      for (const p of article.paragraphs) {
        for (const qa of Array.isArray(p?.qas) ? p.qas : []) {
          n++;
          const rec = { id: qa?.id, question: qa?.question, answers: answerList(qa?.answers), title: article.title };
          yield { record: mapRecord(rec, { ...o, dataFormat: 'records' }), line: n };
        }
      }
    }
    return;
  }
  if (!Array.isArray(doc?.Data)) throw new GainragError('E_DATA', `${name}: a TriviaQA file needs a top-level "Data" array`);
  for (const q of doc.Data) {
    n++;
    const ans = q?.Answer;
    const answers = ans && typeof ans === 'object' ? answerList([...(typeof ans.Value === 'string' ? [ans.Value] : []), ...(Array.isArray(ans.Aliases) ? ans.Aliases : [])]) : undefined;
    yield { record: { id: q?.QuestionId, question: q?.Question, ...(answers ? { answers } : {}) }, line: n };
  }
}
