// Hugging Face tokenizer.json: the pipeline of the `tokenizers` library (added tokens → normalizer
// → pre-tokenizer → model → post-processor; decoder on the way back) for BPE models, which covers
// the two families met in practice:
//   (a) byte-level BPE (GPT-2, RoBERTa, Llama 3, Qwen…): ByteLevel / Split pre-tokenizers, ByteLevel decoder;
//   (b) SentencePiece-style BPE (Llama 2, Mistral…): Metaspace or Prepend+Replace "▁", byte_fallback,
//       decoders Replace / ByteFallback / Fuse / Strip or Metaspace.
// Followed from the tokenizers sources (pre_tokenizers/, normalizers/, decoders/, models/bpe/).
// Known approximations, each rare in LLM tokenizers:
//   * added tokens are matched on the raw text (HF matches `normalized: true` ones after normalizing);
//   * Oniguruma regex features without a JavaScript equivalent are translated: (?i:…) groups are
//     expanded to case classes, possessive quantifiers and atomic groups lose their possessiveness;
//   * the Precompiled normalizer applies the charsmap rules character by character (HF goes by
//     grapheme clusters first);
//   * only BPE models (WordPiece, Unigram and WordLevel models are refused with a FormatError).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, UsageError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { AddedTokenMatcher, escapeRegExp, type AddedToken } from './added.ts';
import { BpeModel } from './bpe.ts';
import { fromByteLevel, GPT2_PATTERN, toByteLevel } from './bytelevel.ts';
import { PrecompiledCharsMap } from './charsmap.ts';
import {
  emptySideConfig, resolveTokenId, writeSideFiles, type TokenizerSideConfig,
} from './config.ts';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './types.ts';
import { decodeUtf8Lossy, decodeUtf8Strict, pieceToByte, spmCharLen, toWellFormed } from './utf8.ts';

export const HF_TOKENIZER_FILE = 'tokenizer.json';

type Obj = Record<string, unknown>;

/** A pre-tokenized piece; `first` marks the piece that starts at offset 0 of the input. */
interface Piece { text: string; first: boolean }
type NormalizerFn = (s: string) => string;
type PreTokenizerFn = (pieces: Piece[]) => Piece[];
interface DecodeCtx { continuation: boolean; fused: boolean }
type DecoderFn = (tokens: string[], ctx: DecodeCtx) => string[];

class Spec {
  constructor(readonly what: string) {}
  fail(path: string, msg: string): never {
    throw new FormatError(`${this.what}: ${path}: ${msg}`);
  }
  obj(v: unknown, path: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(path, `expected an object, got ${brief(v)}`);
    return v as Obj;
  }
  arr(v: unknown, path: string): unknown[] {
    if (!Array.isArray(v)) this.fail(path, `expected an array, got ${brief(v)}`);
    return v;
  }
  str(v: unknown, path: string): string {
    if (typeof v !== 'string') this.fail(path, `expected a string, got ${brief(v)}`);
    return v;
  }
  optStr(v: unknown, path: string): string | null {
    return v === undefined || v === null ? null : this.str(v, path);
  }
  bool(v: unknown, path: string, dflt: boolean): boolean {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(path, `expected true or false, got ${brief(v)}`);
    return v;
  }
  int(v: unknown, path: string): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.fail(path, `expected a non-negative integer, got ${brief(v)}`);
    return v;
  }
  type(o: Obj, path: string): string {
    return this.str(o.type, `${path}.type`);
  }
}

function brief(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? s.slice(0, 57) + '...' : s;
}

// ---------------------------------------------------------------------------------------------
// Regular expressions: Oniguruma (as tokenizer.json writes them) → JavaScript.

const ESCAPE_LETTERS = new Set('dDwWsSbBnrtfv0123456789pPuxck'.split(''));
const SYNTAX = new Set('^$\\.*+?()[]{}|/'.split(''));

