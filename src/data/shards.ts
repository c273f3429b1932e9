// Token shards: a corpus tokenized once into compact binary files, plus index.json.
//
// Layout of a shard folder:
//   index.json          ShardIndex (below): dtype, vocabulary size, EOS id, the split, shard list
//   train-00000.bin …   the train split's tokens, little-endian uint16 (vocab ≤ 65536) or uint32
//   val-00000.bin …     the validation split's tokens
// Each split is one stream: every document's tokens followed by EOS, documents back to back in
// input order; a document may continue from one shard file into the next. The split is by
// document and deterministic in (seed, document index, document count). Every file is written
// atomically and index.json last, so a folder with an index.json is complete.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { endianness } from 'node:os';
import { FormatError, UsageError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { Rng, mix32, permutation } from '../util/rng.ts';

/** What the data pipeline needs of a tokenizer (src/tokenizer's classes satisfy it). */
export interface TextEncoder {
  encode(text: string, opts?: { addBos?: boolean; addEos?: boolean }): number[];
  readonly eosId: number | null;
  readonly vocabSize: number;
}

export type SplitName = 'train' | 'val';
export type ShardDtype = 'uint16' | 'uint32';

export interface ShardFileInfo {
  /** File name inside the shard folder. */
  file: string;
  tokens: number;
}

export interface SplitInfo {
  tokens: number;
  documents: number;
  shards: ShardFileInfo[];
}

export interface ShardIndex {
  format: 'tnl-token-shards';
  version: 1;
  dtype: ShardDtype;
  vocabSize: number;
  eosId: number;
  /** Whether each document was encoded with the encoder's BOS in front. */
  addBos: boolean;
  /** Documents in the input, both splits. */
  documents: number;
  /** UTF-8 bytes of the input text, both splits. */
  textBytes: number;
  seed: number;
  valFraction: number;
  /** 0-based positions, in input order, of the documents that went to the val split (sorted). */
  valDocuments: number[];
  splits: Record<SplitName, SplitInfo>;
}

export interface ShardProgress {
  documents: number;
  tokens: number;
  /** UTF-8 bytes of text read so far. */
  bytes: number;
  seconds: number;
  docsPerSec: number;
  tokensPerSec: number;
  mbPerSec: number;
  /** As given in the options, for a progress bar and an ETA. */
  totalDocuments?: number;
  totalBytes?: number;
  /** Seconds left, from whichever total is known (bytes preferred). */
  etaSeconds?: number;
  done: boolean;
}

export interface BuildShardsOptions {
  documents: Iterable<string> | AsyncIterable<string>;
  encoder: TextEncoder;
  outDir: string;
  /** Tokens per shard file (default 2^24 = 16,777,216). */
  shardTokens?: number;
  /** Fraction of documents for validation, in [0, 1) (default 0.05). */
  valFraction?: number;
  /** Seed of the train/val split (default 0). */
  seed?: number;
  /** Put the encoder's BOS before each document (default false: documents are only EOS-separated). */
  addBos?: boolean;
  /** EOS id to append after each document, when the encoder has none or another is wanted. */
  eosId?: number;
  /** Known totals, passed back in progress events for an ETA. */
  totalDocuments?: number;
  totalBytes?: number;
  onProgress?: (p: ShardProgress) => void;
  /** Least time between two progress events (default 250 ms); the final one always comes. */
  progressIntervalMs?: number;
}

/** Documents are assigned to val in blocks of this many: exactly round(n·valFraction) per block. */
const SPLIT_BLOCK = 100;
const SHARD_FILE = /^(train|val)-\d{5}\.bin$/;
const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * Which of the `n` documents of one block (block number `block`) go to val. Exactly
 * round(n·valFraction) of them, chosen by a permutation seeded with (seed, block); `ensureOne` asks
 * for at least one (and `keepOneTrain` for at most n−1) when the rounding gives none.
 */
export function valPicks(seed: number, block: number, n: number, valFraction: number, ensureOne = false, keepOneTrain = false): number[] {
  let k = Math.round(n * valFraction);
  if (k === 0 && ensureOne && valFraction > 0) k = 1;
  if (keepOneTrain) k = Math.min(k, n - 1);
  if (k <= 0) return [];
  const perm = permutation(n, new Rng(mix32(seed, block, 0x5eed)));
  return Array.from(perm.subarray(0, k)).sort((a, b) => a - b);
}

class SplitWriter {
  readonly shards: ShardFileInfo[] = [];
  tokens = 0;
  documents = 0;
  private buf: Uint16Array | Uint32Array;
  private fill = 0;

  constructor(
    private readonly dir: string,
    private readonly name: SplitName,
    private readonly shardTokens: number,
    dtype: ShardDtype,
  ) {
    // Grown on demand up to shardTokens, so that small corpora and val splits stay small.
    const initial = Math.min(shardTokens, 1 << 16);
    this.buf = dtype === 'uint16' ? new Uint16Array(initial) : new Uint32Array(initial);
  }

  private grow(): void {
    const size = Math.min(this.shardTokens, this.buf.length * 2);
    const next = this.buf instanceof Uint16Array ? new Uint16Array(size) : new Uint32Array(size);
    next.set(this.buf);
    this.buf = next;
  }

  push(ids: ArrayLike<number>): void {
    let i = 0;
    while (i < ids.length) {
      if (this.fill === this.buf.length) this.grow();
      const n = Math.min(ids.length - i, this.buf.length - this.fill);
      for (let j = 0; j < n; j++) this.buf[this.fill + j] = ids[i + j];
      this.fill += n;
      i += n;
      if (this.fill === this.shardTokens) this.flush();
    }
    this.tokens += ids.length;
  }

  flush(): void {
    if (this.fill === 0) return;
    const file = `${this.name}-${String(this.shards.length).padStart(5, '0')}.bin`;
    writeFileAtomic(join(this.dir, file), toLittleEndianBytes(this.buf.subarray(0, this.fill)));
    this.shards.push({ file, tokens: this.fill });
    this.fill = 0;
  }

  info(): SplitInfo {
    return { tokens: this.tokens, documents: this.documents, shards: this.shards };
  }
}

function toLittleEndianBytes(a: Uint16Array | Uint32Array): Uint8Array {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (LITTLE_ENDIAN) return bytes;
  const out = new Uint8Array(a.byteLength);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) a.BYTES_PER_ELEMENT === 2 ? dv.setUint16(2 * i, a[i], true) : dv.setUint32(4 * i, a[i], true);
  return out;
}

