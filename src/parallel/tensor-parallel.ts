// Tensor parallelism (Megatron-style) for the TNL model, over T ranks, on the existing backend ops.
//
// What rank r of T holds (every weight is split; the norms have none):
//   qkvu_proj [4H, D]  → for each of the blocks q|k|v|u, the rows of heads [r·nh/T, (r+1)·nh/T):
//                         a local [4H/T, D] whose columns after the GEMM are q|k|v|u of nh/T whole heads
//   out_proj  [D, H]   → the matching columns [D, H/T]
//   lrpe θ  [nh,1,dh]  → the rows of its heads [nh/T, dh];  decay: the slopes of its heads, sliced
//                         from the full list (not recomputed for nh/T heads: the non-power-of-two
//                         order of spec §3 stays right)
//   l1, l2    [G, D]   → row blocks [G/T, D] each, fused as the local w12 = [l1_r; l2_r]
//   l3        [D, G]   → columns [D, G/T]
//   embedding / head [V, D] → vocabulary rows [V/T, D]
// Communication per layer (activations are replicated across the TP group; weights are split):
//   GLA  forward: all-reduce of x·W_out partial sums [tokens, D], plus the tiny all-reduce of each
//                 row's Σo² so that the attention-output SRMSNorm runs over the full width H;
//        backward: all-reduce of dh [tokens, D] (before the token-norm backward), plus the tiny
//                 row dot of the norm backward.
//   SGLU forward: all-reduce of m·W3 partial sums; backward: all-reduce of dg.
//   Embedding: masked gather + all-reduce; head: vocab-parallel logits and cross-entropy (global
//   max and sum-exp by all-reduce, the target logit from its owner), all-reduce of dy.
import type { Backend, DType, Tensor } from '../backends/backend.ts';
import type { ModelConfig } from '../config/index.ts';
import { dims, layerDecay } from '../config/index.ts';
import { ShapeError, UsageError } from '../errors.ts';
import type { LayerParams } from '../model/params.ts';
import { NORM_EPS, type StepContext } from '../model/context.ts';
import type { Communicator } from './comm.ts';
import { normGateFullWidth, normGateFullWidthBackward, vocabParallelCrossEntropy } from './host-ops.ts';

// ---- geometry ------------------------------------------------------------------------------------

export interface TpDims {
  T: number; r: number;
  V: number; D: number; L: number;
  /** Full sizes. */
  nh: number; H: number; dh: number; G: number;
  /** This rank's sizes: heads, hidden channels, glu channels, vocabulary rows and its first row. */
  nhL: number; HL: number; GL: number; VL: number; vocabStart: number;
}

/** Check that T divides what it must split; say which size does not. */
export function checkTp(c: ModelConfig, T: number): void {
  const d = dims(c);
  if (!Number.isInteger(T) || T < 1) throw new UsageError(`tensor-parallel size must be an integer ≥ 1, got ${T}`);
  const bad: string[] = [];
  if (d.nh % T) bad.push(`decoder_attention_heads ${d.nh}`);
  if (d.G % T) bad.push(`glu_dim ${d.G}`);
  if (d.V % T) bad.push(`vocab_size ${d.V}`);
  if (bad.length) throw new UsageError(`tensor parallelism over ${T} ranks needs ${bad.join(', ')} divisible by ${T}`);
}

export function tpDims(c: ModelConfig, T: number, r: number): TpDims {
  checkTp(c, T);
  const d = dims(c);
  return {
    T, r, V: d.V, D: d.D, L: d.L, nh: d.nh, H: d.H, dh: d.dh, G: d.G,
    nhL: d.nh / T, HL: d.H / T, GL: d.G / T, VL: d.V / T, vocabStart: r * (d.V / T),
  };
}

// ---- which piece of which reference tensor a rank holds ----------------------------------------

export type TensorKey = 'embed' | 'head' | 'qkvu' | 'out' | 'theta' | 'w12' | 'w3';
export type TpSplit = 'rows' | 'cols' | 'qkvu';

