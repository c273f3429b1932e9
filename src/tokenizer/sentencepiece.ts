// SentencePiece tokenizer.model: reader (protobufjs), normalizer, BPE encoder and decoder, written
// to give the ids and text the SentencePiece library itself gives (sentencepiece_processor.cc,
// normalizer.cc, bpe_model.cc of google/sentencepiece, read and followed step by step):
//
// * Normalization: the model's own precompiled_charsmap rules when it has them (nmt_nfkc, nfkc, …
//   are then exact, see charsmap.ts); a model that names nfkc rules without carrying them gets
//   String.prototype.normalize('NFKC') as an approximation; identity otherwise. Then
//   remove_extra_whitespaces (only ASCII space counts), add_dummy_prefix, escape_whitespaces
//   (" " → "▁" U+2581), treat_whitespace_as_suffix. User-defined pieces pass through unnormalized and are never merged.
// * BPE: start from characters (user-defined pieces whole), repeatedly merge the adjacent pair
//   whose concatenation is a vocabulary piece with the highest score, ties to the leftmost; a
//   priority queue with lazy deletion as bpe_model.cc. UNUSED pieces formed on the way are split
//   back (resegment). Characters not in the vocabulary become <0xXX> byte pieces with byte_fallback,
//   else <unk> (consecutive unknowns fused into one, as PopulateSentencePieceText does).
// * Speed: when no vocabulary piece can span a word boundary (no piece has "▁" after a non-"▁"
//   character, true for every model trained with split_by_whitespace), words are independent
//   under this merge order, so the text is cut there and each word's ids are cached.
// * Decoding: pieces concatenated, "▁" → " ", runs of byte pieces decoded as UTF-8 with one U+FFFD
//   per invalid byte, control pieces invisible (or their text, see SentencePieceTokenizer.decode),
//   <unk> as unk_surface (" ⁇ "), the first leading
//   "▁" dropped when add_dummy_prefix or remove_extra_whitespaces is on (the current
//   sentencepiece rule); a denormalizer_spec with rules is applied to the result.
//
// Only model_type BPE encodes (the Baichuan / TNL / Llama family); UNIGRAM, WORD and CHAR models
// load and decode but encode() throws.
import { ownedKey } from './utf8.ts';
import protobuf from 'protobufjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, UsageError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { AddedTokenMatcher, type AddedToken } from './added.ts';
import { PrecompiledCharsMap } from './charsmap.ts';
import {
  emptySideConfig, resolveTokenId, writeSideFiles, type TokenizerSideConfig,
} from './config.ts';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './types.ts';
import { decodeUtf8Spm, pieceToByte, spmCharLen, toWellFormed } from './utf8.ts';

// ---------------------------------------------------------------------------------------------
// The protobuf schema: the subset of sentencepiece_model.proto that encoding and decoding read.
// Enums are read as int32 so that values from newer versions do not fail the parse.

const P2 = 'proto2';
const f = (type: string, id: number, dflt?: unknown) => (dflt === undefined ? { type, id } : { type, id, options: { default: dflt } });
const SCHEMA = {
  nested: {
    sentencepiece: {
      nested: {
        TrainerSpec: {
          edition: P2,
          fields: {
            model_type: f('int32', 3, 1), vocab_size: f('int32', 4, 8000),
            split_by_whitespace: f('bool', 22, true), treat_whitespace_as_suffix: f('bool', 24, false),
            allow_whitespace_only_pieces: f('bool', 26, false), split_digits: f('bool', 25, false),
            byte_fallback: f('bool', 35, false),
            unk_id: f('int32', 40, 0), bos_id: f('int32', 41, 1), eos_id: f('int32', 42, 2), pad_id: f('int32', 43, -1),
            unk_piece: f('string', 45, '<unk>'), bos_piece: f('string', 46, '<s>'), eos_piece: f('string', 47, '</s>'),
            pad_piece: f('string', 48, '<pad>'), unk_surface: f('string', 44, ' \u2047 '),
          },
        },
        NormalizerSpec: {
          edition: P2,
          fields: {
            name: f('string', 1), precompiled_charsmap: f('bytes', 2),
            add_dummy_prefix: f('bool', 3, true), remove_extra_whitespaces: f('bool', 4, true),
            escape_whitespaces: f('bool', 5, true),
          },
        },
        ModelProto: {
          edition: P2,
          fields: {
            pieces: { rule: 'repeated', type: 'SentencePiece', id: 1 },
            trainer_spec: { type: 'TrainerSpec', id: 2 },
            normalizer_spec: { type: 'NormalizerSpec', id: 3 },
            denormalizer_spec: { type: 'NormalizerSpec', id: 5 },
          },
          nested: {
            SentencePiece: {
              edition: P2,
              fields: { piece: f('string', 1), score: f('float', 2, 0), type: f('int32', 3, 1) },
            },
          },
        },
      },
    },
  },
};
let modelProtoType: protobuf.Type | null = null;
function modelProto(): protobuf.Type {
  modelProtoType ??= protobuf.Root.fromJSON(SCHEMA as protobuf.INamespace).lookupType('sentencepiece.ModelProto');
  return modelProtoType;
}