/**
 * Tokenize `documents` into shard files in `outDir` (created if missing) and write index.json.
 * Each document becomes [BOS] tokens… EOS. Stale shard files of an earlier build in the same
 * folder are removed once the new index is in place. Returns the index.
 */
export async function buildShards(opts: BuildShardsOptions): Promise<ShardIndex> {
  const { encoder, outDir } = opts;
  const shardTokens = opts.shardTokens ?? 1 << 24;
  const valFraction = opts.valFraction ?? 0.05;
  const seed = opts.seed ?? 0;
  const addBos = opts.addBos ?? false;
  const vocabSize = encoder.vocabSize;
  if (!Number.isInteger(vocabSize) || vocabSize <= 0 || vocabSize > 2 ** 32)
    throw new UsageError(`buildShards: encoder vocabSize must be an integer in [1, 2^32], got ${vocabSize}`);
  if (!Number.isInteger(shardTokens) || shardTokens <= 0) throw new UsageError(`buildShards: shardTokens must be a positive integer, got ${shardTokens}`);
  if (!(valFraction >= 0 && valFraction < 1)) throw new UsageError(`buildShards: valFraction must be in [0, 1), got ${valFraction}`);
  if (!Number.isSafeInteger(seed)) throw new UsageError(`buildShards: seed must be an integer, got ${seed}`);
  const eosId = opts.eosId ?? encoder.eosId;
  if (eosId === null || eosId === undefined)
    throw new UsageError('buildShards: the encoder has no EOS token; pass eosId to choose the document separator');
  checkId(eosId, vocabSize, 'EOS id');
  const dtype: ShardDtype = vocabSize <= 65536 ? 'uint16' : 'uint32';
  const eos = [eosId];

  // An index that no longer matches the shards must not outlive the start of a rebuild.
  rmSync(join(outDir, 'index.json'), { force: true });
  const writers: Record<SplitName, SplitWriter> = {
    train: new SplitWriter(outDir, 'train', shardTokens, dtype),
    val: new SplitWriter(outDir, 'val', shardTokens, dtype),
  };

  const valDocuments: number[] = [];
  let docIndex = 0;
  let textBytes = 0;
  let block: number[][] = []; // the tokens of the documents of the current block of SPLIT_BLOCK

  const t0 = performance.now();
  let lastReport = -Infinity;
  const interval = opts.progressIntervalMs ?? 250;
  const report = (done: boolean) => {
    if (!opts.onProgress) return;
    const now = performance.now();
    if (!done && now - lastReport < interval) return;
    lastReport = now;
    const seconds = Math.max((now - t0) / 1000, 1e-9);
    const tokens = writers.train.tokens + writers.val.tokens + block.reduce((s, d) => s + d.length + 1, 0);
    const p: ShardProgress = {
      documents: docIndex,
      tokens,
      bytes: textBytes,
      seconds,
      docsPerSec: docIndex / seconds,
      tokensPerSec: tokens / seconds,
      mbPerSec: textBytes / 1e6 / seconds,
      done,
    };
    if (opts.totalDocuments !== undefined) p.totalDocuments = opts.totalDocuments;
    if (opts.totalBytes !== undefined) p.totalBytes = opts.totalBytes;
    if (done) p.etaSeconds = 0;
    else if (opts.totalBytes && textBytes > 0) p.etaSeconds = Math.max(0, ((opts.totalBytes - textBytes) / textBytes) * seconds);
    else if (opts.totalDocuments && docIndex > 0) p.etaSeconds = Math.max(0, ((opts.totalDocuments - docIndex) / docIndex) * seconds);
    opts.onProgress(p);
  };

  const flushBlock = (last: boolean) => {
    const blockNo = Math.floor((docIndex - block.length) / SPLIT_BLOCK);
    const firstDoc = blockNo * SPLIT_BLOCK;
    // The final block makes sure val is not empty (when asked for) and train is not empty.
    const picks = new Set(valPicks(seed, blockNo, block.length, valFraction, last && valDocuments.length === 0 && docIndex >= 2, last && writers.train.documents === 0));
    block.forEach((ids, i) => {
      const split: SplitName = picks.has(i) ? 'val' : 'train';
      if (split === 'val') valDocuments.push(firstDoc + i);
      writers[split].push(ids);
      writers[split].push(eos);
      writers[split].documents++;
    });
    block = [];
  };

  for await (const text of opts.documents as AsyncIterable<string>) {
    if (typeof text !== 'string') throw new UsageError(`buildShards: document ${docIndex} is not a string`);
    const ids = encoder.encode(text, { addBos, addEos: false });
    for (let j = 0; j < ids.length; j++) checkId(ids[j], vocabSize, `token ${j} of document ${docIndex}`);
    block.push(ids);
    textBytes += Buffer.byteLength(text, 'utf8');
    docIndex++;
    if (block.length === SPLIT_BLOCK) flushBlock(false);
    report(false);
  }
  if (block.length) flushBlock(true);
  if (docIndex === 0) throw new UsageError('buildShards: the corpus holds no documents');
  writers.train.flush();
  writers.val.flush();

  const index: ShardIndex = {
    format: 'tnl-token-shards',
    version: 1,
    dtype,
    vocabSize,
    eosId,
    addBos,
    documents: docIndex,
    textBytes,
    seed,
    valFraction,
    valDocuments,
    splits: { train: writers.train.info(), val: writers.val.info() },
  };
  writeFileAtomic(join(outDir, 'index.json'), JSON.stringify(index, null, 1) + '\n');
  const keep = new Set([...index.splits.train.shards, ...index.splits.val.shards].map((s) => s.file));
  for (const f of readdirSync(outDir)) if (SHARD_FILE.test(f) && !keep.has(f)) rmSync(join(outDir, f), { force: true });
  report(true);
  return index;
}

