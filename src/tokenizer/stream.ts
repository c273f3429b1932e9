// Incremental detokenization for streaming generation. Each push returns only text that is
// final: nothing while the text decoded so far ends in U+FFFD (a UTF-8 character still split
// over byte-fallback or byte-level tokens), and the start-of-text rules (SentencePiece's dummy
// prefix space) applied exactly as decode() applies them to the whole sequence. The concatenation
// of everything returned by push() and flush() equals decode(all ids).
//
// How: ids since the last emitted text form a window. Once some non-empty text has been emitted,
// the window is decoded with the tokenizer's decodeContinuation() (no start-of-text rules), which
// equals the tail of the whole decode because the window starts on a character boundary. Until
// then, the window starts at the first id and is decoded with decode(). A tokenizer without
// decodeContinuation() is decoded whole each time (quadratic, but exact).
import type { DecodeOptions, Tokenizer } from './types.ts';

export class StreamDecoder {
  /** Ids not yet turned into emitted text (all ids for a tokenizer without decodeContinuation). */
  private pending: number[] = [];
  /** Whether any non-empty text has been emitted. */
  private emittedAny = false;
  /** For tokenizers without decodeContinuation: the length of text emitted so far. */
  private emittedLen = 0;

  constructor(private readonly tok: Tokenizer, private readonly opts: DecodeOptions = {}) {}

  /** Add one id; returns the new final text (possibly ""). */
  push(id: number): string {
    this.pending.push(id);
    const text = this.windowText();
    if (text.length === 0 || text.endsWith('\uFFFD')) return '';
    if (!this.tok.decodeContinuation) {
      const out = text.slice(this.emittedLen);
      this.emittedLen = text.length;
      return out;
    }
    this.emittedAny = true;
    this.pending = [];
    return text;
  }

  /** Return whatever is left (incomplete characters as U+FFFD) and reset for a new sequence. */
  flush(): string {
    const text = this.pending.length ? this.windowText() : '';
    const out = this.tok.decodeContinuation ? text : text.slice(this.emittedLen);
    this.pending = [];
    this.emittedAny = false;
    this.emittedLen = 0;
    return out;
  }

  private windowText(): string {
    const t = this.tok;
    if (t.decodeContinuation && this.emittedAny) return t.decodeContinuation(this.pending, this.opts);
    return t.decode(this.pending, this.opts);
  }
}
