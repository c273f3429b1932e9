// Final SRMSNorm, the output head (the embedding matrix when tied) and the next-token loss.
import type { Backend, DType, Tensor } from '../backends/backend.ts';
import { NORM_EPS } from './context.ts';

export interface HeadActs { y: Tensor; r: Tensor }

/** f32 logits only (inference): the final norm fused into the head's product. */
export function headLogits(be: Backend, x: Tensor, w: Tensor): Tensor {
  const logits = be.empty([x.size / x.shape[x.shape.length - 1]!, w.shape[0]!]);
  be.matmul(logits, x, w, { transB: true, normA: NORM_EPS });
  return logits;
}

/** y = SRMS(x) and logits = y·wᵀ, both stored as `act` (bf16 in mixed-precision training). */
export function headForward(be: Backend, x: Tensor, w: Tensor, act: DType = 'f32'): { logits: Tensor; acts: HeadActs } {
  const [T, D] = [x.size / x.shape[x.shape.length - 1]!, x.shape[x.shape.length - 1]!];
  const y = be.empty([T, D], act), r = be.empty([T]);
  be.srmsnorm(y, r, x, NORM_EPS);
  const logits = be.empty([T, w.shape[0]!], act);
  be.matmul(logits, y, w, { transB: true });
  return { logits, acts: { y, r } };
}

/** From dLogits: dW (+)= dLogitsᵀ·y and dx = SRMS backward (overwritten). */
export function headBackward(be: Backend, dx: Tensor, dW: Tensor, w: Tensor, dLogits: Tensor, acts: HeadActs): void {
  be.matmul(dW, dLogits, acts.y, { transA: true, accumulate: true });
  const dy = be.empty(acts.y.shape, acts.y.dtype);
  be.matmul(dy, dLogits, w);
  be.srmsnormBackward(dx, dy, acts.y, acts.r, false);
  be.free(dy);
}

/**
 * The reference's loss: for each sequence, logits at t = 0..N−2 against ids at t+1, mean over all
 * counted positions (labels −100 ignored). Returns per-row targets for crossEntropy (−100 on each
 * sequence's last row).
 */
export function shiftedTargets(labels: Int32Array, B: number, N: number): Int32Array {
  const t = new Int32Array(B * N).fill(-100);
  for (let b = 0; b < B; b++) for (let i = 0; i + 1 < N; i++) t[b * N + i] = labels[b * N + i + 1]!;
  return t;
}
