// PyTorch checkpoints in the zip format of `torch.save` (torch ≥ 1.6):
//   <prefix>/data.pkl        the pickled state dict (tensors as persistent ids of storages)
//   <prefix>/data/<key>      raw bytes of each storage, little-endian
//   <prefix>/byteorder       "little" or "big" (absent in older files: little)
//   <prefix>/version, ...    ignored
// yauzl parses the central directory once; afterwards every tensor is read on demand with a
// positioned read of just its bytes (stored entries, as torch writes them) or by inflating its
// storage entry (deflated entries, as other zip tools may write them).
import { closeSync, fstatSync, openSync, } from 'node:fs';
import { inflateRawSync } from 'node:zlib';
import yauzl from 'yauzl';
import { FormatError } from '../errors.ts';
import { DTYPE_SIZE, numelOf, viewAs, widen16InPlace, type DType } from './dtype.ts';
import { PyTuple, PyGlobal, StorageRef, STORAGE_DTYPES, TensorRef, typeName, unpickle } from './pickle.ts';
import { convertTensor, unknownTensor, type FloatTarget, type FloatTensor, type Tensor, type TensorInfo, type TensorReader } from './reader.ts';
import { readFully } from './safetensors.ts';

/** Largest data.pkl accepted (a 7B state dict's pickle is ~100 KB). */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

interface ZipEntryInfo {
  name: string;
  localHeaderOffset: number;
  compressedSize: number;
  uncompressedSize: number;
  method: number; // 0 stored, 8 deflated
  dataStart?: number; // resolved lazily from the local header
}

export class PytorchCheckpoint implements TensorReader {
  readonly path: string;
  private fd: number | null;
  private readonly fileSize: number;
  private readonly entries: Map<string, ZipEntryInfo>;
  private readonly prefix: string;
  private readonly tensors = new Map<string, TensorRef>();
  private readonly order: string[] = [];
  private bigEndian = false;

  private constructor(path: string, fd: number, fileSize: number, entries: Map<string, ZipEntryInfo>, prefix: string) {
    this.path = path;
    this.fd = fd;
    this.fileSize = fileSize;
    this.entries = entries;
    this.prefix = prefix;
  }

