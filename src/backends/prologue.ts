// matmul's optional A prologues (MatmulOptions.normA, gluA), for backends that do not fuse them:
// the transformed A as a temporary, then the plain product. The CUDA backend fuses them into its
// decode GEMV and falls back to this elsewhere.
import type { Backend, MatmulOptions, Tensor } from './backend.ts';
import { dims2 } from './backend.ts';
import { ShapeError } from '../errors.ts';

/** Runs `c (+)= prologue(a)·op(b)` through a temporary when opts asks for a prologue; false when none applies. */
export function matmulWithPrologue(be: Backend, c: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions): boolean {
  const n = (opts.normA !== undefined ? 1 : 0) + (opts.gluA ? 1 : 0) + (opts.normGate ? 1 : 0);
  if (!n) return false;
  if (opts.transA) throw new ShapeError('matmul: normA / gluA / normGate need A untransposed');
  if (n > 1) throw new ShapeError('matmul: normA, gluA and normGate cannot be combined');
  const [rows, cols] = dims2(a);
  // against bf16 weights the product rounds A anyway: keep the temporary in bf16 where the backend can
  const dtype = b.dtype === 'bf16' && be.activationDTypes.includes('bf16') ? 'bf16' : a.dtype;
  let pre: Tensor;
  if (opts.normGate) {
    pre = be.empty([rows, cols], dtype);
    const rstd = be.empty([rows]);
    be.normGate(pre, rstd, a, opts.normGate.qkvu, opts.normGate.eps);
    be.free(rstd);
  } else if (opts.gluA) {
    if (cols % 2) throw new ShapeError(`matmul gluA: A [${a.shape.join(', ')}] needs an even number of columns`);
    pre = be.empty([rows, cols / 2], dtype);
    be.sgluGate(pre, a);
  } else {
    pre = be.empty([rows, cols], dtype);
    const rstd = be.empty([rows]);
    be.srmsnorm(pre, rstd, a, opts.normA!);
    be.free(rstd);
  }
  be.matmul(c, pre, b, { transB: opts.transB, accumulate: opts.accumulate });
  be.free(pre);
  return true;
}
