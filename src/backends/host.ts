// Tensors that live in host memory (reference and cpu backends): a typed array plus a shape.
// f32 tensors hold a Float32Array; bf16 tensors hold the raw bits in a Uint16Array.
import type { DType, Tensor, TokenPick, TokenRing } from './backend.ts';
import { numel } from './backend.ts';
import { HostTokenRing, sampleRowsHost } from './token-pick.ts';
import { ShapeError } from '../errors.ts';

export class HostTensor implements Tensor {
  readonly size: number;
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly data: Float32Array | Uint16Array,
  ) {
    this.size = numel(shape);
    if (data.length !== this.size) throw new ShapeError(`tensor [${shape.join(', ')}] needs ${this.size} elements, storage has ${data.length}`);
  }
}

export function host(t: Tensor): HostTensor {
  if (!(t instanceof HostTensor)) throw new TypeError('expected a host tensor (reference or cpu backend)');
  return t;
}
/** The storage of an f32 tensor; `what` (e.g. 'srmsnorm: rstd') names it in the error otherwise. */
export function f32(t: Tensor, what?: string): Float32Array {
  const h = host(t);
  if (h.dtype !== 'f32') throw new ShapeError(`${what ? what + ': ' : ''}expected an f32 tensor, got ${h.dtype} [${h.shape.join(', ')}]`);
  return h.data as Float32Array;
}
/** The values of an f32 or bf16 tensor as float32: its own storage when f32, a widened copy when bf16. */
export function readF32(t: Tensor): Float32Array {
  const h = host(t);
  return h.dtype === 'bf16' ? fromBF16(h.data as Uint16Array) : h.data as Float32Array;
}

/**
 * Float32 arrays to write f32-or-bf16 outputs into. out(t) is an f32 tensor's own storage, or for
 * a bf16 tensor a scratch copy of its current values widened (so accumulating and partial writes
 * work); commit() rounds every scratch copy back into its tensor (nearest even). A method that
 * throws before commit() leaves its bf16 outputs untouched.
 */
export class F32Outputs {
  private readonly pending: [Uint16Array, Float32Array][] = [];
  out(t: Tensor): Float32Array {
    const h = host(t);
    if (h.dtype === 'f32') return h.data as Float32Array;
    const scratch = fromBF16(h.data as Uint16Array);
    this.pending.push([h.data as Uint16Array, scratch]);
    return scratch;
  }
  commit(): void {
    for (const [bits, vals] of this.pending) for (let i = 0; i < vals.length; i++) bits[i] = f32ToBF16Bits(vals[i]!);
    this.pending.length = 0;
  }
}