  /** Open the zip, unpickle data.pkl (restricted) and check every storage entry exists and is large enough. */
  static async open(path: string): Promise<PytorchCheckpoint> {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new FormatError(`${path}: cannot open PyTorch checkpoint: ${(e as Error).message}`);
    }
    try {
      const fileSize = fstatSync(fd).size;
      const head = Buffer.alloc(Math.min(4, fileSize));
      readFully(fd, head, 0, path, 'the file signature');
      if (head.length >= 2 && head[0] === 0x80 && head[1]! <= 5)
        throw new FormatError(`${path}: legacy (non-zip, torch < 1.6) torch.save format is not supported; re-save it with a current torch (torch.save(torch.load(f), f)) or convert it to safetensors`);
      if (head.length < 4 || head.readUInt32LE(0) !== 0x04034b50)
        throw new FormatError(`${path}: not a zip file (PyTorch checkpoints written by torch ≥ 1.6 are zip archives)`);
      const entries = await listZip(path);
      const pkls = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
      if (pkls.length === 0) {
        const some = [...entries.keys()].slice(0, 8).join(', ');
        throw new FormatError(`${path}: not a torch.save zip: no <archive>/data.pkl entry (found ${entries.size} entries${entries.size ? `: ${some}` : ''})`);
      }
      if (pkls.length > 1) throw new FormatError(`${path}: ambiguous torch.save zip: several data.pkl entries (${pkls.join(', ')})`);
      const prefix = pkls[0]!.slice(0, -'data.pkl'.length);
      const ck = new PytorchCheckpoint(path, fd, fileSize, entries, prefix);
      ck.load();
      return ck;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private load(): void {
    const bo = this.entries.get(`${this.prefix}byteorder`);
    if (bo) {
      const s = Buffer.from(this.entryBytes(bo, 0, Math.min(bo.uncompressedSize, 16))).toString('latin1').trim();
      if (s !== 'little' && s !== 'big') throw new FormatError(`${this.path}: byteorder entry says '${s}', expected 'little' or 'big'`);
      this.bigEndian = s === 'big';
    }
    const pklEntry = this.entries.get(`${this.prefix}data.pkl`)!;
    if (pklEntry.uncompressedSize > MAX_PICKLE_BYTES)
      throw new FormatError(`${this.path}: data.pkl is ${pklEntry.uncompressedSize} bytes, over the ${MAX_PICKLE_BYTES}-byte limit`);
    const pkl = this.entryBytes(pklEntry, 0, pklEntry.uncompressedSize);
    const storages = new Map<string, StorageRef>();
    const where = `${this.path} (${pklEntry.name})`;
    const persistentLoad = (pid: unknown): StorageRef => {
      const fail = (msg: string): never => { throw new FormatError(`${where}: pickle: persistent id ${msg}`); };
      if (!(pid instanceof PyTuple)) return fail(`must be a tuple, got ${typeName(pid)}`);
      const [kind, type, key, location, numel] = pid.items;
      if (kind !== 'storage' || pid.items.length < 5) return fail(`must be ('storage', type, key, location, numel), got ${pid.items.length} items starting ${JSON.stringify(String(kind))}`);
      if (!(type instanceof PyGlobal) || !(type.qualified in STORAGE_DTYPES)) return fail(`names an unsupported storage type ${typeName(type)}`);
      if (typeof key !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(key)) return fail(`has a bad storage key ${JSON.stringify(key)}`);
      if (!Number.isSafeInteger(numel) || (numel as number) < 0) return fail(`has a bad element count ${String(numel)}`);
      const dtype = STORAGE_DTYPES[type.qualified]!;
      const prev = storages.get(key);
      if (prev) {
        if (prev.dtype !== dtype) return fail(`storage '${key}' used as both ${prev.dtype} and ${dtype}`);
        return prev;
      }
      const ref = new StorageRef(key, dtype, numel as number, String(location));
      storages.set(key, ref);
      return ref;
    };
    const root = unpickle(pkl, { file: where, persistentLoad });
    if (!(root instanceof Map)) throw new FormatError(`${where}: the checkpoint is ${typeName(root)}, not a state dict`);
    this.collect(root, '', where, new Set(), 0);
    if (this.order.length === 0) throw new FormatError(`${where}: the state dict holds no tensors`);
    // every storage must exist and hold what its tensors need
    for (const [name, t] of this.tensors) this.checkTensor(name, t);
  }

  /** Flatten nested dicts of tensors into dotted names; other leaves (ints, strings) are ignored.
   *  A dict reached a second time (a cycle, or one dict shared under two keys) is not entered again. */
  private collect(d: Map<unknown, unknown>, prefix: string, where: string, seen: Set<Map<unknown, unknown>>, depth: number): void {
    if (seen.has(d)) return;
    if (depth > 32) throw new FormatError(`${where}: dicts nested more than 32 deep at '${prefix}'`);
    seen.add(d);
    for (const [k, v] of d) {
      if (typeof k !== 'string') continue;
      const name = prefix + k;
      if (v instanceof TensorRef) {
        if (this.tensors.has(name)) throw new FormatError(`${where}: tensor name '${name}' appears twice`);
        this.tensors.set(name, v);
        this.order.push(name);
      } else if (v instanceof Map) {
        this.collect(v, `${name}.`, where, seen, depth + 1);
      }
    }
  }

  private storageEntry(s: StorageRef, tensorName: string): ZipEntryInfo {
    const e = this.entries.get(`${this.prefix}data/${s.key}`);
    if (!e) throw new FormatError(`${this.path}: tensor '${tensorName}': storage '${s.key}' is missing from the zip (no entry ${this.prefix}data/${s.key})`);
    return e;
  }

  private checkTensor(name: string, t: TensorRef): void {
    const s = t.storage;
    const e = this.storageEntry(s, name);
    const es = DTYPE_SIZE[s.dtype];
    if (e.uncompressedSize < s.numel * es)
      throw new FormatError(`${this.path}: storage '${s.key}' (${s.dtype}) declares ${s.numel} elements = ${s.numel * es} bytes but its zip entry holds ${e.uncompressedSize}: storage too short`);
    const n = numelOf(t.shape);
    if (n > 0) {
      const end = extentEnd(t);
      if (end > s.numel)
        throw new FormatError(`${this.path}: tensor '${name}' (shape [${t.shape.join(', ')}], stride [${t.stride.join(', ')}], offset ${t.offset}) reaches element ${end} of storage '${s.key}', which has ${s.numel}: storage too short for the tensor`);
    }
  }

  names(): string[] {
    return this.order.slice();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.ref(name);
    return { dtype: t.storage.dtype, shape: t.shape.slice() };
  }

  /** The storage key behind a tensor (two names with one key share memory in PyTorch: a tied head). */
  storageKey(name: string): string {
    return this.ref(name).storage.key;
  }

  read(name: string): Tensor {
    const t = this.ref(name);
    const { dtype } = t.storage;
    const es = DTYPE_SIZE[dtype];
    const n = numelOf(t.shape);
    const e = this.storageEntry(t.storage, name);
    let buf: ArrayBuffer;
    if (n === 0) {
      buf = new ArrayBuffer(0);
    } else if (isContiguous(t.shape, t.stride)) {
      buf = this.entryBytes(e, t.offset * es, n * es, name).buffer as ArrayBuffer;
    } else {
      const span = this.entryBytes(e, t.offset * es, (extentEnd(t) - t.offset) * es, name);
      buf = gather(span, es, t.shape, t.stride);
    }
    if (this.bigEndian && es > 1) byteswap(new Uint8Array(buf), es);
    return { dtype, shape: t.shape.slice(), data: viewAs(dtype, buf, 0, n) } as Tensor;
  }

  readAs<T extends FloatTarget>(name: string, target: T): FloatTensor<T> {
    const t = this.ref(name);
    const { dtype } = t.storage;
    const n = numelOf(t.shape);
    if (target === 'f32' && (dtype === 'BF16' || dtype === 'F16') && !this.bigEndian && n > 0 && isContiguous(t.shape, t.stride)) {
      // read the 16-bit patterns into the upper half of the f32 result and widen in place
      const buf = new ArrayBuffer(4 * n);
      this.entryBytes(this.storageEntry(t.storage, name), t.offset * 2, n * 2, name, new Uint8Array(buf, 2 * n, 2 * n));
      return { dtype: target, shape: t.shape.slice(), data: widen16InPlace(buf, n, dtype) } as FloatTensor<T>;
    }
    return convertTensor(this.read(name), target, `${this.path}: tensor '${name}'`);
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  private ref(name: string): TensorRef {
    const t = this.tensors.get(name);
    if (!t) throw unknownTensor(this.path, name, this.order);
    return t;
  }

  /** Bytes [start, start+len) of an entry's uncompressed content, in a fresh (aligned) buffer or in `into`. */
  private entryBytes(e: ZipEntryInfo, start: number, len: number, what = e.name, into?: Uint8Array): Uint8Array {
    if (this.fd === null) throw new FormatError(`${this.path}: file was closed`);
    if (start + len > e.uncompressedSize) throw new FormatError(`${this.path}: '${what}': bytes [${start}, ${start + len}) beyond the ${e.uncompressedSize}-byte entry ${e.name}`);
    const dataStart = this.dataStart(e);
    if (e.method === 0) {
      const out = into ?? new Uint8Array(new ArrayBuffer(len));
      readFully(this.fd, out, dataStart + start, this.path, `'${what}' (zip entry ${e.name})`);
      return out;
    }
    if (e.method !== 8) throw new FormatError(`${this.path}: zip entry ${e.name} uses compression method ${e.method}; only stored and deflated are supported`);
    const comp = Buffer.alloc(e.compressedSize);
    readFully(this.fd, comp, dataStart, this.path, `zip entry ${e.name}`);
    let raw: Buffer;
    try {
      raw = inflateRawSync(comp, { maxOutputLength: Math.max(1, e.uncompressedSize) });
    } catch (err) {
      throw new FormatError(`${this.path}: zip entry ${e.name} does not inflate: ${(err as Error).message}`);
    }
    if (raw.length !== e.uncompressedSize) throw new FormatError(`${this.path}: zip entry ${e.name} inflates to ${raw.length} bytes, expected ${e.uncompressedSize}`);
    const out = into ?? new Uint8Array(new ArrayBuffer(len));
    out.set(raw.subarray(start, start + len));
    return out;
  }

  private dataStart(e: ZipEntryInfo): number {
    if (e.dataStart !== undefined) return e.dataStart;
    const h = Buffer.alloc(30);
    if (e.localHeaderOffset + 30 > this.fileSize) throw new FormatError(`${this.path}: zip entry ${e.name}: local header beyond the end of the file`);
    readFully(this.fd!, h, e.localHeaderOffset, this.path, `the local header of ${e.name}`);
    if (h.readUInt32LE(0) !== 0x04034b50) throw new FormatError(`${this.path}: zip entry ${e.name}: bad local header signature`);
    const start = e.localHeaderOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
    if (start + e.compressedSize > this.fileSize)
      throw new FormatError(`${this.path}: zip entry ${e.name}: data [${start}, ${start + e.compressedSize}) beyond the ${this.fileSize}-byte file (truncated?)`);
    e.dataStart = start;
    return start;
  }
}

// yauzl gets its own descriptor (it closes it on zip.close()); tensor reads use ours.
async function listZip(path: string): Promise<Map<string, ZipEntryInfo>> {
  const out = new Map<string, ZipEntryInfo>();
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.openPromise(path, { autoClose: false, lazyEntries: true, decodeStrings: true, validateEntrySizes: true });
  } catch (e) {
    throw new FormatError(`${path}: not a readable zip file: ${(e as Error).message}`);
  }
  try {
    for await (const en of zip.eachEntry()) {
      if (out.has(en.fileName)) throw new FormatError(`${path}: zip entry ${en.fileName} appears twice`);
      if (en.isEncrypted()) throw new FormatError(`${path}: zip entry ${en.fileName} is encrypted`);
      out.set(en.fileName, {
        name: en.fileName,
        localHeaderOffset: en.relativeOffsetOfLocalHeader,
        compressedSize: en.compressedSize,
        uncompressedSize: en.uncompressedSize,
        method: en.compressionMethod,
      });
    }
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError(`${path}: corrupt zip: ${(e as Error).message}`);
  } finally {
    zip.close();
  }
  return out;
}

/** One past the largest storage element a tensor touches. */
function extentEnd(t: TensorRef): number {
  let end = t.offset;
  for (let i = 0; i < t.shape.length; i++) end += (t.shape[i]! - 1) * t.stride[i]!;
  return end + 1;
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expect = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) return false;
    expect *= shape[i]!;
  }
  return true;
}

