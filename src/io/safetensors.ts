// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}), then the
// data section; offsets are relative to the start of the data section.
//
// The reader validates the whole header on open and then reads one tensor at a time with a
// positioned read into a fresh ArrayBuffer, which the returned typed array views directly (so
// every result is aligned and no second copy is made; a 2 GB file never needs 2 GB at once).
// The writer streams tensor by tensor into a temp file and renames it into place.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { FormatError, ShapeError } from '../errors.ts';
import { writeFileAtomicStream } from './atomic.ts';
import {
  DTYPE_SIZE, f32ToBf16Array, f32ToF16Array, isDType, numelOf, viewAs, widen16InPlace,
  type AnyTensorArray, type DType,
} from './dtype.ts';
import { convertTensor, unknownTensor, type FloatTarget, type FloatTensor, type Tensor, type TensorInfo, type TensorReader } from './reader.ts';

/** Largest header accepted (the reference implementation's limit too). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

interface Entry extends TensorInfo {
  begin: number; // absolute file offset
  nbytes: number;
}

export class SafetensorsFile implements TensorReader {
  readonly path: string;
  readonly metadata: Record<string, string>;
  private fd: number | null;
  private readonly entries: Map<string, Entry>;
  private readonly order: string[];

  private constructor(path: string, fd: number, entries: Map<string, Entry>, order: string[], metadata: Record<string, string>) {
    this.path = path;
    this.fd = fd;
    this.entries = entries;
    this.order = order;
    this.metadata = metadata;
  }

  /** Open and validate the header; no tensor data is read. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new FormatError(`${path}: cannot open safetensors file: ${(e as Error).message}`);
    }
    try {
      const { entries, order, metadata } = parseHeader(path, fd);
      return new SafetensorsFile(path, fd, entries, order, metadata);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return this.order.slice();
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { dtype: e.dtype, shape: e.shape.slice() };
  }

  /** Byte size of a tensor's data. */
  byteSize(name: string): number {
    return this.entry(name).nbytes;
  }

  read(name: string): Tensor {
    const e = this.entry(name);
    const fd = this.fdOrThrow();
    const buf = new ArrayBuffer(e.nbytes);
    readFully(fd, new Uint8Array(buf), e.begin, this.path, name);
    const data = viewAs(e.dtype, buf, 0, e.nbytes / DTYPE_SIZE[e.dtype]);
    return { dtype: e.dtype, shape: e.shape.slice(), data } as Tensor;
  }

  readAs<T extends FloatTarget>(name: string, target: T): FloatTensor<T> {
    const e = this.entry(name);
    if (target === 'f32' && (e.dtype === 'BF16' || e.dtype === 'F16')) {
      // read the 16-bit patterns into the upper half of the f32 result and widen in place
      const n = e.nbytes / 2;
      const buf = new ArrayBuffer(4 * n);
      readFully(this.fdOrThrow(), new Uint8Array(buf, 2 * n, 2 * n), e.begin, this.path, name);
      return { dtype: target, shape: e.shape.slice(), data: widen16InPlace(buf, n, e.dtype) } as FloatTensor<T>;
    }
    return convertTensor(this.read(name), target, `${this.path}: tensor '${name}'`);
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw unknownTensor(this.path, name, this.order);
    return e;
  }

  private fdOrThrow(): number {
    if (this.fd === null) throw new FormatError(`${this.path}: file was closed`);
    return this.fd;
  }
}

/** Read exactly `dst.byteLength` bytes at `position`; a short file is a FormatError. */
export function readFully(fd: number, dst: Uint8Array, position: number, file: string, what: string): void {
  let off = 0;
  while (off < dst.byteLength) {
    const n = readSync(fd, dst, off, dst.byteLength - off, position + off);
    if (n === 0) throw new FormatError(`${file}: truncated while reading ${what}: got ${off} of ${dst.byteLength} bytes at offset ${position}`);
    off += n;
  }
}

