// Byte-level BPE training (the BpeTrainer of Hugging Face tokenizers, for the GPT-2 byte-level
// setup), written here: of the npm packages, `tokenizers` (HF's native binding) would bring a
// native binary dependency for one function, and @huggingface/tokenizers and the tiktoken ports
// encode only — none trains in plain JS/TS.
//
// Algorithm: pre-tokenize with the GPT-2 pattern and count words; each distinct word becomes its
// UTF-8 bytes; count adjacent symbol pairs weighted by word frequency, remembering which words
// hold each pair. Then repeatedly take the most frequent pair (ties: the smallest pair of ids, as
// HF), add the merged token, and update only the words that contain the pair, adjusting the
// neighbouring pair counts incrementally. A max-heap with lazy re-validation picks the pair.
// Result: special tokens at ids 0…k−1 (default <pad> 0, <s> 1, </s> 2, the TNL convention), the
// 256 byte symbols sorted by their alphabet character, then the merges in order.
import { UsageError } from '../errors.ts';
import { escapeRegExp } from './added.ts';
import { BYTE_TO_CHAR, GPT2_PATTERN } from './bytelevel.ts';
import { byteLevelBpeJson, HfTokenizer } from './hf.ts';
import { emptySideConfig } from './config.ts';

export interface TrainBpeOptions {
  /** Total vocabulary size, special tokens and the 256 byte symbols included. */
  vocabSize: number;
  /** Special tokens, given ids 0, 1, … in order. Default ["<pad>", "<s>", "</s>"]. */
  specialTokens?: string[];
  /** Pairs seen fewer times than this are not merged (default 2). */
  minFrequency?: number;
  /** Which special token is bos / eos / pad (defaults: "<s>", "</s>", "<pad>" when present). */
  bosToken?: string | null;
  eosToken?: string | null;
  padToken?: string | null;
  /** Defaults for encode() of the trained tokenizer (default false, false: the TNL checkpoints add neither). */
  addBos?: boolean;
  addEos?: boolean;
  /** Called with (merges done, merges wanted) every 100 merges and at the end. */
  onProgress?: (done: number, total: number) => void;
}

export const DEFAULT_SPECIAL_TOKENS = ['<pad>', '<s>', '</s>'];

const KEY = 1048576; // 2^20: pair (a, b) → a·2^20 + b; ids stay below 2^20

