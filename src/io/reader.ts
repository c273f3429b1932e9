// The one interface every weight file reader implements (safetensors, PyTorch .bin, sharded
// folders), and the float conversion they share for readAs().
import { FormatError, ShapeError } from '../errors.ts';
import {
  bf16ToF32Array, f16ToF32Array, f32ToBf16Array, f32ToF16Array, f64ToBf16Array, f64ToF32Array, toF16,
  type AnyTensorArray, type DType, type DTypeArrayMap,
} from './dtype.ts';

export interface TensorInfo {
  dtype: DType;
  shape: number[];
}

export interface Tensor<D extends DType = DType> {
  dtype: D;
  shape: number[];
  data: DTypeArrayMap[D];
}

/** Target of readAs: f32 values, or bf16 / f16 bit patterns. */
export type FloatTarget = 'f32' | 'bf16' | 'f16';
export interface FloatTargetMap { f32: Float32Array; bf16: Uint16Array; f16: Uint16Array }
export interface FloatTensor<T extends FloatTarget = FloatTarget> {
  dtype: T;
  shape: number[];
  data: FloatTargetMap[T];
}

export interface TensorReader {
  /** The file or folder read, for messages. */
  readonly path: string;
  /** Tensor names in file order. */
  names(): string[];
  has(name: string): boolean;
  /** dtype and shape, from the header alone. Throws FormatError for an unknown name. */
  info(name: string): TensorInfo;
  /** The tensor's values in their stored dtype, freshly read from disk (each call returns new memory). */
  read(name: string): Tensor;
  /** The tensor converted to f32, or to bf16/f16 bit patterns (round to nearest even). Float dtypes only. */
  readAs<T extends FloatTarget>(name: string, target: T): FloatTensor<T>;
  close(): void;
}

/** Convert a tensor read in its stored dtype to a float target. The input's memory is reused where no conversion is needed. */
export function convertTensor<T extends FloatTarget>(t: Tensor, target: T, what: string): FloatTensor<T> {
  const { dtype, shape } = t;
  let data: Float32Array | Uint16Array;
  const src = t.data as AnyTensorArray;
  switch (target) {
    case 'f32':
      if (dtype === 'F32') data = src as Float32Array;
      else if (dtype === 'BF16') data = bf16ToF32Array(src as Uint16Array);
      else if (dtype === 'F16') data = f16ToF32Array(src as Uint16Array);
      else if (dtype === 'F64') data = f64ToF32Array(src as Float64Array);
      else throw notFloat(what, dtype, target);
      break;
    case 'bf16':
      if (dtype === 'BF16') data = src as Uint16Array;
      else if (dtype === 'F32') data = f32ToBf16Array(src as Float32Array);
      else if (dtype === 'F16') data = f32ToBf16Array(f16ToF32Array(src as Uint16Array));
      else if (dtype === 'F64') data = f64ToBf16Array(src as Float64Array);
      else throw notFloat(what, dtype, target);
      break;
    case 'f16':
      if (dtype === 'F16') data = src as Uint16Array;
      else if (dtype === 'F32') data = f32ToF16Array(src as Float32Array);
      else if (dtype === 'BF16') data = f32ToF16Array(bf16ToF32Array(src as Uint16Array));
      else if (dtype === 'F64') data = f32ToF16ArrayFromF64(src as Float64Array);
      else throw notFloat(what, dtype, target);
      break;
    default:
      throw new ShapeError(`${what}: unknown float target '${String(target)}' (expected f32, bf16 or f16)`);
  }
  return { dtype: target, shape, data } as FloatTensor<T>;
}

function f32ToF16ArrayFromF64(src: Float64Array): Uint16Array {
  // f64 → f16 through f32 would round twice; do it per element with round-to-odd.
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = toF16(src[i]!);
  return out;
}

function notFloat(what: string, dtype: DType, target: string): ShapeError {
  return new ShapeError(`${what}: dtype ${dtype} is not a float type; cannot read it as ${target}`);
}

export function unknownTensor(file: string, name: string, names: string[]): FormatError {
  const some = names.slice(0, 5).map((n) => `'${n}'`).join(', ');
  return new FormatError(`${file}: no tensor named '${name}' (it holds ${names.length} tensors${names.length ? `, e.g. ${some}` : ''})`);
}
