// The channel mixer: simple GLU with no activation.
//   g = SRMS(x); [h1|h2] = g·[W1; W2]ᵀ; m = h1 ⊙ h2; x += m·W3ᵀ
import type { Tensor } from '../backends/backend.ts';
import type { LayerParams } from './params.ts';
import { NORM_EPS, cast, type StepContext } from './context.ts';

export interface SgluActs { g: Tensor; r3: Tensor; h12: Tensor; m: Tensor }

export function sgluForward(ctx: StepContext, p: LayerParams, x: Tensor): SgluActs {
  const { be, B, N, act } = ctx;
  const T = B * N, D = x.shape[x.shape.length - 1]!, G2 = p.w12.shape[0]!;
  const g = be.empty([T, D], act), r3 = be.empty([T]);
  be.srmsnorm(g, r3, x, NORM_EPS);
  const h12 = be.empty([T, G2], act);
  be.matmul(h12, g, p.w12, { transB: true });
  const m = be.empty([T, G2 / 2], act);
  be.sgluGate(m, h12);
  be.matmul(x, m, p.w3, { transB: true, accumulate: true });
  return { g, r3, h12, m };
}

/**
 * The recurrent step's channel mixer: the norm fused into the first projection, the gate into the
 * second; each projection hints the weights of a later kernel into cache (`prefetch`).
 */
export function sgluStep(ctx: StepContext, p: LayerParams, x: Tensor, prefetch: [Tensor | null, Tensor | null]): void {
  const { be, B, act } = ctx;
  const h12 = be.empty([B, p.w12.shape[0]!], act);
  be.matmul(h12, x, p.w12, { transB: true, normA: NORM_EPS, prefetch: prefetch[0] });
  be.matmul(x, h12, p.w3, { transB: true, accumulate: true, gluA: true, prefetch: prefetch[1] });
  be.free(h12);
}

export function sgluBackward(ctx: StepContext, p: LayerParams, grads: LayerParams, acts: SgluActs, dx: Tensor): void {
  const { be, act } = ctx;
  const dxa = cast(be, dx, act);
  const dm = be.empty(acts.m.shape, act);
  be.matmul(dm, dxa, p.w3);
  be.matmul(grads.w3, dxa, acts.m, { transA: true, accumulate: true });
  if (dxa !== dx) be.free(dxa);
  const dh12 = be.empty(acts.h12.shape, act);
  be.sgluGateBackward(dh12, dm, acts.h12);
  const dg = be.empty(acts.g.shape, act);
  be.matmul(dg, dh12, p.w12);
  be.matmul(grads.w12, dh12, acts.g, { transA: true, accumulate: true });
  be.srmsnormBackward(dx, dg, acts.g, acts.r3, true);
  for (const t of [dm, dh12, dg]) be.free(t);
}