/** Translate an Oniguruma pattern to a JavaScript one (with the u flag). */
export function translateRegex(src: string): string {
  let out = '';
  let inClass = false;
  let caseless = 0; // depth inside (?i: … )
  const groupStack: boolean[] = []; // whether each open group is a (?i: group
  let lastQuant = false;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === '\\' && i + 1 < src.length) {
      const d = src[i + 1];
      i++;
      lastQuant = false;
      if (d === 'p' || d === 'P') {
        // \p{L} or \pL
        if (src[i + 1] === '{') {
          const e = src.indexOf('}', i + 1);
          out += '\\' + d + src.slice(i + 1, e + 1);
          i = e;
        } else {
          out += '\\' + d + '{' + src[i + 1] + '}';
          i++;
        }
      } else if (d === 'h') {
        out += inClass ? '0-9a-fA-F' : '[0-9a-fA-F]';
      } else if (d === 'A') {
        out += '^';
      } else if (d === 'z' || d === 'Z') {
        out += '$';
      } else if (ESCAPE_LETTERS.has(d) || SYNTAX.has(d) || (inClass && d === '-')) {
        out += '\\' + d;
      } else {
        out += caseless && !inClass && /[a-zA-Z]/.test(d) ? caseClass(d) : d;
      }
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      out += caseless && /[a-zA-Z]/.test(c) ? c.toLowerCase() + c.toUpperCase() : c;
      continue;
    }
    if (c === '[') {
      inClass = true;
      out += c;
      if (src[i + 1] === '^') out += src[++i];
      if (src[i + 1] === ']') out += '\\' + src[++i]; // a literal ] first in the class
      lastQuant = false;
      continue;
    }
    if (c === '(') {
      if (src.startsWith('(?i:', i)) {
        groupStack.push(true);
        caseless++;
        out += '(?:';
        i += 3;
      } else if (src.startsWith('(?>', i)) {
        groupStack.push(false);
        out += '(?:';
        i += 2;
      } else {
        groupStack.push(false);
        out += c;
      }
      lastQuant = false;
      continue;
    }
    if (c === ')') {
      if (groupStack.pop()) caseless--;
      out += c;
      lastQuant = false;
      continue;
    }
    if (c === '+' && lastQuant) {
      lastQuant = false; // possessive quantifier: dropped
      continue;
    }
    if (c === '*' || c === '+' || c === '?' || c === '}') {
      // A lazy `??`, `*?` stays as is.
      out += c;
      lastQuant = c !== '?' || !(out.length >= 2 && '*+?}'.includes(out[out.length - 2]));
      continue;
    }
    lastQuant = false;
    out += caseless && /[a-zA-Z]/.test(c) ? caseClass(c) : c;
  }
  return out;
}

function caseClass(c: string): string {
  return `[${c.toLowerCase()}${c.toUpperCase()}]`;
}

function patternRegex(spec: Spec, p: unknown, path: string): RegExp {
  const o = spec.obj(p, path);
  if (typeof o.String === 'string') return new RegExp(escapeRegExp(o.String), 'gu');
  if (typeof o.Regex === 'string') {
    try {
      return new RegExp(translateRegex(o.Regex), 'gu');
    } catch (e) {
      spec.fail(path, `cannot use the regex ${brief(o.Regex)} (${(e as Error).message})`);
    }
  }
  spec.fail(path, `expected {"String": …} or {"Regex": …}, got ${brief(p)}`);
}

type Behavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';
const BEHAVIORS = new Set<Behavior>(['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous']);

/** NormalizedString::split with a SplitDelimiterBehavior. */
function splitBy(s: string, re: RegExp, behavior: Behavior, invert = false): string[] {
  const spans: [number, number, boolean][] = [];
  let last = 0;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    if (m.index > last) spans.push([last, m.index, false]);
    spans.push([m.index, m.index + m[0].length, true]);
    last = m.index + m[0].length;
  }
  if (last < s.length) spans.push([last, s.length, false]);
  if (invert) for (const sp of spans) sp[2] = !sp[2];
  let res: [number, number][] = [];
  switch (behavior) {
    case 'Removed':
      res = spans.filter((x) => !x[2]).map((x) => [x[0], x[1]]);
      break;
    case 'Isolated':
      res = spans.map((x) => [x[0], x[1]]);
      break;
    case 'Contiguous': {
      let prevMatch = false;
      for (const [a, b, isM] of spans) {
        if (isM === prevMatch && res.length) res[res.length - 1][1] = b;
        else res.push([a, b]);
        prevMatch = isM;
      }
      break;
    }
    case 'MergedWithPrevious': {
      let prevMatch = false;
      for (const [a, b, isM] of spans) {
        if (isM && !prevMatch && res.length) res[res.length - 1][1] = b;
        else res.push([a, b]);
        prevMatch = isM;
      }
      break;
    }
    case 'MergedWithNext': {
      let prevMatch = false;
      for (let k = spans.length - 1; k >= 0; k--) {
        const [a, b, isM] = spans[k];
        if (isM && !prevMatch && res.length) res[res.length - 1][0] = a;
        else res.push([a, b]);
        prevMatch = isM;
      }
      res.reverse();
      break;
    }
  }
  return res.filter(([a, b]) => b > a).map(([a, b]) => s.slice(a, b));
}

