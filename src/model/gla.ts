// The token mixer: gated linear attention.
//   h = SRMS(x); [q̃|k̃|ṽ|u] = h·W_qkvuᵀ; q,k = lrpe(silu(·)) (LRPE layers only); v = ṽ (masked)
//   o = Lightning(q, k, v; λ);  a = SRMS(o) ⊙ u  (norm over all heads at once);  x += a·W_outᵀ
import type { Tensor } from '../backends/backend.ts';
import type { LayerParams } from './params.ts';
import { NORM_EPS, cast, type StepContext } from './context.ts';

export interface GlaActs { h: Tensor; r1: Tensor; qkvu: Tensor; q: Tensor; k: Tensor; v: Tensor; o: Tensor; a: Tensor; r2: Tensor }

export interface GlaShape { heads: number; H: number; dh: number; decay: Float64Array }

/**
 * x ← x + GLA(x). `state` ([B, nh, dk, dh] or a pool with `slots`) is read and advanced when given
 * (inference); training passes null (zero initial state). Returns the activations the backward needs.
 */
export function glaForward(ctx: StepContext, p: LayerParams, s: GlaShape, x: Tensor,
                           state: Tensor | null, slots: Int32Array | null = null): GlaActs {
  const { be, B, N, act } = ctx;
  const T = B * N, D = x.shape[x.shape.length - 1]!, dk = p.theta ? 2 * s.dh : s.dh;
  const h = be.empty([T, D], act), r1 = be.empty([T]);
  be.srmsnorm(h, r1, x, NORM_EPS);
  const qkvu = be.empty([T, 4 * s.H], act);
  be.matmul(qkvu, h, p.qkvu, { transB: true });
  const q = be.empty([B, N, s.heads * dk], act), k = be.empty([B, N, s.heads * dk], act), v = be.empty([B, N, s.H], act);
  be.glaQKV(q, k, v, qkvu, s.heads, p.theta, ctx.positions, ctx.vMask);
  const o = be.empty([B, N, s.H], act);
  be.lightningForward(o, q, k, v, s.decay, state, ctx.blockSize, slots);
  const a = be.empty([T, s.H], act), r2 = be.empty([T]);
  be.normGate(a, r2, o, qkvu, NORM_EPS);
  be.matmul(x, a, p.out, { transB: true, accumulate: true });
  return { h, r1, qkvu, q, k, v, o, a, r2 };
}

/**
 * The recurrent step (N = 1, nothing kept for a backward): the same x ← x + GLA(x) with the norm
 * fused into the projection, the output gate into the out projection and, where the backend has
 * glaStep, q/k/v and the state update in one kernel (with glaProjectStep, the projection too). Fewer,
 * larger launches: decode cost is mostly launches. Each call hints the weights of a later one into
 * cache (`prefetch`).
 */
export function glaStep(ctx: StepContext, p: LayerParams, s: GlaShape, x: Tensor, state: Tensor, slots: Int32Array | null,
                        prefetch: [Tensor | null, Tensor | null]): void {
  const { be, B, act } = ctx;
  const qkvu = be.empty([B, 4 * s.H], act);
  const o = be.empty([B, 1, s.H], act);
  if (!be.glaProjectStep?.(o, qkvu, x, p.qkvu, NORM_EPS, s.heads, p.theta, ctx.positions, ctx.vMask, s.decay, state, slots, prefetch[0])) {
    be.matmul(qkvu, x, p.qkvu, { transB: true, normA: NORM_EPS, prefetch: p.out });
    if (be.glaStep) be.glaStep(o, qkvu, s.heads, p.theta, ctx.positions, ctx.vMask, s.decay, state, slots, prefetch[0]);
    else {
      const dk = p.theta ? 2 * s.dh : s.dh;
      const q = be.empty([B, 1, s.heads * dk], act), k = be.empty([B, 1, s.heads * dk], act), v = be.empty([B, 1, s.H], act);
      be.glaQKV(q, k, v, qkvu, s.heads, p.theta, ctx.positions, ctx.vMask);
      be.lightningForward(o, q, k, v, s.decay, state, ctx.blockSize, slots);
      for (const t of [q, k, v]) be.free(t);
    }
  }
  be.matmul(x, o, p.out, { transB: true, accumulate: true, normGate: { qkvu, eps: NORM_EPS }, prefetch: prefetch[1] });
  be.free(qkvu); be.free(o);
}

/** dx (the residual gradient, in and out) ← dx + ∂GLA/∂x · dx; parameter gradients accumulate into g. */
export function glaBackward(ctx: StepContext, p: LayerParams, g: LayerParams, s: GlaShape, acts: GlaActs, dx: Tensor): void {
  const { be, B, N, act } = ctx;
  const T = B * N;
  // x += a·W_outᵀ (dx rounded once when activations are bf16)
  const dxa = cast(be, dx, act);
  const da = be.empty([T, s.H], act);
  be.matmul(da, dxa, p.out);
  be.matmul(g.out, dxa, acts.a, { transA: true, accumulate: true });
  if (dxa !== dx) be.free(dxa);
  // a = SRMS(o) ⊙ u
  const dO = be.empty(acts.o.shape, act), dqkvu = be.empty(acts.qkvu.shape, act);
  be.normGateBackward(dO, dqkvu, da, acts.o, acts.r2, acts.qkvu);
  // o = Lightning(q, k, v)
  const dq = be.empty(acts.q.shape, act), dk = be.empty(acts.k.shape, act), dv = be.empty(acts.v.shape, act);
  be.lightningBackward(dq, dk, dv, dO, acts.q, acts.k, acts.v, s.decay, ctx.blockSize);
  be.glaQKVBackward(dqkvu, g.theta, dq, dk, dv, acts.qkvu, s.heads, p.theta, ctx.positions, ctx.vMask);
  // qkvu = h·W_qkvuᵀ; h = SRMS(x)
  const dh = be.empty(acts.h.shape, act);
  be.matmul(dh, dqkvu, p.qkvu);
  be.matmul(g.qkvu, dqkvu, acts.h, { transA: true, accumulate: true });
  be.srmsnormBackward(dx, dh, acts.h, acts.r1, true);
  for (const t of [da, dO, dqkvu, dq, dk, dv, dh]) be.free(t);
}