/** One reference tensor and the place of its TP piece in a rank's local tensors. */
export interface TpEntry {
  name: string;
  /** The reference's shape; 2-D view: rows = shape[0], cols = the rest. */
  shape: number[];
  unit: string;
  key: TensorKey;
  split: TpSplit;
  /** Rows of the local tensor that this piece fills (the local w12 holds l1's then l2's). */
  localRowStart: number;
  localRows: number;
  /** Weight decay applies (matrices; not θ). */
  matrix: boolean;
}

export const layerUnit = (l: number) => `layer.${l}`;

export function tpEntries(c: ModelConfig, T: number): TpEntry[] {
  const d = tpDims(c, T, 0);
  const e: TpEntry[] = [{ name: 'model.embed_tokens.weight', shape: [d.V, d.D], unit: 'embed', key: 'embed', split: 'rows', localRowStart: 0, localRows: d.VL, matrix: true }];
  for (let l = 0; l < d.L; l++) {
    const pre = `model.layers.${l}.`, unit = layerUnit(l);
    e.push({ name: pre + 'token_mixer.qkvu_proj.weight', shape: [4 * d.H, d.D], unit, key: 'qkvu', split: 'qkvu', localRowStart: 0, localRows: 4 * d.HL, matrix: true });
    e.push({ name: pre + 'token_mixer.out_proj.weight', shape: [d.D, d.H], unit, key: 'out', split: 'cols', localRowStart: 0, localRows: d.D, matrix: true });
    if (c.linear_use_lrpe_list[l]) e.push({ name: pre + 'token_mixer.lrpe.theta', shape: [d.nh, 1, d.dh], unit, key: 'theta', split: 'rows', localRowStart: 0, localRows: d.nhL, matrix: false });
    e.push({ name: pre + 'channel_mixer.l1.weight', shape: [d.G, d.D], unit, key: 'w12', split: 'rows', localRowStart: 0, localRows: d.GL, matrix: true });
    e.push({ name: pre + 'channel_mixer.l2.weight', shape: [d.G, d.D], unit, key: 'w12', split: 'rows', localRowStart: d.GL, localRows: d.GL, matrix: true });
    e.push({ name: pre + 'channel_mixer.l3.weight', shape: [d.D, d.G], unit, key: 'w3', split: 'cols', localRowStart: 0, localRows: d.D, matrix: true });
  }
  if (!c.tie_word_embeddings) e.push({ name: 'lm_head.weight', shape: [d.V, d.D], unit: 'head', key: 'head', split: 'rows', localRowStart: 0, localRows: d.VL, matrix: true });
  return e;
}

const cols2 = (shape: readonly number[]) => shape.slice(1).reduce((a, b) => a * b, 1);

