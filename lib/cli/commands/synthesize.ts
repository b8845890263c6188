// `gainrag synthesize`: gain signals (contrastive perplexity per passage) + per-passage answers for
// retrieval output (lib/stages/synthesize.ts). Ctrl-C stops at the next batch boundary and keeps
// `<out>.partial` for `--resume`.
import { synthesizeStage } from '../../stages/synthesize.js';
import { stageCommand } from '../stage-command.js';

export const synthesizeCommand = stageCommand(synthesizeStage);
