// Every fused kernel of the native cpu backend against the reference backend (plain TypeScript,
// float64 accumulation) on fresh random inputs: odd sizes, block edges, edge cases. Each case
// gives both backends identical inputs (copies), runs the op on each, and compares the outputs.
// Seeds are fresh each run (TNL_TEST_SEED=<n> repeats one) and appear in every failure message.
// The matmul is covered by cpu-gemm.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend, Tensor } from '../../src/backends/backend.ts';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { f32 } from '../../src/backends/host.ts';
import { cpuBackend, rng } from '../helpers/backends.ts';

type Rng = ReturnType<typeof rng>;
const cpu = await cpuBackend();
const skip = cpu ? false : 'native addon not built (npm run build:native)';
const ref = new ReferenceBackend();
const BASE = process.env.TNL_TEST_SEED ? Number(process.env.TNL_TEST_SEED) : Math.floor(Math.random() * 1e9);
let seedCounter = 0;
const nextSeed = () => BASE + 7919 * seedCounter++;

/** max |a − b| / max |b| (b from the reference). */
function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= num)) num = Number.isNaN(d) ? Infinity : Math.max(num, d);
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den > 0 ? num / den : num;
}
function close(what: string, got: Float32Array, want: Float32Array, tol: number): void {
  const e = relErr(got, want);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} > ${tol} (seed base ${BASE})`);
}

/** As close(), measured against max(max |want|, scale): for outputs that cancel (a − y·mean(a⊙y)
 * over a short row), where the size of the terms, not of the result, sets the attainable error. */
function closeTo(what: string, got: Float32Array, want: Float32Array, scale: number, tol: number): void {
  let num = 0, den = scale;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got[i]! - want[i]!) || 0, Number.isNaN(got[i]!) ? Infinity : 0);
    den = Math.max(den, Math.abs(want[i]!));
  }
  assert.ok(num / den <= tol, `${what}: error ${(num / den).toExponential(2)} of the terms' size > ${tol} (seed base ${BASE})`);
}

/** One backend and an upload helper: both() runs the same case on the cpu and reference backends. */
class Pair {
  constructor(readonly be: Backend) {}
  up(data: Float32Array, shape: number[], dtype: 'f32' | 'bf16' = 'f32'): Tensor {
    return this.be.upload(data, shape, dtype);
  }
}
function both<T>(fn: (p: Pair) => T): [T, T] {
  return [fn(new Pair(cpu!)), fn(new Pair(ref))];
}
function uniform(g: Rng, n: number, lo: number, hi: number): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * g.uniform());
}
function ints(g: Rng, n: number, hi: number): Int32Array {
  return Int32Array.from({ length: n }, () => Math.floor(g.uniform() * hi));
}

test('cpu kernels: addInPlace, scaleInPlace, sumSquares (f32 and bf16)', { skip }, () => {
  for (const n of [1, 15, 16, 17, 4097, 70001, 300007]) {
    const g = rng(nextSeed());
    const x = g.array(n), y = g.array(n), s = g.normal();
    const [[a, ss, sb], [b, rs, rb]] = both((p) => {
      const Y = p.up(y, [n]), X = p.up(x, [n]);
      p.be.addInPlace(Y, X);
      p.be.scaleInPlace(Y, s);
      const X16 = p.up(x, [n], 'bf16');
      // a list sums over every tensor (a gradient norm)
      const each = p.be.sumSquares(X) + p.be.sumSquares(X16), all = p.be.sumSquares([X, X16]);
      assert.ok(Math.abs(all - each) <= 1e-12 * each, `sumSquares of a list n=${n}: ${all} vs ${each}`);
      return [p.be.download(Y), p.be.sumSquares(X), p.be.sumSquares(X16)] as const;
    });
    close(`add+scale n=${n}`, a, b, 2e-7);
    assert.ok(Math.abs(ss - rs) <= 1e-12 * rs, `sumSquares f32 n=${n}: ${ss} vs ${rs}`);
    assert.ok(Math.abs(sb - rb) <= 1e-12 * rb, `sumSquares bf16 n=${n}: ${sb} vs ${rb}`);
  }
});

