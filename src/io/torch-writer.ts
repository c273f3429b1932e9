// Writes a state dict in PyTorch's zip format (what `torch.save(state_dict)` produces), so that a
// model folder can go back to the layout of the released checkpoints: a protocol-2 pickle of an
// OrderedDict of `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` calls whose
// storages are persistent ids `('storage', torch.<T>Storage, key, 'cpu', numel)`, and each
// storage's bytes as `archive/data/<key>`. Tensors given the same `storageOf` key share one
// storage (a tied head, as in the released pickles).
import { Zip, ZipPassThrough } from 'fflate';
import { ShapeError } from '../errors.ts';
import { writeFileAtomicStream } from './atomic.ts';
import { DTYPE_SIZE, numelOf, type DType } from './dtype.ts';

const STORAGE_CLASS: Partial<Record<DType, string>> = {
  F32: 'FloatStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage', F64: 'DoubleStorage',
  I64: 'LongStorage', I32: 'IntStorage', I16: 'ShortStorage', I8: 'CharStorage', U8: 'ByteStorage', BOOL: 'BoolStorage',
};

export interface TorchTensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  /** The values (read lazily when a function). */
  data: ArrayBufferView | (() => ArrayBufferView);
  /** Tensors with the same key share one storage (default: the tensor's own name). */
  storageOf?: string;
}

/** Minimal pickle protocol-2 emitter for the few opcodes a state dict needs. */
class Pickler {
  private readonly parts: number[] = [];
  private readonly memo = new Map<string, number>();
  op(...bytes: number[]): this { this.parts.push(...bytes); return this; }
  private u32(n: number): number[] { return [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255]; }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    this.op(0x58, ...this.u32(b.length)); // BINUNICODE
    for (const x of b) this.parts.push(x);
    return this;
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, n); // BININT1
    if (n >= 0 && n < 65536) return this.op(0x4d, n & 255, n >>> 8); // BININT2
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.op(0x4a, ...this.u32(n >>> 0)); // BININT
    const bytes: number[] = [];
    let v = BigInt(n);
    for (let i = 0; i < 8; i++) { bytes.push(Number(v & 255n)); v >>= 8n; }
    return this.op(0x8a, 8, ...bytes); // LONG1
  }
  global(module: string, name: string): this {
    const key = `${module}\n${name}`;
    const m = this.memo.get(key);
    if (m !== undefined) return this.op(0x68, m); // BINGET
    this.op(0x63); // GLOBAL
    for (const x of Buffer.from(`${module}\n${name}\n`, 'latin1')) this.parts.push(x);
    const idx = this.memo.size;
    if (idx < 256) { this.memo.set(key, idx); this.op(0x71, idx); } // BINPUT
    return this;
  }
  tuple(items: (() => void)[]): this {
    if (items.length === 0) return this.op(0x29); // EMPTY_TUPLE
    this.op(0x28); // MARK
    for (const f of items) f();
    return this.op(0x74); // TUPLE
  }
  bytes(): Uint8Array { return Uint8Array.from(this.parts); }
}

function contiguousStride(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]!; }
  return s;
}

/** Write `tensors` as a torch.save zip at `path` (atomically; tensor bytes streamed one at a time). */
export function writeTorchCheckpoint(path: string, tensors: TorchTensorToWrite[], archive = 'archive'): void {
  const keys = new Map<string, { key: string; dtype: DType; numel: number; first: TorchTensorToWrite }>();
  for (const t of tensors) {
    if (!STORAGE_CLASS[t.dtype]) throw new ShapeError(`${path}: tensor ${t.name}: dtype ${t.dtype} has no torch storage class`);
    const sk = t.storageOf ?? t.name;
    const known = keys.get(sk);
    if (known) {
      if (known.dtype !== t.dtype || known.numel !== numelOf(t.shape)) throw new ShapeError(`${path}: tensors ${known.first.name} and ${t.name} share a storage but differ in dtype or size`);
    } else keys.set(sk, { key: String(keys.size), dtype: t.dtype, numel: numelOf(t.shape), first: t });
  }
  const p = new Pickler();
  p.op(0x80, 2).global('collections', 'OrderedDict').op(0x29, 0x52).op(0x28); // PROTO 2, OrderedDict(), MARK
  for (const t of tensors) {
    const s = keys.get(t.storageOf ?? t.name)!;
    p.str(t.name);
    p.global('torch._utils', '_rebuild_tensor_v2');
    p.tuple([
      () => { p.tuple([() => p.str('storage'), () => p.global('torch', STORAGE_CLASS[t.dtype]!), () => p.str(s.key), () => p.str('cpu'), () => p.int(s.numel)]); p.op(0x51); }, // BINPERSID
      () => p.int(0),
      () => p.tuple(t.shape.map((d) => () => p.int(d))),
      () => p.tuple(contiguousStride(t.shape).map((d) => () => p.int(d))),
      () => p.op(0x89), // NEWFALSE (requires_grad)
      () => { p.global('collections', 'OrderedDict'); p.op(0x29, 0x52); },
    ]);
    p.op(0x52); // REDUCE
  }
  p.op(0x75, 0x2e); // SETITEMS, STOP
  writeFileAtomicStream(path, (write) => {
    let failed: Error | null = null;
    const zip = new Zip((err, chunk) => { if (err) failed = err; else write(chunk); });
    const add = (name: string, data: Uint8Array) => {
      const f = new ZipPassThrough(`${archive}/${name}`);
      zip.add(f);
      f.push(data, true);
    };
    add('data.pkl', p.bytes());
    add('byteorder', Buffer.from('little'));
    for (const s of keys.values()) {
      const d = typeof s.first.data === 'function' ? s.first.data() : s.first.data;
      const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
      if (bytes.byteLength !== s.numel * DTYPE_SIZE[s.dtype]) throw new ShapeError(`${path}: tensor ${s.first.name}: ${bytes.byteLength} bytes for ${s.numel} ${s.dtype} values`);
      add(`data/${s.key}`, bytes);
    }
    add('version', Buffer.from('3\n'));
    zip.end();
    if (failed) throw failed;
  });
}