/** Split each piece; the first part of a first piece stays first. */
function splitPieces(pieces: Piece[], f: (s: string) => string[]): Piece[] {
  const out: Piece[] = [];
  for (const p of pieces) {
    const parts = f(p.text);
    parts.forEach((t, k) => out.push({ text: t, first: p.first && k === 0 }));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Normalizers

function buildNormalizer(spec: Spec, j: unknown, path: string): NormalizerFn | null {
  if (j === null || j === undefined) return null;
  const o = spec.obj(j, path);
  const t = spec.type(o, path);
  switch (t) {
    case 'Sequence': {
      const fns = spec.arr(o.normalizers, `${path}.normalizers`).map((x, k) => buildNormalizer(spec, x, `${path}.normalizers[${k}]`)).filter((x): x is NormalizerFn => x !== null);
      return (s) => fns.reduce((acc, fn) => fn(acc), s);
    }
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD':
      return (s) => s.normalize(t);
    case 'Lowercase':
      return (s) => s.toLowerCase();
    case 'Strip': {
      const l = spec.bool(o.strip_left, `${path}.strip_left`, true), r = spec.bool(o.strip_right, `${path}.strip_right`, true);
      return (s) => (l && r ? s.trim() : l ? s.trimStart() : r ? s.trimEnd() : s);
    }
    case 'StripAccents':
      return (s) => s.replace(/\p{Mn}/gu, '');
    case 'Replace': {
      const re = patternRegex(spec, o.pattern, `${path}.pattern`);
      const content = spec.str(o.content, `${path}.content`);
      return (s) => s.replace(re, () => content);
    }
    case 'Prepend': {
      const pre = spec.str(o.prepend, `${path}.prepend`);
      return (s) => (s.length ? pre + s : s);
    }
    case 'Precompiled': {
      const b64 = spec.optStr(o.precompiled_charsmap, `${path}.precompiled_charsmap`) ?? '';
      const blob = Buffer.from(b64, 'base64');
      if (blob.length === 0) return null;
      const map = new PrecompiledCharsMap(blob, `${spec.what}: ${path}`);
      return (s) => applyCharsMap(map, s);
    }
    case 'ByteLevel':
      return (s) => toByteLevel(s);
    case 'BertNormalizer': {
      const clean = spec.bool(o.clean_text, `${path}.clean_text`, true);
      const chinese = spec.bool(o.handle_chinese_chars, `${path}.handle_chinese_chars`, true);
      const lower = spec.bool(o.lowercase, `${path}.lowercase`, true);
      const strip = o.strip_accents === null || o.strip_accents === undefined ? lower : spec.bool(o.strip_accents, `${path}.strip_accents`, lower);
      return (s) => {
        if (clean) s = s.replace(/[\u0000\uFFFD]|(?![\t\n\r])[\p{Cc}\p{Cf}]/gu, '').replace(/[\t\n\r\p{Zs}]/gu, ' ');
        if (chinese) s = s.replace(/[\u4E00-\u9FFF\u3400-\u4DBF\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B820}-\u{2CEAF}\uF900-\uFAFF\u{2F800}-\u{2FA1F}]/gu, (c) => ` ${c} `);
        if (strip) s = s.normalize('NFD').replace(/\p{Mn}/gu, '');
        if (lower) s = s.toLowerCase();
        return s;
      };
    }
    default:
      spec.fail(`${path}.type`, `unsupported normalizer "${t}"`);
  }
}

function applyCharsMap(map: PrecompiledCharsMap, s: string): string {
  const bytes = Buffer.from(s, 'utf8');
  const out: number[] = [];
  for (let i = 0; i < bytes.length;) {
    const m = map.longestMatch(bytes, i, bytes.length);
    if (m) {
      for (const b of m.replacement) out.push(b);
      i += m.length;
    } else {
      const n = spmCharLen(bytes, i, bytes.length) || 1;
      for (let k = 0; k < n; k++) out.push(bytes[i + k]);
      i += n;
    }
  }
  return Buffer.from(out).toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

const GPT2_RE = new RegExp(GPT2_PATTERN, 'gu');
const WS_RE = /\s+/gu;
const PUNCT_RE = /[\p{P}!-\/:-@\[-`{-~]/gu;
const DIGIT_RE = /\p{N}/gu;
const WHITESPACE_PRETOK_RE = /[\p{L}\p{N}\p{M}\p{Pc}]+|[^\p{L}\p{N}\p{M}\p{Pc}\s]+/gu;

function behaviorOf(spec: Spec, v: unknown, path: string, dflt: Behavior): Behavior {
  if (v === undefined || v === null) return dflt;
  const b = spec.str(v, path) as Behavior;
  if (!BEHAVIORS.has(b)) spec.fail(path, `unknown split behavior "${b}"`);
  return b;
}

/** prepend_scheme of Metaspace (or the older add_prefix_space). */
function prependScheme(spec: Spec, o: Obj, path: string): 'always' | 'first' | 'never' {
  if (o.prepend_scheme !== undefined && o.prepend_scheme !== null) {
    const s = spec.str(o.prepend_scheme, `${path}.prepend_scheme`).toLowerCase();
    if (s !== 'always' && s !== 'first' && s !== 'never') spec.fail(`${path}.prepend_scheme`, `unknown value "${s}"`);
    return s;
  }
  return spec.bool(o.add_prefix_space, `${path}.add_prefix_space`, true) ? 'always' : 'never';
}

function buildPreTokenizer(spec: Spec, j: unknown, path: string): PreTokenizerFn | null {
  if (j === null || j === undefined) return null;
  const o = spec.obj(j, path);
  const t = spec.type(o, path);
  switch (t) {
    case 'Sequence': {
      const fns = spec.arr(o.pretokenizers, `${path}.pretokenizers`).map((x, k) => buildPreTokenizer(spec, x, `${path}.pretokenizers[${k}]`)).filter((x): x is PreTokenizerFn => x !== null);
      return (p) => fns.reduce((acc, fn) => fn(acc), p);
    }
    case 'ByteLevel': {
      const prefix = spec.bool(o.add_prefix_space, `${path}.add_prefix_space`, true);
      const useRegex = spec.bool(o.use_regex, `${path}.use_regex`, true);
      return (pieces) => {
        const out: Piece[] = [];
        for (const p of pieces) {
          const s = prefix && !p.text.startsWith(' ') ? ' ' + p.text : p.text;
          const parts = useRegex ? splitBy(s, GPT2_RE, 'Isolated') : [s];
          parts.forEach((x, k) => out.push({ text: toByteLevel(x), first: p.first && k === 0 }));
        }
        return out;
      };
    }
    case 'Metaspace': {
      const rep = spec.str(o.replacement ?? '\u2581', `${path}.replacement`);
      const scheme = prependScheme(spec, o, path);
      const split = spec.bool(o.split, `${path}.split`, true);
      const repRe = new RegExp(escapeRegExp(rep), 'gu');
      return (pieces) => {
        const out: Piece[] = [];
        for (const p of pieces) {
          let s = p.text.replaceAll(' ', rep);
          if ((scheme === 'always' || (scheme === 'first' && p.first)) && !s.startsWith(rep)) s = rep + s;
          const parts = split ? splitBy(s, repRe, 'MergedWithNext') : [s];
          parts.forEach((x, k) => out.push({ text: x, first: p.first && k === 0 }));
        }
        return out;
      };
    }
    case 'Split': {
      const re = patternRegex(spec, o.pattern, `${path}.pattern`);
      const behavior = behaviorOf(spec, o.behavior, `${path}.behavior`, 'Isolated');
      const invert = spec.bool(o.invert, `${path}.invert`, false);
      return (p) => splitPieces(p, (s) => splitBy(s, re, behavior, invert));
    }
    case 'Digits': {
      const individual = spec.bool(o.individual_digits, `${path}.individual_digits`, false);
      return (p) => splitPieces(p, (s) => splitBy(s, DIGIT_RE, individual ? 'Isolated' : 'Contiguous'));
    }
    case 'Whitespace':
      return (p) => splitPieces(p, (s) => splitBy(s, WHITESPACE_PRETOK_RE, 'Removed', true));
    case 'WhitespaceSplit':
      return (p) => splitPieces(p, (s) => splitBy(s, WS_RE, 'Removed'));
    case 'Punctuation': {
      const behavior = behaviorOf(spec, o.behavior, `${path}.behavior`, 'Isolated');
      return (p) => splitPieces(p, (s) => splitBy(s, PUNCT_RE, behavior));
    }
    case 'BertPreTokenizer':
      return (p) => splitPieces(splitPieces(p, (s) => splitBy(s, WS_RE, 'Removed')), (s) => splitBy(s, PUNCT_RE, 'Isolated'));
    case 'CharDelimiterSplit': {
      const d = spec.str(o.delimiter, `${path}.delimiter`);
      const re = new RegExp(escapeRegExp(d), 'gu');
      return (p) => splitPieces(p, (s) => splitBy(s, re, 'Removed'));
    }
    default:
      spec.fail(`${path}.type`, `unsupported pre-tokenizer "${t}"`);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoders

function buildDecoder(spec: Spec, j: unknown, path: string): DecoderFn | null {
  if (j === null || j === undefined) return null;
  const o = spec.obj(j, path);
  const t = spec.type(o, path);
  switch (t) {
    case 'Sequence': {
      const fns = spec.arr(o.decoders, `${path}.decoders`).map((x, k) => buildDecoder(spec, x, `${path}.decoders[${k}]`)).filter((x): x is DecoderFn => x !== null);
      return (tokens, ctx) => fns.reduce((acc, fn) => fn(acc, ctx), tokens);
    }
    case 'ByteLevel':
      return (tokens) => [decodeUtf8Lossy(fromByteLevel(tokens))];
    case 'Metaspace': {
      const rep = spec.str(o.replacement ?? '\u2581', `${path}.replacement`);
      const scheme = prependScheme(spec, o, path);
      return (tokens, ctx) =>
        tokens.map((tok, i) => (i === 0 && !ctx.continuation && scheme !== 'never' ? tok.replaceAll(rep, '') : tok.replaceAll(rep, ' ')));
    }
    case 'Replace': {
      const re = patternRegex(spec, o.pattern, `${path}.pattern`);
      const content = spec.str(o.content, `${path}.content`);
      return (tokens) => tokens.map((tok) => tok.replace(re, () => content));
    }
    case 'ByteFallback':
      return (tokens) => {
        const out: string[] = [];
        let bytes: number[] = [];
        const flush = (): void => {
          if (!bytes.length) return;
          const s = decodeUtf8Strict(Uint8Array.from(bytes));
          if (s !== null) out.push(s);
          else for (let k = 0; k < bytes.length; k++) out.push('\uFFFD');
          bytes = [];
        };
        for (const tok of tokens) {
          const b = pieceToByte(tok);
          if (b >= 0) bytes.push(b);
          else {
            flush();
            out.push(tok);
          }
        }
        flush();
        return out;
      };
    case 'Fuse':
      return (tokens, ctx) => {
        ctx.fused = true;
        return [tokens.join('')];
      };
    case 'Strip': {
      const content = spec.str(o.content, `${path}.content`);
      const start = spec.int(o.start ?? 0, `${path}.start`), stop = spec.int(o.stop ?? 0, `${path}.stop`);
      return (tokens, ctx) =>
        tokens.map((tok, i) => {
          const chars = Array.from(tok);
          let a = 0;
          // After Fuse the first token is the start of the text: a continuation keeps it.
          if (!(ctx.continuation && ctx.fused && i === 0)) while (a < start && a < chars.length && chars[a] === content) a++;
          let b = chars.length;
          while (chars.length - b < stop && b > a && chars[b - 1] === content) b--;
          return chars.slice(a, b).join('');
        });
    }
    case 'BPEDecoder': {
      const suffix = spec.str(o.suffix ?? '</w>', `${path}.suffix`);
      return (tokens) => tokens.map((tok, i) => tok.replaceAll(suffix, i === tokens.length - 1 ? '' : ' '));
    }
    case 'WordPiece': {
      const prefix = spec.str(o.prefix ?? '##', `${path}.prefix`);
      const cleanup = spec.bool(o.cleanup, `${path}.cleanup`, true);
      return (tokens, ctx) =>
        tokens.map((tok, i) => {
          let s = tok;
          if (i > 0 || ctx.continuation) s = s.startsWith(prefix) ? s.slice(prefix.length) : ' ' + s;
          return cleanup ? cleanupSpaces(s) : s;
        });
    }
    default:
      spec.fail(`${path}.type`, `unsupported decoder "${t}"`);
  }
}

function cleanupSpaces(s: string): string {
  return s.replaceAll(' .', '.').replaceAll(' ?', '?').replaceAll(' !', '!').replaceAll(' ,', ',').replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(' do not', " don't").replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

// ---------------------------------------------------------------------------------------------
// Post-processor: what it puts around a single sequence.

function postProcessorIds(spec: Spec, j: unknown, path: string, lookup: (t: string) => number | null): { prefix: number[]; suffix: number[] } {
  const none = { prefix: [] as number[], suffix: [] as number[] };
  if (j === null || j === undefined) return none;
  const o = spec.obj(j, path);
  const t = spec.type(o, path);
  switch (t) {
    case 'ByteLevel':
      return none;
    case 'Sequence': {
      const r = { prefix: [] as number[], suffix: [] as number[] };
      spec.arr(o.processors, `${path}.processors`).forEach((x, k) => {
        const p = postProcessorIds(spec, x, `${path}.processors[${k}]`, lookup);
        r.prefix.push(...p.prefix);
        r.suffix.push(...p.suffix);
      });
      return r;
    }
    case 'BertProcessing':
    case 'RobertaProcessing': {
      const pair = (v: unknown, p: string): number => {
        const a = spec.arr(v, p);
        return spec.int(a[1], `${p}[1]`);
      };
      return { prefix: [pair(o.cls, `${path}.cls`)], suffix: [pair(o.sep, `${path}.sep`)] };
    }
    case 'TemplateProcessing': {
      const specials = spec.obj(o.special_tokens ?? {}, `${path}.special_tokens`);
      const r = { prefix: [] as number[], suffix: [] as number[] };
      let seen = false;
      spec.arr(o.single, `${path}.single`).forEach((item, k) => {
        const ip = `${path}.single[${k}]`;
        const it = spec.obj(item, ip);
        if (it.Sequence !== undefined) {
          seen = true;
          return;
        }
        const st = spec.obj(it.SpecialToken, `${ip}.SpecialToken`);
        const name = spec.str(st.id, `${ip}.SpecialToken.id`);
        let ids: number[];
        if (specials[name] !== undefined) {
          const e = spec.obj(specials[name], `${path}.special_tokens["${name}"]`);
          ids = spec.arr(e.ids, `${path}.special_tokens["${name}"].ids`).map((x) => spec.int(x, `${path}.special_tokens["${name}"].ids`));
        } else {
          const id = lookup(name);
          if (id === null) spec.fail(ip, `special token "${name}" is not defined`);
          ids = [id];
        }
        (seen ? r.suffix : r.prefix).push(...ids);
      });
      return r;
    }
    default:
      spec.fail(`${path}.type`, `unsupported post-processor "${t}"`);
  }
}

// ---------------------------------------------------------------------------------------------
// The tokenizer

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  private readonly model: BpeModel;
  private readonly normalizer: NormalizerFn | null;
  private readonly preTokenizer: PreTokenizerFn | null;
  private readonly decoder: DecoderFn | null;
  private readonly added = new Map<number, AddedToken>();
  private readonly addedIds = new Map<string, number>();
  private readonly special = new Set<number>();
  private readonly matcher: AddedTokenMatcher;
  private readonly prefixIds: number[];
  private readonly suffixIds: number[];
  /** Set when the pipeline is exactly a ByteLevel pre-tokenizer with the GPT-2 pattern: encode fast. */
  private readonly byteLevelFast: { addPrefixSpace: boolean } | null;
  private readonly rawCache = new Map<string, number[]>();

  constructor(readonly json: Obj, readonly what: string, private readonly side: TokenizerSideConfig = emptySideConfig()) {
    const spec = new Spec(what);
    const m = spec.obj(json.model, 'model');
    const mtype = m.type === undefined && m.merges !== undefined ? 'BPE' : spec.type(m, 'model');
    if (mtype !== 'BPE') spec.fail('model.type', `unsupported model "${mtype}" (only BPE is implemented)`);
    const vocabObj = spec.obj(m.vocab, 'model.vocab');
    const vocab = new Map<string, number>();
    for (const [k, v] of Object.entries(vocabObj)) vocab.set(k, spec.int(v, `model.vocab["${k}"]`));
    const merges = spec.arr(m.merges ?? [], 'model.merges').map((x, k): [string, string] => {
      if (typeof x === 'string') {
        const parts = x.split(' ');
        if (parts.length !== 2) spec.fail(`model.merges[${k}]`, `expected "left right", got ${brief(x)}`);
        return [parts[0], parts[1]];
      }
      const a = spec.arr(x, `model.merges[${k}]`);
      if (a.length !== 2) spec.fail(`model.merges[${k}]`, `expected a pair, got ${brief(x)}`);
      return [spec.str(a[0], `model.merges[${k}][0]`), spec.str(a[1], `model.merges[${k}][1]`)];
    });
    const unkToken = spec.optStr(m.unk_token, 'model.unk_token');
    this.model = new BpeModel({
      vocab, merges, unkToken,
      byteFallback: spec.bool(m.byte_fallback, 'model.byte_fallback', false),
      fuseUnk: spec.bool(m.fuse_unk, 'model.fuse_unk', false),
      continuingSubwordPrefix: spec.optStr(m.continuing_subword_prefix, 'model.continuing_subword_prefix'),
      endOfWordSuffix: spec.optStr(m.end_of_word_suffix, 'model.end_of_word_suffix'),
      ignoreMerges: spec.bool(m.ignore_merges, 'model.ignore_merges', false),
    }, what);

    let maxId = this.model.idToToken.length - 1;
    const addedList: AddedToken[] = [];
    spec.arr(json.added_tokens ?? [], 'added_tokens').forEach((x, k) => {
      const p = `added_tokens[${k}]`;
      const o = spec.obj(x, p);
      addedList.push({
        id: spec.int(o.id, `${p}.id`), content: spec.str(o.content, `${p}.content`), special: spec.bool(o.special, `${p}.special`, false),
        lstrip: spec.bool(o.lstrip, `${p}.lstrip`, false), rstrip: spec.bool(o.rstrip, `${p}.rstrip`, false),
        singleWord: spec.bool(o.single_word, `${p}.single_word`, false), normalized: spec.bool(o.normalized, `${p}.normalized`, true),
      });
    });
    for (const t of side.addedTokens) if (!addedList.some((a) => a.id === t.id)) addedList.push(t);
    for (const t of addedList) {
      const known = this.model.idToToken[t.id];
      if (known !== undefined && known !== t.content)
        spec.fail('added_tokens', `token ${t.id} is "${t.content}" but the model's vocab has "${known}" there`);
      this.added.set(t.id, t);
      this.addedIds.set(t.content, t.id);
      if (t.special) this.special.add(t.id);
      maxId = Math.max(maxId, t.id);
    }
    this.vocabSize = maxId + 1;
    this.matcher = new AddedTokenMatcher(addedList);
    this.normalizer = buildNormalizer(spec, json.normalizer, 'normalizer');
    this.preTokenizer = buildPreTokenizer(spec, json.pre_tokenizer, 'pre_tokenizer');
    const pt = json.pre_tokenizer as Obj | null | undefined;
    this.byteLevelFast = !this.normalizer && pt && pt.type === 'ByteLevel' && pt.use_regex !== false
      ? { addPrefixSpace: pt.add_prefix_space !== false } : null;
    this.decoder = buildDecoder(spec, json.decoder, 'decoder');
    const lookup = (s: string): number | null => this.pieceToId(s);
    const pp = postProcessorIds(spec, json.post_processor, 'post_processor', lookup);
    this.prefixIds = pp.prefix;
    this.suffixIds = pp.suffix;

    const padding = json.padding === null || json.padding === undefined ? null : spec.obj(json.padding, 'padding');
    this.bosId = resolveTokenId(side.bosToken, pp.prefix.length === 1 ? pp.prefix[0] : null, lookup, what, 'bos_token');
    this.eosId = resolveTokenId(side.eosToken, pp.suffix.length === 1 ? pp.suffix[0] : null, lookup, what, 'eos_token');
    this.unkId = resolveTokenId(side.unkToken, unkToken === null ? null : (vocab.get(unkToken) ?? null), lookup, what, 'unk_token');
    this.padId = resolveTokenId(side.padToken, padding ? spec.int(padding.pad_id ?? 0, 'padding.pad_id') : null, lookup, what, 'pad_token');
    for (const id of [this.bosId, this.eosId, this.padId, this.unkId]) if (id !== null) this.special.add(id);
    this.addBos = side.addBos ?? (this.prefixIds.length > 0);
    this.addEos = side.addEos ?? (this.suffixIds.length > 0);
  }

  static fromFile(path: string, side?: TokenizerSideConfig): HfTokenizer {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new FormatError(`${path}: not valid JSON (${(e as Error).message})`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(`${path}: expected a JSON object (a tokenizer.json)`);
    if (!('model' in json)) throw new FormatError(`${path}: no "model" field: not a Hugging Face tokenizer.json`);
    return new HfTokenizer(json as Obj, path, side);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const addBos = opts.addBos ?? this.addBos;
    const addEos = opts.addEos ?? this.addEos;
    const out: number[] = [];
    if (addBos) out.push(...this.boundaryIds(this.prefixIds, this.bosId, 'bos', opts.addBos === true));
    text = toWellFormed(text);
    if (opts.parseSpecial === false || this.matcher.size === 0) {
      if (text.length) this.encodeText(text, true, out);
    } else {
      for (const seg of this.matcher.split(text)) {
        if ('id' in seg) out.push(seg.id);
        else this.encodeText(seg.text, seg.first, out);
      }
    }
    if (addEos) out.push(...this.boundaryIds(this.suffixIds, this.eosId, 'eos', opts.addEos === true));
    return out;
  }

  /** The ids around a sequence: the post-processor's when it has some, else bos / eos. */
  private boundaryIds(template: number[], id: number | null, what: string, explicit: boolean): number[] {
    if (template.length) return template;
    if (id !== null) return [id];
    if (explicit) throw new UsageError(`${this.what}: this tokenizer has no ${what} token`);
    return [];
  }

  private encodeText(text: string, first: boolean, out: number[]): void {
    if (this.byteLevelFast) {
      this.encodeByteLevel(text, out);
      return;
    }
    const s = this.normalizer ? this.normalizer(text) : text;
    if (!this.preTokenizer) {
      this.model.tokenize(s, out);
      return;
    }
    for (const p of this.preTokenizer([{ text: s, first }])) this.model.tokenize(p.text, out);
  }

  /** ByteLevel pre-tokenizer + BPE, with the ids of each raw word cached. */
  private encodeByteLevel(text: string, out: number[]): void {
    const s = this.byteLevelFast!.addPrefixSpace && !text.startsWith(' ') ? ' ' + text : text;
    const re = GPT2_RE;
    re.lastIndex = 0;
    let last = 0;
    let m: RegExpExecArray | null;
    const word = (w: string): void => {
      const hit = this.rawCache.get(w);
      if (hit !== undefined) {
        for (let i = 0; i < hit.length; i++) out.push(hit[i]);
        return;
      }
      const ids: number[] = [];
      this.model.tokenize(toByteLevel(w), ids);
      if (w.length <= 64) {
        if (this.rawCache.size >= 1 << 17) this.rawCache.clear();
        this.rawCache.set(w, ids);
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    };
    while ((m = re.exec(s)) !== null) {
      if (m.index > last) word(s.slice(last, m.index));
      word(m[0]);
      last = m.index + m[0].length;
    }
    if (last < s.length) word(s.slice(last));
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    return this.decodeImpl(ids, opts, false);
  }

  decodeContinuation(ids: readonly number[], opts: DecodeOptions = {}): string {
    return this.decodeImpl(ids, opts, true);
  }

  private decodeImpl(ids: readonly number[], opts: DecodeOptions, continuation: boolean): string {
    const tokens: string[] = [];
    for (const id of ids) {
      const tok = this.idToPiece(id);
      if (opts.skipSpecial && this.special.has(id)) continue;
      tokens.push(tok);
    }
    if (!this.decoder) return tokens.join(' ');
    return this.decoder(tokens, { continuation, fused: false }).join('');
  }

  idToPiece(id: number): string {
    const t = this.added.get(id)?.content ?? (Number.isInteger(id) ? this.model.idToToken[id] : undefined);
    if (t === undefined) throw new UsageError(`${this.what}: token id ${id} is out of range (vocabulary of ${this.vocabSize})`);
    return t;
  }

  pieceToId(piece: string): number | null {
    return this.addedIds.get(piece) ?? this.model.vocab.get(piece) ?? null;
  }

  isSpecial(id: number): boolean {
    return this.special.has(id);
  }

  save(dir: string): void {
    writeFileAtomic(join(dir, HF_TOKENIZER_FILE), JSON.stringify(this.json, null, 2) + '\n');
    writeSideFiles(dir, this, this.side.raw, 'PreTrainedTokenizerFast');
  }
}

// ---------------------------------------------------------------------------------------------
// Writing a byte-level BPE tokenizer.json (family (a)), as the tokenizers library lays it out.

export interface ByteLevelBpeSpec {
  /** Token string (byte-level alphabet) → id; includes the special tokens. */
  vocab: Map<string, number>;
  merges: readonly (readonly [string, string])[];
  /** Special tokens (also in vocab) with their ids. */
  specials: { content: string; id: number }[];
  /** Put bos / eos around every sequence (TemplateProcessing); otherwise a ByteLevel post-processor. */
  bos?: string | null;
  eos?: string | null;
  addBos?: boolean;
  addEos?: boolean;
}

export function byteLevelBpeJson(s: ByteLevelBpeSpec): Obj {
  const vocab: Record<string, number> = {};
  for (const [k, v] of [...s.vocab].sort((a, b) => a[1] - b[1])) vocab[k] = v;
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  let post: Obj = { type: 'ByteLevel', ...byteLevel, trim_offsets: false };
  if ((s.addBos && s.bos) || (s.addEos && s.eos)) {
    const single: Obj[] = [];
    const pair: Obj[] = [];
    const special: Obj = {};
    const sp = (t: string): Obj => ({ SpecialToken: { id: t, type_id: 0 } });
    if (s.addBos && s.bos) {
      single.push(sp(s.bos));
      pair.push(sp(s.bos));
      special[s.bos] = { id: s.bos, ids: [s.vocab.get(s.bos)], tokens: [s.bos] };
    }
    single.push({ Sequence: { id: 'A', type_id: 0 } });
    pair.push({ Sequence: { id: 'A', type_id: 0 } });
    if (s.addEos && s.eos) {
      single.push(sp(s.eos));
      pair.push(sp(s.eos));
      special[s.eos] = { id: s.eos, ids: [s.vocab.get(s.eos)], tokens: [s.eos] };
    }
    pair.push({ Sequence: { id: 'B', type_id: 1 } });
    post = { type: 'TemplateProcessing', single, pair, special_tokens: special };
  }
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: s.specials.map((t) => ({
      id: t.id, content: t.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', ...byteLevel },
    post_processor: post,
    decoder: { type: 'ByteLevel', ...byteLevel },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab,
      merges: s.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}
