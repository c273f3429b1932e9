// UTF-8 helpers shared by the tokenizers: byte pieces "<0xXX>", SentencePiece's own UTF-8
// decoding rule (one U+FFFD per bad byte), and a well-formedness fix for JS strings.

const HEX = '0123456789ABCDEF';

/** "<0x0A>" for byte 10 (SentencePiece and HF byte-fallback spelling). */
export function byteToPiece(b: number): string {
  return `<0x${HEX[b >> 4]}${HEX[b & 15]}>`;
}

/** The byte of a "<0xXX>" piece (either hex case), or -1. */
export function pieceToByte(piece: string): number {
  if (piece.length !== 6 || !piece.startsWith('<0x') || piece[5] !== '>') return -1;
  const h = hexVal(piece.charCodeAt(3));
  const l = hexVal(piece.charCodeAt(4));
  return h < 0 || l < 0 ? -1 : (h << 4) | l;
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** Replace lone UTF-16 surrogates by U+FFFD (what UTF-8 encoding does to them anyway). */
export function toWellFormed(s: string): string {
  // Fast path: no surrogate at all.
  if (!/[\uD800-\uDFFF]/.test(s)) return s;
  return s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

/** UTF-8 bytes of a (well-formed) string. */
export function utf8Bytes(s: string): Uint8Array {
  return Buffer.from(s, 'utf8');
}

const isTrail = (b: number): boolean => (b & 0xc0) === 0x80;
const validCp = (c: number): boolean => c < 0xd800 || (c >= 0xe000 && c <= 0x10ffff);

/**
 * Length of the UTF-8 character at bytes[i] by SentencePiece's DecodeUTF8 (util.cc), or 0 when
 * the byte there is invalid (then SentencePiece consumes that one byte as U+FFFD).
 */
export function spmCharLen(bytes: ArrayLike<number>, i: number, end: number): number {
  const len = end - i;
  const b0 = bytes[i];
  if (b0 < 0x80) return 1;
  if (len >= 2 && (b0 & 0xe0) === 0xc0) {
    const b1 = bytes[i + 1];
    const cp = ((b0 & 0x1f) << 6) | (b1 & 0x3f);
    return isTrail(b1) && cp >= 0x80 && validCp(cp) ? 2 : 0;
  }
  if (len >= 3 && (b0 & 0xf0) === 0xe0) {
    const b1 = bytes[i + 1], b2 = bytes[i + 2];
    const cp = ((b0 & 0x0f) << 12) | ((b1 & 0x3f) << 6) | (b2 & 0x3f);
    return isTrail(b1) && isTrail(b2) && cp >= 0x800 && validCp(cp) ? 3 : 0;
  }
  if (len >= 4 && (b0 & 0xf8) === 0xf0) {
    const b1 = bytes[i + 1], b2 = bytes[i + 2], b3 = bytes[i + 3];
    const cp = ((b0 & 0x07) << 18) | ((b1 & 0x3f) << 12) | ((b2 & 0x3f) << 6) | (b3 & 0x3f);
    return isTrail(b1) && isTrail(b2) && isTrail(b3) && cp >= 0x10000 && validCp(cp) ? 4 : 0;
  }
  return 0;
}

/**
 * Decode bytes the way SentencePiece's decoder does for a run of byte pieces: character by
 * character, each structurally invalid byte becoming one U+FFFD.
 */
export function decodeUtf8Spm(bytes: Uint8Array, start = 0, end = bytes.length): string {
  let out = '';
  let i = start;
  let runStart = i; // start of a run of valid characters, decoded in one go
  const flush = (to: number): void => {
    if (to > runStart) out += Buffer.from(bytes.buffer, bytes.byteOffset + runStart, to - runStart).toString('utf8');
  };
  while (i < end) {
    const n = spmCharLen(bytes, i, end);
    if (n === 0) {
      flush(i);
      out += '\uFFFD';
      i += 1;
      runStart = i;
    } else {
      i += n;
    }
  }
  flush(end);
  return out;
}

const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lossyDecoder = new TextDecoder('utf-8', { ignoreBOM: true });

/** Strict UTF-8 decode, or null when the bytes are not valid UTF-8. */
export function decodeUtf8Strict(bytes: Uint8Array): string | null {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return null;
  }
}

/** Lossy UTF-8 decode (WHATWG rule, as Rust's String::from_utf8_lossy). */
export function decodeUtf8Lossy(bytes: Uint8Array): string {
  return lossyDecoder.decode(bytes);
}

/**
 * A copy of `s` that does not share memory with the string it was sliced from. V8 keeps a slice of
 * 13+ characters as a view of its parent, so caching slices of long inputs would keep every input
 * alive; cache keys go through this.
 */
export function ownedKey(s: string): string {
  return s.length < 13 ? s : Buffer.from(s, 'utf8').toString('utf8');
}
