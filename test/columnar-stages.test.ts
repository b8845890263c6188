// Stages read columns, not JSON (lib/io/stage-input.ts): synthesize, select and generate over an
// Arrow or Parquet input take the fields they need from the typed columns, and write exactly the
// bytes they write from the JSONL input; synthesize (and evaluate) build no record and no ctx
// object, select decodes only the ctxs it keeps. retrieve --no-text leaves passage text out; the stages after
// take it from the index by ctx_ids (or the JSONL ctx `row`), with the same results; a missing
// index is E_INDEX, another build of it E_DATA.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { columnarSchema } from '../lib/io/arrow-records.js';
import { decodeCounts } from '../lib/io/columns-read.js';
import { readStageInput, type RecordFormat } from '../lib/io/records.js';
import { buildIndex } from '../lib/retrieval/build.js';
import { openRetrieveResources, retrieve } from '../lib/retrieval/retrieve.js';
import { synthesize } from '../lib/pipeline/synthesize.js';
import { select } from '../lib/pipeline/select.js';
import { generateAnswers } from '../lib/pipeline/generate.js';
import { evaluate } from '../lib/pipeline/evaluate.js';
import { CausalLM } from '../lib/models/causal-lm.js';
import { CrossEncoder } from '../lib/models/cross-encoder.js';
import { nativeGenerator } from '../lib/pipeline/text-backend.js';
import { dataDir, repoRoot } from './helpers.js';