test('cpu kernels: embedding (f32, bf16 tables) and embeddingBackward (repeats, padding row, accumulation)', { skip }, () => {
  for (const [T, V, D] of [[1, 1, 1], [7, 5, 3], [33, 50, 129], [600, 100, 64]] as const) {
    const g = rng(nextSeed());
    const table = g.array(V * D), ids = ints(g, T, V), scale = 0.5 + 40 * g.uniform();
    for (const dtype of ['f32', 'bf16'] as const) {
      const [a, b] = both((p) => {
        const out = p.be.empty([T, D]);
        p.be.embedding(out, p.up(table, [V, D], dtype), ids, scale);
        return p.be.download(out);
      });
      // kernels.h takes the scale as a float: one rounding more than the reference's double
      close(`embedding ${dtype} T=${T} V=${V} D=${D}`, a, b, 2.5e-7);
    }
    const dOut = g.array(T * D), dt0 = g.array(V * D);
    // the size of the terms each result sums (|dt0| + scale·Σ|dOut| over the rows with that id):
    // a result that cancels can only be as exact as its terms (T = V = D = 1 cancelled to 1.7e-6)
    const terms = Float64Array.from(dt0, Math.abs);
    for (let t = 0; t < T; t++) for (let d = 0; d < D; d++) terms[ids[t]! * D + d]! += scale * Math.abs(dOut[t * D + d]!);
    const termScale = Math.max(...terms);
    for (const pad of [-1, ids[0]!]) {
      const [a, b] = both((p) => {
        const dt = p.up(dt0, [V, D]);
        p.be.embeddingBackward(dt, p.up(dOut, [T, D]), ids, scale, pad);
        return p.be.download(dt);
      });
      closeTo(`embeddingBackward T=${T} V=${V} D=${D} pad=${pad}`, a, b, termScale, 1e-6);
    }
  }
});

test('cpu kernels: srmsnorm and srmsnormBackward (overwrite and accumulate)', { skip }, () => {
  for (const [rows, D] of [[1, 2], [3, 7], [17, 512], [130, 1031]] as const) {
    const g = rng(nextSeed());
    const x = uniform(g, rows * D, -3, 3);
    for (let d = 0; d < D; d++) x[d] = x[d]! * 1e-4;  // a row whose mean square is near eps
    const dy = g.array(rows * D), dx0 = g.array(rows * D);
    const [[ya, ra], [yb, rb]] = both((p) => {
      const y = p.be.empty([rows, D]), r = p.be.empty([rows]);
      p.be.srmsnorm(y, r, p.up(x, [rows, D]), 1e-6);
      return [p.be.download(y), p.be.download(r)] as const;
    });
    close(`srmsnorm y rows=${rows} D=${D}`, ya, yb, 1e-6);
    close(`srmsnorm rstd rows=${rows} D=${D}`, ra, rb, 1e-6);
    for (const accumulate of [false, true]) {
      // both backends differentiate from the same saved y and rstd (the reference's)
      const [a, b] = both((p) => {
        const dx = p.up(dx0, [rows, D]);
        p.be.srmsnormBackward(dx, p.up(dy, [rows, D]), p.up(yb, [rows, D]), p.up(rb, [rows]), accumulate);
        return p.be.download(dx);
      });
      let terms = 0;  // rstd·|dy|
      for (let r = 0; r < rows; r++) for (let d = 0; d < D; d++) terms = Math.max(terms, rb[r]! * Math.abs(dy[r * D + d]!));
      closeTo(`srmsnormBackward rows=${rows} D=${D} accumulate=${accumulate}`, a, b, terms, 2e-6);
    }
  }
});