/** Copy a strided view (relative to the start of `span`) into a new row-major buffer. */
function gather(span: Uint8Array, es: number, shape: number[], stride: number[]): ArrayBuffer {
  const n = numelOf(shape);
  const out = new ArrayBuffer(n * es);
  // element copies through same-width integer views (never through floats, which could alter NaN bits)
  const words = es === 8 ? 2 : 1;
  const w = es === 8 ? 4 : es;
  const mk = (b: ArrayBuffer, off: number, len: number) =>
    w === 4 ? new Uint32Array(b, off, len) : w === 2 ? new Uint16Array(b, off, len) : new Uint8Array(b, off, len);
  const src = mk(span.buffer as ArrayBuffer, span.byteOffset, span.byteLength / w);
  const dst = mk(out, 0, (n * es) / w);
  const nd = shape.length;
  const last = nd - 1;
  const inner = shape[last]!;
  const innerStride = stride[last]! * words;
  const idx = new Array<number>(nd).fill(0);
  let o = 0;
  for (let done = 0; done < n; done += inner) {
    let base = 0;
    for (let d = 0; d < last; d++) base += idx[d]! * stride[d]!;
    base *= words;
    for (let j = 0, s = base; j < inner; j++, s += innerStride) {
      if (words === 2) { dst[o++] = src[s]!; dst[o++] = src[s + 1]!; } else dst[o++] = src[s]!;
    }
    for (let d = last - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

function byteswap(b: Uint8Array, es: number): void {
  for (let i = 0; i < b.length; i += es) b.subarray(i, i + es).reverse();
}

export type { DType };