function checkId(id: number, vocabSize: number, what: string): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new FormatError(`buildShards: ${what} is ${id}, outside the vocabulary [0, ${vocabSize})`);
}

// ---------------------------------------------------------------------------------------------
// Reading

/** A stream of tokens that can be read at any position (a split, or an array in tests). */
export interface TokenSource {
  readonly tokens: number;
  /** Copy tokens [start, start+length) into `out` at `outOffset` (default 0). */
  read(start: number, length: number, out: Int32Array, outOffset?: number): void;
}

/** A TokenSource over tokens held in memory. */
export function arrayTokenSource(tokens: ArrayLike<number>): TokenSource {
  return {
    tokens: tokens.length,
    read(start, length, out, outOffset = 0) {
      if (start < 0 || length < 0 || start + length > tokens.length)
        throw new RangeError(`read [${start}, ${start + length}) outside [0, ${tokens.length})`);
      for (let i = 0; i < length; i++) out[outOffset + i] = tokens[start + i];
    },
  };
}

export interface SplitReader extends TokenSource {
  readonly name: SplitName;
  readonly documents: number;
  /** All the split's tokens in one array (convenient for small splits and tests). */
  readAll(): Int32Array;
}

export interface ShardSet {
  readonly dir: string;
  readonly index: ShardIndex;
  split(name: SplitName): SplitReader;
}