test('cpu kernels: glaQKV and glaQKVBackward (silu, LRPE at small and large positions, v mask, dθ accumulation)', { skip }, () => {
  const cases = [
    { T: 1, heads: 1, dh: 1, lrpe: false, mask: false, pos0: 0 },
    { T: 5, heads: 2, dh: 3, lrpe: true, mask: true, pos0: 0 },
    { T: 33, heads: 3, dh: 17, lrpe: true, mask: false, pos0: 7 },
    { T: 70, heads: 8, dh: 64, lrpe: true, mask: true, pos0: 0 },
    { T: 20, heads: 4, dh: 16, lrpe: false, mask: true, pos0: 0 },
    { T: 9, heads: 2, dh: 40, lrpe: true, mask: false, pos0: 1_000_000 },
  ];
  for (const c of cases) {
    const g = rng(nextSeed());
    const H = c.heads * c.dh, dk = c.lrpe ? 2 * c.dh : c.dh, T = c.T;
    const x = uniform(g, T * 4 * H, -6, 6);
    const theta = Float32Array.from({ length: H }, (_, i) => 10000 ** (-2 * i / H));
    const pos = c.lrpe ? Int32Array.from({ length: T }, (_, t) => c.pos0 + t) : null;
    const vm = c.mask ? Int32Array.from({ length: T }, () => (g.uniform() < 0.3 ? 0 : 1)) : null;
    const name = `T=${T} heads=${c.heads} dh=${c.dh} lrpe=${c.lrpe} pos0=${c.pos0}`;
    const [[qa, ka, va], [qb, kb, vb]] = both((p) => {
      const q = p.be.empty([T, c.heads * dk]), k = p.be.empty([T, c.heads * dk]), v = p.be.empty([T, H]);
      p.be.glaQKV(q, k, v, p.up(x, [T, 4 * H]), c.heads, c.lrpe ? p.up(theta, [H]) : null, pos, vm);
      return [p.be.download(q), p.be.download(k), p.be.download(v)] as const;
    });
    close(`glaQKV q ${name}`, qa, qb, 1e-6);
    close(`glaQKV k ${name}`, ka, kb, 1e-6);
    close(`glaQKV v ${name}`, va, vb, 0);
    const dq = g.array(T * c.heads * dk), dkk = g.array(T * c.heads * dk), dv = g.array(T * H);
    const g0 = g.array(T * 4 * H), dth0 = g.array(H);
    const [[ga, ta], [gb, tb]] = both((p) => {
      const G = p.up(g0, [T, 4 * H]), dth = p.up(dth0, [H]);
      p.be.glaQKVBackward(G, c.lrpe ? dth : null, p.up(dq, [T, c.heads * dk]), p.up(dkk, [T, c.heads * dk]),
        p.up(dv, [T, H]), p.up(x, [T, 4 * H]), c.heads, c.lrpe ? p.up(theta, [H]) : null, pos, vm);
      return [p.be.download(G), p.be.download(dth)] as const;
    });
    close(`glaQKVBackward dqkvu ${name}`, ga, gb, 1e-6);  // includes the untouched u columns
    // dθ sums p·(…) over tokens with cancellation: at large positions the fp32 inputs bound it
    close(`glaQKVBackward dθ ${name}`, ta, tb, c.pos0 > 1000 ? 1e-4 : 1e-5);
  }
});

test('cpu kernels: normGate and normGateBackward', { skip }, () => {
  for (const [T, H] of [[1, 2], [3, 5], [17, 512], [100, 1024]] as const) {
    const g = rng(nextSeed());
    const o = uniform(g, T * H, -2, 2), x = uniform(g, T * 4 * H, -2, 2), dA = g.array(T * H), g0 = g.array(T * 4 * H);
    const [[aa, ra], [ab, rb]] = both((p) => {
      const a = p.be.empty([T, H]), r = p.be.empty([T]);
      p.be.normGate(a, r, p.up(o, [T, H]), p.up(x, [T, 4 * H]), 1e-6);
      return [p.be.download(a), p.be.download(r)] as const;
    });
    close(`normGate a T=${T} H=${H}`, aa, ab, 1e-6);
    close(`normGate rstd T=${T} H=${H}`, ra, rb, 1e-6);
    const [[da, ga], [db, gb]] = both((p) => {
      const dO = p.be.empty([T, H]), G = p.up(g0, [T, 4 * H]);
      p.be.normGateBackward(dO, G, p.up(dA, [T, H]), p.up(o, [T, H]), p.up(rb, [T]), p.up(x, [T, 4 * H]));
      return [p.be.download(dO), p.be.download(G)] as const;
    });
    let terms = 0;  // rstd·|dA ⊙ u|
    for (let t = 0; t < T; t++) for (let c = 0; c < H; c++) terms = Math.max(terms, rb[t]! * Math.abs(dA[t * H + c]! * x[t * 4 * H + 3 * H + c]!));
    closeTo(`normGateBackward dO T=${T} H=${H}`, da, db, terms, 2e-6);
    close(`normGateBackward dqkvu T=${T} H=${H}`, ga, gb, 1e-6);
  }
});

