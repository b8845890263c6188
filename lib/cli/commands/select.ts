// `gainrag select`: rerank retrieved passages plus the LLM's pseudo-passage with the trained
// selector and keep the top K (lib/stages/select.ts). Ctrl-C stops at the next group and keeps
// `<out>.partial` for `--resume`.
import { selectStage } from '../../stages/select.js';
import { stageCommand } from '../stage-command.js';

export const selectCommand = stageCommand(selectStage);