export const enum PieceType { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 }
export const enum ModelType { UNIGRAM = 1, BPE = 2, WORD = 3, CHAR = 4 }

export interface NormalizerSpec {
  name: string;
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

export interface TrainerSpec {
  modelType: number;
  vocabSize: number;
  splitByWhitespace: boolean;
  treatWhitespaceAsSuffix: boolean;
  allowWhitespaceOnlyPieces: boolean;
  splitDigits: boolean;
  byteFallback: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  unkPiece: string;
  bosPiece: string;
  eosPiece: string;
  padPiece: string;
  unkSurface: string;
}

export interface SentencePieceModelData {
  pieces: { piece: string; score: number; type: number }[];
  trainer: TrainerSpec;
  normalizer: NormalizerSpec;
  denormalizer: NormalizerSpec | null;
}

/** Parse the bytes of a tokenizer.model. `what` (the file name) goes into error messages. */
export function parseModelProto(bytes: Uint8Array, what: string): SentencePieceModelData {
  if (bytes.length === 0) throw new FormatError(`${what}: empty file, not a SentencePiece model`);
  let m: Record<string, any>;
  try {
    m = modelProto().decode(bytes) as unknown as Record<string, any>;
  } catch (e) {
    throw new FormatError(`${what}: not a SentencePiece ModelProto, or truncated (${(e as Error).message})`);
  }
  const pieces = (m.pieces ?? []) as { piece?: string; score?: number; type?: number }[];
  if (pieces.length === 0) throw new FormatError(`${what}: the model has no pieces (not a SentencePiece model?)`);
  // SentencePiece writes fields in number order: pieces, trainer_spec, normalizer_spec. A file cut
  // short loses the specs (or fails the parse above).
  if (!m.trainer_spec || !m.normalizer_spec)
    throw new FormatError(`${what}: trainer_spec or normalizer_spec is missing (truncated file?)`);
  const t = m.trainer_spec, n = m.normalizer_spec;
  const norm = (x: Record<string, any>): NormalizerSpec => ({
    name: String(x.name ?? ''),
    precompiledCharsmap: x.precompiled_charsmap instanceof Uint8Array ? x.precompiled_charsmap : new Uint8Array(0),
    addDummyPrefix: x.add_dummy_prefix !== false,
    removeExtraWhitespaces: x.remove_extra_whitespaces !== false,
    escapeWhitespaces: x.escape_whitespaces !== false,
  });
  return {
    pieces: pieces.map((p) => ({ piece: p.piece ?? '', score: p.score ?? 0, type: p.type ?? PieceType.NORMAL })),
    trainer: {
      modelType: t.model_type, vocabSize: t.vocab_size, splitByWhitespace: t.split_by_whitespace,
      treatWhitespaceAsSuffix: t.treat_whitespace_as_suffix, allowWhitespaceOnlyPieces: t.allow_whitespace_only_pieces,
      splitDigits: t.split_digits, byteFallback: t.byte_fallback,
      unkId: t.unk_id, bosId: t.bos_id, eosId: t.eos_id, padId: t.pad_id,
      unkPiece: t.unk_piece, bosPiece: t.bos_piece, eosPiece: t.eos_piece, padPiece: t.pad_piece, unkSurface: t.unk_surface,
    },
    normalizer: norm(n),
    denormalizer: m.denormalizer_spec && m.denormalizer_spec.precompiled_charsmap?.length ? norm(m.denormalizer_spec) : null,
  };
}

// ---------------------------------------------------------------------------------------------
// A trie over small integers (UTF-16 code units or bytes) for longest-prefix matching of
// user-defined pieces.

class IntTrie {
  private readonly root = new Map<number, TrieNode>();
  add(seq: ArrayLike<number>): void {
    let level = this.root;
    let node: TrieNode | undefined;
    for (let i = 0; i < seq.length; i++) {
      node = level.get(seq[i]);
      if (!node) level.set(seq[i], (node = { end: false, next: new Map() }));
      level = node.next;
    }
    if (node) node.end = true;
  }
  /** Length of the longest key that is a prefix of seq[pos..end), 0 if none. */
  longest(seq: { [i: number]: number } | string, pos: number, end: number): number {
    let level = this.root;
    let best = 0;
    const str = typeof seq === 'string';
    for (let i = pos; i < end; i++) {
      const node = level.get(str ? (seq as string).charCodeAt(i) : (seq as { [i: number]: number })[i]);
      if (!node) break;
      if (node.end) best = i - pos + 1;
      level = node.next;
    }
    return best;
  }
}
interface TrieNode { end: boolean; next: Map<number, TrieNode> }

// ---------------------------------------------------------------------------------------------
// Normalizer (normalizer.cc Normalizer::Normalize).

const SPACE_SYMBOL = '\u2581';
const SPACE_SYMBOL_BYTES = [0xe2, 0x96, 0x81];
const REPLACEMENT_BYTES = new Uint8Array([0xef, 0xbf, 0xbd]);

class SpmNormalizer {
  private readonly charsmap: PrecompiledCharsMap | null;
  constructor(
    private readonly spec: NormalizerSpec,
    private readonly suffix: boolean,
    private readonly userTrie: IntTrie | null,
    what: string,
  ) {
    this.charsmap = spec.precompiledCharsmap.length ? new PrecompiledCharsMap(spec.precompiledCharsmap, what) : null;
    this.approx = this.charsmap ? null : approximateRules(spec.name);
  }
  /** NFKC by String.prototype.normalize for a model that names nfkc rules but lacks their charsmap. */
  private readonly approx: ((s: string) => string) | null;

