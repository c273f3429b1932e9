// Added / special tokens written literally in a text ("</s>", "<|endoftext|>") are cut out before
// the model runs, as Hugging Face tokenizers do (leftmost match, longest first), with the
// AddedToken options lstrip / rstrip (swallow the whitespace beside the token) and single_word
// (match only when not inside a word).

export interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  singleWord?: boolean;
  /** HF's `normalized` flag; kept for writing tokenizer.json back (matching is always on raw text). */
  normalized?: boolean;
}

/** A piece of text to encode with the model, or an added token's id. */
export type Segment = { text: string; first: boolean } | { id: number };

const WORD_CHAR = /[\p{L}\p{N}_]/u;

export class AddedTokenMatcher {
  private readonly re: RegExp | null;
  private readonly byContent = new Map<string, AddedToken>();

  constructor(tokens: readonly AddedToken[]) {
    for (const t of tokens) if (t.content.length > 0) this.byContent.set(t.content, t);
    const contents = [...this.byContent.keys()].sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
    this.re = contents.length ? new RegExp(contents.map(escapeRegExp).join('|'), 'gu') : null;
  }

  get size(): number {
    return this.byContent.size;
  }

  /** Split text into model segments and added-token ids. Empty text segments are dropped. */
  split(text: string): Segment[] {
    const out: Segment[] = [];
    if (!this.re) {
      if (text.length) out.push({ text, first: true });
      return out;
    }
    const re = this.re;
    re.lastIndex = 0;
    let segStart = 0; // start of the pending text segment
    let m: RegExpExecArray | null;
    while ((m = re.exec(text)) !== null) {
      const tok = this.byContent.get(m[0])!;
      let s = m.index;
      let e = s + m[0].length;
      if (tok.singleWord) {
        const before = s > 0 ? text[s - 1] : '';
        const after = e < text.length ? text[e] : '';
        if ((before && WORD_CHAR.test(before)) || (after && WORD_CHAR.test(after))) {
          re.lastIndex = s + 1;
          continue;
        }
      }
      if (tok.lstrip) while (s > segStart && /\s/u.test(text[s - 1])) s--;
      if (tok.rstrip) while (e < text.length && /\s/u.test(text[e])) e++;
      if (s > segStart) out.push({ text: text.slice(segStart, s), first: segStart === 0 });
      out.push({ id: tok.id });
      segStart = e;
      re.lastIndex = e;
    }
    if (segStart < text.length) out.push({ text: text.slice(segStart), first: segStart === 0 });
    return out;
  }
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
