// llama2.c checkpoint + tokenizer -> Hugging Face Llama directory (config.json,
// model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json).
//
// llama2.c rotates interleaved pairs (2i, 2i+1) of each head; transformers rotates halves
// (i, i + d/2). The q/k projection rows are permuted per head so both give the same attention,
// as transformers' convert_llama_weights_to_hf does. The tokenizer becomes a sentencepiece-style
// BPE (metaspace ▁, byte fallback <0xXX>) whose merges follow llama2.c's score order.
import { mkdirSync, readFileSync, renameSync, rmSync, existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { GainragError, ioError } from '../errors.js';
import { validateOutput, writeFileAtomic } from '../io/output.js';

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

export interface Llama2cVocab {
  pieces: string[];
  scores: Float32Array;
}

/** A tensor for encodeSafetensors: float32 data, row-major. */
export interface F32Tensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

export function readLlama2cHeader(buf: Buffer, file = 'checkpoint'): Llama2cHeader {
  if (buf.length < 28) throw new GainragError('E_DATA', `${file}: too short for a llama2.c header`);
  const h = Array.from({ length: 7 }, (_, i) => buf.readInt32LE(i * 4));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = h;
  if (dim <= 0 || hiddenDim <= 0 || nLayers <= 0 || nHeads <= 0 || nKvHeads <= 0 || vocab === 0 || seqLen <= 0 ||
      dim % nHeads !== 0 || nHeads % nKvHeads !== 0 || (dim / nHeads) % 2 !== 0) {
    throw new GainragError('E_DATA', `${file}: implausible llama2.c header ${JSON.stringify(h)}`);
  }
  return { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: Math.abs(vocab), seqLen, sharedClassifier: vocab > 0 };
}

/** llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32 len, bytes. */
export function readLlama2cTokenizer(buf: Buffer, vocabSize: number, file = 'tokenizer'): Llama2cVocab {
  const pieces: string[] = [];
  const scores = new Float32Array(vocabSize);
  let at = 4;
  for (let i = 0; i < vocabSize; i++) {
    if (at + 8 > buf.length) throw new GainragError('E_DATA', `${file}: ends at token ${i} of ${vocabSize}`);
    scores[i] = buf.readFloatLE(at);
    const len = buf.readInt32LE(at + 4);
    at += 8;
    if (len < 0 || at + len > buf.length) throw new GainragError('E_DATA', `${file}: token ${i} has a bad length ${len}`);
    pieces.push(buf.toString('utf8', at, at + len));
    at += len;
  }
  return { pieces, scores };
}

/** safetensors bytes (F32 tensors). */
export function encodeSafetensors(tensors: F32Tensor[], metadata: Record<string, string> = { format: 'pt' }): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new RangeError(`tensor ${t.name}: shape ${t.shape} does not match ${t.data.length} values`);
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([head, Buffer.from(json), ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]);
}

/** Rows of each head reordered from interleaved pairs to rotate-half layout. */
function permuteRope(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const hs = rows / heads;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < hs / 2; i++)
      for (let j = 0; j < 2; j++) {
        const src = (h * hs + 2 * i + j) * cols;
        out.set(w.subarray(src, src + cols), (h * hs + j * (hs / 2) + i) * cols);
      }
  return out;
}

export function convertLlama2cWeights(buf: Buffer, file = 'checkpoint'): { header: Llama2cHeader; tensors: F32Tensor[] } {
  const hd = readLlama2cHeader(buf, file);
  const { dim, hiddenDim: f, nLayers: L, nHeads, nKvHeads, vocabSize: V, seqLen } = hd;
  const hs = dim / nHeads;
  const kvDim = nKvHeads * hs;
  const floats = new Float32Array(buf.buffer.slice(buf.byteOffset + 28, buf.byteOffset + buf.length - ((buf.length - 28) % 4)));
  let at = 0;
  const take = (n: number) => {
    if (at + n > floats.length) throw new GainragError('E_DATA', `${file}: ends early (needs more than ${floats.length} floats)`);
    const out = floats.subarray(at, at + n);
    at += n;
    return out;
  };
  const emb = take(V * dim);
  const rmsAtt = take(L * dim);
  const wq = take(L * dim * dim);
  const wk = take(L * kvDim * dim);
  const wv = take(L * kvDim * dim);
  const wo = take(L * dim * dim);
  const rmsFfn = take(L * dim);
  const w1 = take(L * f * dim);
  const w2 = take(L * dim * f);
  const w3 = take(L * f * dim);
  const rmsFinal = take(dim);
  take(seqLen * (hs / 2) * 2); // freq_cis real + imag: recomputed from rope_theta
  const wcls = hd.sharedClassifier ? undefined : take(V * dim);
  if (at !== floats.length) throw new GainragError('E_DATA', `${file}: ${floats.length - at} unexpected trailing floats`);
  const layer = (src: Float32Array, l: number, n: number) => src.subarray(l * n, (l + 1) * n);
  const tensors: F32Tensor[] = [{ name: 'model.embed_tokens.weight', shape: [V, dim], data: emb }];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      { name: `${p}input_layernorm.weight`, shape: [dim], data: layer(rmsAtt, l, dim) },
      { name: `${p}self_attn.q_proj.weight`, shape: [dim, dim], data: permuteRope(layer(wq, l, dim * dim), nHeads, dim) },
      { name: `${p}self_attn.k_proj.weight`, shape: [kvDim, dim], data: permuteRope(layer(wk, l, kvDim * dim), nKvHeads, dim) },
      { name: `${p}self_attn.v_proj.weight`, shape: [kvDim, dim], data: layer(wv, l, kvDim * dim) },
      { name: `${p}self_attn.o_proj.weight`, shape: [dim, dim], data: layer(wo, l, dim * dim) },
      { name: `${p}post_attention_layernorm.weight`, shape: [dim], data: layer(rmsFfn, l, dim) },
      { name: `${p}mlp.gate_proj.weight`, shape: [f, dim], data: layer(w1, l, f * dim) },
      { name: `${p}mlp.down_proj.weight`, shape: [dim, f], data: layer(w2, l, dim * f) },
      { name: `${p}mlp.up_proj.weight`, shape: [f, dim], data: layer(w3, l, f * dim) },
    );
  }
  tensors.push({ name: 'model.norm.weight', shape: [dim], data: rmsFinal });
  if (wcls) tensors.push({ name: 'lm_head.weight', shape: [V, dim], data: wcls });
  return { header: hd, tensors };
}