  normalize(input: string): string {
    if (input.length === 0) return '';
    if (this.approx) input = this.approx(input);
    if (!this.charsmap && !this.userTrie) return this.normalizeIdentity(input);
    return this.normalizeBytes(Buffer.from(input, 'utf8'));
  }

  /** Identity rules and no user-defined pieces: each character maps to itself. */
  private normalizeIdentity(s: string): string {
    const { addDummyPrefix, removeExtraWhitespaces: rew, escapeWhitespaces: esc } = this.spec;
    if (rew) {
      let i = 0;
      while (i < s.length && s.charCodeAt(i) === 32) i++;
      if (i === s.length) return '';
      s = s.slice(i).replace(/ {2,}/g, ' ');
    }
    const ws = esc ? SPACE_SYMBOL : ' ';
    let out = esc ? s.replaceAll(' ', SPACE_SYMBOL) : s;
    if (!this.suffix && addDummyPrefix) out = ws + out;
    if (rew) {
      let e = out.length;
      while (e > 0 && out[e - 1] === ws) e--;
      out = out.slice(0, e);
    }
    if (this.suffix && addDummyPrefix) out += ws;
    return out;
  }

  /** The general path on UTF-8 bytes: charsmap rules and user-defined pieces. */
  private normalizeBytes(input: Uint8Array): string {
    const { addDummyPrefix, removeExtraWhitespaces: rew, escapeWhitespaces: esc } = this.spec;
    const end = input.length;
    let pos = 0;
    if (rew) {
      while (pos < end) {
        const [rep, len] = this.normalizePrefix(input, pos, end);
        if (!(rep.length === 1 && rep[0] === 32)) break;
        pos += len;
      }
    }
    if (pos === end) return '';
    const out: number[] = [];
    const addWs = (): void => {
      if (esc) out.push(...SPACE_SYMBOL_BYTES);
      else out.push(32);
    };
    if (!this.suffix && addDummyPrefix) addWs();
    let isPrevSpace = rew;
    while (pos < end) {
      const [rep, len] = this.normalizePrefix(input, pos, end);
      let k = 0;
      if (isPrevSpace) while (k < rep.length && rep[k] === 32) k++;
      if (k < rep.length) {
        for (; k < rep.length; k++) {
          if (esc && rep[k] === 32) out.push(...SPACE_SYMBOL_BYTES);
          else out.push(rep[k]);
        }
        isPrevSpace = rep[rep.length - 1] === 32;
      }
      pos += len;
      if (!rew) isPrevSpace = false;
    }
    if (rew) {
      if (esc) {
        while (out.length >= 3 && out[out.length - 3] === 0xe2 && out[out.length - 2] === 0x96 && out[out.length - 1] === 0x81) out.length -= 3;
      } else {
        while (out.length && out[out.length - 1] === 32) out.length -= 1;
      }
    }
    if (this.suffix && addDummyPrefix) addWs();
    return Buffer.from(out).toString('utf8');
  }

