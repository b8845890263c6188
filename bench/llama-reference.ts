// A float64 Llama forward in plain TypeScript, for accuracy checks of the bench (not a product
// path): last-position log-probabilities of one prompt over a Hugging Face directory with one
// float32 model.safetensors (the bench's random Llama: default RoPE, no biases, untied lm_head).
// With `bf16Matrices` the 2-D weights are first rounded to bfloat16 (nearest even) and the norms
// kept float32, which is the model a BF16 GGUF holds: the reference then measures each engine's
// arithmetic, not the weight rounding they share. Weights stay float32 arrays (exact for both);
// every sum is a JS double.
import { readFileSync } from 'node:fs';
import path from 'node:path';

function readSafetensors(file: string): Map<string, { shape: number[]; data: Float32Array }> {
  const buf = readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + headerLen;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (t.dtype !== 'F32') throw new Error(`${file}: ${name} is ${t.dtype}, the reference reads F32 only`);
    const [a, b] = t.data_offsets;
    const bytes = buf.subarray(base + a, base + b);
    out.set(name, { shape: t.shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) });
  }
  return out;
}

function roundBf16(x: Float32Array): Float32Array {
  const u = new Uint32Array(x.buffer.slice(0));
  for (let i = 0; i < u.length; i++) {
    const v = u[i];
    if ((v & 0x7f800000) === 0x7f800000) { u[i] = v & 0xffff0000; continue; }
    u[i] = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 0) & 0xffff0000;
  }
  return new Float32Array(u.buffer);
}

// y[t][o] = sum_k w[o][k] x[t][k] for T rows of width n_in.
function matmul(x: Float64Array, T: number, w: Float32Array, nOut: number, nIn: number): Float64Array {
  const y = new Float64Array(T * nOut);
  for (let o = 0; o < nOut; o++) {
    const row = o * nIn;
    for (let t = 0; t < T; t++) {
      let s = 0;
      const xr = t * nIn;
      for (let k = 0; k < nIn; k++) s += w[row + k] * x[xr + k];
      y[t * nOut + o] = s;
    }
  }
  return y;
}

function rmsNorm(x: Float64Array, T: number, n: number, w: Float32Array, eps: number): Float64Array {
  const y = new Float64Array(T * n);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[t * n + i] ** 2;
    const r = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) y[t * n + i] = x[t * n + i] * r * w[i];
  }
  return y;
}

/** Float64 log-softmax of the last position's logits, length vocab. */
export function referenceLogProbs(dir: string, ids: number[], bf16Matrices: boolean): Float64Array {
  const c = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const raw = readSafetensors(path.join(dir, 'model.safetensors'));
  const W = (name: string) => {
    const t = raw.get(name);
    if (!t) throw new Error(`${dir}: no tensor ${name}`);
    return bf16Matrices && t.shape.length === 2 ? roundBf16(t.data) : t.data;
  };
  const H = c.hidden_size, heads = c.num_attention_heads, kvh = c.num_key_value_heads, hd = c.head_dim ?? H / heads;
  const inter = c.intermediate_size, V = c.vocab_size, eps = c.rms_norm_eps, theta = c.rope_theta ?? 10000;
  const T = ids.length, rep = heads / kvh, half = hd / 2;
  const emb = W('model.embed_tokens.weight');
  const h = new Float64Array(T * H);
  ids.forEach((id, t) => { for (let i = 0; i < H; i++) h[t * H + i] = emb[id * H + i]; });
  const rope = (x: Float64Array, nh: number) => {
    for (let t = 0; t < T; t++)
      for (let g = 0; g < nh; g++)
        for (let i = 0; i < half; i++) {
          const f = t * Math.pow(theta, -(2 * i) / hd), cs = Math.cos(f), sn = Math.sin(f);
          const o = (t * nh + g) * hd, a = x[o + i], b = x[o + i + half];
          x[o + i] = a * cs - b * sn;
          x[o + i + half] = b * cs + a * sn;
        }
  };
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    const xn = rmsNorm(h, T, H, W(`${p}input_layernorm.weight`), eps);
    const q = matmul(xn, T, W(`${p}self_attn.q_proj.weight`), heads * hd, H);
    const k = matmul(xn, T, W(`${p}self_attn.k_proj.weight`), kvh * hd, H);
    const v = matmul(xn, T, W(`${p}self_attn.v_proj.weight`), kvh * hd, H);
    rope(q, heads);
    rope(k, kvh);
    const att = new Float64Array(T * heads * hd);
    for (let t = 0; t < T; t++)
      for (let hh = 0; hh < heads; hh++) {
        const g = Math.floor(hh / rep), s = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let j = 0; j <= t; j++) {
          let d = 0;
          for (let i = 0; i < hd; i++) d += q[(t * heads + hh) * hd + i] * k[(j * kvh + g) * hd + i];
          s[j] = d / Math.sqrt(hd);
          mx = Math.max(mx, s[j]);
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += (s[j] = Math.exp(s[j] - mx));
        for (let j = 0; j <= t; j++)
          for (let i = 0; i < hd; i++) att[(t * heads + hh) * hd + i] += (s[j] / sum) * v[(j * kvh + g) * hd + i];
      }
    const o = matmul(att, T, W(`${p}self_attn.o_proj.weight`), H, heads * hd);
    for (let i = 0; i < h.length; i++) h[i] += o[i];
    const yn = rmsNorm(h, T, H, W(`${p}post_attention_layernorm.weight`), eps);
    const gate = matmul(yn, T, W(`${p}mlp.gate_proj.weight`), inter, H);
    const up = matmul(yn, T, W(`${p}mlp.up_proj.weight`), inter, H);
    for (let i = 0; i < gate.length; i++) gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
    const down = matmul(gate, T, W(`${p}mlp.down_proj.weight`), H, inter);
    for (let i = 0; i < h.length; i++) h[i] += down[i];
  }
  const last = rmsNorm(h.subarray((T - 1) * H), 1, H, W('model.norm.weight'), eps);
  const logits = matmul(last, 1, W('lm_head.weight'), V, H);
  let mx = -Infinity;
  for (const x of logits) mx = Math.max(mx, x);
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - mx);
  const lse = mx + Math.log(sum);
  return logits.map((x) => x - lse);
}
