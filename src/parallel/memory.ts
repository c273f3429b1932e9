// Counting the memory a rank really allocates: a Backend that delegates every call and keeps the
// live bytes of the tensors allocated through it (empty, zeros, upload), per category ("tag") and
// in total, with their peaks. The parallel model sets the tag around what it allocates (weights,
// grads, moments, activations, workspace), so the planner's formulas can be checked against it.
import type { AdamWOptions, Backend, DType, MatmulOptions, Tensor } from '../backends/backend.ts';

export type MemTag = 'weights' | 'grads' | 'moments' | 'activations' | 'workspace' | 'other';
export const MEM_TAGS: readonly MemTag[] = ['weights', 'grads', 'moments', 'activations', 'workspace', 'other'];

const bytesOf = (t: Tensor) => t.size * (t.dtype === 'bf16' ? 2 : 4);

/** Set the allocation tag of a tracking backend (no-op on any other); returns the previous tag. */
export function setMemTag(be: Backend, tag: MemTag): MemTag | null {
  if (be instanceof TrackingBackend) { const p = be.tag; be.tag = tag; return p; }
  return null;
}
/** Run f with `tag` set, then restore the previous tag. */
export function withMemTag<R>(be: Backend, tag: MemTag, f: () => R): R {
  const prev = setMemTag(be, tag);
  try { return f(); } finally { if (prev !== null) setMemTag(be, prev); }
}

export interface MemReport {
  /** Live bytes now, per tag and in total. */
  live: Record<MemTag, number> & { total: number };
  /** The highest each tag reached (at different moments). */
  peak: Record<MemTag, number>;
  /** The highest total, and each tag's live bytes at that moment. */
  peakTotal: number;
  atPeak: Record<MemTag, number>;
}

export class TrackingBackend implements Backend {
  tag: MemTag = 'other';
  private readonly owned = new WeakMap<Tensor, { bytes: number; tag: MemTag }>();
  private readonly live = new Map<MemTag, number>(MEM_TAGS.map((t) => [t, 0]));
  private readonly peak = new Map<MemTag, number>(MEM_TAGS.map((t) => [t, 0]));
  private total = 0;
  private peakTotal = 0;
  private atPeak = new Map<MemTag, number>(MEM_TAGS.map((t) => [t, 0]));

  constructor(readonly inner: Backend) {}
  get name(): string { return this.inner.name; }
  get activationDTypes(): readonly DType[] { return this.inner.activationDTypes; }
  describe(): string { return `${this.inner.describe()} (allocation tracking)`; }

  private track<T extends Tensor>(t: T): T {
    const bytes = bytesOf(t), tag = this.tag;
    this.owned.set(t, { bytes, tag });
    const v = this.live.get(tag)! + bytes;
    this.live.set(tag, v);
    if (v > this.peak.get(tag)!) this.peak.set(tag, v);
    this.total += bytes;
    if (this.total > this.peakTotal) { this.peakTotal = this.total; this.atPeak = new Map(this.live); }
    return t;
  }

  report(): MemReport {
    const rec = (m: Map<MemTag, number>) => Object.fromEntries(MEM_TAGS.map((t) => [t, m.get(t)!])) as Record<MemTag, number>;
    return { live: { ...rec(this.live), total: this.total }, peak: rec(this.peak), peakTotal: this.peakTotal, atPeak: rec(this.atPeak) };
  }
  /** Forget the peaks (live bytes stay). */
  resetPeaks(): void {
    for (const t of MEM_TAGS) this.peak.set(t, this.live.get(t)!);
    this.peakTotal = this.total;
    this.atPeak = new Map(this.live);
  }

  empty(shape: readonly number[], dtype?: DType): Tensor { return this.track(this.inner.empty(shape, dtype)); }
  zeros(shape: readonly number[], dtype?: DType): Tensor { return this.track(this.inner.zeros(shape, dtype)); }
  upload(data: Float32Array, shape: readonly number[], dtype?: DType): Tensor { return this.track(this.inner.upload(data, shape, dtype)); }
  uploadBF16(bits: Uint16Array, shape: readonly number[]): Tensor { return this.track(this.inner.uploadBF16(bits, shape)); }
  free(t: Tensor): void {
    const o = this.owned.get(t);
    if (o) {
      this.owned.delete(t);
      this.live.set(o.tag, this.live.get(o.tag)! - o.bytes);
      this.total -= o.bytes;
    }
    this.inner.free(t);
  }