  /** Normalizer::NormalizePrefix: [replacement bytes, bytes consumed]. */
  private normalizePrefix(input: Uint8Array, pos: number, end: number): [Uint8Array, number] {
    if (this.userTrie) {
      const n = this.userTrie.longest(input, pos, end);
      if (n > 0) return [input.subarray(pos, pos + n), n];
    }
    if (this.charsmap) {
      const m = this.charsmap.longestMatch(input, pos, end);
      if (m) return [m.replacement, m.length];
    }
    const n = spmCharLen(input, pos, end);
    if (n === 0) return [REPLACEMENT_BYTES, 1];
    return [input.subarray(pos, pos + n), n];
  }
}

/**
 * A model whose normalizer_spec names nfkc / nmt_nfkc / nfkc_cf / nmt_nfkc_cf but carries no
 * precompiled_charsmap (a hand-made or stripped file; SentencePiece itself would then apply no
 * rules): approximate the named rules with String.prototype.normalize('NFKC'), the NMT extras
 * (builder.cc MergeNmtMap: ASCII controls removed, TAB/LF/CR/ZWSP/… → space) and toLowerCase for
 * case folding. Real SentencePiece models carry the compiled rules and are handled exactly.
 */
function approximateRules(name: string): ((s: string) => string) | null {
  const n = name.toLowerCase();
  if (!['nfkc', 'nmt_nfkc', 'nfkc_cf', 'nmt_nfkc_cf'].includes(n)) return null;
  const nmt = n.startsWith('nmt_');
  const cf = n.endsWith('_cf');
  return (s) => {
    if (nmt) {
      s = s.replace(/[\u0001-\u0008\u000B\u000E-\u001F\u007F\u008F\u009F]/g, '')
        .replace(/[\t\n\f\r\u1680\u200B\u200C\u200E\u200F\u2028\u2029\u2581\uFEFF\uFFFD]/g, ' ');
    }
    s = s.normalize('NFKC');
    return cf ? s.toLowerCase() : s;
  };
}

// ---------------------------------------------------------------------------------------------
// The priority queue of candidate merges: max score, ties to the smallest left index
// (SymbolPairComparator in bpe_model.cc). Entries are never removed; stale ones are skipped.

class MergeQueue {
  score = new Float64Array(64);
  left = new Int32Array(64);
  right = new Int32Array(64);
  size = new Int32Array(64);
  heap = new Int32Array(64);
  count = 0; // entries allocated
  n = 0; // entries in the heap

  reset(): void {
    this.count = 0;
    this.n = 0;
  }

  private grow(): void {
    const cap = this.score.length * 2;
    const g = <T extends Float64Array | Int32Array>(a: T): T => {
      const b = new (a.constructor as { new (n: number): T })(cap);
      b.set(a);
      return b;
    };
    this.score = g(this.score);
    this.left = g(this.left);
    this.right = g(this.right);
    this.size = g(this.size);
    this.heap = g(this.heap);
  }

  private better(a: number, b: number): boolean {
    const sa = this.score[a], sb = this.score[b];
    return sa > sb || (sa === sb && this.left[a] < this.left[b]);
  }

  push(score: number, left: number, right: number, size: number): void {
    if (this.count === this.score.length) this.grow();
    const e = this.count++;
    this.score[e] = score;
    this.left[e] = left;
    this.right[e] = right;
    this.size[e] = size;
    const h = this.heap;
    let i = this.n++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(e, h[p])) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = e;
  }

  /** Remove and return the best entry's index, or -1 when empty. */
  pop(): number {
    if (this.n === 0) return -1;
    const h = this.heap;
    const top = h[0];
    const last = h[--this.n];
    const n = this.n;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.better(h[r], h[l]) ? r : l;
      if (!this.better(h[c], last)) break;
      h[i] = h[c];
      i = c;
    }
    if (n > 0) h[i] = last;
    return top;
  }
}

// ---------------------------------------------------------------------------------------------
// The processor: exact SentencePiece encode (BPE) and decode on one model.

const CACHE_MAX_ENTRIES = 1 << 17;
const CACHE_MAX_CHUNK = 96;

export class SentencePieceProcessor {
  readonly pieces: string[];
  readonly scores: Float64Array;
  readonly types: Uint8Array;
  readonly trainer: TrainerSpec;
  readonly normalizerSpec: NormalizerSpec;
  readonly unkId: number;
  /** NORMAL, USER_DEFINED and UNUSED pieces (pieces_ in model_interface.cc). */
  private readonly normalIds = new Map<string, number>();
  /** CONTROL, UNKNOWN and BYTE pieces (reserved_id_map_). */
  private readonly reservedIds = new Map<string, number>();
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly byteOf: Int16Array;
  private readonly userTrie: IntTrie | null;
  private readonly userTrieStr: IntTrie | null;
  private readonly normalizer: SpmNormalizer;
  private readonly denormalizer: SpmNormalizer | null;
  private readonly hasUnused: boolean;
  /** How text may be cut into independent chunks: before a word-initial "▁", after a word-final one, or not at all. */
  private readonly chunkMode: 'prefix' | 'suffix' | 'none';
  private readonly ws: string;
  private readonly cache = new Map<string, number[]>();
  private readonly queue = new MergeQueue();
  private symStart = new Int32Array(64);
  private symEnd = new Int32Array(64);
  private symPrev = new Int32Array(64);
  private symNext = new Int32Array(64);
  private symFrozen = new Uint8Array(64);