export interface OpenShardsOptions {
  /** Bytes of shard files kept in memory at once (least recently used dropped; default 2 GiB). A
   *  shard larger than this is read piecewise from disk instead. */
  cacheBytes?: number;
}

/** Open a shard folder written by buildShards, checking index.json against the files. */
export function openShards(dir: string, opts: OpenShardsOptions = {}): ShardSet {
  const indexPath = join(dir, 'index.json');
  if (!existsSync(indexPath)) throw new FormatError(`${dir}: no index.json (not a token shard folder, or its build did not finish)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new FormatError(`${indexPath}: invalid JSON (${(e as Error).message})`);
  }
  const index = validateIndex(raw, indexPath);
  const bytesPer = index.dtype === 'uint16' ? 2 : 4;
  for (const name of ['train', 'val'] as const) {
    for (const s of index.splits[name].shards) {
      const p = join(dir, s.file);
      const st = statSync(p, { throwIfNoEntry: false });
      if (!st) throw new FormatError(`${indexPath}: shard ${s.file} is missing`);
      if (st.size !== s.tokens * bytesPer)
        throw new FormatError(`${p}: expected ${s.tokens * bytesPer} bytes (${s.tokens} ${index.dtype} tokens), got ${st.size}`);
    }
  }
  const cache = new ShardCache(opts.cacheBytes ?? 2 * 1024 ** 3, index.dtype);
  const readers = new Map<SplitName, SplitReader>();
  return {
    dir,
    index,
    split(name: SplitName) {
      if (name !== 'train' && name !== 'val') throw new UsageError(`openShards: no split "${name}" (expected train or val)`);
      let r = readers.get(name);
      if (!r) readers.set(name, (r = makeSplitReader(dir, name, index.splits[name], cache)));
      return r;
    },
  };
}

function validateIndex(raw: unknown, where: string): ShardIndex {
  const fail = (field: string, expected: string, got: unknown): never => {
    throw new FormatError(`${where}: field "${field}": expected ${expected}, got ${JSON.stringify(got)}`);
  };
  if (raw === null || typeof raw !== 'object') fail('(root)', 'an object', raw);
  const o = raw as Record<string, unknown>;
  if (o.format !== 'tnl-token-shards') fail('format', '"tnl-token-shards"', o.format);
  if (o.version !== 1) fail('version', '1', o.version);
  if (o.dtype !== 'uint16' && o.dtype !== 'uint32') fail('dtype', '"uint16" or "uint32"', o.dtype);
  const nat = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  for (const f of ['vocabSize', 'eosId', 'documents', 'textBytes', 'seed'] as const) if (!nat(o[f]) && !(f === 'seed' && Number.isSafeInteger(o[f]))) fail(f, 'a non-negative integer', o[f]);
  if (o.dtype === 'uint16' && (o.vocabSize as number) > 65536) fail('vocabSize', 'at most 65536 for uint16', o.vocabSize);
  if (typeof o.valFraction !== 'number') fail('valFraction', 'a number', o.valFraction);
  if (typeof o.addBos !== 'boolean') fail('addBos', 'true or false', o.addBos);
  if (!Array.isArray(o.valDocuments) || !o.valDocuments.every(nat)) fail('valDocuments', 'an array of document numbers', o.valDocuments);
  const splits = o.splits as Record<string, unknown> | undefined;
  if (!splits || typeof splits !== 'object') fail('splits', 'an object', splits);
  for (const name of ['train', 'val']) {
    const s = splits![name] as Record<string, unknown> | undefined;
    if (!s || typeof s !== 'object') fail(`splits.${name}`, 'an object', s);
    if (!nat(s!.tokens)) fail(`splits.${name}.tokens`, 'a non-negative integer', s!.tokens);
    if (!nat(s!.documents)) fail(`splits.${name}.documents`, 'a non-negative integer', s!.documents);
    if (!Array.isArray(s!.shards)) fail(`splits.${name}.shards`, 'an array', s!.shards);
    let sum = 0;
    (s!.shards as unknown[]).forEach((sh, i) => {
      const e = sh as Record<string, unknown>;
      if (!e || typeof e.file !== 'string' || !SHARD_FILE.test(e.file)) fail(`splits.${name}.shards[${i}].file`, `a file name like ${name}-00000.bin`, e?.file);
      if (!nat(e.tokens)) fail(`splits.${name}.shards[${i}].tokens`, 'a non-negative integer', e.tokens);
      sum += e.tokens as number;
    });
    if (sum !== s!.tokens) fail(`splits.${name}.tokens`, `the sum of its shards' tokens (${sum})`, s!.tokens);
  }
  return o as unknown as ShardIndex;
}

