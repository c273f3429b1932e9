// The native CPU backend: host tensors (typed arrays, as the reference backend) and every kernel
// delegated zero-copy to the C++ addon (packed-panel GEMM with runtime ISA dispatch, fused
// elementwise kernels, block-wise Lightning Attention, a persistent thread pool). Shapes are
// checked here, with the op and the shapes named, before any pointer reaches native code.
import type { AdamWOptions, Backend, DType, MatmulOptions, Tensor } from '../backend.ts';
import { dims2 } from '../backend.ts';
import { HostMemory, HostTensor, f32, host } from '../host.ts';
import { attnDims } from '../reference/index.ts';
import { ShapeError } from '../../errors.ts';
import { matmulWithPrologue } from '../prologue.ts';
import { loadNative, nativeLoadError, type NativeAddon } from './native.ts';

export { loadNative, nativeLoadError };
export type { NativeAddon };

function need(cond: boolean, what: string): void {
  if (!cond) throw new ShapeError(what);
}
const shp = (t: Tensor) => `[${t.shape.join(', ')}]`;
const u16 = (t: HostTensor) => t.data as Uint16Array;

export interface CpuBackendOptions {
  /** Worker threads including the caller (0 or absent: one per core, or TNL_THREADS). */
  threads?: number;
}

export class CpuBackend extends HostMemory implements Backend {
  readonly name = 'cpu';
  readonly activationDTypes: readonly DType[] = ['f32'];
  private readonly n: NativeAddon;

  constructor(opts: CpuBackendOptions = {}) {
    super();
    const n = loadNative();
    if (!n) throw new Error(`native CPU kernels unavailable (${nativeLoadError()})`);
    this.n = n;
    if (opts.threads !== undefined) {
      if (!Number.isInteger(opts.threads) || opts.threads < 0) throw new RangeError(`threads must be an integer ≥ 0, got ${opts.threads}`);
      n.setNumThreads(opts.threads);
    }
  }

  describe(): string {
    const t = this.n.numThreads();
    return `cpu: native (${this.n.gemmIsa()}, ${t} thread${t === 1 ? '' : 's'})`;
  }
  get threads(): number {
    return this.n.numThreads();
  }

  // ---- dense ----------------------------------------------------------------------------------
  matmul(c: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions = {}): void {
    if (matmulWithPrologue(this, c, a, b, opts)) return;
    const C = f32(c), A = f32(a), Bh = host(b);
    const [ar, ac] = dims2(a), [br, bc] = dims2(b), [M, N] = dims2(c);
    const ta = !!opts.transA, tb = !!opts.transB;
    const K = ta ? ar : ac;
    const desc = () => `matmul: C ${shp(c)} = ${ta ? 'Aᵀ' : 'A'} ${shp(a)} · ${tb ? 'Bᵀ' : 'B'} ${shp(b)}`;
    need((ta ? ac : ar) === M, `${desc()}: A gives ${ta ? ac : ar} rows, C has ${M}`);
    need((tb ? bc : br) === K, `${desc()}: inner dims ${K} vs ${tb ? bc : br}`);
    need((tb ? br : bc) === N, `${desc()}: B gives ${tb ? br : bc} cols, C has ${N}`);
    const acc = !!opts.accumulate;
    if (Bh.dtype === 'bf16') this.n.gemmBf16(ta, tb, M, N, K, A, ac, u16(Bh), bc, C, N, acc);
    else this.n.sgemm(ta, tb, M, N, K, A, ac, Bh.data as Float32Array, bc, C, N, acc);
  }

  addInPlace(y: Tensor, x: Tensor): void {
    const Y = f32(y), X = f32(x);
    need(Y.length === X.length, `addInPlace: sizes differ, y ${shp(y)} vs x ${shp(x)}`);
    this.n.addInplace(Y, X, Y.length);
  }
  scaleInPlace(x: Tensor, s: number): void {
    const X = f32(x);
    this.n.scaleInplace(X, X.length, s);
  }
  sumSquares(x: Tensor | readonly Tensor[]): number {
    if (Array.isArray(x)) return x.reduce((s: number, t: Tensor) => s + this.sumSquares(t), 0);
    const X = host(x as Tensor);
    return X.dtype === 'bf16' ? this.n.sumSquaresBf16(u16(X), X.size) : this.n.sumSquaresF32(X.data as Float32Array, X.size);
  }