const SPECIAL = ['<unk>', '<s>', '</s>'];

/** tokenizer.json for the llama2.c vocabulary (sentencepiece BPE semantics). */
export function buildTokenizerJson(vocab: Llama2cVocab): Record<string, unknown> {
  const pieces = vocab.pieces.map((p, i) => (i < 3 ? SPECIAL[i] : p.replaceAll(' ', '\u2581')));
  const ids = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (!ids.has(p)) ids.set(p, i);
  });
  // Every split of a piece into two pieces is a merge; llama2.c merges the pair whose result
  // scores highest, so merges are ranked by the merged piece's score.
  const merges: { pair: [string, string]; score: number; id: number }[] = [];
  pieces.forEach((p, id) => {
    if (id < 3 || /^<0x[0-9A-F]{2}>$/.test(p)) return;
    const chars = Array.from(p);
    for (let k = 1; k < chars.length; k++) {
      const a = chars.slice(0, k).join('');
      const b = chars.slice(k).join('');
      if (ids.has(a) && ids.has(b)) merges.push({ pair: [a, b], score: vocab.scores[id], id });
    }
  });
  merges.sort((x, y) => y.score - x.score || x.id - y.id);
  const vocabObj: Record<string, number> = {};
  for (const [p, i] of ids) vocabObj[p] = i;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
    },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab: vocabObj, merges: merges.map((m) => m.pair),
    },
  };
}

export interface ConvertLlama2cOptions {
  checkpoint: string;
  tokenizer: string;
  out: string;
  /** Replace an existing output directory. */
  overwrite?: boolean;
}

/** Converts and writes the directory atomically (temporary sibling directory, then rename). */
export function convertLlama2c(options: ConvertLlama2cOptions): { out: string; header: Llama2cHeader; tensors: number } {
  const { checkpoint, tokenizer, out } = options;
  for (const [k, v] of Object.entries({ checkpoint, tokenizer, out })) {
    if (typeof v !== 'string' || v.length === 0) throw new TypeError(`${k} must be a non-empty path`);
  }
  const target = validateOutput(out, 'dir', { inputs: [checkpoint, tokenizer], label: 'out' }); // not a file/link, parent writable
  if (existsSync(target) && readdirSync(target).length > 0 && !options.overwrite) {
    throw new GainragError('E_IO', `${target} exists and is not empty (pass overwrite to replace it)`);
  }
  let ckpt: Buffer, tok: Buffer;
  try {
    ckpt = readFileSync(checkpoint);
    tok = readFileSync(tokenizer);
  } catch (err) {
    throw ioError(err, 'cannot read the llama2.c files');
  }
  const { header, tensors } = convertLlama2cWeights(ckpt, checkpoint);
  const vocab = readLlama2cTokenizer(tok, header.vocabSize, tokenizer);
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: header.dim, intermediate_size: header.hiddenDim,
    num_hidden_layers: header.nLayers, num_attention_heads: header.nHeads, num_key_value_heads: header.nKvHeads,
    head_dim: header.dim / header.nHeads, vocab_size: header.vocabSize, max_position_embeddings: header.seqLen,
    rms_norm_eps: 1e-5, rope_theta: 10000.0, hidden_act: 'silu', tie_word_embeddings: header.sharedClassifier,
    attention_bias: false, mlp_bias: false, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32',
  };
  const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(tmp, { recursive: true });
  try {
    writeFileAtomic(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    writeFileAtomic(path.join(tmp, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2) + '\n');
    writeFileAtomic(path.join(tmp, 'model.safetensors'), encodeSafetensors(tensors));
    writeFileAtomic(path.join(tmp, 'tokenizer.json'), JSON.stringify(buildTokenizerJson(vocab)));
    writeFileAtomic(path.join(tmp, 'tokenizer_config.json'), JSON.stringify({
      tokenizer_class: 'LlamaTokenizerFast', bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>',
      add_bos_token: true, add_eos_token: false, model_max_length: header.seqLen,
    }, null, 2) + '\n');
    if (existsSync(target)) rmSync(target, { recursive: true, force: true });
    renameSync(tmp, target);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  return { out: target, header, tensors: tensors.length };
}
