// Host-side kernels that tensor parallelism needs and the Backend interface lacks: each is a
// statistic over a row that is split across TP ranks, so it is computed in two halves around a
// tiny all-reduce of per-row float64 values. They work on host tensors (reference and cpu
// backends) and follow the reference backend's arithmetic (float64 accumulation, one rounding to
// f32 per output), so a split run equals the unsplit one up to the order of a few float64 sums.
//
// A device backend needs the same three as kernels (see the report in DESIGN/README):
//   rowSumSquares(out[T], x[T, C]) · normGateWithRstd(a, o, qkvu, rstd) · its backward with a
//   given row dot · vocab-parallel cross-entropy in two passes (row max / row sum-exp + target).
// Until then, tensors of other backends (CUDA) take a correct but slow path: inputs downloaded,
// the host version run, outputs uploaded (exact all the same).
import type { Backend, Tensor } from '../backends/backend.ts';
import { dims2 } from '../backends/backend.ts';
import { f32, HostTensor } from '../backends/host.ts';
import { ShapeError } from '../errors.ts';
import type { Communicator } from './comm.ts';

/**
 * a = SRMS_full(o) ⊙ u for a rank holding H/T of the H channels of every row: the row's sum of
 * squares is all-reduced so that the norm runs over the full width H (spec §2), exactly as the
 * unsplit model. u = columns [3·Hl, 4·Hl) of the rank's qkvu; rstd[t] = 1/sqrt(Σ_H o²/H + eps).
 */
function normGateFullWidthHost(tp: Communicator, a: Tensor, rstd: Tensor, o: Tensor, qkvu: Tensor, Hfull: number, eps: number): void {
  const A = f32(a), R = f32(rstd), O = f32(o), X = f32(qkvu);
  const [T, Hl] = dims2(o);
  if (X.length !== T * 4 * Hl || A.length !== T * Hl || R.length !== T) throw new ShapeError(`normGateFullWidth: o [${T}, ${Hl}] needs qkvu [${T}, ${4 * Hl}], a [${T}, ${Hl}], rstd [${T}]`);
  const ss = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let c = 0; c < Hl; c++) s += O[t * Hl + c]! ** 2;
    ss[t] = s;
  }
  tp.allReduceHost(ss);
  for (let t = 0; t < T; t++) {
    const rs = 1 / Math.sqrt(ss[t]! / Hfull + eps);
    R[t] = rs;
    for (let c = 0; c < Hl; c++) A[t * Hl + c] = O[t * Hl + c]! * rs * X[t * 4 * Hl + 3 * Hl + c]!;
  }
}

/**
 * Backward of normGateFullWidth: dO (overwritten) and the u columns of dqkvu. The row dot
 * Σ_H dA·u·y is all-reduced (it runs over the full width, like the norm).
 */
function normGateFullWidthBackwardHost(tp: Communicator, dO: Tensor, dqkvu: Tensor, dA: Tensor, o: Tensor, rstd: Tensor, qkvu: Tensor, Hfull: number): void {
  const DO = f32(dO), G = f32(dqkvu), DA = f32(dA), O = f32(o), R = f32(rstd), X = f32(qkvu);
  const [T, Hl] = dims2(o);
  const dot = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    const rs = R[t]!;
    let s = 0;
    for (let c = 0; c < Hl; c++) {
      const y = O[t * Hl + c]! * rs, u = X[t * 4 * Hl + 3 * Hl + c]!;
      G[t * 4 * Hl + 3 * Hl + c] = DA[t * Hl + c]! * y;
      s += DA[t * Hl + c]! * u * y;
    }
    dot[t] = s;
  }
  tp.allReduceHost(dot);
  for (let t = 0; t < T; t++) {
    const rs = R[t]!, d = dot[t]! / Hfull;
    for (let c = 0; c < Hl; c++) {
      const y = O[t * Hl + c]! * rs, u = X[t * 4 * Hl + 3 * Hl + c]!;
      DO[t * Hl + c] = rs * (DA[t * Hl + c]! * u - y * d);
    }
  }
}

/**
 * Softmax cross-entropy over a vocabulary split across TP ranks: this rank holds logits columns
 * [vocabStart, vocabStart + Vl) of every row. Pass 1 all-reduces the row maxima; pass 2 the row
 * sums of exp(l − max) together with the target logit (contributed by its owner only). Returns the
 * summed loss over counted rows (the same on every rank) and their count; dLogits (may alias
 * logits) receives (softmax − onehot)·gradScale for this rank's columns, 0 on ignored rows.
 */
