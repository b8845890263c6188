// A GGUF (version 3) writer for the llama.cpp peer bench: a Hugging Face Llama directory
// (config.json + model.safetensors) to one .gguf file with llama architecture metadata, a
// tokenizer block llama.cpp accepts, and the weights as F32, F16, BF16 or Q8_0.
//
// What llama.cpp expects and HF does not:
// - dims are listed innermost first (ne[0] = columns): an HF [out, in] matrix is [in, out];
// - 1-D tensors (the norms) stay F32 whatever the file type;
// - Q and K rows are permuted per head: HF's RoPE rotates the two halves of a head
//   (rotate_half), llama.cpp's llama architecture rotates adjacent pairs, so row j < hd/2 of a
//   head goes to 2j and row hd/2 + j to 2j + 1 (the same rotation on the same numbers);
// - the vocabulary: the bench feeds token ids directly, so only its size and special ids
//   matter. Tokens are written as a SentencePiece-style list (the `llama` tokenizer model) with
//   control types for BOS/EOS/PAD, which llama.cpp loads without merges.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { SafetensorsFile, decode16 } from '../lib/safetensors.js';

export type GgufFileType = 'F32' | 'F16' | 'BF16' | 'Q8_0';

const GGML_TYPE = { F32: 0, F16: 1, BF16: 30, Q8_0: 8 } as const;
// llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_BF16, MOSTLY_Q8_0.
const FILE_TYPE = { F32: 0, F16: 1, BF16: 32, Q8_0: 7 } as const;
const ALIGNMENT = 32;

const enum Kv { U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9 }

type KvValue =
  | { type: Kv.U32 | Kv.I32 | Kv.F32; value: number }
  | { type: Kv.BOOL; value: boolean }
  | { type: Kv.STRING; value: string }
  | { type: Kv.ARRAY; items: Kv.STRING; value: string[] }
  | { type: Kv.ARRAY; items: Kv.F32 | Kv.I32; value: ArrayLike<number> };

/** Little-endian byte builder for the header (metadata and tensor infos). */
class Bytes {
  private chunks: Buffer[] = [];
  length = 0;
  private push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  raw(b: Buffer): void {
    this.push(b);
  }
  buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function writeKv(out: Bytes, key: string, kv: KvValue): void {
  out.str(key);
  out.u32(kv.type);
  switch (kv.type) {
    case Kv.U32: out.u32(kv.value); break;
    case Kv.I32: out.i32(kv.value); break;
    case Kv.F32: out.f32(kv.value); break;
    case Kv.BOOL: out.raw(Buffer.from([kv.value ? 1 : 0])); break;
    case Kv.STRING: out.str(kv.value); break;
    case Kv.ARRAY:
      out.u32(kv.items);
      out.u64(kv.value.length);
      if (kv.items === Kv.STRING) for (const s of kv.value as string[]) out.str(s);
      else {
        const vals = kv.value as ArrayLike<number>;
        const b = Buffer.alloc(4 * vals.length);
        for (let i = 0; i < vals.length; i++) kv.items === Kv.F32 ? b.writeFloatLE(vals[i], 4 * i) : b.writeInt32LE(vals[i], 4 * i);
        out.raw(b);
      }
      break;
  }
}

const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);

/** float32 -> bfloat16 bits, round to nearest even (as torch's .to(bfloat16)). */
export function toBf16Bits(src: Float32Array): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40;  // NaN stays NaN
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** Elements per Q8_0 block and its bytes: an IEEE half scale d, then 32 int8 values q (x ~ d q). */
const Q8_BLOCK = 32, Q8_BYTES = 34;

/**
 * float32 rows -> GGML Q8_0 blocks along the row (its length a multiple of 32): per block
 * d = max |x| / 127 (stored as half) and q = round(x / d), as ggml's reference quantiser.
 */
