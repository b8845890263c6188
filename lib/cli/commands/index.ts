// Registry of CLI commands; each lives in its own file.
import type { CommandModule } from 'yargs';
import { infoCommand } from './info.js';
import { demoCommand } from './demo.js';
import { trainCommand } from './train.js';
import { synthesizeCommand } from './synthesize.js';
import { filterCommand } from './filter.js';
import { toSelectorCommand } from './to-selector.js';
import { convertCommand } from './convert.js';
import { indexCommand } from './index-build.js';
import { retrieveCommand } from './retrieve.js';
import { mergeCommand } from './merge.js';
import { clusterCommand } from './cluster.js';
import { selectCommand } from './select.js';
import { generateCommand } from './generate.js';
import { evaluateCommand } from './evaluate.js';
import { compareCommand } from './compare.js';
import { splitCommand } from './split.js';
import { pullCommand } from './pull.js';
import { serveCommand } from './serve.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
// In pipeline order, as `gainrag --help` lists them.
export const commands: CommandModule<any, any>[] = [
  infoCommand,
  pullCommand,
  demoCommand,
  indexCommand,
  retrieveCommand,
  splitCommand,
  synthesizeCommand,
  filterCommand,
  toSelectorCommand,
  trainCommand,
  selectCommand,
  generateCommand,
  evaluateCommand,
  compareCommand,
  serveCommand,
  convertCommand,
  mergeCommand,
  clusterCommand,
];
