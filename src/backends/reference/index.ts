// The reference backend: short, plain TypeScript, accumulating in float64. It is the oracle that
// every other backend is tested against, so it favours the obviously right over the fast:
// attention is the exact recurrence (block size is accepted and ignored), loops are naive.
import type { AdamWOptions, Backend, DType, MatmulOptions, Tensor } from '../backend.ts';
import { dims2 } from '../backend.ts';
import { F32Outputs, HostMemory, f32, host, readF32, valueAt } from '../host.ts';
import { ShapeError } from '../../errors.ts';
import { matmulWithPrologue } from '../prologue.ts';

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

function need(cond: boolean, what: string): void {
  if (!cond) throw new ShapeError(what);
}

export class ReferenceBackend extends HostMemory implements Backend {
  readonly name = 'reference';
  /** Activation tensors may be f32 or bf16: bf16 inputs are widened exactly, outputs rounded to nearest even. */
  readonly activationDTypes: readonly DType[] = ['f32', 'bf16'];
  describe(): string {
    return 'reference: plain TypeScript, float64 accumulation (the test oracle; slow)';
  }

  matmul(c: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions = {}): void {
    if (matmulWithPrologue(this, c, a, b, opts)) return;
    const w = new F32Outputs(), C = w.out(c), A = readF32(a), B = readF32(b);
    const [ar, ac] = dims2(a), [br, bc] = dims2(b), [M, N] = dims2(c);
    const K = opts.transA ? ar : ac;
    need((opts.transA ? ac : ar) === M, `matmul: A gives ${opts.transA ? ac : ar} rows, C has ${M}`);
    need((opts.transB ? bc : br) === K, `matmul: inner dims ${K} vs ${opts.transB ? bc : br}`);
    need((opts.transB ? br : bc) === N, `matmul: B gives ${opts.transB ? br : bc} cols, C has ${N}`);
    // op(A) as [M, K] and op(B)ᵀ as [N, K], both float64, then plain dot products.
    const At = new Float64Array(M * K), Bt = new Float64Array(N * K);
    for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) At[m * K + k] = opts.transA ? A[k * ac + m]! : A[m * ac + k]!;
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) Bt[n * K + k] = opts.transB ? B[n * bc + k]! : B[k * bc + n]!;
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += At[m * K + k]! * Bt[n * K + k]!;
        C[m * N + n] = opts.accumulate ? C[m * N + n]! + s : s;
      }
    w.commit();
  }

  addInPlace(y: Tensor, x: Tensor): void {
    const Y = f32(y, 'addInPlace: y'), X = f32(x, 'addInPlace: x');
    need(Y.length === X.length, 'addInPlace: sizes differ');
    for (let i = 0; i < Y.length; i++) Y[i] = Y[i]! + X[i]!;
  }
  scaleInPlace(x: Tensor, s: number): void {
    const X = f32(x, 'scaleInPlace: x');
    for (let i = 0; i < X.length; i++) X[i] = X[i]! * s;
  }
  sumSquares(x: Tensor | readonly Tensor[]): number {
    if (Array.isArray(x)) return x.reduce((s: number, t: Tensor) => s + this.sumSquares(t), 0);
    const X = host(x as Tensor);
    let s = 0;
    for (let i = 0; i < X.size; i++) s += valueAt(X, i) ** 2;
    return s;
  }

  embedding(out: Tensor, table: Tensor, ids: Int32Array, scale: number): void {
    const O = f32(out, 'embedding: out'), E = host(table);
    const [V, D] = dims2(table);
    need(O.length === ids.length * D, 'embedding: output must be [T, D]');
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t]!;
      need(id >= 0 && id < V, `embedding: token id ${id} outside the vocabulary [0, ${V})`);
      for (let d = 0; d < D; d++) O[t * D + d] = scale * valueAt(E, id * D + d);
    }
  }
  embeddingBackward(dTable: Tensor, dOut: Tensor, ids: Int32Array, scale: number, paddingIdx: number): void {
    const G = f32(dTable, 'embeddingBackward: dTable'), dO = f32(dOut, 'embeddingBackward: dOut');
    const [, D] = dims2(dTable);
    for (let t = 0; t < ids.length; t++) {
      if (ids[t] === paddingIdx) continue;
      for (let d = 0; d < D; d++) G[ids[t]! * D + d] = G[ids[t]! * D + d]! + scale * dO[t * D + d]!;
    }
  }

  srmsnorm(y: Tensor, rstd: Tensor, x: Tensor, eps: number): void {
    const w = new F32Outputs(), Y = w.out(y), R = f32(rstd, 'srmsnorm: rstd'), X = readF32(x);
    const [rows, D] = dims2(x);
    for (let r = 0; r < rows; r++) {
      let ss = 0;
      for (let d = 0; d < D; d++) ss += X[r * D + d]! ** 2;
      const rs = 1 / Math.sqrt(ss / D + eps);
      R[r] = rs;
      for (let d = 0; d < D; d++) Y[r * D + d] = X[r * D + d]! * rs;
    }
    w.commit();
  }
  srmsnormBackward(dx: Tensor, dy: Tensor, y: Tensor, rstd: Tensor, accumulate: boolean): void {
    const w = new F32Outputs(), DX = w.out(dx), DY = readF32(dy), Y = readF32(y), R = f32(rstd, 'srmsnormBackward: rstd');
    const [rows, D] = dims2(y);
    for (let r = 0; r < rows; r++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += DY[r * D + d]! * Y[r * D + d]!;
      dot /= D;
      for (let d = 0; d < D; d++) {
        const g = R[r]! * (DY[r * D + d]! - Y[r * D + d]! * dot);
        DX[r * D + d] = accumulate ? DX[r * D + d]! + g : g;
      }
    }
    w.commit();
  }

  glaQKV(q: Tensor, k: Tensor, v: Tensor, qkvu: Tensor, heads: number,
         theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null): void {
    const w = new F32Outputs(), Q = w.out(q), K = w.out(k), Vv = w.out(v), X = readF32(qkvu);
    const [T, C4] = dims2(qkvu);
    const H = C4 / 4, dh = H / heads, dk = theta ? 2 * dh : dh;
    need(Q.length === T * heads * dk && K.length === Q.length && Vv.length === T * H, 'glaQKV: output shapes');
    const th = theta ? f32(theta, 'glaQKV: theta') : null;
    need(!th || (th.length === heads * dh && positions !== null && positions.length === T), 'glaQKV: theta needs nh·dh values and positions for every token');
    for (let t = 0; t < T; t++) {
      const row = t * C4;
      for (let h = 0; h < heads; h++)
        for (let c = 0; c < dh; c++) {
          const xq = X[row + h * dh + c]!, xk = X[row + H + h * dh + c]!;
          const sq = xq * sigmoid(xq), sk = xk * sigmoid(xk);
          const o = t * heads * dk + h * dk + c;
          if (th) {
            const ang = th[h * dh + c]! * positions![t]!;
            const cs = Math.cos(ang), sn = Math.sin(ang);
            Q[o] = sq * cs; Q[o + dh] = sq * sn;
            K[o] = sk * cs; K[o + dh] = sk * sn;
          } else {
            Q[o] = sq; K[o] = sk;
          }
        }
      const keep = vMask ? vMask[t] !== 0 : true;
      for (let c = 0; c < H; c++) Vv[t * H + c] = keep ? X[row + 2 * H + c]! : 0;
    }
    w.commit();
  }

  glaQKVBackward(dqkvu: Tensor, dTheta: Tensor | null, dq: Tensor, dk: Tensor, dv: Tensor,
                 qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null,
                 vMask: Int32Array | null): void {
    const w = new F32Outputs(), G = w.out(dqkvu), DQ = readF32(dq), DK = readF32(dk), DV = readF32(dv), X = readF32(qkvu);
    const [T, C4] = dims2(qkvu);
    const H = C4 / 4, dh = H / heads, dkk = theta ? 2 * dh : dh;
    const th = theta ? f32(theta, 'glaQKVBackward: theta') : null;
    const dth = dTheta ? f32(dTheta, 'glaQKVBackward: dTheta') : null;
    const dthAcc = new Float64Array(heads * dh);
    const dsilu = (x: number) => { const s = sigmoid(x); return s * (1 + x * (1 - s)); };
    for (let t = 0; t < T; t++) {
      const row = t * C4;
      for (let h = 0; h < heads; h++)
        for (let c = 0; c < dh; c++) {
          const xq = X[row + h * dh + c]!, xk = X[row + H + h * dh + c]!;
          const o = t * heads * dkk + h * dkk + c;
          let gq: number, gk: number;
          if (th) {
            const p = positions![t]!, ang = th[h * dh + c]! * p;
            const cs = Math.cos(ang), sn = Math.sin(ang);
            gq = DQ[o]! * cs + DQ[o + dh]! * sn;
            gk = DK[o]! * cs + DK[o + dh]! * sn;
            const sq = xq * sigmoid(xq), sk = xk * sigmoid(xk);
            // d/dθ of s·cos(θp) is −s·p·sin(θp); of s·sin(θp) it is s·p·cos(θp)
            dthAcc[h * dh + c] = dthAcc[h * dh + c]! + p * (
              sq * (-DQ[o]! * sn + DQ[o + dh]! * cs) + sk * (-DK[o]! * sn + DK[o + dh]! * cs));
          } else {
            gq = DQ[o]!; gk = DK[o]!;
          }
          G[row + h * dh + c] = gq * dsilu(xq);
          G[row + H + h * dh + c] = gk * dsilu(xk);
        }
      const keep = vMask ? vMask[t] !== 0 : true;
      for (let c = 0; c < H; c++) G[row + 2 * H + c] = keep ? DV[t * H + c]! : 0;
    }
    if (dth) for (let i = 0; i < dth.length; i++) dth[i] = dth[i]! + dthAcc[i]!;
    w.commit();
  }

  lightningForward(o: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array,
                   state: Tensor | null, _blockSize: number, slots?: Int32Array | null): void {
    const w = new F32Outputs(), O = w.out(o), Q = readF32(q), K = readF32(k), V = readF32(v);
    const nh = decay.length;
    const { B, N, dk, dv } = attnDims(q, v, nh);
    need(O.length === V.length && K.length === Q.length, 'lightningForward: o/k shapes');
    const S = state ? f32(state, 'lightningForward: state') : null;
    const Sd = new Float64Array(dk * dv);
    for (let b = 0; b < B; b++) {
      const slot = slots ? slots[b]! : b;
      for (let h = 0; h < nh; h++) {
        const lam = decay[h]!;
        const sOff = (slot * nh + h) * dk * dv;
        for (let i = 0; i < dk * dv; i++) Sd[i] = S ? S[sOff + i]! : 0;
        for (let t = 0; t < N; t++) {
          const qo = ((b * N + t) * nh + h) * dk, vo = ((b * N + t) * nh + h) * dv;
          // S ← λS + kᵀv, then o = q·S (the update comes first: the diagonal is included)
          for (let i = 0; i < dk; i++)
            for (let j = 0; j < dv; j++) Sd[i * dv + j] = lam * Sd[i * dv + j]! + K[qo + i]! * V[vo + j]!;
          for (let j = 0; j < dv; j++) {
            let s = 0;
            for (let i = 0; i < dk; i++) s += Q[qo + i]! * Sd[i * dv + j]!;
            O[vo + j] = s;
          }
        }
        if (S) for (let i = 0; i < dk * dv; i++) S[sOff + i] = Sd[i]!;
      }
    }
    w.commit();
  }

  lightningBackward(dq: Tensor, dk: Tensor, dv: Tensor, dO: Tensor, q: Tensor, k: Tensor, v: Tensor,
                    decay: Float64Array, _blockSize: number): void {
    const w = new F32Outputs(), DQ = w.out(dq), DK = w.out(dk), DV = w.out(dv);
    const G = readF32(dO), Q = readF32(q), K = readF32(k), V = readF32(v);
    const nh = decay.length;
    const { B, N, dk: dkk, dv: dvv } = attnDims(q, v, nh);
    const S = new Float64Array(dkk * dvv);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < nh; h++) {
        const lam = decay[h]!;
        const qo = (t: number) => ((b * N + t) * nh + h) * dkk;
        const vo = (t: number) => ((b * N + t) * nh + h) * dvv;
        // dq_t = Σ_{j≤t} λ^{t−j} (dO_t·v_j) k_j: a forward scan of S = Σ λ^{t−j} k_jᵀ v_j.
        S.fill(0);
        for (let t = 0; t < N; t++) {
          for (let i = 0; i < dkk; i++)
            for (let j = 0; j < dvv; j++) S[i * dvv + j] = lam * S[i * dvv + j]! + K[qo(t) + i]! * V[vo(t) + j]!;
          for (let i = 0; i < dkk; i++) {
            let s = 0;
            for (let j = 0; j < dvv; j++) s += S[i * dvv + j]! * G[vo(t) + j]!;
            DQ[qo(t) + i] = s;
          }
        }
        // dk_j = R_j v_j and dv_j = R_jᵀ k_j with R_j = Σ_{t≥j} λ^{t−j} q_tᵀ dO_t: a reverse scan.
        S.fill(0);
        for (let t = N - 1; t >= 0; t--) {
          for (let i = 0; i < dkk; i++)
            for (let j = 0; j < dvv; j++) S[i * dvv + j] = lam * S[i * dvv + j]! + Q[qo(t) + i]! * G[vo(t) + j]!;
          for (let i = 0; i < dkk; i++) {
            let s = 0;
            for (let j = 0; j < dvv; j++) s += S[i * dvv + j]! * V[vo(t) + j]!;
            DK[qo(t) + i] = s;
          }
          for (let j = 0; j < dvv; j++) {
            let s = 0;
            for (let i = 0; i < dkk; i++) s += S[i * dvv + j]! * K[qo(t) + i]!;
            DV[vo(t) + j] = s;
          }
        }
      }
    w.commit();
  }

  normGate(a: Tensor, rstd: Tensor, o: Tensor, qkvu: Tensor, eps: number): void {
    const w = new F32Outputs(), A = w.out(a), R = f32(rstd, 'normGate: rstd'), O = readF32(o), X = readF32(qkvu);
    const [T, H] = dims2(o);
    for (let t = 0; t < T; t++) {
      let ss = 0;
      for (let c = 0; c < H; c++) ss += O[t * H + c]! ** 2;
      const rs = 1 / Math.sqrt(ss / H + eps);
      R[t] = rs;
      for (let c = 0; c < H; c++) A[t * H + c] = O[t * H + c]! * rs * X[t * 4 * H + 3 * H + c]!;
    }
    w.commit();
  }
  normGateBackward(dO: Tensor, dqkvu: Tensor, dA: Tensor, o: Tensor, rstd: Tensor, qkvu: Tensor): void {
    const w = new F32Outputs(), DO = w.out(dO), G = w.out(dqkvu);
    const DA = readF32(dA), O = readF32(o), R = f32(rstd, 'normGateBackward: rstd'), X = readF32(qkvu);
    const [T, H] = dims2(o);
    for (let t = 0; t < T; t++) {
      const rs = R[t]!;
      let dot = 0;
      for (let c = 0; c < H; c++) {
        const y = O[t * H + c]! * rs, u = X[t * 4 * H + 3 * H + c]!;
        G[t * 4 * H + 3 * H + c] = DA[t * H + c]! * y;
        dot += DA[t * H + c]! * u * y;
      }
      dot /= H;
      for (let c = 0; c < H; c++) {
        const y = O[t * H + c]! * rs, u = X[t * 4 * H + 3 * H + c]!;
        DO[t * H + c] = rs * (DA[t * H + c]! * u - y * dot);
      }
    }
    w.commit();
  }

  sgluGate(m: Tensor, h: Tensor): void {
    const w = new F32Outputs(), M = w.out(m), X = readF32(h);
    const [T, G2] = dims2(h), G = G2 / 2;
    need(M.length === T * G, 'sgluGate: output must be [T, G]');
    for (let t = 0; t < T; t++)
      for (let c = 0; c < G; c++) M[t * G + c] = X[t * G2 + c]! * X[t * G2 + G + c]!;
    w.commit();
  }
  sgluGateBackward(dh: Tensor, dm: Tensor, h: Tensor): void {
    const w = new F32Outputs(), DH = w.out(dh), DM = readF32(dm), X = readF32(h);
    const [T, G2] = dims2(h), G = G2 / 2;
    for (let t = 0; t < T; t++)
      for (let c = 0; c < G; c++) {
        DH[t * G2 + c] = DM[t * G + c]! * X[t * G2 + G + c]!;
        DH[t * G2 + G + c] = DM[t * G + c]! * X[t * G2 + c]!;
      }
    w.commit();
  }

  crossEntropy(logits: Tensor, targets: Int32Array, dLogits: Tensor | null, gradScale: number): { loss: number; count: number } {
    // dLogits may alias logits: each row is read before it is written (and a bf16 L is a copy)
    const w = new F32Outputs(), L = readF32(logits), D = dLogits ? w.out(dLogits) : null;
    const [T, V] = dims2(logits);
    need(targets.length === T, `crossEntropy: ${targets.length} targets for ${T} rows`);
    let loss = 0, count = 0;
    for (let t = 0; t < T; t++) {
      const y = targets[t]!;
      if (y === -100) { if (D) D.fill(0, t * V, (t + 1) * V); continue; }
      need(y >= 0 && y < V, `crossEntropy: target ${y} outside [0, ${V})`);
      let mx = -Infinity;
      for (let i = 0; i < V; i++) mx = Math.max(mx, L[t * V + i]!);
      let se = 0;
      for (let i = 0; i < V; i++) se += Math.exp(L[t * V + i]! - mx);
      const lse = mx + Math.log(se);
      loss += lse - L[t * V + y]!;
      count++;
      if (D) for (let i = 0; i < V; i++) D[t * V + i] = (Math.exp(L[t * V + i]! - lse) - (i === y ? 1 : 0)) * gradScale;
    }
    w.commit();
    return { loss, count };
  }

  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
    const P = f32(param, 'adamw: param'), G = f32(grad, 'adamw: grad'), M = f32(m, 'adamw: m'), Vv = f32(v, 'adamw: v');
    const bc1 = 1 - o.beta1 ** o.step, bc2 = 1 - o.beta2 ** o.step;
    for (let i = 0; i < P.length; i++) {
      const g = G[i]! * o.gradScale;
      M[i] = o.beta1 * M[i]! + (1 - o.beta1) * g;
      Vv[i] = o.beta2 * Vv[i]! + (1 - o.beta2) * g * g;
      const p = P[i]! * (1 - o.lr * o.weightDecay);
      P[i] = p - o.lr * (M[i]! / bc1) / (Math.sqrt(Vv[i]! / bc2) + o.eps);
    }
  }
}

/** B, N, dk, dv of attention inputs q [B, N, nh·dk] and v [B, N, nh·dv]. */
export function attnDims(q: Tensor, v: Tensor, nh: number): { B: number; N: number; dk: number; dv: number } {
  const qs = q.shape, vs = v.shape;
  need(qs.length === 3 && vs.length === 3 && qs[0] === vs[0] && qs[1] === vs[1],
    `attention: q and v must be [B, N, heads·d], got [${qs.join(', ')}] and [${vs.join(', ')}]`);
  need(qs[2]! % nh === 0 && vs[2]! % nh === 0, `attention: widths ${qs[2]}, ${vs[2]} not divisible by ${nh} heads`);
  return { B: qs[0]!, N: qs[1]!, dk: qs[2]! / nh, dv: vs[2]! / nh };
}