  constructor(readonly data: SentencePieceModelData, readonly what: string) {
    const n = data.pieces.length;
    this.pieces = new Array<string>(n);
    this.scores = new Float64Array(n);
    this.types = new Uint8Array(n);
    this.byteOf = new Int16Array(n).fill(-1);
    this.trainer = data.trainer;
    this.normalizerSpec = data.normalizer;
    let unk = -1;
    const user: string[] = [];
    let hasUnused = false;
    for (let i = 0; i < n; i++) {
      const { piece, score, type } = data.pieces[i];
      if (piece.length === 0) throw new FormatError(`${what}: piece ${i} is empty`);
      if (type < 1 || type > 6) throw new FormatError(`${what}: piece ${i} ("${piece}") has unknown type ${type}`);
      this.pieces[i] = piece;
      this.scores[i] = score;
      this.types[i] = type;
      const normal = type === PieceType.NORMAL || type === PieceType.USER_DEFINED || type === PieceType.UNUSED;
      const map = normal ? this.normalIds : this.reservedIds;
      if (map.has(piece)) throw new FormatError(`${what}: piece "${piece}" is defined twice (ids ${map.get(piece)} and ${i})`);
      map.set(piece, i);
      if (type === PieceType.USER_DEFINED) user.push(piece);
      if (type === PieceType.UNUSED) hasUnused = true;
      if (type === PieceType.UNKNOWN) {
        if (unk >= 0) throw new FormatError(`${what}: two unknown pieces (ids ${unk} and ${i})`);
        unk = i;
      }
      if (type === PieceType.BYTE) {
        if (!data.trainer.byteFallback) throw new FormatError(`${what}: byte piece "${piece}" found although byte_fallback is false`);
        const b = pieceToByte(piece);
        if (b < 0) throw new FormatError(`${what}: byte piece "${piece}" (id ${i}) is not of the form <0xXX>`);
        this.byteIds[b] = i;
        this.byteOf[i] = b;
      }
    }
    if (unk < 0) throw new FormatError(`${what}: no unknown piece (<unk>) is defined`);
    this.unkId = unk;
    if (data.trainer.byteFallback && this.byteIds.some((id) => id < 0))
      throw new FormatError(`${what}: byte_fallback is on but not all 256 <0xXX> byte pieces are present`);
    this.hasUnused = hasUnused;
    if (user.length) {
      // The normalizer matches on UTF-8 bytes, the model's split on UTF-16 code units: one trie each.
      this.userTrie = new IntTrie();
      this.userTrieStr = new IntTrie();
      for (const u of user) {
        this.userTrie.add(Buffer.from(u, 'utf8'));
        const codes: number[] = [];
        for (let k = 0; k < u.length; k++) codes.push(u.charCodeAt(k));
        this.userTrieStr.add(codes);
      }
    } else {
      this.userTrie = null;
      this.userTrieStr = null;
    }
    const suffix = data.trainer.treatWhitespaceAsSuffix;
    this.normalizer = new SpmNormalizer(data.normalizer, suffix, this.userTrie, what);
    this.denormalizer = data.denormalizer ? new SpmNormalizer(data.denormalizer, false, null, `${what} (denormalizer)`) : null;
    this.ws = data.normalizer.escapeWhitespaces ? SPACE_SYMBOL : ' ';
    // Which cut points no vocabulary piece can span.
    let wsAfterOther = false, otherAfterWs = false;
    for (const p of this.normalIds.keys()) {
      for (let k = 1; k < p.length; k++) {
        const a = p[k - 1] === this.ws, b = p[k] === this.ws;
        if (b && !a) wsAfterOther = true;
        if (a && !b) otherAfterWs = true;
      }
    }
    this.chunkMode = hasUnused ? 'none' : !wsAfterOther ? 'prefix' : !otherAfterWs ? 'suffix' : 'none';
  }

  get size(): number {
    return this.pieces.length;
  }
  get byteFallback(): boolean {
    return this.trainer.byteFallback;
  }
  isByte(id: number): boolean {
    return this.types[id] === PieceType.BYTE;
  }
  isControl(id: number): boolean {
    return this.types[id] === PieceType.CONTROL;
  }

  /** PieceToId of model_interface.cc: reserved pieces first, then normal ones, else null. */
  pieceToId(piece: string): number | null {
    return this.reservedIds.get(piece) ?? this.normalIds.get(piece) ?? null;
  }

  normalize(text: string): string {
    return this.normalizer.normalize(toWellFormed(text));
  }