  download(t: Tensor): Float32Array { return this.inner.download(t); }
  rows(t: Tensor, rowStart: number, rowCount: number): Tensor { return this.inner.rows(t, rowStart, rowCount); }
  reshape(t: Tensor, shape: readonly number[]): Tensor { return this.inner.reshape(t, shape); }
  gatherRows(out: Tensor, src: Tensor, rowIdx: Int32Array): void { this.inner.gatherRows(out, src, rowIdx); }
  copy(dst: Tensor, src: Tensor): void { this.inner.copy(dst, src); }
  fill(t: Tensor, value: number): void { this.inner.fill(t, value); }
  matmul(c: Tensor, a: Tensor, b: Tensor, opts?: MatmulOptions): void { this.inner.matmul(c, a, b, opts); }
  addInPlace(y: Tensor, x: Tensor): void { this.inner.addInPlace(y, x); }
  scaleInPlace(x: Tensor, s: number): void { this.inner.scaleInPlace(x, s); }
  sumSquares(x: Tensor | readonly Tensor[]): number { return this.inner.sumSquares(x); }
  embedding(out: Tensor, table: Tensor, ids: Int32Array, scale: number): void { this.inner.embedding(out, table, ids, scale); }
  embeddingBackward(dTable: Tensor, dOut: Tensor, ids: Int32Array, scale: number, paddingIdx: number): void { this.inner.embeddingBackward(dTable, dOut, ids, scale, paddingIdx); }
  srmsnorm(y: Tensor, rstd: Tensor, x: Tensor, eps: number): void { this.inner.srmsnorm(y, rstd, x, eps); }
  srmsnormBackward(dx: Tensor, dy: Tensor, y: Tensor, rstd: Tensor, accumulate: boolean): void { this.inner.srmsnormBackward(dx, dy, y, rstd, accumulate); }
  glaQKV(q: Tensor, k: Tensor, v: Tensor, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null): void {
    this.inner.glaQKV(q, k, v, qkvu, heads, theta, positions, vMask);
  }
  glaQKVBackward(dqkvu: Tensor, dTheta: Tensor | null, dq: Tensor, dk: Tensor, dv: Tensor, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null): void {
    this.inner.glaQKVBackward(dqkvu, dTheta, dq, dk, dv, qkvu, heads, theta, positions, vMask);
  }
  lightningForward(o: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array, state: Tensor | null, blockSize: number, slots?: Int32Array | null): void {
    this.inner.lightningForward(o, q, k, v, decay, state, blockSize, slots);
  }
  lightningBackward(dq: Tensor, dk: Tensor, dv: Tensor, dO: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array, blockSize: number): void {
    this.inner.lightningBackward(dq, dk, dv, dO, q, k, v, decay, blockSize);
  }
  normGate(a: Tensor, rstd: Tensor, o: Tensor, qkvu: Tensor, eps: number): void { this.inner.normGate(a, rstd, o, qkvu, eps); }
  normGateBackward(dO: Tensor, dqkvu: Tensor, dA: Tensor, o: Tensor, rstd: Tensor, qkvu: Tensor): void { this.inner.normGateBackward(dO, dqkvu, dA, o, rstd, qkvu); }
  sgluGate(m: Tensor, h: Tensor): void { this.inner.sgluGate(m, h); }
  sgluGateBackward(dh: Tensor, dm: Tensor, h: Tensor): void { this.inner.sgluGateBackward(dh, dm, h); }
  crossEntropy(logits: Tensor, targets: Int32Array, dLogits: Tensor | null, gradScale: number): { loss: number; count: number } {
    return this.inner.crossEntropy(logits, targets, dLogits, gradScale);
  }
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, opts: AdamWOptions): void { this.inner.adamw(param, grad, m, v, opts); }
}
