// Runs every benchmark in turn (each is also runnable alone: node dist/bench/<name>.js). Each
// reports throughput as a ratio against a baseline measured in the same run on this machine.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const all = ['retrieval', 'encoder', 'causal-lm', 'synthesis', 'select', 'generate', 'training', 'json-values', 'serve'];
const chosen = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const names = chosen.length > 0 ? chosen : all;
let failed = 0;
for (const name of names) {
  if (!all.includes(name)) {
    process.stderr.write(`bench: unknown benchmark '${name}' (choose from ${all.join(', ')})\n`);
    process.exit(2);
  }
  process.stdout.write(`\n=== bench ${name} ===\n`);
  const r = spawnSync(process.execPath, [path.join(here, `${name}.js`)], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    process.stderr.write(`bench ${name} failed (exit ${r.status})\n`);
  }
}
process.exit(failed > 0 ? 1 : 0);