const cvtBuf = new Float32Array(1);
const cvtBits = new Uint32Array(cvtBuf.buffer);
/** float32 → bfloat16 bits, round to nearest even, NaN kept quiet. */
export function f32ToBF16Bits(x: number): number {
  cvtBuf[0] = x;
  const u = cvtBits[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
export function bf16BitsToF32(b: number): number {
  cvtBits[0] = b << 16;
  return cvtBuf[0]!;
}
export function toBF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToBF16Bits(src[i]!);
  return out;
}
export function fromBF16(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  return out;
}

/** Read element i of a host tensor as a number, whatever its dtype. */
export function valueAt(t: HostTensor, i: number): number {
  return t.dtype === 'bf16' ? bf16BitsToF32(t.data[i]!) : t.data[i]!;
}

/**
 * The memory half of a host backend, shared by the reference and cpu backends. Storage released
 * with free() is kept (by dtype and size, up to a byte budget) and handed out again by empty(): a
 * training step or a decode step then reuses the previous step's buffers instead of paying for
 * fresh, page-faulting memory every time.
 */
export abstract class HostMemory {
  private readonly pool = new Map<string, (Float32Array | Uint16Array)[]>();
  private pooledBytes = 0;
  /** Most bytes kept for reuse. */
  poolLimitBytes = 2 ** 30;

  empty(shape: readonly number[], dtype: DType = 'f32'): HostTensor {
    const n = numel(shape);
    const reuse = this.pool.get(`${dtype}:${n}`)?.pop();
    if (reuse) { this.pooledBytes -= reuse.byteLength; return new HostTensor([...shape], dtype, reuse); }
    return new HostTensor([...shape], dtype, dtype === 'bf16' ? new Uint16Array(n) : new Float32Array(n));
  }
  zeros(shape: readonly number[], dtype: DType = 'f32'): HostTensor {
    const t = this.empty(shape, dtype);
    t.data.fill(0);
    return t;
  }
  upload(data: Float32Array, shape: readonly number[], dtype: DType = 'f32'): HostTensor {
    if (data.length !== numel(shape)) throw new ShapeError(`upload: ${data.length} values for shape [${shape.join(', ')}]`);
    return new HostTensor([...shape], dtype, dtype === 'bf16' ? toBF16(data) : Float32Array.from(data));
  }
  uploadBF16(bits: Uint16Array, shape: readonly number[]): HostTensor {
    return new HostTensor([...shape], 'bf16', Uint16Array.from(bits));
  }
  sampleTokens(logits: Tensor, pick: TokenPick): void {
    sampleRowsHost(f32(logits, 'sampleTokens logits'), logits.shape[logits.shape.length - 1]!, pick);
  }
  tokenRing(rows: number, slots: number): TokenRing { return new HostTokenRing(rows, slots); }
  download(t: Tensor): Float32Array {
    const h = host(t);
    return h.dtype === 'bf16' ? fromBF16(h.data as Uint16Array) : Float32Array.from(h.data as Float32Array);
  }
  rows(t: Tensor, rowStart: number, rowCount: number): HostTensor {
    const h = host(t);
    const cols = h.shape[h.shape.length - 1] ?? 1;
    const total = h.size / cols;
    if (rowStart < 0 || rowCount < 0 || rowStart + rowCount > total)
      throw new ShapeError(`rows(${rowStart}, ${rowCount}) out of range for ${total} rows`);
    const data = h.data.subarray(rowStart * cols, (rowStart + rowCount) * cols);
    return new HostTensor([rowCount, cols], h.dtype, data);
  }
  reshape(t: Tensor, shape: readonly number[]): HostTensor {
    const h = host(t);
    return new HostTensor([...shape], h.dtype, h.data);
  }
  gatherRows(out: Tensor, src: Tensor, rowIdx: Int32Array): void {
    const o = host(out), s = host(src);
    const cols = s.shape[s.shape.length - 1]!;
    if (o.dtype !== s.dtype || o.size !== rowIdx.length * cols) throw new ShapeError('gatherRows: output does not match');
    for (let i = 0; i < rowIdx.length; i++) o.data.set(s.data.subarray(rowIdx[i]! * cols, (rowIdx[i]! + 1) * cols), i * cols);
  }
  copy(dst: Tensor, src: Tensor): void {
    const d = host(dst), s = host(src);
    if (d.size !== s.size) throw new ShapeError(`copy: ${s.size} elements into ${d.size}`);
    if (d.dtype === s.dtype) d.data.set(s.data);
    else if (d.dtype === 'f32') (d.data as Float32Array).set(fromBF16(s.data as Uint16Array));
    else (d.data as Uint16Array).set(toBF16(s.data as Float32Array));
  }
  fill(t: Tensor, value: number): void {
    const h = host(t);
    h.data.fill(h.dtype === 'bf16' ? f32ToBF16Bits(value) : value);
  }
  /** Give a tensor's storage back for reuse; the tensor (and any view of it) must not be used again. */
  free(t: Tensor): void {
    const d = host(t).data;
    // only whole buffers are recycled (views share storage with a live tensor)
    if (d.byteOffset !== 0 || d.byteLength !== d.buffer.byteLength || d.length === 0) return;
    if (this.pooledBytes + d.byteLength > this.poolLimitBytes) return;
    const key = `${t.dtype}:${d.length}`;
    const list = this.pool.get(key) ?? [];
    if (list.includes(d)) throw new Error('free: tensor freed twice');
    list.push(d);
    this.pool.set(key, list);
    this.pooledBytes += d.byteLength;
  }
}