/** Rank r's piece of a full reference tensor, in the local layout (localRows × local cols). */
export function extractTp(e: TpEntry, full: Float32Array | Uint16Array, r: number, T: number): Float32Array | Uint16Array {
  const R = e.shape[0]!, C = cols2(e.shape);
  if (full.length !== R * C) throw new ShapeError(`${e.name}: ${full.length} values for shape [${e.shape.join(', ')}]`);
  const out = new (full.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(e.localRows * (e.split === 'cols' ? C / T : C));
  forEachPiece(e, r, T, (src, dst, n) => out.set(full.subarray(src, src + n), dst));
  return out;
}

/** Write rank r's local piece back into the full reference tensor. */
export function insertTp(e: TpEntry, full: Float32Array | Uint16Array, piece: Float32Array | Uint16Array, r: number, T: number): void {
  forEachPiece(e, r, T, (src, dst, n) => full.set(piece.subarray(dst, dst + n), src));
}

/** Calls f(offset in the full tensor, offset in the piece, length) for each contiguous run. */
function forEachPiece(e: TpEntry, r: number, T: number, f: (src: number, dst: number, n: number) => void): void {
  const R = e.shape[0]!, C = cols2(e.shape);
  if (e.split === 'rows') {
    const n = R / T;
    f(r * n * C, 0, n * C);
  } else if (e.split === 'cols') {
    const n = C / T;
    for (let i = 0; i < R; i++) f(i * C + r * n, i * n, n);
  } else {
    const H = R / 4, n = H / T;
    for (let b = 0; b < 4; b++) f((b * H + r * n) * C, b * n * C, n * C);
  }
}

// ---- a rank's local tensors, grouped in units (what FSDP flattens and shards) ----------------------

export interface UnitTensor { key: TensorKey; shape: number[]; offset: number; size: number; matrix: boolean }
export interface UnitLayout { name: string; tensors: UnitTensor[]; length: number }

/** The TP-local tensors of every unit, in order: embed, layer.0 … layer.L−1, head (untied only). */
export function unitLayouts(c: ModelConfig, T: number): UnitLayout[] {
  const d = tpDims(c, T, 0);
  const mk = (name: string, ts: [TensorKey, number[], boolean][]): UnitLayout => {
    let off = 0;
    const tensors = ts.map(([key, shape, matrix]) => {
      const size = shape.reduce((a, b) => a * b, 1);
      const u = { key, shape, offset: off, size, matrix };
      off += size;
      return u;
    });
    return { name, tensors, length: off };
  };
  const units = [mk('embed', [['embed', [d.VL, d.D], true]])];
  for (let l = 0; l < d.L; l++) {
    const ts: [TensorKey, number[], boolean][] = [['qkvu', [4 * d.HL, d.D], true], ['out', [d.D, d.HL], true]];
    if (c.linear_use_lrpe_list[l]) ts.push(['theta', [d.nhL, d.dh], false]);
    ts.push(['w12', [2 * d.GL, d.D], true], ['w3', [d.D, d.GL], true]);
    units.push(mk(layerUnit(l), ts));
  }
  if (!c.tie_word_embeddings) units.push(mk('head', [['head', [d.VL, d.D], true]]));
  return units;
}

/** Views of a unit's tensors on one flat buffer ([n, 1] or any tensor of ≥ layout.length elements). */
export function unitViews(be: Backend, flat: Tensor, u: UnitLayout): Map<TensorKey, Tensor> {
  const col = flat.shape.length === 2 && flat.shape[1] === 1 ? flat : be.reshape(flat, [flat.size, 1]);
  const m = new Map<TensorKey, Tensor>();
  for (const t of u.tensors) m.set(t.key, be.reshape(be.rows(col, t.offset, t.size), t.shape));
  return m;
}

export function asLayerParams(m: Map<TensorKey, Tensor>): LayerParams {
  return { qkvu: m.get('qkvu')!, out: m.get('out')!, theta: m.get('theta') ?? null, w12: m.get('w12')!, w3: m.get('w3')! };
}

// ---- the layers --------------------------------------------------------------------------------

export interface TpContext extends StepContext { tp: Communicator }

export interface TpGlaShape { heads: number; H: number; Hfull: number; dh: number; decay: Float64Array }

/** The rank's heads and decays for every layer. */
export function tpGlaShapes(c: ModelConfig, T: number, r: number): TpGlaShape[] {
  const d = tpDims(c, T, r);
  return c.linear_use_lrpe_list.map((_, l) => ({
    heads: d.nhL, H: d.HL, Hfull: d.H, dh: d.dh,
    decay: layerDecay(c, l).slice(r * d.nhL, (r + 1) * d.nhL),
  }));
}

export interface TpGlaActs { h: Tensor; r1: Tensor; qkvu: Tensor; q: Tensor; k: Tensor; v: Tensor; o: Tensor; a: Tensor; r2: Tensor }
export interface TpSgluActs { g: Tensor; r3: Tensor; h12: Tensor; m: Tensor }

function freeAll(be: Backend, ...ts: Tensor[]): void {
  for (const t of ts) be.free(t);
}

/** x ← x + GLA(x) with this rank's heads; the out projection's partial sums are all-reduced. */
export function tpGlaForward(ctx: TpContext, p: LayerParams, s: TpGlaShape, x: Tensor): TpGlaActs {
  const { be, B, N, tp } = ctx;
  const T = B * N, D = x.shape[x.shape.length - 1]!, dk = p.theta ? 2 * s.dh : s.dh;
  const h = be.empty([T, D]), r1 = be.empty([T]);
  be.srmsnorm(h, r1, x, NORM_EPS);
  const qkvu = be.empty([T, 4 * s.H]);
  be.matmul(qkvu, h, p.qkvu, { transB: true });
  const q = be.empty([B, N, s.heads * dk]), k = be.empty([B, N, s.heads * dk]), v = be.empty([B, N, s.H]);
  be.glaQKV(q, k, v, qkvu, s.heads, p.theta, ctx.positions, ctx.vMask);
  const o = be.empty([B, N, s.H]);
  be.lightningForward(o, q, k, v, s.decay, null, ctx.blockSize);
  const a = be.empty([T, s.H]), r2 = be.empty([T]);
  normGateFullWidth(be, tp, a, r2, o, qkvu, s.Hfull, NORM_EPS);
  const y = be.empty([T, D]);
  be.matmul(y, a, p.out, { transB: true });
  tp.allReduce(y);
  be.addInPlace(x, y);
  be.free(y);
  return { h, r1, qkvu, q, k, v, o, a, r2 };
}

/** dx ← dx + ∂GLA/∂x·dx; parameter gradients accumulate into g. Frees the activations. */
export function tpGlaBackward(ctx: TpContext, p: LayerParams, g: LayerParams, s: TpGlaShape, acts: TpGlaActs, dx: Tensor): void {
  const { be, B, N, tp } = ctx;
  const T = B * N;
  const da = be.empty([T, s.H]);
  be.matmul(da, dx, p.out);
  be.matmul(g.out, dx, acts.a, { transA: true, accumulate: true });
  const dO = be.empty(acts.o.shape), dqkvu = be.empty(acts.qkvu.shape);
  normGateFullWidthBackward(be, tp, dO, dqkvu, da, acts.o, acts.r2, acts.qkvu, s.Hfull);
  freeAll(be, da, acts.a, acts.r2);
  const dq = be.empty(acts.q.shape), dk = be.empty(acts.k.shape), dv = be.empty(acts.v.shape);
  be.lightningBackward(dq, dk, dv, dO, acts.q, acts.k, acts.v, s.decay, ctx.blockSize);
  freeAll(be, dO, acts.o);
  be.glaQKVBackward(dqkvu, g.theta, dq, dk, dv, acts.qkvu, s.heads, p.theta, ctx.positions, ctx.vMask);
  freeAll(be, dq, dk, dv, acts.q, acts.k, acts.v, acts.qkvu);
  const dh = be.empty(acts.h.shape);
  be.matmul(dh, dqkvu, p.qkvu);
  tp.allReduce(dh);
  be.matmul(g.qkvu, dqkvu, acts.h, { transA: true, accumulate: true });
  be.srmsnormBackward(dx, dh, acts.h, acts.r1, true);
  freeAll(be, dh, dqkvu, acts.h, acts.r1);
}

/** x ← x + SGLU(x) with this rank's G/T channels; l3's partial sums are all-reduced. */
export function tpSgluForward(ctx: TpContext, p: LayerParams, x: Tensor): TpSgluActs {
  const { be, B, N, tp } = ctx;
  const T = B * N, D = x.shape[x.shape.length - 1]!, G2 = p.w12.shape[0]!;
  const g = be.empty([T, D]), r3 = be.empty([T]);
  be.srmsnorm(g, r3, x, NORM_EPS);
  const h12 = be.empty([T, G2]);
  be.matmul(h12, g, p.w12, { transB: true });
  const m = be.empty([T, G2 / 2]);
  be.sgluGate(m, h12);
  const y = be.empty([T, D]);
  be.matmul(y, m, p.w3, { transB: true });
  tp.allReduce(y);
  be.addInPlace(x, y);
  be.free(y);
  return { g, r3, h12, m };
}

export function tpSgluBackward(ctx: TpContext, p: LayerParams, grads: LayerParams, acts: TpSgluActs, dx: Tensor): void {
  const { be, tp } = ctx;
  const dm = be.empty(acts.m.shape);
  be.matmul(dm, dx, p.w3);
  be.matmul(grads.w3, dx, acts.m, { transA: true, accumulate: true });
  const dh12 = be.empty(acts.h12.shape);
  be.sgluGateBackward(dh12, dm, acts.h12);
  freeAll(be, dm, acts.m, acts.h12);
  const dg = be.empty(acts.g.shape);
  be.matmul(dg, dh12, p.w12);
  tp.allReduce(dg);
  be.matmul(grads.w12, dh12, acts.g, { transA: true, accumulate: true });
  be.srmsnormBackward(dx, dg, acts.g, acts.r3, true);
  freeAll(be, dg, dh12, acts.g, acts.r3);
}

/** x = scale·E[ids] with E split by vocabulary: each rank gathers the rows it owns, zeros the rest, all-reduce. */
export function tpEmbeddingForward(ctx: TpContext, x: Tensor, table: Tensor, ids: Int32Array, scale: number, vocabStart: number): void {
  const { be, tp } = ctx;
  const VL = table.shape[0]!;
  const local = new Int32Array(ids.length);
  const foreign: number[] = [];
  ids.forEach((id, t) => {
    if (id >= vocabStart && id < vocabStart + VL) local[t] = id - vocabStart;
    else foreign.push(t);
  });
  be.embedding(x, table, local, scale);
  for (const t of foreign) be.fill(be.rows(x, t, 1), 0);
  tp.allReduce(x);
}

/** dTable[own rows] += scale·dx (dx is the same on every TP rank); the padding row gets nothing. */
export function tpEmbeddingBackward(ctx: TpContext, dTable: Tensor, dx: Tensor, ids: Int32Array, scale: number, vocabStart: number, paddingIdx: number): void {
  const VL = dTable.shape[0]!;
  const local = Int32Array.from(ids, (id) => (id !== paddingIdx && id >= vocabStart && id < vocabStart + VL ? id - vocabStart : -1));
  ctx.be.embeddingBackward(dTable, dx, local, scale, -1);
}

export interface TpHeadActs { y: Tensor; r: Tensor }

/** Final norm (replicated) and this rank's vocabulary columns of the logits [tokens, V/T]. */
export function tpHeadForward(ctx: TpContext, x: Tensor, w: Tensor): { logits: Tensor; acts: TpHeadActs } {
  const { be } = ctx;
  const D = x.shape[x.shape.length - 1]!, T = x.size / D;
  const y = be.empty([T, D]), r = be.empty([T]);
  be.srmsnorm(y, r, x, NORM_EPS);
  const logits = be.empty([T, w.shape[0]!]);
  be.matmul(logits, y, w, { transB: true });
  return { logits, acts: { y, r } };
}

/** dW (+)= dLogitsᵀ·y; dx = SRMS backward of the all-reduced dy (overwritten). Frees the activations. */
export function tpHeadBackward(ctx: TpContext, dx: Tensor, dW: Tensor, w: Tensor, dLogits: Tensor, acts: TpHeadActs): void {
  const { be, tp } = ctx;
  be.matmul(dW, dLogits, acts.y, { transA: true, accumulate: true });
  const dy = be.empty(acts.y.shape);
  be.matmul(dy, dLogits, w);
  tp.allReduce(dy);
  be.srmsnormBackward(dx, dy, acts.y, acts.r, false);
  freeAll(be, dy, acts.y, acts.r);
}

export { vocabParallelCrossEntropy };

/** The full logits [tokens, V] on every rank from the ranks' vocabulary columns (host array). */
export function gatherVocab(be: Backend, tp: Communicator, local: Tensor): Float32Array {
  const [rows, VL] = [local.size / local.shape[local.shape.length - 1]!, local.shape[local.shape.length - 1]!];
  const P = tp.size;
  if (P === 1) return be.download(local);
  const all = be.empty([P * rows, VL]);
  tp.allGather(all, local);
  const g = be.download(all);
  be.free(all);
  const out = new Float32Array(rows * VL * P);
  for (let k = 0; k < P; k++)
    for (let t = 0; t < rows; t++) out.set(g.subarray((k * rows + t) * VL, (k * rows + t + 1) * VL), t * VL * P + k * VL);
  return out;
}

/** Zeroed local tensors of every unit (for models that keep the TP pieces unsharded). */
export function allocUnits(be: Backend, layouts: UnitLayout[], dtype: DType = 'f32'): Map<string, Tensor> {
  return new Map(layouts.map((u) => [u.name, be.zeros([u.length, 1], dtype)]));
}
