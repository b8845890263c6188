// The sentence-transformers description of an embedding model, as its directory holds it:
// modules.json (the module pipeline), the Pooling module's config.json, a Normalize module, and
// config_sentence_transformers.json (prompts, similarity function). BGE (FlagEmbedding), E5 and
// GTE repositories ship these files; reading them is what makes such a model embed as its
// authors meant (CLS pooling, normalisation, query prefixes) instead of by a guessed default.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { GainragError } from '../errors.js';

/** Pooling modes sentence-transformers names; the engine runs 'mean' and 'cls'. */
export type StPooling = 'mean' | 'cls' | 'max' | 'lasttoken' | 'mean_sqrt_len' | 'weightedmean';

export interface SentenceTransformersConfig {
  /** From the Pooling module; undefined without one. */
  pooling?: StPooling;
  /** Whether prompt tokens count in the pooling (Pooling include_prompt, default true). */
  includePrompt: boolean;
  /** A Normalize module follows the pooling. */
  normalize: boolean;
  /** Prompt prefixes by name (config_sentence_transformers.json). */
  prompts: Record<string, string>;
  defaultPromptName?: string;
  /** similarity_fn_name ('cosine', 'dot', ...). */
  similarity?: string;
  /** Module types gainrag does not run (a Dense projection, ...): embeddings would differ. */
  unsupported: string[];
}

interface ModuleEntry {
  path?: unknown;
  type?: unknown;
}

const POOLING_KEYS: [string, StPooling][] = [
  ['pooling_mode_cls_token', 'cls'],
  ['pooling_mode_mean_tokens', 'mean'],
  ['pooling_mode_max_tokens', 'max'],
  ['pooling_mode_lasttoken', 'lasttoken'],
  ['pooling_mode_mean_sqrt_len_tokens', 'mean_sqrt_len'],
  ['pooling_mode_weightedmean_tokens', 'weightedmean'],
];

function readJson(file: string, required: boolean): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new GainragError('E_MODEL_CONFIG', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new GainragError('E_MODEL_CONFIG', `${file}: invalid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function modules(dir: string): ModuleEntry[] | undefined {
  const list = readJson(path.join(dir, 'modules.json'), false);
  if (list === undefined) return undefined;
  if (!Array.isArray(list)) throw new GainragError('E_MODEL_CONFIG', `${path.join(dir, 'modules.json')}: expected a list of modules`);
  return list as ModuleEntry[];
}

const typeName = (m: ModuleEntry) => (typeof m.type === 'string' ? m.type.split('.').pop()! : String(m.type));

/** The Pooling modules' config files named by modules.json (relative to dir); none without one. */
export function poolingConfigPaths(dir: string): string[] {
  let list: ModuleEntry[] | undefined;
  try {
    list = modules(dir);
  } catch {
    return [];
  }
  return (list ?? [])
    .filter((m) => typeName(m) === 'Pooling' && typeof m.path === 'string' && !m.path.split(/[/\\]/).includes('..'))
    .map((m) => path.posix.join(m.path as string, 'config.json'));
}

/** The model's sentence-transformers configuration; null when it has no modules.json nor prompts file. */
export function readSentenceTransformersConfig(dir: string): SentenceTransformersConfig | null {
  const list = modules(dir);
  const st = readJson(path.join(dir, 'config_sentence_transformers.json'), false) as
    | { prompts?: unknown; default_prompt_name?: unknown; similarity_fn_name?: unknown }
    | undefined;
  if (list === undefined && st === undefined) return null;
  const out: SentenceTransformersConfig = { includePrompt: true, normalize: false, prompts: {}, unsupported: [] };
  for (const m of list ?? []) {
    const type = typeName(m);
    const where = typeof m.path === 'string' ? m.path : '';
    if (type === 'Transformer') {
      if (where !== '') out.unsupported.push(`Transformer in the subfolder ${where}`);
    } else if (type === 'Pooling') {
      const file = path.join(dir, where, 'config.json');
      const cfg = readJson(file, true) as Record<string, unknown>;
      const on = POOLING_KEYS.filter(([key]) => cfg?.[key] === true).map(([, mode]) => mode);
      if (on.length !== 1) throw new GainragError('E_UNSUPPORTED', `${file}: ${on.length === 0 ? 'no pooling mode is on' : `pooling modes ${on.join(' + ')} are concatenated, which gainrag does not do`}`);
      out.pooling = on[0];
      if (cfg.include_prompt === false) out.includePrompt = false;
    } else if (type === 'Normalize') {
      out.normalize = true;
    } else {
      out.unsupported.push(`${type}${where ? ` (${where})` : ''}`);
    }
  }
  if (st && typeof st === 'object') {
    if (st.prompts && typeof st.prompts === 'object') {
      for (const [name, text] of Object.entries(st.prompts as Record<string, unknown>)) if (typeof text === 'string') out.prompts[name] = text;
    }
    if (typeof st.default_prompt_name === 'string') out.defaultPromptName = st.default_prompt_name;
    if (typeof st.similarity_fn_name === 'string') out.similarity = st.similarity_fn_name;
  }
  return out;
}

/**
 * The prefixes sentence-transformers' encode_query / encode_document would use: the 'query'
 * prompt, and the 'document' / 'passage' / 'corpus' prompt, each falling back to the default prompt.
 */
export function promptPrefixes(cfg: SentenceTransformersConfig | null): { query: string; passage: string } {
  const p = cfg?.prompts ?? {};
  const fallback = cfg?.defaultPromptName !== undefined ? p[cfg.defaultPromptName] ?? '' : '';
  return { query: p.query ?? fallback, passage: p.document ?? p.passage ?? p.corpus ?? fallback };
}
