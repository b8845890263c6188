// Registry of CLI commands; each lives in its own file.
import type { CommandModule } from 'yargs';
import { infoCommand } from './info.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [infoCommand];