  /** SentencePieceProcessor::Encode → ids (no bos/eos). */
  encode(text: string): number[] {
    if (this.trainer.modelType !== ModelType.BPE)
      throw new UsageError(`${this.what}: encoding is implemented for BPE models only (this one is model_type ${this.trainer.modelType})`);
    const norm = this.normalize(text);
    const out: number[] = [];
    if (norm.length === 0) return out;
    if (this.hasUnused || (this.userTrieStr && this.chunkMode === 'none')) {
      this.bpe(norm, 0, norm.length, out, this.hasUnused ? new Map() : null);
    } else if (!this.userTrieStr) {
      this.encodeRun(norm, 0, norm.length, out);
    } else {
      // Cut at user-defined pieces: they are frozen (never merged), so they bound the runs.
      const trie = this.userTrieStr;
      let runStart = 0;
      for (let i = 0; i < norm.length;) {
        const m = trie.longest(norm, i, norm.length);
        if (m > 0) {
          if (i > runStart) this.encodeRun(norm, runStart, i, out);
          out.push(this.normalIds.get(norm.slice(i, i + m))!);
          i += m;
          runStart = i;
        } else {
          i += isHighSurrogate(norm.charCodeAt(i)) && i + 1 < norm.length ? 2 : 1;
        }
      }
      if (runStart < norm.length) this.encodeRun(norm, runStart, norm.length, out);
    }
    if (!this.byteFallback) return fuseUnknown(out, this.unkId);
    return out;
  }

  /** Encode a run of text without user-defined pieces, chunked at safe word boundaries. */
  private encodeRun(s: string, start: number, end: number, out: number[]): void {
    if (this.chunkMode === 'none') {
      this.bpe(s, start, end, out, null);
      return;
    }
    const ws = this.ws;
    const wsCode = ws.charCodeAt(0);
    const prefix = this.chunkMode === 'prefix';
    let cs = start;
    let i = prefix ? start : start - 1;
    while (cs < end) {
      // The next cut: before a "▁" that follows another character (prefix mode), or after a
      // "▁" that precedes another character (suffix mode).
      let cut = end;
      for (;;) {
        i = s.indexOf(ws, i + 1);
        if (i < 0 || i >= end) break;
        if (prefix) {
          if (s.charCodeAt(i - 1) !== wsCode) { cut = i; break; }
        } else if (i + 1 < end && s.charCodeAt(i + 1) !== wsCode) { cut = i + 1; break; }
      }
      if (cut - cs <= CACHE_MAX_CHUNK) {
        const key = s.slice(cs, cut);
        let ids = this.cache.get(key);
        if (ids === undefined) {
          ids = [];
          this.bpe(s, cs, cut, ids, null);
          if (this.cache.size >= CACHE_MAX_ENTRIES) this.cache.clear();
          this.cache.set(ownedKey(key), ids);
        }
        for (let k = 0; k < ids.length; k++) out.push(ids[k]);
      } else {
        this.bpe(s, cs, cut, out, null);
      }
      cs = cut;
      i = prefix ? cut : cut - 1;
    }
  }

  private ensureSymbols(n: number): void {
    if (this.symStart.length >= n) return;
    let cap = this.symStart.length;
    while (cap < n) cap *= 2;
    this.symStart = new Int32Array(cap);
    this.symEnd = new Int32Array(cap);
    this.symPrev = new Int32Array(cap);
    this.symNext = new Int32Array(cap);
    this.symFrozen = new Uint8Array(cap);
  }

  /**
   * bpe::Model::SampleEncode (without dropout) on s[start, end): appends the ids. User-defined
   * pieces inside are frozen symbols. `revMerge` collects the splits of UNUSED pieces.
   */
  private bpe(s: string, start: number, end: number, out: number[], revMerge: Map<string, [string, string]> | null): void {
    // Split into characters (user-defined pieces whole and frozen).
    this.ensureSymbols(end - start);
    const st = this.symStart, en = this.symEnd, prev = this.symPrev, next = this.symNext, frozen = this.symFrozen;
    const trie = this.userTrieStr;
    let n = 0;
    for (let i = start; i < end;) {
      let len = 0;
      let fz = 0;
      if (trie) {
        len = trie.longest(s, i, end);
        if (len > 0) fz = 1;
      }
      if (len === 0) len = isHighSurrogate(s.charCodeAt(i)) && i + 1 < end ? 2 : 1;
      st[n] = i;
      en[n] = i + len;
      prev[n] = n - 1;
      next[n] = i + len < end ? n + 1 : -1;
      frozen[n] = fz;
      n++;
      i += len;
    }
    if (n === 0) return;
    const q = this.queue;
    q.reset();
    const normalIds = this.normalIds, scores = this.scores, types = this.types;
    const addPair = (l: number, r: number): void => {
      if (l < 0 || r < 0 || frozen[l] || frozen[r]) return;
      const piece = s.slice(st[l], en[r]);
      const id = normalIds.get(piece);
      if (id === undefined) return;
      q.push(scores[id], l, r, piece.length);
      if (revMerge && types[id] === PieceType.UNUSED) revMerge.set(piece, [s.slice(st[l], en[l]), s.slice(st[r], en[r])]);
    };
    for (let i = 1; i < n; i++) addPair(i - 1, i);
    for (let e = q.pop(); e >= 0; e = q.pop()) {
      const l = q.left[e], r = q.right[e];
      // Stale: a side was merged away, or grew.
      if (st[l] < 0 || st[r] < 0 || en[l] - st[l] + (en[r] - st[r]) !== q.size[e]) continue;
      en[l] = en[r];
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      st[r] = -1;
      en[r] = -1;
      addPair(prev[l], l);
      addPair(l, next[l]);
    }
    for (let i = 0; i !== -1; i = next[i]) this.emit(s.slice(st[i], en[i]), out, revMerge);
  }

