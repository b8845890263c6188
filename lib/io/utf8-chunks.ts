// Strict UTF-8 decoding of a byte stream in chunks. Node's 'utf8' stream encoding replaces every
// invalid byte with U+FFFD silently, so a damaged or Latin-1 input would flow through the pipeline
// as different text; here it is an E_DATA error naming FILE:LINE instead.
import { isUtf8 } from 'node:buffer';
import { GainragError } from '../errors.js';

export class Utf8Chunks {
  // The bytes of a character split by the chunk boundary, kept for the next chunk.
  private carry: Buffer | undefined;
  constructor(private readonly name: string) {}

  /** Text of `bytes` (after any carried bytes); `line` is the file line where they start. */
  decode(bytes: Buffer, line: number): string {
    const data = this.carry ? Buffer.concat([this.carry, bytes]) : bytes;
    const end = completeEnd(data);
    this.carry = end < data.length ? Buffer.from(data.subarray(end)) : undefined;
    const body = end < data.length ? data.subarray(0, end) : data;
    if (!isUtf8(body)) throw this.invalid(body, Math.max(firstInvalid(body), 0), line);
    return body.toString('utf8');
  }

  /** Throws when the stream ended inside a character. */
  end(line: number): void {
    if (this.carry) throw this.invalid(this.carry, 0, line);
  }

  private invalid(body: Uint8Array, at: number, line: number): GainragError {
    let l = line;
    for (let i = 0; i < at; i++) if (body[i] === 10) l++;
    return new GainragError('E_DATA', `${this.name}:${l}: invalid UTF-8 (byte 0x${body[at].toString(16).padStart(2, '0')}); inputs must be UTF-8 text`);
  }
}

// Length of the longest prefix that does not end inside a multi-byte character.
function completeEnd(b: Uint8Array): number {
  for (let i = b.length - 1; i >= 0 && i >= b.length - 4; i--) {
    const c = b[i];
    if ((c & 0xc0) === 0x80) continue; // continuation byte: keep looking for its lead
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return b.length - i < need ? i : b.length;
  }
  return b.length;
}

// Offset of the first byte that starts no valid UTF-8 sequence (-1: none). Only for the message.
function firstInvalid(b: Uint8Array): number {
  for (let i = 0; i < b.length; ) {
    const c = b[i];
    const n = c < 0x80 ? 0 : c >= 0xc2 && c < 0xe0 ? 1 : c >= 0xe0 && c < 0xf0 ? 2 : c >= 0xf0 && c < 0xf5 ? 3 : -1;
    if (n < 0) return i;
    for (let k = 1; k <= n; k++) if (i + k >= b.length || (b[i + k] & 0xc0) !== 0x80) return i;
    const d = b[i + 1];
    if ((c === 0xe0 && d < 0xa0) || (c === 0xed && d > 0x9f) || (c === 0xf0 && d < 0x90) || (c === 0xf4 && d > 0x8f)) return i;
    i += n + 1;
  }
  return -1;
}
