// How often EM/F1 change between a --max-new-tokens limit N and the reference's 2048, for
// `generate` (evaluation prompt) and `synthesize` (its per-passage answer prompt), on the bundled
// demo questions with their gold passage (K = 1) and without retrieval. Greedy decoding is
// prefix-stable (the first N tokens of a longer run are the run with limit N), so each prompt is
// decoded once up to min(2048, what the context leaves) and every N is scored on a prefix.
//   node dist/bench/max-new-tokens.js [--questions 100] [--limits 8,16,32,64,128,256]
// Models: models/llama-tiny (random weights) and stories260K (trained, converted here; it stops
// at BOS as llama2.c does). Prompts too long for the context have their passage cut (chars)
// so that 64 new tokens fit.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CausalLM } from '../lib/models/causal-lm.js';
import { convertLlama2c } from '../lib/convert/llama2c.js';
import { emMaxOverGold, f1MaxOverGold } from '../lib/metrics/index.js';
import { evaluationPrompt, promptWrapper, retrievedPrompt, taskInstruction } from '../lib/pipeline/prompts.js';
import { repoRoot } from '../test/helpers.js';

const argAt = (name: string) => process.argv.indexOf(`--${name}`);
const questions = argAt('questions') >= 0 ? Number(process.argv[argAt('questions') + 1]) : 100;
const limits = (argAt('limits') >= 0 ? process.argv[argAt('limits') + 1] : '8,16,32,64,128,256').split(',').map(Number);
const REFERENCE = 2048;

const read = (f: string) => readFileSync(path.join(repoRoot, 'data', 'demo', f), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const passages = new Map<string, { title: string; text: string }>(read('passages.jsonl').map((p: { id: string; title: string; text: string }) => [p.id, p]));
const qs = read('questions.jsonl').slice(0, questions).map((q: { question: string; answers: string[]; gold_passage_ids: string[] }) => ({ ...q, gold: passages.get(q.gold_passage_ids[0])! }));
const instruction = taskInstruction('QA');

type Build = (q: (typeof qs)[number], text: string) => string;
const kinds: [string, Build][] = [
  ['generate K=1', (q, text) => evaluationPrompt(instruction, q.question, [{ title: q.gold.title, text }])],
  ['generate no-retrieval', (q) => evaluationPrompt(instruction, q.question, null)],
  ['synthesize passage answer', (q, text) => retrievedPrompt(instruction, q.question, q.gold.title, text)],
];

async function run(name: string, lm: CausalLM) {
  const wrap = promptWrapper(lm, 'auto', Boolean(lm.tokenizer.config.chatTemplate));
  for (const [kind, build] of kinds) {
    const prompts: string[] = [];
    for (const q of qs) {
      let text = q.gold.text;
      for (;;) {
        const p = wrap(build(q, text));
        const [ids] = await lm.tokenizer.encodeRaw([p]);
        if (ids.length + 64 <= lm.contextLength || text === '') {
          prompts.push(p);
          break;
        }
        text = text.slice(0, Math.max(0, text.length - 2 * (ids.length + 64 - lm.contextLength)));
      }
    }
    // One call per room size (the limit each prompt's context leaves, at most 2048).
    const lengths = (await lm.tokenizer.encodeRaw(prompts)).map((t) => t.length);
    const rooms = lengths.map((n) => Math.min(REFERENCE, lm.contextLength - n));
    const ids: number[][] = new Array(prompts.length);
    for (const room of new Set(rooms)) {
      const rows = rooms.flatMap((r, i) => (r === room ? [i] : []));
      const out = await lm.generate(rows.map((i) => prompts[i]), { maxNewTokens: room });
      rows.forEach((i, k) => (ids[i] = out.tokenIds[k]));
    }
    const eos = new Set(lm.info.eosTokenIds);
    const stopped = ids.filter((t) => eos.has(t[t.length - 1])).length;
    const score = async (n: number) =>
      Promise.all(ids.map(async (t, i) => {
        const text = await lm.tokenizer.decode(t.slice(0, n), true);
        return { em: emMaxOverGold(text, qs[i].answers), f1: f1MaxOverGold(text, qs[i].answers) };
      }));
    const full = await score(REFERENCE);
    const meanLen = ids.reduce((a, t) => a + t.length, 0) / ids.length;
    process.stdout.write(`${name} / ${kind}: ${ids.length} prompts, answers mean ${meanLen.toFixed(0)} tokens, ${stopped} stopped at EOS, ` +
      `room ${Math.min(...rooms)}..${Math.max(...rooms)}; EM ${(100 * full.filter((s) => s.em).length / ids.length).toFixed(1)} F1 ${(100 * full.reduce((a, s) => a + s.f1, 0) / ids.length).toFixed(1)} at ${REFERENCE}\n`);
    for (const n of limits) {
      const s = await score(n);
      const em = s.filter((x, i) => x.em !== full[i].em).length, f1 = s.filter((x, i) => Math.abs(x.f1 - full[i].f1) > 1e-12).length;
      process.stdout.write(`  N=${String(n).padStart(4)}: EM differs on ${em}/${ids.length} (${(100 * em / ids.length).toFixed(1)}%), F1 on ${f1}/${ids.length} (${(100 * f1 / ids.length).toFixed(1)}%)\n`);
    }
  }
}

const dir = mkdtempSync(path.join(tmpdir(), 'gainrag-max-new-'));
try {
  await run('llama-tiny', await CausalLM.load(path.join(repoRoot, 'models', 'llama-tiny')));
  const out = path.join(dir, 'stories260K');
  const src = path.join(repoRoot, 'test', 'data', 'tiny_models', 'stories260K');
  convertLlama2c({ checkpoint: path.join(src, 'stories260K.bin'), tokenizer: path.join(src, 'tok512.bin'), out });
  writeFileSync(path.join(out, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 1] }));
  await run('stories260K', await CausalLM.load(out));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