  /** resegment + the byte-fallback part of PopulateSentencePieceText for one final symbol. */
  private emit(w: string, out: number[], revMerge: Map<string, [string, string]> | null): void {
    const id = this.reservedIds.get(w) ?? this.normalIds.get(w) ?? this.unkId;
    if (this.types[id] === PieceType.UNUSED && revMerge) {
      const p = revMerge.get(w);
      if (p) {
        this.emit(p[0], out, revMerge);
        this.emit(p[1], out, revMerge);
        return;
      }
    }
    if (id === this.unkId && this.trainer.byteFallback) {
      const bytes = Buffer.from(w, 'utf8');
      for (let k = 0; k < bytes.length; k++) out.push(this.byteIds[bytes[k]]);
      return;
    }
    out.push(id);
  }

  /**
   * SentencePieceProcessor::Decode on ids (all in range). `atStart` false decodes a continuation:
   * the text before was non-empty, so no leading "▁" is dropped. `controlText` renders control
   * pieces (and ids past the model, added tokens) as text; without it they are invisible.
   */
  decode(ids: readonly number[], atStart = true, controlText: ((id: number) => string) | null = null): string {
    const rew = this.normalizerSpec.removeExtraWhitespaces;
    const stripFirst = this.normalizerSpec.addDummyPrefix || rew;
    const size = this.pieces.length;
    let text = '';
    let isBosWs = atStart;
    let bosWsSeen = false;
    let bytes: number[] = [];
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      const t = id < size ? this.types[id] : 0;
      if (t === PieceType.BYTE) {
        bytes.push(this.byteOf[id]);
        continue;
      }
      if (bytes.length) {
        text += decodeUtf8Spm(Uint8Array.from(bytes));
        bytes = [];
      }
      if (bosWsSeen || text.length > 0) isBosWs = false;
      bosWsSeen = false;
      if (t === PieceType.CONTROL || t === 0) {
        if (controlText) text += controlText(id);
        continue;
      }
      if (t === PieceType.UNKNOWN) {
        text += this.trainer.unkSurface;
        continue;
      }
      let piece = this.pieces[id];
      if (isBosWs && stripFirst && piece.startsWith(SPACE_SYMBOL)) {
        piece = piece.slice(1);
        bosWsSeen = !rew;
      }
      text += piece.includes(SPACE_SYMBOL) ? piece.replaceAll(SPACE_SYMBOL, ' ') : piece;
    }
    if (bytes.length) text += decodeUtf8Spm(Uint8Array.from(bytes));
    return this.denormalizer ? this.denormalizer.normalize(text) : text;
  }
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

/** Consecutive <unk> ids become one (PopulateSentencePieceText without byte fallback). */
function fuseUnknown(ids: number[], unk: number): number[] {
  let w = 0;
  for (let r = 0; r < ids.length; r++) {
    if (ids[r] === unk && w > 0 && ids[w - 1] === unk) continue;
    ids[w++] = ids[r];
  }
  ids.length = w;
  return ids;
}

// ---------------------------------------------------------------------------------------------
// The Tokenizer: a processor plus the folder's settings (bos/eos/pad, add_bos_token, added tokens).

export const SPM_MODEL_FILE = 'tokenizer.model';

