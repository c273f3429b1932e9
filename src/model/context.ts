// What every layer call needs besides its parameters: the backend, the batch geometry, the
// positions and padding mask of the tokens, and the Lightning block size.
import type { Backend, DType, Tensor } from '../backends/backend.ts';

export const NORM_EPS = 1e-6;

/** Release every tensor held by an activation record (its buffers are reused by the next step). */
export function freeAll(be: Backend, acts: object): void {
  for (const t of Object.values(acts)) if (t && typeof t === 'object' && 'shape' in t) be.free(t as Tensor);
}

/** t stored as `dtype`: t itself, or a converted copy (free it when it is not t). */
export function cast(be: Backend, t: Tensor, dtype: DType): Tensor {
  if (t.dtype === dtype) return t;
  const c = be.empty(t.shape, dtype);
  be.copy(c, t);
  return c;
}

export interface StepContext {
  be: Backend;
  /** Sequences in the batch and tokens per sequence in this call (T = B·N rows). */
  B: number;
  N: number;
  /** Absolute position of every token (LRPE), length T. */
  positions: Int32Array;
  /** 1 = real token, 0 = padding (v is zeroed there, spec §7); null = no padding. */
  vMask: Int32Array | null;
  /** Lightning Attention block length. */
  blockSize: number;
  /** Storage of activations ('bf16': mixed precision); the residual stream stays f32. */
  act: DType;
}