test('cpu kernels: sgluGate and sgluGateBackward', { skip }, () => {
  for (const [T, G] of [[1, 1], [7, 13], [300, 1408]] as const) {
    const g = rng(nextSeed());
    const h = g.array(T * 2 * G), dm = g.array(T * G);
    const [[ma, ha], [mb, hb]] = both((p) => {
      const m = p.be.empty([T, G]), dh = p.be.empty([T, 2 * G]);
      p.be.sgluGate(m, p.up(h, [T, 2 * G]));
      p.be.sgluGateBackward(dh, p.up(dm, [T, G]), p.up(h, [T, 2 * G]));
      return [p.be.download(m), p.be.download(dh)] as const;
    });
    close(`sgluGate T=${T} G=${G}`, ma, mb, 1e-7);
    close(`sgluGateBackward T=${T} G=${G}`, ha, hb, 1e-7);
  }
});

test('cpu kernels: crossEntropy (ignored rows, wide logits, no gradient, gradient aliasing the logits)', { skip }, () => {
  for (const [T, V] of [[1, 1], [1, 2], [3, 2], [5, 17], [9, 1000], [4, 64001]] as const) {
    const g = rng(nextSeed());
    const x = uniform(g, T * V, -8, 8);
    if (T > 2) for (let i = 0; i < V; i++) x[2 * V + i] = -200 + 290 * g.uniform();
    const targets = ints(g, T, V);
    if (T > 1) targets[1] = -100;
    if (V === 2) x[0 * V + targets[0]!] = 12;  // a confident row: p_y − 1 must not cancel away
    const scale = 0.01 + 2 * g.uniform();
    for (const mode of ['separate', 'none', 'aliased'] as const) {
      const [[la, ca, da], [lb, cb, db]] = both((p) => {
        const L = p.up(x, [T, V]);
        const D = mode === 'separate' ? p.be.empty([T, V]) : mode === 'aliased' ? L : null;
        const r = p.be.crossEntropy(L, targets, D, scale);
        return [r.loss, r.count, D ? p.be.download(D) : null] as const;
      });
      assert.equal(ca, cb, `crossEntropy count T=${T} V=${V}`);
      assert.ok(Math.abs(la - lb) <= 1e-6 * Math.max(1, Math.abs(lb)), `crossEntropy loss T=${T} V=${V} ${mode}: ${la} vs ${lb} (seed base ${BASE})`);
      if (da && db) close(`crossEntropy dLogits T=${T} V=${V} ${mode}`, da, db, 1e-6);
    }
  }
  // every row ignored: loss 0, count 0, gradient zeroed
  const [[l, c, d]] = both((p) => {
    const D = p.up(new Float32Array(12).fill(5), [3, 4]);
    const r = p.be.crossEntropy(p.up(new Float32Array(12), [3, 4]), Int32Array.of(-100, -100, -100), D, 1);
    return [r.loss, r.count, p.be.download(D)] as const;
  });
  assert.equal(l, 0);
  assert.equal(c, 0);
  assert.ok(d.every((v) => v === 0));
});