  // ---- embedding ------------------------------------------------------------------------------
  embedding(out: Tensor, table: Tensor, ids: Int32Array, scale: number): void {
    const O = f32(out), E = host(table);
    const [V, D] = dims2(table);
    need(O.length === ids.length * D, `embedding: output ${shp(out)} must be [${ids.length}, ${D}] for ${ids.length} ids`);
    checkIds('embedding', ids, V, null);
    if (E.dtype === 'bf16') this.n.embeddingBf16(O, u16(E), ids, ids.length, D, scale);
    else this.n.embeddingF32(O, E.data as Float32Array, ids, ids.length, D, scale);
  }
  embeddingBackward(dTable: Tensor, dOut: Tensor, ids: Int32Array, scale: number, paddingIdx: number): void {
    const G = f32(dTable), dO = f32(dOut);
    const [V, D] = dims2(dTable);
    need(dO.length === ids.length * D, `embeddingBackward: dOut ${shp(dOut)} must be [${ids.length}, ${D}]`);
    checkIds('embeddingBackward', ids, V, paddingIdx);
    this.n.embeddingBackward(G, dO, ids, ids.length, D, scale, paddingIdx);
  }

  // ---- SimpleRMSNorm --------------------------------------------------------------------------
  srmsnorm(y: Tensor, rstd: Tensor, x: Tensor, eps: number): void {
    const Y = f32(y), R = f32(rstd), X = f32(x);
    const [rows, D] = dims2(x);
    need(Y.length === X.length && R.length === rows, `srmsnorm: x ${shp(x)} needs y of the same size and rstd of ${rows}, got y ${shp(y)}, rstd ${shp(rstd)}`);
    this.n.srmsnorm(Y, R, X, rows, D, eps);
  }
  srmsnormBackward(dx: Tensor, dy: Tensor, y: Tensor, rstd: Tensor, accumulate: boolean): void {
    const DX = f32(dx), DY = f32(dy), Y = f32(y), R = f32(rstd);
    const [rows, D] = dims2(y);
    need(DX.length === Y.length && DY.length === Y.length && R.length === rows,
      `srmsnormBackward: y ${shp(y)} needs dx, dy of the same size and rstd of ${rows}, got dx ${shp(dx)}, dy ${shp(dy)}, rstd ${shp(rstd)}`);
    this.n.srmsnormBackward(DX, DY, Y, R, rows, D, accumulate);
  }

  // ---- gated linear attention pieces ---------------------------------------------------------
  private qkvDims(op: string, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null) {
    const [T, C4] = dims2(qkvu);
    need(Number.isInteger(heads) && heads > 0, `${op}: heads must be a positive integer, got ${heads}`);
    need(C4 % 4 === 0 && (C4 / 4) % heads === 0, `${op}: qkvu ${shp(qkvu)} must be [T, 4·H] with H divisible by ${heads} heads`);
    const H = C4 / 4, dh = H / heads, dk = theta ? 2 * dh : dh;
    if (theta) {
      need(f32(theta).length === H, `${op}: theta ${shp(theta)} must hold heads·dh = ${H} values`);
      need(positions !== null && positions.length === T, `${op}: theta needs positions for all ${T} tokens, got ${positions?.length ?? 'none'}`);
    }
    need(!vMask || vMask.length === T, `${op}: vMask has ${vMask?.length} entries for ${T} tokens`);
    return { T, H, dh, dk };
  }
  glaQKV(q: Tensor, k: Tensor, v: Tensor, qkvu: Tensor, heads: number,
         theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null): void {
    const { T, H, dh, dk } = this.qkvDims('glaQKV', qkvu, heads, theta, positions, vMask);
    const Q = f32(q), K = f32(k), V = f32(v);
    need(Q.length === T * heads * dk && K.length === Q.length && V.length === T * H,
      `glaQKV: from qkvu ${shp(qkvu)} q and k must be [${T}, ${heads * dk}] and v [${T}, ${H}], got q ${shp(q)}, k ${shp(k)}, v ${shp(v)}`);
    this.n.glaQkv(Q, K, V, f32(qkvu), T, heads, dh, theta ? f32(theta) : null, theta ? positions : null, vMask);
  }
  glaQKVBackward(dqkvu: Tensor, dTheta: Tensor | null, dq: Tensor, dk: Tensor, dv: Tensor,
                 qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null,
                 vMask: Int32Array | null): void {
    const { T, H, dh, dk: dkk } = this.qkvDims('glaQKVBackward', qkvu, heads, theta, positions, vMask);
    const G = f32(dqkvu), DQ = f32(dq), DK = f32(dk), DV = f32(dv);
    need(G.length === T * 4 * H, `glaQKVBackward: dqkvu ${shp(dqkvu)} must match qkvu ${shp(qkvu)}`);
    need(DQ.length === T * heads * dkk && DK.length === DQ.length && DV.length === T * H,
      `glaQKVBackward: dq and dk must be [${T}, ${heads * dkk}] and dv [${T}, ${H}], got dq ${shp(dq)}, dk ${shp(dk)}, dv ${shp(dv)}`);
    const dth = theta && dTheta ? f32(dTheta) : null;
    need(!dth || dth.length === H, `glaQKVBackward: dTheta ${dTheta ? shp(dTheta) : ''} must hold ${H} values`);
    this.n.glaQkvBackward(G, dth, DQ, DK, DV, f32(qkvu), T, heads, dh, theta ? f32(theta) : null, theta ? positions : null, vMask);
  }

