// One generated answer of /v1/completions or /v1/chat/completions, followed token by token as
// the engine makes them (CausalLM.generateIds' onTokens): its text so far is decoded after each
// token, checked for the request's stop strings -- one found stops the engine's row at once
// (its stop signal) and cuts the text there -- and whatever is certain is handed on as a delta
// (stream: true writes each as a server-sent event). Text that may still turn into a stop
// string, or ends in a split UTF-8 character, is held back until the next token decides. The
// deltas always add up to the final text, which is what a request without `stream` answers.
import type { Tokenizer } from '../tokenizer.js';

export type FinishReason = 'stop' | 'length';

/** The longest end of `text` that is the start of a stop string (it may become one). */
function pendingStop(text: string, stops: string[]): number {
  let hold = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > hold; n--) {
      if (text.endsWith(s.slice(0, n))) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

function earliestStop(text: string, stops: string[]): number {
  let cut = -1;
  for (const s of stops) {
    const at = text.indexOf(s);
    if (at >= 0 && (cut < 0 || at < cut)) cut = at;
  }
  return cut;
}

export class CompletionRow {
  readonly tokens: number[] = [];
  /** Aborted when a stop string is found: the engine stops this row. */
  readonly stop = new AbortController();
  /** Resolves with the final text once the answer is complete. */
  readonly done: Promise<string>;
  finish: FinishReason = 'length';
  private sent = '';
  private ended = false;
  private chain: Promise<void> = Promise.resolve();
  private resolve!: (text: string) => void;
  private reject!: (err: unknown) => void;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly maxTokens: number,
    private readonly stops: string[],
    private readonly eos: Set<number>,
    private readonly onDelta?: (delta: string) => void,
  ) {
    this.done = new Promise((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.done.catch(() => undefined); // the caller awaits it; an early failure is not unhandled
  }

  /** A token from the engine (in order). */
  push(token: number): void {
    if (this.ended) return;
    this.tokens.push(token);
    const last = this.eos.has(token) || this.tokens.length >= this.maxTokens;
    if (last) this.ended = true;
    const upto = this.tokens.length;
    this.chain = this.chain.then(() => this.update(upto, last)).catch((err) => this.fail(err));
  }

  /** The engine call ended: the row has every token it will get (delivered through push). */
  complete(): void {
    if (this.ended) return;
    this.ended = true;
    const upto = this.tokens.length;
    this.chain = this.chain.then(() => this.update(upto, true)).catch((err) => this.fail(err));
  }

  fail(err: unknown): void {
    this.ended = true;
    this.reject(err);
  }

  private emit(text: string): void {
    if (text.length > this.sent.length && text.startsWith(this.sent)) {
      const delta = text.slice(this.sent.length);
      this.sent = text;
      this.onDelta?.(delta);
    }
  }

  private async update(upto: number, last: boolean): Promise<void> {
    if (this.stop.signal.aborted) return; // cut at a stop string already
    const full = await this.tokenizer.decode(this.tokens.slice(0, upto), true);
    const cut = earliestStop(full, this.stops);
    if (cut >= 0) {
      this.stop.abort();
      this.finish = 'stop';
      // Tokens that came after the one completing the stop string are not part of the answer.
      this.ended = true;
      this.tokens.length = upto;
      this.end(full.slice(0, cut));
      return;
    }
    if (last) {
      const lastToken = this.tokens[upto - 1];
      this.finish = upto > 0 && this.eos.has(lastToken) ? 'stop' : 'length';
      this.end(full);
      return;
    }
    let safe = full.slice(0, full.length - pendingStop(full, this.stops));
    while (safe.endsWith('\ufffd')) safe = safe.slice(0, -1);
    this.emit(safe);
  }

  private end(text: string): void {
    this.emit(text);
    // A tokenizer that decodes a prefix differently from the whole (rare) cannot unsay a delta;
    // the final text is still the whole decode.
    this.resolve(text);
  }
}
