// `gainrag retrieve`: top-k passages for every question, with hasanswer flags and Recall@k (lib/stages/retrieve.ts).
import { retrieveStage } from '../../stages/retrieve.js';
import { stageCommand } from '../stage-command.js';

export const retrieveCommand = stageCommand(retrieveStage);
