// Tensor element types as the safetensors format names them, their byte sizes and typed arrays,
// and exact conversions between the float formats: f32 <-> bf16 and f32 <-> f16 with
// round-to-nearest-even, NaN kept NaN (quieted), Inf kept Inf, f16 subnormals handled.
// All typed arrays are in the platform's byte order; files are little-endian (checked below).
import { endianness } from 'node:os';

export const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'] as const;
export type DType = (typeof DTYPES)[number];

/** The typed array that holds each dtype: F16/BF16 are raw 16-bit patterns, BOOL is one byte per value. */
export interface DTypeArrayMap {
  F64: Float64Array;
  F32: Float32Array;
  F16: Uint16Array;
  BF16: Uint16Array;
  I64: BigInt64Array;
  I32: Int32Array;
  I16: Int16Array;
  I8: Int8Array;
  U8: Uint8Array;
  BOOL: Uint8Array;
}
export type AnyTensorArray = DTypeArrayMap[DType];

export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

if (endianness() !== 'LE') throw new Error('transnormer io: only little-endian hosts are supported');

/** View `bytes` (an ArrayBuffer range) as the dtype's typed array, without copying. The caller guarantees alignment. */
export function viewAs<D extends DType>(dtype: D, buffer: ArrayBuffer, byteOffset: number, count: number): DTypeArrayMap[D] {
  switch (dtype) {
    case 'F64': return new Float64Array(buffer, byteOffset, count) as DTypeArrayMap[D];
    case 'F32': return new Float32Array(buffer, byteOffset, count) as DTypeArrayMap[D];
    case 'F16': case 'BF16': return new Uint16Array(buffer, byteOffset, count) as DTypeArrayMap[D];
    case 'I64': return new BigInt64Array(buffer, byteOffset, count) as DTypeArrayMap[D];
    case 'I32': return new Int32Array(buffer, byteOffset, count) as DTypeArrayMap[D];
    case 'I16': return new Int16Array(buffer, byteOffset, count) as DTypeArrayMap[D];
    case 'I8': return new Int8Array(buffer, byteOffset, count) as DTypeArrayMap[D];
    case 'U8': case 'BOOL': return new Uint8Array(buffer, byteOffset, count) as DTypeArrayMap[D];
  }
  throw new Error(`unknown dtype ${String(dtype)}`);
}

/** Number of elements of a shape (1 for a scalar shape []). */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// bf16

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** f32 bit pattern → bf16 bit pattern, round to nearest even; NaN stays NaN (quiet bit set). */
export function f32BitsToBf16(bits: number): number {
  bits >>>= 0;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x0040) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** A JS number → bf16 bit pattern (rounded once, exactly: via f32 round-to-odd). */
export function toBf16(x: number): number {
  return f32BitsToBf16(f64ToF32BitsRoundToOdd(x));
}

/** bf16 bit pattern → the f32 value it denotes (exact). */
export function bf16ToNumber(h: number): number {
  u32buf[0] = (h & 0xffff) << 16;
  return f32buf[0]!;
}

/** f32 array → bf16 bit patterns (round to nearest even). `out` may be given to avoid an allocation. */
export function f32ToBf16Array(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const n = src.length;
  for (let i = 0; i < n; i++) {
    const b = u[i]!;
    out[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x0040 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** bf16 bit patterns → f32 (exact). */
export function bf16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  const n = src.length;
  for (let i = 0; i < n; i++) o[i] = src[i]! << 16;
  return out;
}

/** f64 → f32 bit pattern rounded to odd: exact when representable, else the truncation with its last bit set.
 *  Rounding that result once more to bf16 (RNE) equals rounding the f64 directly: no double-rounding error. */
export function f64ToF32BitsRoundToOdd(x: number): number {
  f32buf[0] = x;
  let bits = u32buf[0]!;
  const r = f32buf[0]!;
  if (r === x || Number.isNaN(x)) return bits;
  if (Math.abs(r) > Math.abs(x)) bits = (bits - 1) >>> 0; // step one ulp toward zero (also Inf → max finite)
  return (bits | 1) >>> 0;
}

/** f64 array → bf16 bit patterns, each rounded once (RNE). */
export function f64ToBf16Array(src: Float64Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16(f64ToF32BitsRoundToOdd(src[i]!));
  return out;
}

// ---------------------------------------------------------------------------------------------
// f16 (IEEE binary16)

/** f16 bit pattern → its value (exact). */
export function f16ToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m === 0 ? s * Infinity : NaN;
  return s * (1024 + m) * 2 ** (e - 25);
}

let f16Table: Float32Array | undefined;
function f16ToF32Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToNumber(h);
    // keep NaN payloads: set the f32 bits directly
    const u = new Uint32Array(f16Table.buffer);
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) u[h] = ((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13) | 0x400000;
    }
  }
  return f16Table;
}

/** f16 bit patterns → f32 (exact). */
export function f16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const t = new Uint32Array(f16ToF32Table().buffer); // bit copies: NaN payloads exact
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = t[src[i]!]!;
  return out;
}

/** f32 bit pattern → f16 bit pattern, round to nearest even, overflow → Inf, subnormals exact, NaN stays NaN. */
export function f32BitsToF16(bits: number): number {
  bits >>>= 0;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  const e = exp - 127 + 15; // biased f16 exponent
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // subnormal f16 (or zero): value = mant24 * 2^(exp-150); f16 subnormal unit is 2^-24
    if (e < -10) return sign; // below half the smallest subnormal (2^-25): rounds to zero
    mant |= 0x800000; // implicit bit
    const shift = 14 - e; // 1 - e + 13
    const q = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    const r = rem > half || (rem === half && (q & 1) === 1) ? q + 1 : q;
    return sign | r; // r may carry into the exponent field (0x400): that is the right answer
  }
  const q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  const r = rem > 0x1000 || (rem === 0x1000 && (q & 1) === 1) ? q + 1 : q; // carry may reach 0x7c00 = Inf: correct
  return sign | r;
}

/** A JS number → f16 bit pattern (via f32 round-to-odd, so rounded once). */
export function toF16(x: number): number {
  return f32BitsToF16(f64ToF32BitsRoundToOdd(x));
}

/** f32 array → f16 bit patterns. */
export function f32ToF16Array(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16(u[i]!);
  return out;
}

/** f64 array → f32 (Math.fround, round to nearest even). */
export function f64ToF32Array(src: Float64Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) out[i] = src[i]!;
  return out;
}

/** Widen `n` 16-bit patterns stored in the upper half of `buf` (bytes [2n, 4n)) to f32 in place,
 *  filling the whole buffer: reading a file straight into that half and converting there needs
 *  4 bytes per value instead of 6. Forward order is safe: writing value i (bytes [4i, 4i+4))
 *  never reaches a pattern not yet read (value i+1 sits at byte 2n+2i+2 ≥ 4i+4 for i < n). */
export function widen16InPlace(buf: ArrayBuffer, n: number, kind: 'BF16' | 'F16'): Float32Array {
  const src = new Uint16Array(buf, 2 * n, n);
  const out = new Float32Array(buf, 0, n);
  const o = new Uint32Array(buf, 0, n);
  if (kind === 'BF16') {
    for (let i = 0; i < n; i++) o[i] = src[i]! << 16;
  } else {
    const t = new Uint32Array(f16ToF32Table().buffer);
    for (let i = 0; i < n; i++) o[i] = t[src[i]!]!;
  }
  return out;
}
