// JSON with non-finite numbers, read and written the way the rest of the pipeline needs.
//
// Reading. Python's json.dump writes the bare tokens NaN, Infinity and -Infinity (the reference
// writes PPL_CD = inf when an answer tokenises to nothing). parseJson tries JSON.parse first
// (the common case, at native speed); only when that fails and the text mentions one of those
// words does it parse the text again with a small tokenizer of its own, which accepts the three
// tokens outside strings and nothing else beyond JSON. Text inside strings is never touched, so a
// passage about "Infinity" or "NaN bread" reads back unchanged.
//
// Writing. JSON.stringify turns every non-finite number into null, so an infinite PPL read from a
// reference file would come back as "no score". stringifyJson writes +/-Infinity as 1e999 and
// -1e999: valid JSON that overflows to +/-Infinity in JSON.parse, Python's json.loads, and any
// reader that parses doubles. NaN stays null (JSON has no way to say "not a number").
// Every JSONL writer (AtomicJsonlWriter) goes through stringifyJson.

const NON_FINITE_WORD = /NaN|Infinity/;

/** JSON.parse that also accepts Python's NaN, Infinity and -Infinity tokens. Throws SyntaxError. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    if (!NON_FINITE_WORD.test(text)) throw err;
    try {
      return new LenientParser(text).parse();
    } catch {
      throw err; // the document is broken in some other way: report JSON.parse's own message
    }
  }
}

/** JSON.stringify for records, writing +/-Infinity as 1e999 / -1e999 and NaN as null. */
export function stringifyJson(value: unknown): string | undefined {
  if (!hasNonFinite(value)) return JSON.stringify(value);
  // Non-finite numbers become marker strings, which are then replaced by the raw tokens. A
  // marker is only a whole quoted string in the output (a quote inside a string is escaped), so
  // counting the markers found against those put in proves that no real string was replaced.
  for (;;) {
    const nonce = `\u0001gainrag-${Math.random().toString(36).slice(2)}`;
    const pos = `${nonce}+`;
    const neg = `${nonce}-`;
    let placed = 0;
    const out = JSON.stringify(value, (_key, v: unknown) => {
      if (typeof v !== 'number' || Number.isFinite(v)) return v;
      if (Number.isNaN(v)) return null;
      placed++;
      return v > 0 ? pos : neg;
    });
    if (out === undefined) return out;
    const posParts = out.split(JSON.stringify(pos));
    const joined = posParts.join('1e999');
    const negParts = joined.split(JSON.stringify(neg));
    if (posParts.length - 1 + negParts.length - 1 === placed) return negParts.join('-1e999');
    // A real string equal to a marker (never by accident: the nonce is random): draw again.
  }
}

// Walks the value with an explicit stack (records can be deeply nested) looking for a number
// JSON.stringify would turn into null. Cheaper than a replacer on every value (~2% of a stringify).
// Each object is walked once: a cycle would otherwise grow the stack until V8 dies (the
// JSON.stringify that follows then throws its TypeError naming the circular property), and an
// object shared by several fields has been checked the first time.
function hasNonFinite(root: unknown): boolean {
  const stack: unknown[] = [root];
  const seen = new Set<object>();
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return true;
    } else if (typeof v === 'object' && v !== null) {
      if (seen.has(v)) continue;
      seen.add(v);
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) stack.push(v[i]);
      } else if (ArrayBuffer.isView(v)) {
        const a = v as unknown as ArrayLike<unknown>;
        for (let i = 0; i < a.length; i++) if (typeof a[i] === 'number' && !Number.isFinite(a[i] as number)) return true;
      } else {
        for (const k in v) if (Object.prototype.hasOwnProperty.call(v, k)) stack.push((v as Record<string, unknown>)[k]);
      }
    }
  }
  return false;
}

type Frame = { array: unknown[] } | { object: Record<string, unknown>; key: string };

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

// The fallback parser: JSON plus the three Python tokens. Iterative, so nesting depth is bounded
// by memory rather than the call stack. Strings are decoded by JSON.parse itself (exact escapes).
class LenientParser {
  private i = 0;
  constructor(private readonly s: string) {}

  parse(): unknown {
    const stack: Frame[] = [];
    for (;;) {
      this.blank();
      let value: unknown;
      const c = this.s.charCodeAt(this.i);
      if (c === 0x7b /* { */) {
        this.i++;
        this.blank();
        if (this.s.charCodeAt(this.i) === 0x7d) {
          this.i++;
          value = {};
        } else {
          stack.push({ object: {}, key: this.key() });
          continue;
        }
      } else if (c === 0x5b /* [ */) {
        this.i++;
        this.blank();
        if (this.s.charCodeAt(this.i) === 0x5d) {
          this.i++;
          value = [];
        } else {
          stack.push({ array: [] });
          continue;
        }
      } else {
        value = this.scalar();
      }
      // Attach the value to its container; close containers that end here.
      for (;;) {
        const top = stack[stack.length - 1];
        if (top === undefined) {
          this.blank();
          if (this.i !== this.s.length) this.fail('unexpected content after the value');
          return value;
        }
        if ('array' in top) top.array.push(value);
        else setOwn(top.object, top.key, value);
        this.blank();
        const d = this.s.charCodeAt(this.i++);
        if (d === 0x2c /* , */) {
          if ('object' in top) {
            this.blank();
            top.key = this.key();
          }
          break;
        }
        if (('array' in top && d === 0x5d) || ('object' in top && d === 0x7d)) {
          stack.pop();
          value = 'array' in top ? top.array : top.object;
          continue;
        }
        this.i--;
        this.fail("expected ',' or a closing bracket");
      }
    }
  }

  private blank(): void {
    const s = this.s;
    for (;;) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.i++;
      else return;
    }
  }

  // A property name and its colon.
  private key(): string {
    if (this.s.charCodeAt(this.i) !== 0x22) this.fail('expected a property name');
    const k = this.string();
    this.blank();
    if (this.s.charCodeAt(this.i) !== 0x3a) this.fail("expected ':'");
    this.i++;
    this.blank();
    return k;
  }

  private string(): string {
    const s = this.s;
    const start = this.i;
    let j = start + 1;
    let escaped = false;
    for (;;) {
      const c = s.charCodeAt(j);
      if (Number.isNaN(c)) this.fail('unterminated string');
      if (c === 0x5c) {
        escaped = true;
        j += 2;
      } else if (c === 0x22) break;
      else if (c < 0x20) this.fail('control character in a string');
      else j++;
    }
    this.i = j + 1;
    // Without escapes the text is the value; with them JSON.parse decodes exactly.
    return escaped ? (JSON.parse(s.slice(start, j + 1)) as string) : s.slice(start + 1, j);
  }

  private scalar(): unknown {
    const s = this.s;
    const c = s.charCodeAt(this.i);
    if (c === 0x22) return this.string();
    for (const [word, value] of WORDS) {
      if (s.startsWith(word, this.i)) {
        this.i += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(s);
    if (m === null) this.fail('unexpected token');
    this.i += m[0].length;
    return Number(m[0]);
  }

  private fail(message: string): never {
    throw new SyntaxError(`${message} at position ${this.i}`);
  }
}

const WORDS: [string, unknown][] = [
  ['true', true],
  ['false', false],
  ['null', null],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
];

// `obj[key] = v` would set the prototype for "__proto__"; JSON.parse makes it an own property.
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  else obj[key] = value;
}