test('cpu kernels: adamw (bias correction at steps 1, 2, 1000; weight decay; gradient scale)', { skip }, () => {
  for (const n of [1, 17, 100003]) {
    for (const step of [1, 2, 1000]) {
      const g = rng(nextSeed());
      const p0 = g.array(n), gr = g.array(n, 3), m0 = g.array(n, 0.1), v0 = uniform(g, n, 0, 0.01);
      const opts = { lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step, gradScale: 0.7 };
      const [[pa, ma, va], [pb, mb, vb]] = both((p) => {
        const P = p.up(p0, [n]), M = p.up(m0, [n]), Vv = p.up(v0, [n]);
        p.be.adamw(P, p.up(gr, [n]), M, Vv, opts);
        return [p.be.download(P), p.be.download(M), p.be.download(Vv)] as const;
      });
      // element-wise, against the size of the terms summed into each result (m, v and p can
      // cancel, so their own size is no yardstick). kernels.h passes the hyperparameters as
      // floats (1 − 0.9f differs from 0.1 by 2e-7 relative), hence a few 1e-7 of those terms.
      const { lr, beta1: b1, beta2: b2, eps, gradScale: gs } = opts;
      const bc1 = 1 - b1 ** step, bc2 = 1 - b2 ** step;
      const worst = [0, 0, 0];
      for (let i = 0; i < n; i++) {
        const gi = gr[i]! * gs;
        const mTerms = Math.abs(b1 * m0[i]!) + Math.abs((1 - b1) * gi);
        const terms = [
          mTerms,
          Math.abs(b2 * v0[i]!) + (1 - b2) * gi * gi,
          Math.abs(p0[i]!) + lr * (mTerms / bc1) / (Math.sqrt(vb[i]! / bc2) + eps),
        ];
        const errs = [Math.abs(ma[i]! - mb[i]!), Math.abs(va[i]! - vb[i]!), Math.abs(pa[i]! - pb[i]!)];
        for (let j = 0; j < 3; j++) worst[j] = Math.max(worst[j]!, errs[j]! / (terms[j]! || 1e-38));
      }
      worst.forEach((w, j) => assert.ok(w <= 5e-7, `adamw ${'mvp'[j]} n=${n} step=${step}: error ${w.toExponential(2)} of its terms (seed base ${BASE})`));
    }
  }
});

// ---- Lightning attention ---------------------------------------------------------------------
function decays(g: Rng, nh: number): Float64Array {
  return Float64Array.from({ length: nh }, (_, h) => (h === 0 ? 0.5 : h === 1 ? 0.9999 : 0.5 + 0.4999 * g.uniform()));
}

test('cpu kernels: lightningForward vs the reference recurrence (block sizes, partial blocks, state, slots, decode)', { skip }, () => {
  const shapes: [number, number, number, number, number][] = [
    // B, N, nh, dk, dv
    [1, 1, 1, 1, 1], [2, 1, 8, 128, 64], [1, 2, 2, 8, 8], [3, 7, 3, 17, 9], [1, 63, 2, 16, 33],
    [2, 64, 1, 64, 64], [1, 65, 4, 128, 64], [2, 300, 2, 31, 15],
  ];
  for (const [B, N, nh, dk, dv] of shapes) {
    for (const block of [1, 7, 16, 64, 256]) {
      if (N > 64 && block === 1 && dk > 64) continue;  // keep the suite quick
      const g = rng(nextSeed());
      const decay = decays(g, nh);
      const q = g.array(B * N * nh * dk), k = g.array(B * N * nh * dk), v = g.array(B * N * nh * dv);
      const S = B + 1;
      const st0 = g.array(S * nh * dk * dv);
      const slots = Int32Array.from({ length: B }, (_, b) => S - 1 - b);
      for (const mode of ['none', 'state', 'slots'] as const) {
        const [[oa, sa], [ob, sb]] = both((p) => {
          const o = p.be.empty([B, N, nh * dv]);
          const st = mode === 'none' ? null : p.up(st0, [S, nh, dk, dv]);
          p.be.lightningForward(o, p.up(q, [B, N, nh * dk]), p.up(k, [B, N, nh * dk]), p.up(v, [B, N, nh * dv]),
            decay, st, block, mode === 'slots' ? slots : null);
          return [p.be.download(o), st ? p.be.download(st) : null] as const;
        });
        const name = `B=${B} N=${N} nh=${nh} dk=${dk} dv=${dv} block=${block} ${mode}`;
        close(`lightningForward o ${name}`, oa, ob, 1e-5);
        if (sa && sb) close(`lightningForward state ${name}`, sa, sb, 1e-5);  // the whole pool
      }
    }
  }
});