  lightningForward(o: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array,
                   state: Tensor | null, blockSize: number, slots?: Int32Array | null): void {
    const nh = decay.length;
    need(nh > 0, 'lightningForward: decay must hold one λ per head');
    const { B, N, dk, dv } = attnDims(q, v, nh);
    const O = f32(o), Q = f32(q), K = f32(k), V = f32(v);
    need(O.length === V.length && K.length === Q.length,
      `lightningForward: o ${shp(o)} must match v ${shp(v)} and k ${shp(k)} match q ${shp(q)}`);
    need(Number.isInteger(blockSize) && blockSize >= 1, `lightningForward: block size must be a positive integer, got ${blockSize}`);
    let S: Float32Array | null = null;
    if (state) {
      S = f32(state);
      const per = nh * dk * dv;
      need(S.length % per === 0, `lightningForward: state ${shp(state)} must be [S, ${nh}, ${dk}, ${dv}]`);
      const rowsS = S.length / per;
      if (slots) {
        need(slots.length === B, `lightningForward: ${slots.length} slots for ${B} sequences`);
        for (let b = 0; b < B; b++)
          need(Number.isInteger(slots[b]) && slots[b]! >= 0 && slots[b]! < rowsS, `lightningForward: slot ${slots[b]} outside the state pool [0, ${rowsS})`);
      } else {
        need(rowsS >= B, `lightningForward: state ${shp(state)} holds ${rowsS} rows for ${B} sequences`);
      }
    }
    this.n.lightningForward(O, Q, K, V, decay, S, S && slots ? slots : null, B, N, nh, dk, dv, blockSize);
  }
  lightningBackward(dq: Tensor, dk: Tensor, dv: Tensor, dO: Tensor, q: Tensor, k: Tensor, v: Tensor,
                    decay: Float64Array, blockSize: number): void {
    const nh = decay.length;
    need(nh > 0, 'lightningBackward: decay must hold one λ per head');
    const { B, N, dk: dkk, dv: dvv } = attnDims(q, v, nh);
    const DQ = f32(dq), DK = f32(dk), DV = f32(dv), G = f32(dO), Q = f32(q), K = f32(k), V = f32(v);
    need(K.length === Q.length && DQ.length === Q.length && DK.length === Q.length && DV.length === V.length && G.length === V.length,
      `lightningBackward: dq, dk, k must match q ${shp(q)} and dv, dO match v ${shp(v)}; got dq ${shp(dq)}, dk ${shp(dk)}, k ${shp(k)}, dv ${shp(dv)}, dO ${shp(dO)}`);
    need(Number.isInteger(blockSize) && blockSize >= 1, `lightningBackward: block size must be a positive integer, got ${blockSize}`);
    this.n.lightningBackward(DQ, DK, DV, G, Q, K, V, decay, B, N, nh, dkk, dvv, blockSize);
  }