export function toQ8_0(src: Float32Array): Buffer {
  if (src.length % Q8_BLOCK !== 0) throw new Error(`Q8_0 needs a multiple of ${Q8_BLOCK} values, got ${src.length}`);
  const blocks = src.length / Q8_BLOCK;
  const out = Buffer.alloc(blocks * Q8_BYTES);
  const scale = new Float32Array(1);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let i = 0; i < Q8_BLOCK; i++) amax = Math.max(amax, Math.abs(src[b * Q8_BLOCK + i]));
    scale[0] = amax / 127;
    const d = scale[0], id = d ? 1 / d : 0;
    out.writeUInt16LE(toF16Bits(scale)[0], b * Q8_BYTES);
    for (let i = 0; i < Q8_BLOCK; i++) {
      const v = Math.fround(src[b * Q8_BLOCK + i] * id);  // float32 product, then roundf (half away from zero)
      out.writeInt8(Math.sign(v) * Math.round(Math.abs(v)), b * Q8_BYTES + 2 + i);
    }
  }
  return out;
}

/** Bytes of `count` values stored as `type`. */
function typeBytes(type: GgufFileType, count: number): number {
  return type === 'F32' ? 4 * count : type === 'Q8_0' ? (count / Q8_BLOCK) * Q8_BYTES : 2 * count;
}

/** float32 -> IEEE half bits, round to nearest even, overflow to inf, subnormals kept. */
export function toF16Bits(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f32Bits[0] = src[i];
    const x = u32Bits[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) { out[i] = sign | 0x7c00 | (mant ? 0x200 : 0); continue; }
    let e = exp - 127 + 15;
    if (e >= 31) { out[i] = sign | 0x7c00; continue; }
    if (e <= 0) {
      if (e < -10) { out[i] = sign; continue; }
      mant |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      let m = mant >>> shift;
      const rest = mant & ((1 << shift) - 1);
      if (rest > half || (rest === half && (m & 1))) m++;
      out[i] = sign | m;
      continue;
    }
    let m = mant >>> 13;
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) m++;
    if (m === 0x400) { m = 0; e++; }
    out[i] = e >= 31 ? sign | 0x7c00 : sign | (e << 10) | m;
  }
  return out;
}

/** Rows of a [heads * hd, cols] matrix reordered from HF's half-split RoPE to llama.cpp's pairs. */
export function permuteRopeRows(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols, hd = rows / heads, half = hd / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      out.set(w.subarray((h * hd + j) * cols, (h * hd + j + 1) * cols), (h * hd + 2 * j) * cols);
      out.set(w.subarray((h * hd + half + j) * cols, (h * hd + half + j + 1) * cols), (h * hd + 2 * j + 1) * cols);
    }
  }
  return out;
}

interface PlannedTensor {
  name: string;
  dims: number[];  // innermost first
  type: GgufFileType;
  data: () => Buffer;
  bytes: number;
}

export interface GgufWriteResult {
  file: string;
  tensors: number;
  bytes: number;
}

/**
 * Writes `hfDir` (a LlamaForCausalLM checkpoint, one model.safetensors) as a GGUF file.
 * Matrices are stored as `fileType`; norms as F32.
 */