export function trainBpe(texts: Iterable<string>, opts: TrainBpeOptions): HfTokenizer {
  const specials = opts.specialTokens ?? DEFAULT_SPECIAL_TOKENS;
  if (new Set(specials).size !== specials.length) throw new UsageError(`trainBpe: duplicate special tokens in ${JSON.stringify(specials)}`);
  if (specials.some((s) => s.length === 0)) throw new UsageError('trainBpe: a special token is empty');
  const base = specials.length + 256;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < base || opts.vocabSize >= KEY)
    throw new UsageError(`trainBpe: vocabSize must be an integer from ${base} (specials + 256 bytes) to ${KEY - 1}, got ${opts.vocabSize}`);
  const minFrequency = Math.max(1, opts.minFrequency ?? 2);

  // 1. Word counts (special tokens written in the text are cut out, never learned).
  const counts = new Map<string, number>();
  const splitRe = specials.length ? new RegExp(specials.map(escapeRegExp).join('|'), 'gu') : null;
  const wordRe = new RegExp(GPT2_PATTERN, 'gu');
  for (const text of texts) {
    const parts = splitRe ? text.split(splitRe) : [text];
    for (const part of parts) {
      wordRe.lastIndex = 0;
      let m: RegExpExecArray | null;
      while ((m = wordRe.exec(part)) !== null) {
        const w = m[0];
        counts.set(w, (counts.get(w) ?? 0) + 1);
      }
    }
  }

  // 2. Vocabulary: specials, then the byte alphabet sorted by character.
  const idToToken: string[] = [...specials];
  const vocab = new Map<string, number>();
  specials.forEach((s, i) => vocab.set(s, i));
  const byteOrder = Array.from({ length: 256 }, (_, b) => b).sort((a, b) => BYTE_TO_CHAR[a].charCodeAt(0) - BYTE_TO_CHAR[b].charCodeAt(0));
  const byteId = new Int32Array(256);
  for (const b of byteOrder) {
    const ch = BYTE_TO_CHAR[b];
    if (vocab.has(ch)) throw new UsageError(`trainBpe: special token "${ch}" collides with a byte symbol`);
    byteId[b] = idToToken.length;
    vocab.set(ch, idToToken.length);
    idToToken.push(ch);
  }

  // 3. Words as symbol arrays in one buffer: word w holds syms[start[w], start[w] + len[w]).
  const nWords = counts.size;
  const freq = new Float64Array(nWords);
  const start = new Int32Array(nWords);
  const len = new Int32Array(nWords);
  let total = 0;
  const wordBytes: Uint8Array[] = [];
  let w = 0;
  for (const [word, c] of counts) {
    const b = Buffer.from(word, 'utf8');
    wordBytes.push(b);
    freq[w] = c;
    start[w] = total;
    len[w] = b.length;
    total += b.length;
    w++;
  }
  counts.clear();
  const syms = new Int32Array(total);
  for (let i = 0; i < nWords; i++) {
    const b = wordBytes[i];
    for (let k = 0; k < b.length; k++) syms[start[i] + k] = byteId[b[k]];
  }
  wordBytes.length = 0;

  // 4. Pair counts and where each pair occurs (word lists may hold stale or repeated entries).
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  const addWhere = (key: number, word: number): void => {
    const l = where.get(key);
    if (l === undefined) where.set(key, [word]);
    else if (l[l.length - 1] !== word) l.push(word);
  };
  for (let i = 0; i < nWords; i++) {
    const s = start[i], e = s + len[i], f = freq[i];
    for (let k = s; k + 1 < e; k++) {
      const key = syms[k] * KEY + syms[k + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + f);
      addWhere(key, i);
    }
  }

  // 5. Max-heap of (count, key): larger count first, then smaller key (= smaller (a, b)).
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  const merges: [string, string][] = [];
  const wanted = opts.vocabSize - idToToken.length;
  const stamp = new Int32Array(nWords).fill(-1);
  const touched = new Set<number>();
  const bump = (key: number, delta: number): void => {
    const c = (pairCount.get(key) ?? 0) + delta;
    if (c <= 0) pairCount.delete(key);
    else pairCount.set(key, c);
  };
  let step = 0;
  while (idToToken.length < opts.vocabSize && heap.size > 0) {
    const [count, key] = heap.pop();
    const cur = pairCount.get(key) ?? 0;
    if (cur !== count) {
      if (cur > 0) heap.push(cur, key); // stale entry: put it back with its true count
      continue;
    }
    if (count < minFrequency) break;
    const a = Math.floor(key / KEY), b = key % KEY;
    const tok = idToToken[a] + idToToken[b];
    let nid = vocab.get(tok);
    if (nid === undefined) {
      nid = idToToken.length;
      vocab.set(tok, nid);
      idToToken.push(tok);
    }
    merges.push([idToToken[a], idToToken[b]]);
    touched.clear();
    const list = where.get(key) ?? [];
    for (const wi of list) {
      if (stamp[wi] === step) continue;
      stamp[wi] = step;
      const s = start[wi], e = s + len[wi], f = freq[wi];
      // Merge left to right in place, adjusting neighbour pairs per occurrence (Word::merge).
      let o = s; // write position
      let k = s;
      while (k < e) {
        if (k + 1 < e && syms[k] === a && syms[k + 1] === b) {
          bump(key, -f);
          if (o > s) {
            const p = syms[o - 1];
            bump(p * KEY + a, -f);
            const nk = p * KEY + nid;
            bump(nk, f);
            touched.add(nk);
            addWhere(nk, wi);
          }
          if (k + 2 < e) {
            const nx = syms[k + 2];
            bump(b * KEY + nx, -f);
            const nk = nid * KEY + nx;
            bump(nk, f);
            touched.add(nk);
            addWhere(nk, wi);
          }
          syms[o++] = nid;
          k += 2;
        } else {
          syms[o++] = syms[k++];
        }
      }
      len[wi] = o - s;
    }
    where.delete(key);
    pairCount.delete(key);
    for (const nk of touched) {
      const c = pairCount.get(nk);
      if (c !== undefined && c > 0) heap.push(c, nk);
    }
    step++;
    if (opts.onProgress && step % 100 === 0) opts.onProgress(step, wanted);
  }
  opts.onProgress?.(step, wanted);

  const pick = (given: string | null | undefined, dflt: string): string | null => {
    if (given === null) return null;
    const t = given ?? dflt;
    if (!specials.includes(t)) {
      if (given !== undefined) throw new UsageError(`trainBpe: "${t}" is not one of the special tokens ${JSON.stringify(specials)}`);
      return null;
    }
    return t;
  };
  const bos = pick(opts.bosToken, '<s>');
  const eos = pick(opts.eosToken, '</s>');
  const pad = pick(opts.padToken, '<pad>');
  const addBos = opts.addBos ?? false;
  const addEos = opts.addEos ?? false;
  const json = byteLevelBpeJson({
    vocab, merges, specials: specials.map((content, id) => ({ content, id })), bos, eos, addBos, addEos,
  });
  const side = emptySideConfig();
  side.bosToken = bos;
  side.eosToken = eos;
  side.padToken = pad;
  side.unkToken = null;
  side.addBos = addBos;
  side.addEos = addEos;
  return new HfTokenizer(json, 'trained byte-level BPE', side);
}

/** Binary max-heap of (count, key) pairs: larger count first, ties to the smaller key. */
class PairHeap {
  private c: number[] = [];
  private k: number[] = [];
  get size(): number {
    return this.c.length;
  }
  private above(i: number, j: number): boolean {
    return this.c[i] > this.c[j] || (this.c[i] === this.c[j] && this.k[i] < this.k[j]);
  }
  private swap(i: number, j: number): void {
    let t = this.c[i]; this.c[i] = this.c[j]; this.c[j] = t;
    t = this.k[i]; this.k[i] = this.k[j]; this.k[j] = t;
  }
  push(count: number, key: number): void {
    this.c.push(count);
    this.k.push(key);
    let i = this.c.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): [number, number] {
    const top: [number, number] = [this.c[0], this.k[0]];
    const last = this.c.length - 1;
    this.swap(0, last);
    this.c.pop();
    this.k.pop();
    const n = this.c.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const m = r < n && this.above(r, l) ? r : l;
      if (!this.above(m, i)) break;
      this.swap(m, i);
      i = m;
    }
    return top;
  }
}
