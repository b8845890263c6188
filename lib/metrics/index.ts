// QA metrics shared by synthesis and evaluation.
export { normalizeAnswer, regexMatch, exactMatch, tokenF1, emMaxOverGold, f1MaxOverGold } from './squad.js';
