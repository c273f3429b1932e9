// The BPE model of Hugging Face tokenizers (models/bpe): a word becomes characters (or their
// <0xXX> bytes with byte_fallback, or <unk>), then the listed merges are applied by rank, lowest
// first, ties to the leftmost (Word::merge_all, a priority queue with lazy deletion). Words are
// cached.
import { ownedKey } from './utf8.ts';
import { FormatError } from '../errors.ts';
import { byteToPiece } from './utf8.ts';

export interface BpeModelSpec {
  vocab: Map<string, number>;
  merges: readonly (readonly [string, string])[];
  unkToken?: string | null;
  byteFallback?: boolean;
  fuseUnk?: boolean;
  continuingSubwordPrefix?: string | null;
  endOfWordSuffix?: string | null;
  ignoreMerges?: boolean;
}

const SHIFT = 4194304; // 2^22: ids and ranks below this pack two to a double exactly
const CACHE_MAX_ENTRIES = 1 << 17;
const CACHE_MAX_WORD = 64;

export class BpeModel {
  readonly vocab: Map<string, number>;
  readonly idToToken: string[] = [];
  /** (left id, right id) packed → rank · 2^22 + merged id. */
  private readonly merges = new Map<number, number>();
  private readonly unkId: number | null;
  private readonly byteIds: Int32Array | null;
  private readonly cache = new Map<string, number[]>();
  // Reusable work arrays for merge_all.
  private sym = new Int32Array(64);
  private prev = new Int32Array(64);
  private next = new Int32Array(64);
  private heapRank = new Float64Array(64);
  private heapPos = new Int32Array(64);
  private heapNew = new Int32Array(64);

  constructor(readonly spec: BpeModelSpec, what: string) {
    this.vocab = spec.vocab;
    for (const [tok, id] of spec.vocab) {
      if (!Number.isInteger(id) || id < 0 || id >= SHIFT) throw new FormatError(`${what}: vocab id ${id} of "${tok}" is out of range`);
      this.idToToken[id] = tok;
    }
    spec.merges.forEach(([a, b], rank) => {
      const ia = spec.vocab.get(a), ib = spec.vocab.get(b), im = spec.vocab.get(a + b);
      if (ia === undefined || ib === undefined)
        throw new FormatError(`${what}: merge ${rank} ("${a}" "${b}") uses a token that is not in the vocab`);
      if (im === undefined) throw new FormatError(`${what}: merge ${rank} makes "${a + b}", which is not in the vocab`);
      const key = ia * SHIFT + ib;
      if (!this.merges.has(key)) this.merges.set(key, rank * SHIFT + im);
    });
    if (spec.unkToken != null) {
      const u = spec.vocab.get(spec.unkToken);
      // Hugging Face fails at encode time when an unknown character meets a missing unk token.
      this.unkId = u ?? null;
    } else {
      this.unkId = null;
    }
    if (spec.byteFallback) {
      const ids = new Int32Array(256);
      let all = true;
      for (let b = 0; b < 256; b++) {
        const id = spec.vocab.get(byteToPiece(b));
        if (id === undefined) all = false;
        ids[b] = id ?? -1;
      }
      this.byteIds = all ? ids : null;
    } else {
      this.byteIds = null;
    }
  }