  normGate(a: Tensor, rstd: Tensor, o: Tensor, qkvu: Tensor, eps: number): void {
    const A = f32(a), R = f32(rstd), O = f32(o), X = f32(qkvu);
    const [T, H] = dims2(o);
    need(A.length === T * H && R.length === T && X.length === T * 4 * H,
      `normGate: o ${shp(o)} needs a of the same size, rstd of ${T} and qkvu [${T}, ${4 * H}], got a ${shp(a)}, rstd ${shp(rstd)}, qkvu ${shp(qkvu)}`);
    this.n.normGate(A, R, O, X, T, H, eps);
  }
  normGateBackward(dO: Tensor, dqkvu: Tensor, dA: Tensor, o: Tensor, rstd: Tensor, qkvu: Tensor): void {
    const DO = f32(dO), G = f32(dqkvu), DA = f32(dA), O = f32(o), R = f32(rstd), X = f32(qkvu);
    const [T, H] = dims2(o);
    need(DO.length === T * H && DA.length === T * H && R.length === T && X.length === T * 4 * H && G.length === X.length,
      `normGateBackward: o ${shp(o)} needs dO, dA of the same size, rstd of ${T}, qkvu and dqkvu [${T}, ${4 * H}]; got dO ${shp(dO)}, dA ${shp(dA)}, rstd ${shp(rstd)}, qkvu ${shp(qkvu)}, dqkvu ${shp(dqkvu)}`);
    this.n.normGateBackward(DO, G, DA, O, R, X, T, H);
  }

  // ---- SGLU -----------------------------------------------------------------------------------
  sgluGate(m: Tensor, h: Tensor): void {
    const M = f32(m), X = f32(h);
    const [T, G2] = dims2(h);
    need(G2 % 2 === 0 && M.length === T * (G2 / 2), `sgluGate: h ${shp(h)} must be [T, 2G] and m [T, G], got m ${shp(m)}`);
    this.n.sgluGate(M, X, T, G2 / 2);
  }
  sgluGateBackward(dh: Tensor, dm: Tensor, h: Tensor): void {
    const DH = f32(dh), DM = f32(dm), X = f32(h);
    const [T, G2] = dims2(h);
    need(G2 % 2 === 0 && DM.length === T * (G2 / 2) && DH.length === X.length,
      `sgluGateBackward: h ${shp(h)} must be [T, 2G], dh the same and dm [T, G]; got dh ${shp(dh)}, dm ${shp(dm)}`);
    this.n.sgluGateBackward(DH, DM, X, T, G2 / 2);
  }

  // ---- loss -----------------------------------------------------------------------------------
  crossEntropy(logits: Tensor, targets: Int32Array, dLogits: Tensor | null, gradScale: number): { loss: number; count: number } {
    const L = f32(logits), D = dLogits ? f32(dLogits) : null;
    const [T, V] = dims2(logits);
    need(targets.length === T, `crossEntropy: ${targets.length} targets for ${T} rows of logits ${shp(logits)}`);
    need(!D || D.length === L.length, `crossEntropy: dLogits ${dLogits ? shp(dLogits) : ''} must match logits ${shp(logits)}`);
    for (let t = 0; t < T; t++) {
      const y = targets[t]!;
      need(y === -100 || (y >= 0 && y < V), `crossEntropy: target ${y} outside [0, ${V})`);
    }
    const [loss, count] = this.n.crossEntropy(D, L, targets, T, V, gradScale);
    return { loss, count };
  }

  // ---- optimiser ------------------------------------------------------------------------------
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
    const P = f32(param), G = f32(grad), M = f32(m), V = f32(v);
    need(G.length === P.length && M.length === P.length && V.length === P.length,
      `adamw: param ${shp(param)}, grad ${shp(grad)}, m ${shp(m)}, v ${shp(v)} must have the same size`);
    need(Number.isInteger(o.step) && o.step >= 1, `adamw: step must be an integer ≥ 1, got ${o.step}`);
    this.n.adamw(P, G, M, V, P.length, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.step, o.gradScale);
  }
}

function checkIds(op: string, ids: Int32Array, V: number, paddingIdx: number | null): void {
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!;
    if (id === paddingIdx) continue;
    need(id >= 0 && id < V, `${op}: token id ${id} outside the vocabulary [0, ${V})`);
  }
}

