// `gainrag convert llama2c`: a llama2.c checkpoint + tokenizer.bin -> Hugging Face directory.
// `gainrag convert records`: a stage file from one format (JSONL, Arrow, Parquet) into another.
import type { Argv, CommandModule } from 'yargs';
import { convertLlama2c } from '../../convert/llama2c.js';
import { convertRecords } from '../../io/convert-records.js';

interface Llama2cArgs {
  json: boolean;
  checkpoint: string;
  tokenizer: string;
  out: string;
  overwrite: boolean;
}

const llama2c: CommandModule<{ json: boolean }, Llama2cArgs> = {
  command: 'llama2c',
  describe: 'convert a llama2.c checkpoint (e.g. stories260K.bin + tok512.bin) to a Hugging Face Llama directory',
  builder: (y: Argv<{ json: boolean }>) =>
    y
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'llama2.c model .bin (legacy export)' })
      .option('tokenizer', { type: 'string', demandOption: true, describe: 'llama2.c tokenizer .bin' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory (written atomically)' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace a non-empty output directory' }),
  handler: (argv) => {
    const r = convertLlama2c({ checkpoint: argv.checkpoint, tokenizer: argv.tokenizer, out: argv.out, overwrite: argv.overwrite });
    if (argv.json) {
      process.stdout.write(`${JSON.stringify(r)}\n`);
    } else {
      const h = r.header;
      process.stdout.write(
        `wrote ${r.out}: llama dim ${h.dim}, ${h.nLayers} layers, ${h.nHeads}/${h.nKvHeads} heads, vocab ${h.vocabSize}, ` +
          `${r.tensors} tensors, ${h.sharedClassifier ? 'tied' : 'untied'} lm_head\n`,
      );
    }
  },
};

interface RecordsArgs {
  json: boolean;
  data: string;
  out: string;
  format: string;
}

const records: CommandModule<{ json: boolean }, RecordsArgs> = {
  command: 'records',
  describe: 'rewrite a stage file (JSONL, Arrow, Parquet; detected by content) in the format --out names',
  builder: (y: Argv<{ json: boolean }>) =>
    y
      .option('data', { type: 'string', demandOption: true, describe: 'input records (any format)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output: .jsonl/.json, .arrow/.feather, .arrows/.ipc or .parquet' })
      .option('format', { choices: ['auto', 'jsonl', 'arrow', 'arrows', 'parquet'], default: 'auto', describe: 'output format (auto: by extension)' }) as never,
  handler: async (argv) => {
    const r = await convertRecords({ data: argv.data, out: argv.out, format: argv.format });
    process.stdout.write(argv.json ? `${JSON.stringify(r)}\n` : `wrote ${r.records} records ${r.from} -> ${r.to} into ${r.output}\n`);
  },
};

export const convertCommand: CommandModule<{ json: boolean }, { json: boolean }> = {
  command: 'convert',
  describe: 'convert foreign checkpoints to Hugging Face directories, or stage files between formats',
  builder: (y) => y.command(llama2c as never).command(records as never).demandCommand(1, 'name what to convert: llama2c or records'),
  handler: () => {},
};
