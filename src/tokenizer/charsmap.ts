// SentencePiece's precompiled normalization rules (normalizer_spec.precompiled_charsmap, also
// the "Precompiled" normalizer of tokenizer.json): a Darts-clone double-array trie over UTF-8
// byte strings whose values point into a blob of NUL-terminated replacement strings.
// Layout: <u32 LE trie size><trie units, u32 LE each><replacement strings>.
// This makes nmt_nfkc / nfkc / nfkc_cf models exact: the rules are read from the model itself
// rather than approximated by String.prototype.normalize('NFKC').
import { FormatError } from '../errors.ts';

export class PrecompiledCharsMap {
  private readonly units: Uint32Array;
  private readonly strings: Uint8Array;

  constructor(blob: Uint8Array, what: string) {
    if (blob.length <= 4) throw new FormatError(`${what}: precompiled_charsmap is broken (${blob.length} bytes)`);
    const dv = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const trieSize = dv.getUint32(0, true);
    if (trieSize >= blob.length || trieSize % 4 !== 0)
      throw new FormatError(`${what}: precompiled_charsmap trie size ${trieSize} does not fit its ${blob.length}-byte blob`);
    const n = trieSize / 4;
    this.units = new Uint32Array(n);
    for (let i = 0; i < n; i++) this.units[i] = dv.getUint32(4 + 4 * i, true);
    this.strings = blob.slice(4 + trieSize);
  }

  /**
   * Longest rule matching a prefix of bytes[pos..end): its length and the replacement bytes,
   * or null when no rule matches (Darts commonPrefixSearch + longest, as Normalizer::NormalizePrefix).
   */
  longestMatch(bytes: Uint8Array, pos: number, end: number): { length: number; replacement: Uint8Array } | null {
    const u = this.units;
    if (u.length === 0) return null;
    let node = offsetOf(u[0]);
    let bestLen = 0;
    let bestValue = 0;
    for (let i = pos; i < end; i++) {
      const key = bytes[i];
      node = (node ^ key) >>> 0;
      if (node >= u.length) break;
      const unit = u[node];
      if (((unit & 0x800000ff) >>> 0) !== key) break;
      node = (node ^ offsetOf(unit)) >>> 0;
      if ((unit >>> 8) & 1) {
        if (node >= u.length) break;
        bestLen = i - pos + 1;
        bestValue = u[node] & 0x7fffffff;
      }
    }
    if (bestLen === 0) return null;
    let e = bestValue;
    const s = this.strings;
    if (bestValue >= s.length) return null;
    while (e < s.length && s[e] !== 0) e++;
    return { length: bestLen, replacement: s.subarray(bestValue, e) };
  }
}

function offsetOf(unit: number): number {
  return ((unit >>> 10) << ((unit & (1 << 9)) >>> 6)) >>> 0;
}