const model = (name: string) => path.join(repoRoot, 'models', name);
const work = mkdtempSync(path.join(tmpdir(), 'gainrag-colstages-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const f = (name: string) => path.join(work, name);
const squad = path.join(dataDir, 'squad_v1.1_dev_open');
const EXT: Record<RecordFormat, string> = { jsonl: 'jsonl', arrow: 'arrow', arrows: 'arrows', parquet: 'parquet' };
const bytes = (file: string) => readFileSync(file);

test('synthesize, select, generate over Arrow/Parquet columns (and --no-text inputs) write the bytes of the JSONL-input run', async () => {
  const passages = f('passages.jsonl');
  writeFileSync(passages, readFileSync(path.join(squad, 'passages.jsonl'), 'utf8').trim().split('\n').slice(-140, -80).join('\n') + '\n');
  const questions = f('questions.jsonl');
  writeFileSync(questions, readFileSync(path.join(squad, 'questions.jsonl'), 'utf8').trim().split('\n').slice(5300, 5310).join('\n') + '\n');
  // The index in a directory of its own, beside the retrieval outputs (where --no-text readers look).
  const index = f('idx');
  await buildIndex({ passages, encoder: model('bert-tiny'), out: index, batchSize: 60 });
  const resources = await openRetrieveResources({ index, encoder: model('bert-tiny') });
  const lm = await CausalLM.load(model('llama-tiny'));
  const selector = await CrossEncoder.load(model('xlmr-tiny-reranker'));

  const inputs: { name: string; file: string }[] = [];
  for (const format of ['jsonl', 'arrow', 'parquet'] as const) {
    for (const noText of [false, true]) {
      const file = f(`r${noText ? '-nt' : ''}.${EXT[format]}`);
      await retrieve({ index, encoder: model('bert-tiny'), data: questions, out: file, topK: 5, batchSize: 4, resources, format, noText });
      inputs.push({ name: `${format}${noText ? ' --no-text' : ''}`, file });
    }
  }
  // --no-text outputs carry no passage text, and read back as the output with text.
  const schema = await columnarSchema(f('r-nt.parquet'));
  assert.equal(schema.fields.some((x) => x.name === 'ctx_text' || x.name === 'ctx_title'), false);
  assert.equal(schema.metadata.get('gainrag.text'), 'index');
  assert.equal(readFileSync(f('r-nt.jsonl'), 'utf8').includes('"text"'), false);
  assert.ok(statSync(f('r-nt.arrow')).size < statSync(f('r.arrow')).size / 2, 'no-text Arrow output is not smaller');
  const records = async (file: string) => {
    const out = [];
    for await (const r of readStageInput(file)) out.push(JSON.stringify(r.record));
    return out.join('\n');
  };
  const withText = await records(f('r.jsonl'));
  for (const { name, file } of inputs) assert.equal(await records(file), withText, `${name}: records`);

  const synth = (data: string, out: string, format: RecordFormat = 'jsonl') =>
    synthesize(lm, { data, out, topK: 3, batchQuestions: 4, maxNewTokens: 2, pseudoMaxNewTokens: 4, format });
  const sel = (data: string, out: string, format: RecordFormat = 'jsonl') =>
    select(selector, { data, out, generator: nativeGenerator(lm), pseudoMaxNewTokens: 4, batchQuestions: 4, candidates: 5, kDocs: 2, format });
  const gen = (data: string, out: string, format: RecordFormat = 'jsonl') => generateAnswers({ lm, data, out, batchQuestions: 4, maxNewTokens: 2, kDocs: 2, format });

  await synth(f('r.jsonl'), f('s.jsonl'));
  await sel(f('r.jsonl'), f('sel.jsonl'));
  await gen(f('sel.jsonl'), f('g.jsonl'));
  for (const [i, { name, file }] of inputs.entries()) {
    if (file === f('r.jsonl')) continue;
    const columnar = !file.endsWith('.jsonl');
    let before = { ...decodeCounts };
    await synth(file, f(`s${i}.jsonl`));
    assert.ok(bytes(f(`s${i}.jsonl`)).equals(bytes(f('s.jsonl'))), `synthesize from ${name} differs`);
    // From columns: no record and no ctx object built (the text and scores are read in place).
    if (columnar) assert.deepEqual({ records: decodeCounts.records - before.records, elements: decodeCounts.elements - before.elements }, { records: 0, elements: 0 }, `synthesize from ${name}`);
    before = { ...decodeCounts };
    await sel(file, f(`sel${i}.jsonl`));
    assert.ok(bytes(f(`sel${i}.jsonl`)).equals(bytes(f('sel.jsonl'))), `select from ${name} differs`);
    // Only the ctxs kept (k-docs 2 of 5 per question, fewer when the pseudo-passage is kept).
    if (columnar) assert.ok(decodeCounts.elements - before.elements <= 2 * 10, `select from ${name} decoded ${decodeCounts.elements - before.elements} ctxs`);
  }
  // Columnar outputs from columnar inputs: the same files as from JSONL.
  for (const format of ['arrow', 'parquet'] as const) {
    await synth(f('r.jsonl'), f(`s-from-jsonl.${format}`), format);
    await synth(f(`r-nt.${format}`), f(`s-from-cols.${format}`), format);
    assert.ok(bytes(f(`s-from-cols.${format}`)).equals(bytes(f(`s-from-jsonl.${format}`))), `synthesize ${format} -> ${format}`);
    await sel(f('r.jsonl'), f(`sel-from-jsonl.${format}`), format);
    await sel(f(`r.${format}`), f(`sel-from-cols.${format}`), format);
    assert.ok(bytes(f(`sel-from-cols.${format}`)).equals(bytes(f(`sel-from-jsonl.${format}`))), `select ${format} -> ${format}`);
    await gen(f(`sel-from-cols.${format}`), f(`g-from-cols.${format}`), format);
    await gen(f('sel.jsonl'), f(`g-from-jsonl.${format}`), format);
    assert.ok(bytes(f(`g-from-cols.${format}`)).equals(bytes(f(`g-from-jsonl.${format}`))), `generate ${format} -> ${format}`);
    await gen(f(`sel-from-cols.${format}`), f(`g-${format}.jsonl`));
    assert.ok(bytes(f(`g-${format}.jsonl`)).equals(bytes(f('g.jsonl'))), `generate ${format} -> jsonl`);
    // evaluate reads the answers, generated, EM, F1 and ctx columns: no record built, the same summary.
    const before = decodeCounts.records;
    const ev = await evaluate({ data: f(`g-from-cols.${format}`) });
    assert.equal(decodeCounts.records - before, 0, `evaluate ${format} decoded records`);
    assert.deepEqual({ ...ev, input: '' }, { ...(await evaluate({ data: f('g.jsonl') })), input: '' }, `evaluate ${format}`);
  }

  // The index moved away: E_INDEX naming --index; given --index (indexDir), the same output.
  const moved = f('elsewhere');
  mkdirSync(moved);
  renameSync(index, path.join(moved, 'idx'));
  for (const file of [f('r-nt.parquet'), f('r-nt.jsonl')]) {
    await assert.rejects(synth(file, f('s-missing.jsonl')), (err: Error & { code?: string }) => err.code === 'E_INDEX' && /--index/.test(err.message));
  }
  await synthesize(lm, { data: f('r-nt.arrow'), out: f('s-given.jsonl'), topK: 3, batchQuestions: 4, maxNewTokens: 2, pseudoMaxNewTokens: 4, indexDir: path.join(moved, 'idx') });
  assert.ok(bytes(f('s-given.jsonl')).equals(bytes(f('s.jsonl'))));
  // A JSONL --no-text file copied without its manifest: only --index says where its text is.
  writeFileSync(f('copied.jsonl'), readFileSync(f('r-nt.jsonl')));
  await assert.rejects(synth(f('copied.jsonl'), f('s-copied.jsonl')), (err: Error & { code?: string }) => err.code === 'E_INDEX' && /manifest/.test(err.message));
  await synthesize(lm, { data: f('copied.jsonl'), out: f('s-copied.jsonl'), topK: 3, batchQuestions: 4, maxNewTokens: 2, pseudoMaxNewTokens: 4, indexDir: path.join(moved, 'idx') });
  assert.ok(bytes(f('s-copied.jsonl')).equals(bytes(f('s.jsonl'))));
  // Another build of an index of that name beside the output: E_DATA, never other passages' text.
  const other = f('other-passages.jsonl');
  writeFileSync(other, readFileSync(passages, 'utf8').trim().split('\n').reverse().join('\n') + '\n');
  await buildIndex({ passages: other, encoder: model('bert-tiny'), out: index, batchSize: 60 });
  for (const file of [f('r-nt.arrow'), f('r-nt.jsonl')]) await assert.rejects(sel(file, f('sel-other.jsonl')), { code: 'E_DATA' });
  await assert.rejects(gen(f('r-nt.parquet'), f('g-other.jsonl')), { code: 'E_DATA' });
  await resources.encoder.dispose();
  resources.store.close();
});
