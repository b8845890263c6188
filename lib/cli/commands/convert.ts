// `gainrag convert llama2c`: a llama2.c checkpoint + tokenizer.bin -> Hugging Face directory.
import type { Argv, CommandModule } from 'yargs';
import { convertLlama2c } from '../../convert/llama2c.js';

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

export const convertCommand: CommandModule<{ json: boolean }, { json: boolean }> = {
  command: 'convert',
  describe: 'convert foreign checkpoints to Hugging Face directories',
  builder: (y) => y.command(llama2c as never).demandCommand(1, 'name a format: llama2c'),
  handler: () => {},
};
