// Lightning Attention's block form (cpu backend, many block sizes) and the reference backend's
// recurrence against a float64 naive quadratic form written here: o_t = Σ_{j≤t} λ^{t−j} (q_t·k_j) v_j.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backendsUnderTest, rng } from '../helpers/backends.ts';

function naive(q: Float32Array, k: Float32Array, v: Float32Array, B: number, N: number, nh: number, dk: number, dv: number, lam: Float64Array): Float64Array {
  const o = new Float64Array(B * N * nh * dv);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < nh; h++)
      for (let t = 0; t < N; t++)
        for (let j = 0; j <= t; j++) {
          let dot = 0;
          for (let c = 0; c < dk; c++) dot += q[((b * N + t) * nh + h) * dk + c]! * k[((b * N + j) * nh + h) * dk + c]!;
          const w = dot * lam[h]! ** (t - j);
          for (let c = 0; c < dv; c++) o[((b * N + t) * nh + h) * dv + c] += w * v[((b * N + j) * nh + h) * dv + c]!;
        }
  return o;
}
function relErr(a: Float32Array, b: Float64Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / den);
}

const shapes: [number, number, number, number, number][] = [
  // B, N, nh, dk, dv
  [1, 1, 1, 8, 8], [2, 7, 3, 16, 8], [1, 63, 2, 32, 16], [1, 64, 4, 16, 16], [2, 65, 2, 24, 12], [1, 300, 4, 64, 32], [1, 257, 8, 128, 64], [3, 129, 6, 8, 40],
];
for (const be of await backendsUnderTest()) {
  test(`${be.name}: lightningForward = naive quadratic form (float64), relative error ≤ 1e-5`, () => {
    const r = rng(42);
    let worst = 0;
    for (const [B, N, nh, dk, dv] of shapes) {
      const lam = Float64Array.from({ length: nh }, () => 0.5 + 0.4999 * r.uniform());
      const q = r.array(B * N * nh * dk), k = r.array(B * N * nh * dk), v = r.array(B * N * nh * dv);
      const want = naive(q, k, v, B, N, nh, dk, dv, lam);
      for (const block of be.name === 'reference' ? [64] : [1, 7, 16, 64, 128, 256]) {
        const o = be.empty([B, N, nh * dv]);
        be.lightningForward(o, be.upload(q, [B, N, nh * dk]), be.upload(k, [B, N, nh * dk]), be.upload(v, [B, N, nh * dv]), lam, null, block);
        const e = relErr(be.download(o), want);
        worst = Math.max(worst, e);
        assert.ok(e <= 1e-5, `B${B} N${N} nh${nh} dk${dk} dv${dv} block ${block}: relative error ${e}`);
      }
    }
    assert.ok(worst > 0);
  });
}
