// matmul's optional A prologues (MatmulOptions.normA, gluA, normGate), for backends that do not fuse
// them: the transformed A as a temporary, then the plain product. The CUDA backend fuses them into
// its decode GEMV and falls back to this elsewhere.
import type { Backend, MatmulOptions, Tensor } from './backend.ts';
import { dims2 } from './backend.ts';
import { ShapeError } from '../errors.ts';

export type Prologue = 'none' | 'norm' | 'glu' | 'normGate';
/** Which prologue opts asks for (at most one, on an untransposed A). */
export function prologueOf(opts: MatmulOptions): Prologue {
  const asked: Prologue[] = [];
  if (opts.normA !== undefined) asked.push('norm');
  if (opts.gluA) asked.push('glu');
  if (opts.normGate) asked.push('normGate');
  if (!asked.length) return 'none';
  if (asked.length > 1) throw new ShapeError('matmul: normA, gluA and normGate cannot be combined');
  if (opts.transA) throw new ShapeError('matmul: normA / gluA / normGate need A untransposed');
  return asked[0]!;
}

/** Runs `c (+)= prologue(a)·op(b)` through a temporary when opts asks for a prologue; false when none applies. */
export function matmulWithPrologue(be: Backend, c: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions): boolean {
  const kind = prologueOf(opts);
  if (kind === 'none') return false;
  const [rows, cols] = dims2(a);
  // against bf16 weights the product rounds A anyway: keep the temporary in bf16 where the backend can
  const dtype = b.dtype === 'bf16' && be.activationDTypes.includes('bf16') ? 'bf16' : a.dtype;
  if (kind === 'glu' && cols % 2) throw new ShapeError(`matmul gluA: A [${a.shape.join(', ')}] needs an even number of columns`);
  const pre = be.empty([rows, kind === 'glu' ? cols / 2 : cols], dtype);
  if (kind === 'glu') be.sgluGate(pre, a);
  else {
    const rstd = be.empty([rows]);
    if (kind === 'normGate') be.normGate(pre, rstd, a, opts.normGate!.qkvu, opts.normGate!.eps);
    else be.srmsnorm(pre, rstd, a, opts.normA!);
    be.free(rstd);
  }
  be.matmul(c, pre, b, { transB: opts.transB, accumulate: opts.accumulate });
  be.free(pre);
  return true;
}