test('cpu kernels: lightningForward in chunks carrying the state equals one call', { skip }, () => {
  const g = rng(nextSeed());
  const B = 2, N = 150, nh = 3, dk = 24, dv = 20;
  const decay = decays(g, nh);
  const q = g.array(B * N * nh * dk), k = g.array(B * N * nh * dk), v = g.array(B * N * nh * dv);
  const chunk = (x: Float32Array, d: number, t0: number, n: number) => {
    const out = new Float32Array(B * n * nh * d);
    for (let b = 0; b < B; b++) out.set(x.subarray((b * N + t0) * nh * d, (b * N + t0 + n) * nh * d), b * n * nh * d);
    return out;
  };
  const be = cpu!;
  const whole = be.empty([B, N, nh * dv]), s1 = be.zeros([B, nh, dk, dv]);
  be.lightningForward(whole, be.upload(q, [B, N, nh * dk]), be.upload(k, [B, N, nh * dk]), be.upload(v, [B, N, nh * dv]), decay, s1, 64);
  const s2 = be.zeros([B, nh, dk, dv]);
  const parts = new Float32Array(B * N * nh * dv);
  let t0 = 0;
  for (const n of [1, 40, 1, 1, 64, 43]) {
    const o = be.empty([B, n, nh * dv]);
    be.lightningForward(o, be.upload(chunk(q, dk, t0, n), [B, n, nh * dk]), be.upload(chunk(k, dk, t0, n), [B, n, nh * dk]),
      be.upload(chunk(v, dv, t0, n), [B, n, nh * dv]), decay, s2, 16);
    const od = f32(o);
    for (let b = 0; b < B; b++) parts.set(od.subarray(b * n * nh * dv, (b + 1) * n * nh * dv), (b * N + t0) * nh * dv);
    t0 += n;
  }
  assert.equal(t0, N);
  // and both against the reference in one call
  const refO = ref.empty([B, N, nh * dv]), refS = ref.zeros([B, nh, dk, dv]);
  ref.lightningForward(refO, ref.upload(q, [B, N, nh * dk]), ref.upload(k, [B, N, nh * dk]), ref.upload(v, [B, N, nh * dv]), decay, refS, 64);
  close('chunked outputs vs one call', parts, be.download(whole), 1e-5);
  close('chunked state vs one call', be.download(s2), be.download(s1), 1e-5);
  close('chunked outputs vs reference', parts, ref.download(refO), 1e-5);
  close('chunked state vs reference', be.download(s2), ref.download(refS), 1e-5);
});

test('cpu kernels: lightningBackward vs the reference (block sizes, partial blocks, LRPE-sized heads)', { skip }, () => {
  const shapes: [number, number, number, number, number][] = [
    [1, 1, 1, 1, 1], [2, 1, 2, 8, 8], [1, 7, 3, 17, 9], [2, 63, 2, 16, 33], [1, 65, 2, 128, 64], [2, 200, 2, 31, 15],
  ];
  for (const [B, N, nh, dk, dv] of shapes) {
    for (const block of [1, 16, 64, 256]) {
      if (N > 64 && block === 1 && dk > 64) continue;
      const g = rng(nextSeed());
      const decay = decays(g, nh);
      const q = g.array(B * N * nh * dk), k = g.array(B * N * nh * dk), v = g.array(B * N * nh * dv), dO = g.array(B * N * nh * dv);
      const [[qa, ka, va], [qb, kb, vb]] = both((p) => {
        const dq = p.be.empty([B, N, nh * dk]), dk_ = p.be.empty([B, N, nh * dk]), dv_ = p.be.empty([B, N, nh * dv]);
        p.be.lightningBackward(dq, dk_, dv_, p.up(dO, [B, N, nh * dv]), p.up(q, [B, N, nh * dk]), p.up(k, [B, N, nh * dk]),
          p.up(v, [B, N, nh * dv]), decay, block);
        return [p.be.download(dq), p.be.download(dk_), p.be.download(dv_)] as const;
      });
      const name = `B=${B} N=${N} nh=${nh} dk=${dk} dv=${dv} block=${block}`;
      close(`lightningBackward dq ${name}`, qa, qb, 1e-5);
      close(`lightningBackward dk ${name}`, ka, kb, 1e-5);
      close(`lightningBackward dv ${name}`, va, vb, 1e-5);
    }
  }
});
