import type { CommandModule } from 'yargs';
import { engineInfo } from '../../engine.js';

export const infoCommand: CommandModule<{ json: boolean }, { json: boolean }> = {
  command: 'info',
  describe: 'print engine information (version, LibTorch, backends, devices, threads)',
  handler: (argv) => {
    const info = engineInfo();
    if (argv.json) {
      process.stdout.write(`${JSON.stringify(info)}\n`);
      return;
    }
    process.stdout.write(
      [
        `gainrag      ${info.version}`,
        `libtorch     ${info.torch}`,
        `backends     ${info.backends.join(', ')}`,
        `cuda devices ${info.cudaDevices}`,
        `threads      ${info.threads}`,
        `blas         ${info.blas}`,
        ...(info.dnnlKernels ? [`dnnl         ${info.dnnlKernels} (encoder default; GAINRAG_GEMM=torch opts out)`] : []),
        ...(info.int8InputBits ? [`int8 inputs  ${info.int8InputBits}-bit codes${info.int8InputBits < 8 ? ' (no VNNI: one bit less per activation, see README)' : ''}`] : []),
      ].join('\n') + '\n',
    );
  },
};