export async function writeLlamaGguf(hfDir: string, outFile: string, fileType: GgufFileType): Promise<GgufWriteResult> {
  const config = JSON.parse(readFileSync(path.join(hfDir, 'config.json'), 'utf8'));
  if (config.model_type !== 'llama') throw new Error(`${hfDir}: model_type ${config.model_type} is not llama`);
  const hidden: number = config.hidden_size, heads: number = config.num_attention_heads;
  const kvHeads: number = config.num_key_value_heads ?? heads;
  const headDim: number = config.head_dim ?? hidden / heads;
  const layers: number = config.num_hidden_layers, vocab: number = config.vocab_size;
  const ropeTheta: number = config.rope_parameters?.rope_theta ?? config.rope_theta ?? 10000;
  const ropeType = config.rope_parameters?.rope_type ?? config.rope_scaling?.rope_type ?? 'default';
  if (ropeType !== 'default') throw new Error(`${hfDir}: rope type ${ropeType} is not written by this bench`);
  if (config.attention_bias) throw new Error(`${hfDir}: attention biases are not written by this bench`);
  const st = await SafetensorsFile.open(path.join(hfDir, 'model.safetensors'));
  const metas = new Map(st.tensors().map((t) => [t.name, t]));
  const floats = (name: string): Float32Array => {
    const meta = metas.get(name);
    if (!meta) throw new Error(`${hfDir}: no tensor ${name}`);
    const raw = st.tensor(name);
    if (meta.dtype === 'F32') return raw as Float32Array;
    if (meta.dtype === 'F16' || meta.dtype === 'BF16') return decode16(raw as Uint16Array, meta.dtype);
    throw new Error(`${hfDir}: tensor ${name} is ${meta.dtype}`);
  };
  const encode = (v: Float32Array, type: GgufFileType): Buffer => {
    if (type === 'Q8_0') return toQ8_0(v);
    const typed = type === 'F32' ? v : type === 'BF16' ? toBf16Bits(v) : toF16Bits(v);
    return Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
  };
  const plan: PlannedTensor[] = [];
  const add = (ggufName: string, hfName: string, transform?: (v: Float32Array) => Float32Array) => {
    const meta = metas.get(hfName);
    if (!meta) throw new Error(`${hfDir}: no tensor ${hfName}`);
    const dims = [...meta.shape].reverse();
    const type: GgufFileType = dims.length === 1 ? 'F32' : fileType;
    const count = dims.reduce((a, b) => a * b, 1);
    plan.push({ name: ggufName, dims, type, bytes: typeBytes(type, count),
      data: () => encode(transform ? transform(floats(hfName)) : floats(hfName), type) });
  };
  add('token_embd.weight', 'model.embed_tokens.weight');
  add('output_norm.weight', 'model.norm.weight');
  const tied = !metas.has('lm_head.weight') || config.tie_word_embeddings === true;
  if (!tied) add('output.weight', 'lm_head.weight');
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`, g = `blk.${l}.`;
    add(`${g}attn_norm.weight`, `${p}input_layernorm.weight`);
    add(`${g}attn_q.weight`, `${p}self_attn.q_proj.weight`, (v) => permuteRopeRows(v, heads, hidden));
    add(`${g}attn_k.weight`, `${p}self_attn.k_proj.weight`, (v) => permuteRopeRows(v, kvHeads, hidden));
    add(`${g}attn_v.weight`, `${p}self_attn.v_proj.weight`);
    add(`${g}attn_output.weight`, `${p}self_attn.o_proj.weight`);
    add(`${g}ffn_norm.weight`, `${p}post_attention_layernorm.weight`);
    add(`${g}ffn_gate.weight`, `${p}mlp.gate_proj.weight`);
    add(`${g}ffn_up.weight`, `${p}mlp.up_proj.weight`);
    add(`${g}ffn_down.weight`, `${p}mlp.down_proj.weight`);
  }

  // Vocabulary: placeholders, with the special ids of config.json as control tokens.
  const bos: number = config.bos_token_id ?? 1;
  const eosList: number[] = config.eos_token_id == null ? [] : [config.eos_token_id].flat();
  const eos = eosList[0] ?? 2;
  const pad: number | undefined = config.pad_token_id ?? undefined;
  // llama.cpp's SPM loader looks up the newline byte token (<0x0A>) and throws without it, so
  // the first non-special ids after the unknown token are the 256 byte tokens.
  const tokens: string[] = [], scores = new Float32Array(vocab), types = new Int32Array(vocab);
  let unk = -1, bytes = 0;
  for (let i = 0; i < vocab; i++) {
    const special = i === bos ? '<s>' : i === eos ? '</s>' : i === pad ? '<pad>' : undefined;
    if (special) {
      tokens.push(special);
      types[i] = 3;  // CONTROL
    } else if (unk < 0) {
      unk = i;
      tokens.push('<unk>');
      types[i] = 2;  // UNKNOWN
    } else if (bytes < 256 && vocab >= 512) {
      tokens.push(`<0x${bytes.toString(16).toUpperCase().padStart(2, '0')}>`);
      types[i] = 6;  // BYTE
      bytes++;
    } else {
      tokens.push(`\u2581t${i}`);
      types[i] = 1;  // NORMAL
      scores[i] = -i;
    }
  }

  const kvs: [string, KvValue][] = [
    ['general.architecture', { type: Kv.STRING, value: 'llama' }],
    ['general.name', { type: Kv.STRING, value: path.basename(hfDir) }],
    ['general.file_type', { type: Kv.U32, value: FILE_TYPE[fileType] }],
    ['general.alignment', { type: Kv.U32, value: ALIGNMENT }],
    ['llama.context_length', { type: Kv.U32, value: config.max_position_embeddings ?? 2048 }],
    ['llama.embedding_length', { type: Kv.U32, value: hidden }],
    ['llama.block_count', { type: Kv.U32, value: layers }],
    ['llama.feed_forward_length', { type: Kv.U32, value: config.intermediate_size }],
    ['llama.attention.head_count', { type: Kv.U32, value: heads }],
    ['llama.attention.head_count_kv', { type: Kv.U32, value: kvHeads }],
    ['llama.attention.key_length', { type: Kv.U32, value: headDim }],
    ['llama.attention.value_length', { type: Kv.U32, value: headDim }],
    ['llama.rope.dimension_count', { type: Kv.U32, value: headDim }],
    ['llama.rope.freq_base', { type: Kv.F32, value: ropeTheta }],
    ['llama.attention.layer_norm_rms_epsilon', { type: Kv.F32, value: config.rms_norm_eps ?? 1e-6 }],
    ['llama.vocab_size', { type: Kv.U32, value: vocab }],
    ['tokenizer.ggml.model', { type: Kv.STRING, value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: Kv.ARRAY, items: Kv.STRING, value: tokens }],
    ['tokenizer.ggml.scores', { type: Kv.ARRAY, items: Kv.F32, value: scores }],
    ['tokenizer.ggml.token_type', { type: Kv.ARRAY, items: Kv.I32, value: types }],
    ['tokenizer.ggml.bos_token_id', { type: Kv.U32, value: bos }],
    ['tokenizer.ggml.eos_token_id', { type: Kv.U32, value: eos }],
    ['tokenizer.ggml.unknown_token_id', { type: Kv.U32, value: unk }],
    ['tokenizer.ggml.add_bos_token', { type: Kv.BOOL, value: false }],
    ['tokenizer.ggml.add_eos_token', { type: Kv.BOOL, value: false }],
  ];
  if (pad !== undefined) kvs.push(['tokenizer.ggml.padding_token_id', { type: Kv.U32, value: pad }]);

  const head = new Bytes();
  head.u32(0x46554747);  // "GGUF"
  head.u32(3);
  head.u64(plan.length);
  head.u64(kvs.length);
  for (const [k, v] of kvs) writeKv(head, k, v);
  const align = (n: number) => Math.ceil(n / ALIGNMENT) * ALIGNMENT;
  let offset = 0;
  for (const t of plan) {
    head.str(t.name);
    head.u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(GGML_TYPE[t.type]);
    head.u64(offset);
    offset = align(offset + t.bytes);
  }
  const header = head.buffer();
  const fd = openSync(outFile, 'w');
  try {
    writeSync(fd, header);
    writeSync(fd, Buffer.alloc(align(header.length) - header.length));
    let written = 0;
    for (const t of plan) {
      const b = t.data();
      if (b.length !== t.bytes) throw new Error(`${t.name}: ${b.length} bytes, planned ${t.bytes}`);
      writeSync(fd, b);
      written += b.length;
      const pad = align(written) - written;
      if (pad) writeSync(fd, Buffer.alloc(pad));
      written += pad;
    }
    return { file: outFile, tensors: plan.length, bytes: align(header.length) + written };
  } finally {
    closeSync(fd);
  }
}
