// A random Llama written as a Hugging Face checkpoint (config.json + float32 safetensors, the
// llama-tiny fixture's tokenizer) for the LLM benches: the issue-#19 shape (155.7M parameters:
// hidden 1024, 8 layers, 16 / 4 heads, intermediate 2816, vocab 32000, untied lm_head) and a
// quick one. Deterministic (bench/random.ts), so every run and engine reads the same weights.
import { symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { encodeSafetensors, type F32Tensor } from '../lib/convert/llama2c.js';
import { repoRoot } from '../test/helpers.js';
import { uniformF32 } from './random.js';

export interface Shape { hidden: number; layers: number; heads: number; kv: number; inter: number; vocab: number }
export const ISSUE_SHAPE: Shape = { hidden: 1024, layers: 8, heads: 16, kv: 4, inter: 2816, vocab: 32000 };
export const QUICK_SHAPE: Shape = { hidden: 256, layers: 2, heads: 8, kv: 2, inter: 688, vocab: 4000 };

/** Writes the model into `dir` (which must exist); returns its parameter count. */
export function writeRandomLlama(dir: string, s: Shape): number {
  const hd = s.hidden / s.heads;
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden, intermediate_size: s.inter,
    num_hidden_layers: s.layers, num_attention_heads: s.heads, num_key_value_heads: s.kv, head_dim: hd, vocab_size: s.vocab,
    max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, bos_token_id: 1,
    hidden_act: 'silu', torch_dtype: 'float32',
  };
  let seed = 100;
  let params = 0;
  const rand = (name: string, shape: number[], scale: number): F32Tensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    params += n;
    const data = uniformF32(n, seed++);
    for (let i = 0; i < n; i++) data[i] *= 2 * scale;
    return { name, shape, data };
  };
  // Norm weights around 1 (not exactly 1, so the GGUF side must read them right).
  const norm = (name: string): F32Tensor => {
    const data = uniformF32(s.hidden, seed++);
    for (let i = 0; i < data.length; i++) data[i] = 1 + 0.2 * data[i];
    params += s.hidden;
    return { name, shape: [s.hidden], data };
  };
  const t: F32Tensor[] = [rand('model.embed_tokens.weight', [s.vocab, s.hidden], 0.5), rand('lm_head.weight', [s.vocab, s.hidden], 0.05)];
  const w = 0.5 / Math.sqrt(s.hidden);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    t.push(norm(`${p}input_layernorm.weight`), norm(`${p}post_attention_layernorm.weight`),
      rand(`${p}self_attn.q_proj.weight`, [s.heads * hd, s.hidden], w), rand(`${p}self_attn.k_proj.weight`, [s.kv * hd, s.hidden], w),
      rand(`${p}self_attn.v_proj.weight`, [s.kv * hd, s.hidden], w), rand(`${p}self_attn.o_proj.weight`, [s.hidden, s.heads * hd], w),
      rand(`${p}mlp.gate_proj.weight`, [s.inter, s.hidden], w), rand(`${p}mlp.up_proj.weight`, [s.inter, s.hidden], w),
      rand(`${p}mlp.down_proj.weight`, [s.hidden, s.inter], 0.5 / Math.sqrt(s.inter)));
  }
  t.push(norm('model.norm.weight'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(t));
  // Token ids are fed directly; CausalLM.load still wants a tokenizer: the fixture's serves.
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) symlinkSync(path.join(repoRoot, 'models', 'llama-tiny', f), path.join(dir, f));
  return params;
}