function parseHeader(path: string, fd: number) {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) throw new FormatError(`${path}: truncated safetensors file: ${fileSize} bytes, less than the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readFully(fd, lenBuf, 0, path, 'the header length');
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(fileSize - 8))
    throw new FormatError(`${path}: header length ${headerLen} is larger than the file allows (${fileSize - 8} bytes after the length field): truncated or not a safetensors file`);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw new FormatError(`${path}: header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (headerLen < 2n) throw new FormatError(`${path}: header length ${headerLen} is too small for a JSON object`);
  const n = Number(headerLen);
  const hbuf = Buffer.alloc(n);
  readFully(fd, hbuf, 8, path, 'the header');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(hbuf);
  } catch {
    throw new FormatError(`${path}: header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${path}: header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) throw new FormatError(`${path}: header must be a JSON object, got ${describe(json)}`);

  const dataStart = 8 + n;
  const dataLen = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const entries = new Map<string, Entry>();
  const order: string[] = [];
  const spans: { name: string; b: number; e: number }[] = [];
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(v)) throw new FormatError(`${path}: __metadata__ must be an object of strings, got ${describe(v)}`);
      for (const [k, s] of Object.entries(v))
        if (typeof s !== 'string') throw new FormatError(`${path}: __metadata__['${k}'] must be a string, got ${describe(s)}`);
      metadata = v as Record<string, string>;
      continue;
    }
    const where = `${path}: tensor '${name}'`;
    if (!isPlainObject(v)) throw new FormatError(`${where}: entry must be an object, got ${describe(v)}`);
    const { dtype, shape, data_offsets: offs } = v as Record<string, unknown>;
    if (!isDType(dtype)) throw new FormatError(`${where}: unknown or unsupported dtype ${JSON.stringify(dtype)} (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new FormatError(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new FormatError(`${where}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`);
    const [b, e] = offs as [number, number];
    if (e < b) throw new FormatError(`${where}: data_offsets [${b}, ${e}] end before begin`);
    const numel = numelOf(shape as number[]);
    const need = numel * DTYPE_SIZE[dtype];
    if (!Number.isSafeInteger(need)) throw new FormatError(`${where}: shape [${shape.join(', ')}] is too large`);
    if (e - b !== need)
      throw new FormatError(`${where}: data_offsets [${b}, ${e}] hold ${e - b} bytes but shape [${shape.join(', ')}] × ${dtype} needs ${need}`);
    if (e > dataLen)
      throw new FormatError(`${where}: data_offsets [${b}, ${e}] out of bounds: the data section has ${dataLen} bytes (file truncated?)`);
    entries.set(name, { dtype, shape: shape as number[], begin: dataStart + b, nbytes: need });
    order.push(name);
    spans.push({ name, b, e });
  }
  const nonEmpty = spans.filter((s) => s.e > s.b).sort((x, y) => x.b - y.b);
  let prev: (typeof spans)[number] | undefined;
  for (const c of nonEmpty) {
    if (prev && c.b < prev.e)
      throw new FormatError(`${path}: tensors '${prev.name}' [${prev.b}, ${prev.e}] and '${c.name}' [${c.b}, ${c.e}] overlap`);
    if (!prev || c.e > prev.e) prev = c;
  }
  return { entries, order, metadata };
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  return typeof x;
}

// ---------------------------------------------------------------------------------------------
// writer

export type TensorData = AnyTensorArray | Float32Array;

/** One tensor to write. For F16/BF16, `data` may be raw bit patterns (Uint16Array) or a
 *  Float32Array, which is then rounded to nearest even while writing. `data` may also be a
 *  function producing the array when its turn comes, so that a whole model never needs to be
 *  in memory at once (its result is checked then, and dropped after it is written). */
export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: readonly number[];
  data: TensorData | (() => TensorData);
}
export type TensorsToWrite = TensorToWrite[] | Record<string, Omit<TensorToWrite, 'name'>>;

export function normalizeTensors(tensors: TensorsToWrite): TensorToWrite[] {
  return Array.isArray(tensors) ? tensors : Object.entries(tensors).map(([name, t]) => ({ name, ...t }));
}

const EXPECTED_ARRAY: Record<DType, string[]> = {
  F64: ['Float64Array'], F32: ['Float32Array'], F16: ['Uint16Array', 'Float32Array'], BF16: ['Uint16Array', 'Float32Array'],
  I64: ['BigInt64Array', 'BigUint64Array'], I32: ['Int32Array', 'Uint32Array'], I16: ['Int16Array', 'Uint16Array'],
  I8: ['Int8Array', 'Uint8Array'], U8: ['Uint8Array', 'Int8Array', 'Uint8ClampedArray'], BOOL: ['Uint8Array'],
};

/** Check a tensor to write: known dtype and shape, and (unless produced lazily) a typed array of
 *  that dtype whose length matches the shape. */
export function checkTensorToWrite(t: TensorToWrite, what: string): void {
  if (!isDType(t.dtype)) throw new ShapeError(`${what}: unknown dtype ${JSON.stringify(t.dtype)}`);
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
    throw new ShapeError(`${what}: shape must be non-negative integers, got ${JSON.stringify(t.shape)}`);
  if (typeof t.data !== 'function') checkData(t, t.data, what);
}

function checkData(t: TensorToWrite, data: unknown, what: string): asserts data is TensorData {
  const ctor = (data as { constructor?: { name?: string } } | null)?.constructor?.name ?? typeof data;
  if (!ArrayBuffer.isView(data) || !EXPECTED_ARRAY[t.dtype].includes(ctor))
    throw new ShapeError(`${what}: dtype ${t.dtype} needs ${EXPECTED_ARRAY[t.dtype].join(' or ')}, got ${ctor}`);
  const numel = numelOf(t.shape);
  const len = (data as TensorData).length;
  if (len !== numel) throw new ShapeError(`${what}: shape [${t.shape.join(', ')}] has ${numel} elements, data has ${len}`);
}

/** Byte size of a tensor once written. */
export function writtenBytes(t: TensorToWrite): number {
  return numelOf(t.shape) * DTYPE_SIZE[t.dtype];
}

const CONVERT_CHUNK = 1 << 20; // elements converted at a time when writing f32 data as bf16/f16

/** Write a safetensors file atomically, streaming one tensor at a time. Header padded with spaces to a multiple of 8. */
export function writeSafetensors(path: string, tensors: TensorsToWrite, metadata?: Record<string, string>): void {
  const list = normalizeTensors(tensors);
  const header: Record<string, unknown> = Object.create(null); // a tensor may be named '__proto__'
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata))
      if (typeof v !== 'string') throw new ShapeError(`${path}: metadata '${k}' must be a string, got ${typeof v}`);
    header.__metadata__ = metadata;
  }
  let off = 0;
  const seen = new Set<string>();
  for (const t of list) {
    const what = `${path}: tensor '${t.name}'`;
    if (typeof t.name !== 'string' || t.name === '' || t.name === '__metadata__') throw new ShapeError(`${path}: invalid tensor name ${JSON.stringify(t.name)}`);
    if (seen.has(t.name)) throw new ShapeError(`${what}: duplicate name`);
    seen.add(t.name);
    checkTensorToWrite(t, what);
    const n = writtenBytes(t);
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [off, off + n] };
    off += n;
  }
  let hbytes = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (hbytes.length % 8)) % 8;
  if (pad) hbytes = Buffer.concat([hbytes, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hbytes.length));
  writeFileAtomicStream(path, (write) => {
    write(len);
    write(hbytes);
    for (const t of list) {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      checkData(t, data, `${path}: tensor '${t.name}'`);
      writeTensorBytes(t.dtype, data, write);
    }
  });
}

function writeTensorBytes(dtype: DType, d: TensorData, write: (c: Uint8Array) => void): void {
  if ((dtype === 'BF16' || dtype === 'F16') && d instanceof Float32Array) {
    const tmp = new Uint16Array(Math.min(CONVERT_CHUNK, d.length));
    for (let i = 0; i < d.length; i += CONVERT_CHUNK) {
      const part = d.subarray(i, Math.min(d.length, i + CONVERT_CHUNK));
      const out = tmp.subarray(0, part.length);
      if (dtype === 'BF16') f32ToBf16Array(part, out);
      else f32ToF16Array(part, out);
      write(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    }
    return;
  }
  write(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
}
