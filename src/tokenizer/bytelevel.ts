// GPT-2's byte-level alphabet: every byte maps to a printable character (bytes_to_unicode in
// openai/gpt-2 encoder.py and the ByteLevel pre-tokenizer of Hugging Face tokenizers), so that
// byte-level BPE works on ordinary strings.

/** The GPT-2 pre-tokenizer pattern (ByteLevel with use_regex). */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
export const GPT2_REGEX = new RegExp(GPT2_PATTERN, 'gu');

/** BYTE_TO_CHAR[b] is the character standing for byte b. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const out = new Array<string>(256);
  for (let i = 0; i < 256; i++) out[bs[i]] = String.fromCharCode(cs[i]);
  return out;
})();

/** Char code → byte, -1 for characters outside the alphabet. */
const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(512).fill(-1);
  for (let b = 0; b < 256; b++) t[BYTE_TO_CHAR[b].charCodeAt(0)] = b;
  return t;
})();

export function charToByte(code: number): number {
  return code < 512 ? CHAR_TO_BYTE[code] : -1;
}

/** The byte-level string of a text: its UTF-8 bytes, each as its alphabet character. */
export function toByteLevel(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out += BYTE_TO_CHAR[c];
      continue;
    }
    if (c < 0x800) {
      out += BYTE_TO_CHAR[0xc0 | (c >> 6)] + BYTE_TO_CHAR[0x80 | (c & 63)];
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        out += BYTE_TO_CHAR[0xf0 | (c >> 18)] + BYTE_TO_CHAR[0x80 | ((c >> 12) & 63)] +
          BYTE_TO_CHAR[0x80 | ((c >> 6) & 63)] + BYTE_TO_CHAR[0x80 | (c & 63)];
        continue;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // lone surrogate
    out += BYTE_TO_CHAR[0xe0 | (c >> 12)] + BYTE_TO_CHAR[0x80 | ((c >> 6) & 63)] + BYTE_TO_CHAR[0x80 | (c & 63)];
  }
  return out;
}

/**
 * The bytes of byte-level tokens (the ByteLevel decoder): a token with a character outside the
 * alphabet contributes its own UTF-8 bytes instead, as Hugging Face does.
 */
export function fromByteLevel(tokens: readonly string[]): Uint8Array {
  const out: number[] = [];
  for (const t of tokens) {
    let ok = true;
    const start = out.length;
    for (let i = 0; i < t.length; i++) {
      const b = charToByte(t.charCodeAt(i));
      if (b < 0) {
        ok = false;
        break;
      }
      out.push(b);
    }
    if (!ok) {
      out.length = start;
      for (const b of Buffer.from(t, 'utf8')) out.push(b);
    }
  }
  return Uint8Array.from(out);
}
