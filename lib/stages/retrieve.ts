// The retrieve stage: top-k passages for every question (lib/retrieval/retrieve.ts).
import path from 'node:path';
import type { Argv } from 'yargs';
import { checkSearchParamValues, openRetrieveResources, retrieve, type RetrieveOptions, type RetrieveResources, type RetrieveSummary } from '../retrieval/retrieve.js';
import { validateOutput } from '../io/output.js';
import { GainragError } from '../errors.js';
import { positiveInt } from '../pipeline/stage.js';
import { cached, scaleArgs, withScaleOptions, type ParsedArgs } from './flags.js';
import type { StageDefinition, StageRunBase } from './definition.js';
import { embedClientFromArgs, withEmbedUrlFlags } from './embed-flags.js';

export type RetrieveStageOptions = RetrieveOptions & StageRunBase;

export const retrieveStage: StageDefinition<RetrieveStageOptions, RetrieveResources, RetrieveSummary> = {
  name: 'retrieve',
  describe: 'retrieve the top-k passages for each question (JSON/JSONL {question, answers}) into a JSONL file',
  unit: 'questions',
  builder: (y: Argv) =>
    withEmbedUrlFlags(withScaleOptions(y))
      .option('index', { type: 'string', demandOption: true, describe: 'index directory (gainrag index build/import)' })
      .option('encoder', { type: 'string', describe: 'bi-encoder model directory (the one that built the index); or --embed-url' })
      .option('data', { type: 'string', demandOption: true, describe: 'questions: JSON array or JSONL of {question, answers}' })
      .option('top-k', { type: 'number', default: 100, describe: 'passages per question' })
      .option('out', { type: 'string', demandOption: true, describe: 'output JSONL (input fields + ctxs)' })
      .option('batch-size', { type: 'number', default: 512, describe: 'questions embedded and searched together' })
      .option('max-length', { type: 'number', describe: 'tokens per question (default: the model maximum)' })
      .option('nprobe', { type: 'number', describe: "an index with an IVF FAISS index: lists probed per question (default: the index's, from index build --nprobe)" })
      .option('ef-search', { type: 'number', describe: "an index with an HNSW FAISS index: efSearch (default: the index's, from index build --ef-search)" })
      .option('device', { type: 'string', describe: 'encoder device: cpu, cuda, cuda:N' })
      .option('encoder-dtype', { choices: ['float32', 'bfloat16', 'int8', 'float16'] as const, describe: "encoder compute dtype (bfloat16 / int8: CPU with oneDNN, fp32 activations; in the output's settings)" })
      .option('matmul-precision', { choices: ['highest', 'high'] as const, describe: 'float32 encoder products: highest (default) or high (bf16x3 on the bf16 units, CPU with oneDNN)' })
      .option('pooling', { choices: ['mean', 'cls'] as const, describe: "encoder pooling (default: the index's record, else the model's sentence-transformers config, else mean)" })
      .option('normalize', { type: 'boolean', describe: "L2-normalise query embeddings (default: the index's record / the model's Normalize module)" })
      .option('query-prefix', { type: 'string', describe: "text put before each question (E5 'query: ', BGE's instruction; default: the index's record / the model's prompts)" })
      .option('passage-prefix', { type: 'string', describe: 'text put before each passage (recorded by index build; here only to check it matches)' })
      .option('text', { type: 'boolean', default: true, describe: '--no-text: leave passage title and text out of the output (index rows only); the stages after read them from the index (beside the output, or --index)' })
      .option('allow-encoder-mismatch', { type: 'boolean', default: false, describe: "use an encoder that embeds differently from the index's (weights, pooling, normalize, query prefix)" }) as unknown as Argv,
  optionsFromArgs: (a: ParsedArgs) => ({
    index: a.index, encoder: a.encoder, embedUrl: a['embed-url'], embedClient: embedClientFromArgs(a), data: a.data, out: a.out, topK: a['top-k'], batchSize: a['batch-size'], maxLength: a['max-length'], device: a.device, encoderDType: a['encoder-dtype'], matmulPrecision: a['matmul-precision'], nprobe: a.nprobe, efSearch: a['ef-search'],
    pooling: a.pooling, normalize: a.normalize, queryPrefix: a['query-prefix'], passagePrefix: a['passage-prefix'],
    allowEncoderMismatch: a['allow-encoder-mismatch'], ...(a.text === false ? { noText: true } : {}), ...scaleArgs(a as never),
  }),
  check: (o) => {
    // Checked here (not when the encoder loads) so that cluster submit refuses it before queueing.
    if ((o.encoder === undefined) === (o.embedUrl === undefined)) throw new GainragError('E_INVALID_ARG', 'give one of --encoder (a local model) or --embed-url URL (a TEI-compatible server)');
    positiveInt('topK', o.topK ?? 100);
    positiveInt('batchSize', o.batchSize ?? 512);
    if (o.maxLength !== undefined) positiveInt('maxLength', o.maxLength);
    checkSearchParamValues(o);
    validateOutput(o.out, 'file', { inputs: [o.data], label: 'out' });
  },
  alignment: (o) => o.batchSize ?? 512,
  load: (o, cache) =>
    cached(cache, `retrieve\0${path.resolve(o.index)}\0${o.embedUrl ?? path.resolve(o.encoder ?? '')}\0${o.device}\0${o.encoderDType}\0${o.matmulPrecision}\0${o.maxLength}\0${JSON.stringify([o.pooling, o.normalize, o.queryPrefix, o.passagePrefix, o.allowEncoderMismatch])}`, () =>
      openRetrieveResources(o)),
  run: (resources, o) => retrieve({ ...o, resources, onProgress: (done) => o.onProgress?.(done) }),
  models: (o) => [o.encoder],
  written: (s) => s.questions,
  format: (s) => {
    const lines = [`retrieved top-${s.topK} for ${s.questions} questions into ${s.out}`];
    const misses = s.withoutAnswers > 0 ? ` (${s.withoutAnswers} without answers, counted as misses)` : '';
    lines.push(`recall over all ${s.questions} questions${misses}:`);
    for (const [k, r] of Object.entries(s.recall)) lines.push(`  Recall@${k.padEnd(4)} ${(r * 100).toFixed(2)}%`);
    return `${lines.join('\n')}\n`;
  },
};
