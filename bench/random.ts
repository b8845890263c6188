// Deterministic uniform(-0.5, 0.5) values (xorshift32) for benchmark inputs: fast, seedable, and
// the same numbers whichever engine reads them.
export function uniformF32(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}
