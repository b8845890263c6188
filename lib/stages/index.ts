// The stage table: every stage the CLI and the cluster runner drive, by name.
import type { StageDefinition } from './definition.js';
import { retrieveStage } from './retrieve.js';
import { synthesizeStage } from './synthesize.js';
import { selectStage } from './select.js';
import { generateStage } from './generate.js';

export const STAGES = ['retrieve', 'synthesize', 'select', 'generate'] as const;
export type StageName = (typeof STAGES)[number];

export const STAGE_TABLE: Readonly<Record<StageName, StageDefinition<never, unknown, unknown>>> = {
  retrieve: retrieveStage as never,
  synthesize: synthesizeStage as never,
  select: selectStage as never,
  generate: generateStage as never,
};

export type { StageDefinition, StageRunBase } from './definition.js';
export { type ModelCache, type ParsedArgs } from './flags.js';
