// Moved to lib/stages/backend-flags.ts (the stage table's flags); kept for existing importers.
export * from '../stages/backend-flags.js';
