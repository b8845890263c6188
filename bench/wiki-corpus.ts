// Synthetic corpus of DPR's shape for bench/wiki-scale.ts: row r of the corpus depends only on
// (seed, r), never on how the rows are chunked, so a prefix of the 21M-row corpus is the smaller
// corpus and a chunk can be regenerated alone (test/wiki-corpus.test.ts checks both).
// Values are uniform in [-1, 1) with 16-bit resolution: two values per 32-bit hash.

/** DPR's psgs_w100.tsv: passages, and the dimension of its BERT-base embeddings. */
export const DPR_ROWS = 21_015_324;
export const DPR_DIM = 768;

// A 32-bit integer mixer (xor-shift-multiply): consecutive inputs give unrelated outputs.
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Rows [first, first + rows) of the corpus with this seed, row-major, `dim` even. */
export function syntheticRows(first: number, rows: number, dim: number, seed: number): Float32Array {
  if (!Number.isSafeInteger(first) || first < 0 || !Number.isSafeInteger(rows) || rows < 0) throw new RangeError('first and rows must be non-negative integers');
  if (!Number.isInteger(dim) || dim < 2 || dim % 2 !== 0) throw new RangeError('dim must be an even integer >= 2');
  const out = new Float32Array(rows * dim);
  const seedMix = mix32(seed ^ 0x5bd1e995);
  for (let r = 0; r < rows; r++) {
    const row = first + r;
    // Row numbers reach 2^25: fold the high part in so that rows 2^32 apart would also differ.
    const base = mix32((row ^ seedMix) + Math.floor(row / 4294967296) * 0x27d4eb2d);
    const at = r * dim;
    for (let p = 0; p < dim; p += 2) {
      const h = mix32(base + Math.imul(p, 0x9e3779b9));
      out[at + p] = (h & 0xffff) / 32768 - 1;
      out[at + p + 1] = (h >>> 16) / 32768 - 1;
    }
  }
  return out;
}