function vocabParallelCrossEntropyHost(tp: Communicator, logits: Tensor, vocabStart: number, targets: Int32Array, dLogits: Tensor | null, gradScale: number, vocabSize: number): { loss: number; count: number } {
  const L = f32(logits), D = dLogits ? f32(dLogits) : null;
  const [T, Vl] = dims2(logits);
  if (targets.length !== T) throw new ShapeError(`vocabParallelCrossEntropy: ${targets.length} targets for ${T} rows`);
  const mx = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    let m = -Infinity;
    if (targets[t] !== -100) for (let i = 0; i < Vl; i++) m = Math.max(m, L[t * Vl + i]!);
    mx[t] = m;
  }
  tp.allReduceHost(mx, 'max');
  const st = new Float64Array(2 * T); // [Σ exp(l − max), target logit] per row
  for (let t = 0; t < T; t++) {
    const y = targets[t]!;
    if (y === -100) continue;
    if (y < 0 || y >= vocabSize) throw new ShapeError(`crossEntropy: target ${y} outside [0, ${vocabSize})`);
    let se = 0;
    for (let i = 0; i < Vl; i++) se += Math.exp(L[t * Vl + i]! - mx[t]!);
    st[2 * t] = se;
    if (y >= vocabStart && y < vocabStart + Vl) st[2 * t + 1] = L[t * Vl + y - vocabStart]!;
  }
  tp.allReduceHost(st);
  let loss = 0, count = 0;
  for (let t = 0; t < T; t++) {
    const y = targets[t]!;
    if (y === -100) { if (D) D.fill(0, t * Vl, (t + 1) * Vl); continue; }
    const lse = mx[t]! + Math.log(st[2 * t]!);
    loss += lse - st[2 * t + 1]!;
    count++;
    if (D) for (let i = 0; i < Vl; i++) D[t * Vl + i] = (Math.exp(L[t * Vl + i]! - lse) - (i + vocabStart === y ? 1 : 0)) * gradScale;
  }
  return { loss, count };
}

// ---- the exported helpers: host tensors directly, other backends through host copies ------------

const isHost = (...ts: Tensor[]) => ts.every((t) => t instanceof HostTensor);
const toHost = (be: Backend, t: Tensor) => new HostTensor(t.shape, 'f32', be.download(t));
const back = (be: Backend, dst: Tensor, h: HostTensor) => { const u = be.upload(h.data as Float32Array, dst.shape); be.copy(dst, u); be.free(u); };

export function normGateFullWidth(be: Backend, tp: Communicator, a: Tensor, rstd: Tensor, o: Tensor, qkvu: Tensor, Hfull: number, eps: number): void {
  if (isHost(a, rstd, o, qkvu)) return normGateFullWidthHost(tp, a, rstd, o, qkvu, Hfull, eps);
  const A = toHost(be, a), R = toHost(be, rstd);
  normGateFullWidthHost(tp, A, R, toHost(be, o), toHost(be, qkvu), Hfull, eps);
  back(be, a, A); back(be, rstd, R);
}

export function normGateFullWidthBackward(be: Backend, tp: Communicator, dO: Tensor, dqkvu: Tensor, dA: Tensor, o: Tensor, rstd: Tensor, qkvu: Tensor, Hfull: number): void {
  if (isHost(dO, dqkvu, dA, o, rstd, qkvu)) return normGateFullWidthBackwardHost(tp, dO, dqkvu, dA, o, rstd, qkvu, Hfull);
  const DO = toHost(be, dO), G = toHost(be, dqkvu);
  normGateFullWidthBackwardHost(tp, DO, G, toHost(be, dA), toHost(be, o), toHost(be, rstd), toHost(be, qkvu), Hfull);
  back(be, dO, DO); back(be, dqkvu, G);
}

export function vocabParallelCrossEntropy(be: Backend, tp: Communicator, logits: Tensor, vocabStart: number, targets: Int32Array, dLogits: Tensor | null, gradScale: number, vocabSize: number): { loss: number; count: number } {
  if (isHost(logits) && (!dLogits || isHost(dLogits))) return vocabParallelCrossEntropyHost(tp, logits, vocabStart, targets, dLogits, gradScale, vocabSize);
  const L = toHost(be, logits);
  const r = vocabParallelCrossEntropyHost(tp, L, vocabStart, targets, dLogits ? L : null, gradScale, vocabSize);
  if (dLogits) back(be, dLogits, L);
  return r;
}