  /** Append the ids of one pre-tokenized word. */
  tokenize(word: string, out: number[]): void {
    if (word.length === 0) return;
    if (this.spec.ignoreMerges) {
      const id = this.vocab.get(word);
      if (id !== undefined) {
        out.push(id);
        return;
      }
    }
    const short = word.length <= CACHE_MAX_WORD;
    if (short) {
      const hit = this.cache.get(word);
      if (hit !== undefined) {
        for (let i = 0; i < hit.length; i++) out.push(hit[i]);
        return;
      }
    }
    const ids = this.mergeWord(word);
    if (short) {
      if (this.cache.size >= CACHE_MAX_ENTRIES) this.cache.clear();
      this.cache.set(ownedKey(word), ids);
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]);
  }

  private ensure(n: number): void {
    if (this.sym.length >= n) return;
    let cap = this.sym.length;
    while (cap < n) cap *= 2;
    this.sym = new Int32Array(cap);
    this.prev = new Int32Array(cap);
    this.next = new Int32Array(cap);
    // n − 1 initial pairs, then at most two pushes per merge (≤ n − 1 merges): < 3n entries.
    this.heapRank = new Float64Array(cap * 3);
    this.heapPos = new Int32Array(cap * 3);
    this.heapNew = new Int32Array(cap * 3);
  }

  /** BPE::merge_word + Word::merge_all. */
  private mergeWord(w: string): number[] {
    const { continuingSubwordPrefix: pre, endOfWordSuffix: suf, fuseUnk } = this.spec;
    // Characters → initial symbols.
    const sym: number[] = [];
    let pendingUnk = false;
    for (let i = 0; i < w.length;) {
      const c = w.charCodeAt(i);
      const len = c >= 0xd800 && c <= 0xdbff && i + 1 < w.length ? 2 : 1;
      let s = w.slice(i, i + len);
      if (i > 0 && pre) s = pre + s;
      if (i + len >= w.length && suf) s = s + suf;
      i += len;
      const id = this.vocab.get(s);
      if (id !== undefined) {
        if (pendingUnk) sym.push(this.unkId!);
        pendingUnk = false;
        sym.push(id);
        continue;
      }
      if (this.byteIds) {
        if (pendingUnk) sym.push(this.unkId!);
        pendingUnk = false;
        for (const b of Buffer.from(s, 'utf8')) sym.push(this.byteIds[b]);
        continue;
      }
      if (this.unkId !== null) {
        if (pendingUnk && !fuseUnk) sym.push(this.unkId);
        pendingUnk = true;
      }
      // No unk token and no byte fallback: the character is dropped (as Hugging Face does when
      // unk_token is null).
    }
    if (pendingUnk) sym.push(this.unkId!);
    this.ensure(sym.length);
    this.sym.set(sym);
    return this.mergeAll(sym.length);
  }

  private mergeAll(n: number): number[] {
    const sym = this.sym, prev = this.prev, next = this.next;
    if (n <= 1) return n === 1 ? [sym[0]] : [];
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    // Min-heap on (rank, pos).
    let hn = 0;
    const hr = this.heapRank, hp = this.heapPos, hw = this.heapNew;
    const merges = this.merges;
    const less = (i: number, j: number): boolean => hr[i] < hr[j] || (hr[i] === hr[j] && hp[i] < hp[j]);
    const swap = (i: number, j: number): void => {
      let t = hr[i]; hr[i] = hr[j]; hr[j] = t;
      t = hp[i]; hp[i] = hp[j]; hp[j] = t;
      t = hw[i]; hw[i] = hw[j]; hw[j] = t;
    };
    const push = (rank: number, pos: number, newId: number): void => {
      let i = hn++;
      if (i >= hr.length) throw new Error('BPE heap overflow');
      hr[i] = rank; hp[i] = pos; hw[i] = newId;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!less(i, p)) break;
        swap(i, p);
        i = p;
      }
    };
    const popTo = (): void => {
      // Moves the top to slot hn (just past the heap) and restores the heap.
      hn--;
      swap(0, hn);
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= hn) break;
        const r = l + 1;
        const c = r < hn && less(r, l) ? r : l;
        if (!less(c, i)) break;
        swap(c, i);
        i = c;
      }
    };
    for (let i = 0; i + 1 < n; i++) {
      const m = merges.get(sym[i] * SHIFT + sym[i + 1]);
      if (m !== undefined) push(Math.floor(m / SHIFT), i, m % SHIFT);
    }
    // Each merge pushes at most two entries and removes a symbol: the heap stays within 2n + n.
    while (hn > 0) {
      popTo();
      const pos = hp[hn], newId = hw[hn];
      if (sym[pos] < 0) continue;
      const nx = next[pos];
      if (nx < 0) continue;
      const m = merges.get(sym[pos] * SHIFT + sym[nx]);
      if (m === undefined || m % SHIFT !== newId) continue;
      sym[pos] = newId;
      sym[nx] = -1;
      next[pos] = next[nx];
      if (next[nx] >= 0) prev[next[nx]] = pos;
      const pv = prev[pos];
      if (pv >= 0) {
        const m2 = merges.get(sym[pv] * SHIFT + newId);
        if (m2 !== undefined) push(Math.floor(m2 / SHIFT), pv, m2 % SHIFT);
      }
      const nn = next[pos];
      if (nn >= 0) {
        const m3 = merges.get(newId * SHIFT + sym[nn]);
        if (m3 !== undefined) push(Math.floor(m3 / SHIFT), pos, m3 % SHIFT);
      }
    }
    const out: number[] = [];
    for (let i = 0; i !== -1; i = next[i]) out.push(sym[i]);
    return out;
  }
}
