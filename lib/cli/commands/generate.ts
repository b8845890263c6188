// `gainrag generate`: answer each record with the LLM from the reference's evaluation prompt over
// its top-K ctxs (or none), score EM/F1 (lib/stages/generate.ts). Ctrl-C stops at the next batch
// boundary and keeps `<out>.partial` for `--resume`.
import { generateStage } from '../../stages/generate.js';
import { stageCommand } from '../stage-command.js';

export const generateCommand = stageCommand(generateStage);