export class SentencePieceTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  private readonly special = new Set<number>();
  /** Added tokens with ids past the model's pieces (from tokenizer_config.json). */
  private readonly extra = new Map<number, AddedToken>();
  private readonly extraIds = new Map<string, number>();
  private readonly matcher: AddedTokenMatcher;

  constructor(
    readonly processor: SentencePieceProcessor,
    private readonly modelBytes: Uint8Array,
    private readonly side: TokenizerSideConfig = emptySideConfig(),
  ) {
    const p = processor;
    const what = p.what;
    let size = p.size;
    const splitTokens: AddedToken[] = [];
    for (let i = 0; i < p.size; i++) {
      if (p.types[i] === PieceType.CONTROL || p.types[i] === PieceType.UNKNOWN) {
        this.special.add(i);
        splitTokens.push({ id: i, content: p.pieces[i], special: true });
      }
    }
    for (const t of side.addedTokens) {
      if (t.id < p.size) {
        if (p.pieces[t.id] !== t.content)
          throw new FormatError(`${what}: tokenizer_config.json added token ${t.id} "${t.content}" differs from the model's piece "${p.pieces[t.id]}"`);
      } else {
        this.extra.set(t.id, t);
        this.extraIds.set(t.content, t.id);
        size = Math.max(size, t.id + 1);
      }
      if (t.special) this.special.add(t.id);
      splitTokens.push(t);
    }
    this.vocabSize = size;
    this.matcher = new AddedTokenMatcher(splitTokens);
    const tr = p.trainer;
    const valid = (id: number): number | null => (id >= 0 && id < p.size ? id : null);
    const lookup = (s: string): number | null => this.pieceToId(s);
    this.bosId = resolveTokenId(side.bosToken, valid(tr.bosId), lookup, what, 'bos_token');
    this.eosId = resolveTokenId(side.eosToken, valid(tr.eosId), lookup, what, 'eos_token');
    this.unkId = resolveTokenId(side.unkToken, p.unkId, lookup, what, 'unk_token');
    this.padId = resolveTokenId(side.padToken, valid(tr.padId), lookup, what, 'pad_token');
    for (const id of [this.bosId, this.eosId, this.padId, this.unkId]) if (id !== null) this.special.add(id);
    // BaiChuanTokenizer's defaults when the config is silent: add_bos_token=True, add_eos_token=False.
    this.addBos = side.addBos ?? true;
    this.addEos = side.addEos ?? false;
  }

  /** Read a tokenizer.model file (with optional folder settings). */
  static fromFile(path: string, side?: TokenizerSideConfig): SentencePieceTokenizer {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
    }
    return SentencePieceTokenizer.fromBytes(bytes, path, side);
  }

  static fromBytes(bytes: Uint8Array, what: string, side?: TokenizerSideConfig): SentencePieceTokenizer {
    const data = parseModelProto(bytes, what);
    return new SentencePieceTokenizer(new SentencePieceProcessor(data, what), bytes, side);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const addBos = opts.addBos ?? this.addBos;
    const addEos = opts.addEos ?? this.addEos;
    const out: number[] = [];
    if (addBos && this.usable(this.bosId, 'bos', opts.addBos === true)) out.push(this.bosId!);
    if (opts.parseSpecial === false || this.matcher.size === 0) {
      for (const id of this.processor.encode(text)) out.push(id);
    } else {
      for (const seg of this.matcher.split(text)) {
        if ('id' in seg) out.push(seg.id);
        else for (const id of this.processor.encode(seg.text)) out.push(id);
      }
    }
    if (addEos && this.usable(this.eosId, 'eos', opts.addEos === true)) out.push(this.eosId!);
    return out;
  }

  /** Whether a bos/eos id can be added; asking explicitly for a missing one is an error. */
  private usable(id: number | null, what: string, explicit: boolean): boolean {
    if (id !== null) return true;
    if (explicit) throw new UsageError(`${this.processor.what}: this tokenizer has no ${what} token`);
    return false;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    return this.decodeImpl(ids, opts, true);
  }

  decodeContinuation(ids: readonly number[], opts: DecodeOptions = {}): string {
    return this.decodeImpl(ids, opts, false);
  }

  /**
   * skipSpecial: special ids dropped, the rest decoded as SentencePiece does. Otherwise control
   * pieces and added tokens are written as their text (and count as text for the leading-space
   * rule, as Hugging Face's converted tokenizers do); <unk> decodes to SentencePiece's
   * unk_surface " ⁇ ".
   */
  private decodeImpl(ids: readonly number[], opts: DecodeOptions, atStart: boolean): string {
    const p = this.processor;
    for (const id of ids) this.checkId(id);
    if (opts.skipSpecial) {
      const kept: number[] = [];
      for (const id of ids) if (!this.special.has(id) && !this.extra.has(id)) kept.push(id);
      return p.decode(kept, atStart);
    }
    return p.decode(ids, atStart, (id) => this.extra.get(id)?.content ?? p.pieces[id]);
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || (id >= this.processor.size && !this.extra.has(id)))
      throw new UsageError(`${this.processor.what}: token id ${id} is out of range (vocabulary of ${this.vocabSize})`);
  }

  idToPiece(id: number): string {
    this.checkId(id);
    return id < this.processor.size ? this.processor.pieces[id] : this.extra.get(id)!.content;
  }

  pieceToId(piece: string): number | null {
    return this.processor.pieceToId(piece) ?? this.extraIds.get(piece) ?? null;
  }

  isSpecial(id: number): boolean {
    return this.special.has(id);
  }

  /** The pieces of encode(text) without bos/eos (for inspection and tests). */
  encodeAsPieces(text: string): string[] {
    return this.processor.encode(text).map((id) => this.processor.pieces[id]);
  }

  save(dir: string): void {
    writeFileAtomic(join(dir, SPM_MODEL_FILE), this.modelBytes);
    writeSideFiles(dir, this, this.side.raw, 'LlamaTokenizer');
  }
}