type Shard = Uint16Array | Uint32Array;

/** Whole shard files in memory, least recently used dropped beyond a byte budget. */
class ShardCache {
  private readonly map = new Map<string, Shard>();
  private bytes = 0;
  constructor(
    readonly budget: number,
    readonly dtype: ShardDtype,
  ) {}

  get(path: string, tokens: number): Shard | null {
    const hit = this.map.get(path);
    if (hit) {
      this.map.delete(path);
      this.map.set(path, hit);
      return hit;
    }
    const size = tokens * (this.dtype === 'uint16' ? 2 : 4);
    if (size > this.budget) return null;
    while (this.bytes + size > this.budget && this.map.size) {
      const [k, v] = this.map.entries().next().value as [string, Shard];
      this.map.delete(k);
      this.bytes -= v.byteLength;
    }
    const a = readTokens(path, 0, tokens, this.dtype);
    this.map.set(path, a);
    this.bytes += size;
    return a;
  }
}

/** Tokens [start, start+count) of a shard file. */
function readTokens(path: string, start: number, count: number, dtype: ShardDtype): Shard {
  const bytesPer = dtype === 'uint16' ? 2 : 4;
  const buf = new Uint8Array(count * bytesPer);
  const fd = openSync(path, 'r');
  try {
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, start * bytesPer + off);
      if (n === 0) throw new FormatError(`${path}: file ends early (wanted ${count} tokens from token ${start})`);
      off += n;
    }
  } finally {
    closeSync(fd);
  }
  if (LITTLE_ENDIAN) return dtype === 'uint16' ? new Uint16Array(buf.buffer) : new Uint32Array(buf.buffer);
  const dv = new DataView(buf.buffer);
  const out = dtype === 'uint16' ? new Uint16Array(count) : new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = bytesPer === 2 ? dv.getUint16(2 * i, true) : dv.getUint32(4 * i, true);
  return out;
}

function makeSplitReader(dir: string, name: SplitName, info: SplitInfo, cache: ShardCache): SplitReader {
  const starts: number[] = [];
  let acc = 0;
  for (const s of info.shards) {
    starts.push(acc);
    acc += s.tokens;
  }
  const total = acc;
  const reader: SplitReader = {
    name,
    tokens: total,
    documents: info.documents,
    read(start, length, out, outOffset = 0) {
      if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > total)
        throw new RangeError(`${name} split: read [${start}, ${start + length}) outside [0, ${total})`);
      if (outOffset < 0 || outOffset + length > out.length) throw new RangeError(`${name} split: ${length} tokens do not fit at ${outOffset} in an array of ${out.length}`);
      // Binary search the shard holding `start`, then copy shard by shard.
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (starts[mid] <= start) lo = mid;
        else hi = mid - 1;
      }
      let pos = start;
      let o = outOffset;
      for (let s = lo; pos < start + length; s++) {
        const sh = info.shards[s];
        const from = pos - starts[s];
        const n = Math.min(sh.tokens - from, start + length - pos);
        if (n <= 0) continue;
        const path = join(dir, sh.file);
        const whole = cache.get(path, sh.tokens);
        const src = whole ? whole.subarray(from, from + n) : readTokens(path, from, n, cache.dtype);
        out.set(src, o);
        o += n;
        pos += n;
      }
    },
    readAll() {
      const out = new Int32Array(total);
      reader.read(0, total, out);
      return out;
    },
  };
  return reader;
}
