// The GPU correctness check, in one process: every kernel of the CUDA backend against the reference
// backend (float64) on fresh random inputs (outputs poisoned with NaN first), then the whole model
// against ../shared/fixtures/tnl-ref-small (logits, loss, gradients, prefill, decode, greedy), then
// (with --bench) the benchmark suite of src/bench/cuda.ts. Prints a table; writes JSON to $OUT (or
// the current folder).
//   node --import tsx scripts/gpu-check.ts [--bench] [--train] [--decode] [--fixture DIR] [--seed N] [--no-e2e] [--lengths 512,2048]
import { writeFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { DEFAULT_SETTINGS, train } from '../src/train/trainer.ts';
import { join, resolve } from 'node:path';
import type { Backend, DType, Tensor } from '../src/backends/backend.ts';
import { ReferenceBackend } from '../src/backends/reference/index.ts';
import { CudaBackend, cudaAvailable } from '../src/backends/cuda/index.ts';
import type { LightningTuning } from '../src/backends/cuda/plan.ts';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import { loadConfig, presetConfig, slopeDecay } from '../src/config/index.ts';
import { allocParams, exportParams, loadParams } from '../src/model/params.ts';
import { TnlModel, decodePrefetch } from '../src/model/transnormer.ts';
import { benchDecodeE2E, benchTrainE2E, decodePieces, deviceRandomModel, fmtProfile, fmtTable, runCudaBench, type DecodeE2ERow } from '../src/bench/cuda.ts';
import { Decoder } from '../src/generate/decoder.ts';
import { DeviceLoop } from '../src/generate/device-loop.ts';
import { generateTokens } from '../src/generate/generate.ts';
import { Engine } from '../src/serve/scheduler.ts';
import { Sampler, argmax } from '../src/generate/sampling.ts';

const argv = process.argv.slice(2);
const flag = (n: string) => argv.includes(n);
const opt = (n: string) => { const i = argv.indexOf(n); return i >= 0 ? argv[i + 1] : undefined; };
const outDir = process.env.OUT ?? '.';
const seed0 = Number(opt('--seed') ?? (Date.now() % 1e9));

interface Row { check: string; maxAbs: number; rel: number; tol: number; ok: boolean; note?: string }
const rows: Row[] = [];
const results: Record<string, unknown> = { seed: seed0 };

function rng(seed: number) {
  let a = seed >>> 0;
  const u = () => { a = (a + 0x6d2b79f5) >>> 0; let t = Math.imul(a ^ (a >>> 15), a | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
  const n = () => Math.sqrt(-2 * Math.log(Math.max(u(), 1e-12))) * Math.cos(2 * Math.PI * u());
  return { u, n, arr: (len: number, s = 1) => Float32Array.from({ length: len }, () => n() * s), int: (lo: number, hi: number) => lo + Math.floor(u() * (hi - lo)) };
}
let seedCounter = seed0;
const R = () => rng(seedCounter++);

function errs(got: Float32Array, want: Float32Array): { maxAbs: number; rel: number } {
  if (got.length !== want.length) return { maxAbs: NaN, rel: NaN };
  let m = 0, num = 0, den = 0;
  for (let i = 0; i < got.length; i++) {
    const d = got[i]! - want[i]!;
    if (Number.isNaN(d)) return { maxAbs: NaN, rel: NaN };
    m = Math.max(m, Math.abs(d)); num += d * d; den += want[i]! * want[i]!;
  }
  return { maxAbs: m, rel: Math.sqrt(num / Math.max(den, 1e-300)) };
}
function record(check: string, got: Float32Array, want: Float32Array, tol: number, note?: string): void {
  const e = errs(got, want);
  rows.push({ check, ...e, tol, ok: e.rel <= tol, note });
}
function recordScalar(check: string, got: number, want: number, tol: number): void {
  const d = Math.abs(got - want), rel = d / Math.max(Math.abs(want), 1e-300);
  rows.push({ check, maxAbs: d, rel, tol, ok: rel <= tol });
}
function recordError(check: string, e: unknown): void {
  rows.push({ check, maxAbs: NaN, rel: NaN, tol: 0, ok: false, note: (e as Error).message.split('\n').slice(0, 6).join(' | ') });
}
function guarded(check: string, fn: () => void): void {
  try { fn(); } catch (e) { recordError(check, e); }
}

// ---- kernels vs the reference ------------------------------------------------------------------------
function kernelChecks(g: CudaBackend, gtc: CudaBackend): void {
  const ref = new ReferenceBackend();
  const up = (be: Backend, d: Float32Array, s: number[], dt: DType = 'f32') => be.upload(d, s, dt);
  const both = (d: Float32Array, s: number[], dt: DType = 'f32'): [Tensor, Tensor] => [up(ref, d, s, dt), up(g, d, s, dt)];
  const poisoned = (s: number[], dt: DType = 'f32'): [Tensor, Tensor] => { const t = g.empty(s, dt); g.fill(t, NaN); return [ref.zeros(s, dt), t]; };
  const dl = (p: [Tensor, Tensor]) => [g.download(p[1]), ref.download(p[0])] as const;

  guarded('matmul', () => {
    for (const [M, N, K] of [[1, 1, 1], [17, 33, 129], [64, 96, 200], [3, 300, 5], [130, 7, 64]])
      for (const dt of ['f32', 'bf16'] as const)
        for (const ta of [false, true]) for (const tb of [false, true]) {
          const r = R(), acc = r.u() < 0.5;
          const A = both(r.arr(M * K), ta ? [K, M] : [M, K]), B = both(r.arr(K * N), tb ? [N, K] : [K, N], dt);
          const C: [Tensor, Tensor] = acc ? both(r.arr(M * N), [M, N]) : poisoned([M, N]);
          const c0 = acc ? ref.download(C[0]) : null;
          ref.matmul(C[0], A[0], B[0], { transA: ta, transB: tb, accumulate: acc });
          g.matmul(C[1], A[1], B[1], { transA: ta, transB: tb, accumulate: acc });
          const [x, y] = dl(C);
          // compared on the product alone: C + A·B may nearly cancel (1×1×1), hiding nothing
          if (c0) for (let i = 0; i < c0.length; i++) { x[i]! -= c0[i]!; y[i]! -= c0[i]!; }
          record(`matmul ${M}×${N}×${K} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${dt}${acc ? ' acc' : ''}`, x, y, dt === 'bf16' ? 1e-2 : 1e-5, dt === 'bf16' ? 'A rounded to bf16' : undefined);
        }
  });
  guarded('add/scale/sumSquares', () => {
    const r = R(), n = 100003;
    const y = both(r.arr(n), [n]), x = both(r.arr(n), [n]);
    ref.addInPlace(y[0], x[0]); g.addInPlace(y[1], x[1]);
    ref.scaleInPlace(y[0], 0.37); g.scaleInPlace(y[1], 0.37);
    record('addInPlace + scaleInPlace', ...dl(y), 1e-6);
    const z = both(r.arr(n), [n]);
    recordScalar('sumSquares f32', g.sumSquares(z[1]), ref.sumSquares(z[0]), 1e-9);
    const b = both(r.arr(n), [n], 'bf16');
    recordScalar('sumSquares bf16', g.sumSquares(b[1]), ref.sumSquares(b[0]), 1e-9);
    recordScalar('sumSquares of a list (f32, bf16, empty)', g.sumSquares([z[1], b[1], g.empty([0])]), ref.sumSquares(z[0]) + ref.sumSquares(b[0]), 1e-9);
  });
  guarded('embedding', () => {
    for (const dt of ['f32', 'bf16'] as const) {
      const r = R(), V = 50, D = 37, T = 29;
      const ids = Int32Array.from({ length: T }, (_, i) => (i % 7 === 0 ? 0 : r.int(0, V)));
      const E = both(r.arr(V * D), [V, D], dt), O = poisoned([T, D]);
      ref.embedding(O[0], E[0], ids, 1.7); g.embedding(O[1], E[1], ids, 1.7);
      record(`embedding ${dt} table`, ...dl(O), 1e-7);
      const dT = both(r.arr(V * D), [V, D]), dO = both(r.arr(T * D), [T, D]);
      ref.embeddingBackward(dT[0], dO[0], ids, 1.3, 0); g.embeddingBackward(dT[1], dO[1], ids, 1.3, 0);
      if (dt === 'f32') record('embeddingBackward (repeats, padding row)', ...dl(dT), 1e-6);
    }
  });
  guarded('srmsnorm', () => {
    for (const D of [3, 37, 128, 1000]) {
      const r = R(), rows_ = 33;
      const x = both(r.arr(rows_ * D, 3), [rows_, D]), y = poisoned([rows_, D]), rs = poisoned([rows_]);
      ref.srmsnorm(y[0], rs[0], x[0], 1e-6); g.srmsnorm(y[1], rs[1], x[1], 1e-6);
      record(`srmsnorm D=${D}`, ...dl(y), 1e-6);
      record(`srmsnorm rstd D=${D}`, ...dl(rs), 1e-6);
      for (const acc of [false, true]) {
        const dy = both(r.arr(rows_ * D), [rows_, D]), dx: [Tensor, Tensor] = acc ? both(r.arr(rows_ * D), [rows_, D]) : poisoned([rows_, D]);
        ref.srmsnormBackward(dx[0], dy[0], y[0], rs[0], acc); g.srmsnormBackward(dx[1], dy[1], y[1], rs[1], acc);
        record(`srmsnormBackward D=${D}${acc ? ' acc' : ''}`, ...dl(dx), 1e-5);
      }
    }
  });
  guarded('glaQKV', () => {
    for (const dh of [5, 8]) for (const lrpe of [false, true]) for (const masked of [false, true]) {
      const r = R(), T = 23, nh = 3, H = nh * dh, dk = lrpe ? 2 * dh : dh;
      const X = both(r.arr(T * 4 * H, 2), [T, 4 * H]);
      const th = lrpe ? both(Float32Array.from({ length: H }, (_, i) => 10000 ** (-2 * i / H)), [nh, dh]) : null;
      const pos = Int32Array.from({ length: T }, () => r.int(0, 5000));
      const mask = masked ? Int32Array.from({ length: T }, (_, i) => (i % 4 === 1 ? 0 : 1)) : null;
      const q = poisoned([1, T, nh * dk]), k = poisoned([1, T, nh * dk]), v = poisoned([1, T, H]);
      ref.glaQKV(q[0], k[0], v[0], X[0], nh, th ? th[0] : null, pos, mask);
      g.glaQKV(q[1], k[1], v[1], X[1], nh, th ? th[1] : null, pos, mask);
      const tag = `dh=${dh} ${lrpe ? 'lrpe' : 'plain'}${masked ? ' masked' : ''}`;
      record(`glaQKV q ${tag}`, ...dl(q), 1e-6); record(`glaQKV k ${tag}`, ...dl(k), 1e-6); record(`glaQKV v ${tag}`, ...dl(v), 0);
      const dq = both(r.arr(T * nh * dk), [1, T, nh * dk]), dk_ = both(r.arr(T * nh * dk), [1, T, nh * dk]), dv = both(r.arr(T * H), [1, T, H]);
      const G = both(r.arr(T * 4 * H), [T, 4 * H]);  // column block u keeps its values
      const dth = lrpe ? both(r.arr(H), [nh, dh]) : null;
      ref.glaQKVBackward(G[0], dth ? dth[0] : null, dq[0], dk_[0], dv[0], X[0], nh, th ? th[0] : null, pos, mask);
      g.glaQKVBackward(G[1], dth ? dth[1] : null, dq[1], dk_[1], dv[1], X[1], nh, th ? th[1] : null, pos, mask);
      record(`glaQKVBackward dqkvu ${tag}`, ...dl(G), 1e-5);
      if (dth) record(`glaQKVBackward dθ ${tag}`, ...dl(dth), 1e-5);
    }
  });
  const lightningCase = (be: CudaBackend, label: string, B: number, N: number, nh: number, dk: number, dv: number, withState: boolean, slots: Int32Array | null, tol: number, scale = 0.5,
    decay = slopeDecay(nh)) => {
    const r = R();
    const q = both(r.arr(B * N * nh * dk, scale), [B, N, nh * dk]), k = both(r.arr(B * N * nh * dk, scale), [B, N, nh * dk]), v = both(r.arr(B * N * nh * dv), [B, N, nh * dv]);
    const pool = slots ? Math.max(...slots) + 2 : B;
    const S = withState ? both(r.arr(pool * nh * dk * dv), [pool, nh, dk, dv]) : null;
    const ref_ = new ReferenceBackend();
    const o: [Tensor, Tensor] = [ref_.zeros([B, N, nh * dv]), (() => { const t = be.empty([B, N, nh * dv]); be.fill(t, NaN); return t; })()];
    ref_.lightningForward(o[0], q[0], k[0], v[0], decay, S ? S[0] : null, 64, slots);
    be.lightningForward(o[1], q[1], k[1], v[1], decay, S ? S[1] : null, 64, slots);
    const tag = `${label} B=${B} N=${N} nh=${nh} dk=${dk} dv=${dv}${S ? ' state' : ''}${slots ? ' slots' : ''}`;
    record(`lightningForward ${tag}`, be.download(o[1]), ref_.download(o[0]), tol);
    if (S) record(`lightningForward state out ${tag}`, be.download(S[1]), ref_.download(S[0]), tol);
  };
  const lightningBwdCase = (be: CudaBackend, label: string, B: number, N: number, nh: number, dk: number, dv: number, tol: number) => {
    const r = R();
    const decay = slopeDecay(nh);
    const q = both(r.arr(B * N * nh * dk, 0.5), [B, N, nh * dk]), k = both(r.arr(B * N * nh * dk, 0.5), [B, N, nh * dk]), v = both(r.arr(B * N * nh * dv), [B, N, nh * dv]);
    const dO = both(r.arr(B * N * nh * dv), [B, N, nh * dv]);
    const ref_ = new ReferenceBackend();
    const mk = (s: number[]): [Tensor, Tensor] => [ref_.zeros(s), (() => { const t = be.empty(s); be.fill(t, NaN); return t; })()];
    const dq = mk([B, N, nh * dk]), dk_ = mk([B, N, nh * dk]), dv_ = mk([B, N, nh * dv]);
    ref_.lightningBackward(dq[0], dk_[0], dv_[0], dO[0], q[0], k[0], v[0], decay, 64);
    be.lightningBackward(dq[1], dk_[1], dv_[1], dO[1], q[1], k[1], v[1], decay, 64);
    const tag = `${label} B=${B} N=${N} nh=${nh} dk=${dk} dv=${dv}`;
    record(`lightningBackward dq ${tag}`, be.download(dq[1]), ref_.download(dq[0]), tol);
    record(`lightningBackward dk ${tag}`, be.download(dk_[1]), ref_.download(dk_[0]), tol);
    record(`lightningBackward dv ${tag}`, be.download(dv_[1]), ref_.download(dv_[0]), tol);
  };
  for (const [B, N, nh, dk, dv, st, sl] of [
    [2, 1, 2, 8, 4, true, null], [2, 77, 3, 10, 6, true, null], [1, 200, 2, 64, 32, false, null], [2, 65, 2, 16, 8, true, Int32Array.of(3, 1)],
    [1, 70, 1, 256, 32, true, null], [1, 129, 2, 128, 128, false, null], [3, 1, 2, 16, 16, true, Int32Array.of(0, 4, 2)],
  ] as const) guarded(`lightningForward fp32 ${B},${N}`, () => lightningCase(g, 'fp32', B, N, nh, dk, dv, st, sl, 1e-5));
  for (const [B, N, nh, dk, dv] of [[2, 77, 3, 10, 6], [1, 130, 2, 16, 8], [1, 100, 2, 128, 64]] as const)
    guarded(`lightningBackward fp32 ${B},${N}`, () => lightningBwdCase(g, 'fp32', B, N, nh, dk, dv, 1e-5));
  // tensor cores (bf16 operands, fp32 state): ~1e-2 expected
  for (const [B, N, nh, dk, dv, st] of [[2, 150, 2, 128, 64, false], [1, 130, 2, 64, 128, true], [1, 1000, 2, 128, 128, false], [2, 64, 1, 128, 64, true]] as const)
    guarded(`lightningForward tc ${B},${N}`, () => lightningCase(gtc, 'tc', B, N, nh, dk, dv, st, null, 2e-2));
  for (const [B, N, nh, dk, dv] of [[2, 150, 2, 128, 64], [1, 97, 2, 64, 64], [1, 300, 2, 128, 128]] as const)
    guarded(`lightningBackward tc ${B},${N}`, () => lightningBwdCase(gtc, 'tc', B, N, nh, dk, dv, 2e-2));
  // the sequence-parallel form (segments in rounds of G blocks, states exchanged between blocks),
  // forced onto short sequences: several rounds, a partial last round, initial and final states
  const seqCase = (seg: number, maxG: number, fn: () => void, extra: LightningTuning = {}) => {
    const prev = gtc.lightningTuning;
    gtc.lightningTuning = { ...prev, seg, maxG, ...extra };
    try { fn(); } finally { gtc.lightningTuning = prev; }
  };
  for (const [B, N, nh, dk, dv, st, seg, G] of [[1, 1000, 2, 128, 128, true, 128, 3], [2, 777, 1, 64, 128, true, 64, 4], [1, 300, 3, 128, 64, false, 64, 2], [1, 2000, 1, 128, 256, true, 256, 8]] as const)
    guarded(`lightningForward tc seq ${B},${N}`, () => seqCase(seg, G, () => lightningCase(gtc, `tc seq L=${seg} G≤${G}`, B, N, nh, dk, dv, st, null, 2e-2)));
  // strongly decaying heads (λ = 0.5, 0.9, 0.99: state-only passes of 1, 4 and all 8 chunks of a 512-token segment)
  guarded('lightningForward tc seq short state passes', () => seqCase(512, 4, () =>
    lightningCase(gtc, 'tc seq L=512 G≤4 λ=0.5,0.9,0.99', 1, 3000, 3, 128, 128, true, null, 2e-2, 0.5, Float64Array.of(0.5, 0.9, 0.99))));
  // the last block's segment as long as the others' (no longer than them: the old form), and 4× as long
  for (const lastSeg of [128, 512])
    guarded(`lightningForward tc seq LG=${lastSeg}`, () => seqCase(128, 4, () => lightningCase(gtc, `tc seq L=128 LG=${lastSeg} G≤4`, 1, 1500, 2, 128, 128, true, null, 2e-2), { lastSeg }));
  for (const [B, N, nh, dk, dv, seg, G] of [[1, 700, 2, 128, 128, 128, 2], [1, 500, 1, 64, 64, 64, 3]] as const)
    guarded(`lightningBackward tc seq ${B},${N}`, () => seqCase(seg, G, () => lightningBwdCase(gtc, `tc seq L=${seg} G≤${G}`, B, N, nh, dk, dv, 2e-2)));
  // DK = DV = 128 runs the warp-specialised wgmma kernel on Hopper; the mma.sync kernel of the same widths, forced
  for (const [B, N, nh, st, seg, G] of [[2, 300, 2, true, 512, 1], [1, 900, 2, true, 128, 3]] as const)
    guarded(`lightningForward tc mma.sync ${B},${N}`, () => seqCase(seg, G, () => lightningCase(gtc, `tc mma.sync L=${seg} G≤${G}`, B, N, nh, 128, 128, st, null, 2e-2), { wgmma: false }));
  guarded('lightningBackward tc mma.sync', () => seqCase(512, 1, () => lightningBwdCase(gtc, 'tc mma.sync', 1, 200, 2, 128, 128, 2e-2), { wgmma: false }));
  for (const H of [37, 40]) guarded(`normGate H=${H}`, () => {
    const r = R(), T = 19;
    const o = both(r.arr(T * H, 2), [T, H]), X = both(r.arr(T * 4 * H), [T, 4 * H]), a = poisoned([T, H]), rs = poisoned([T]);
    ref.normGate(a[0], rs[0], o[0], X[0], 1e-6); g.normGate(a[1], rs[1], o[1], X[1], 1e-6);
    record(`normGate a H=${H}`, ...dl(a), 1e-6); record(`normGate rstd H=${H}`, ...dl(rs), 1e-6);
    const dA = both(r.arr(T * H), [T, H]), dO = poisoned([T, H]), G = both(r.arr(T * 4 * H), [T, 4 * H]);
    ref.normGateBackward(dO[0], G[0], dA[0], o[0], rs[0], X[0]); g.normGateBackward(dO[1], G[1], dA[1], o[1], rs[1], X[1]);
    record(`normGateBackward dO H=${H}`, ...dl(dO), 1e-5); record(`normGateBackward dqkvu H=${H}`, ...dl(G), 1e-6);
  });
  for (const G of [29, 40]) guarded(`sglu G=${G}`, () => {
    const r = R(), T = 13;
    const h = both(r.arr(T * 2 * G), [T, 2 * G]), m = poisoned([T, G]);
    ref.sgluGate(m[0], h[0]); g.sgluGate(m[1], h[1]);
    record(`sgluGate G=${G}`, ...dl(m), 1e-7);
    const dm = both(r.arr(T * G), [T, G]), dh = poisoned([T, 2 * G]);
    ref.sgluGateBackward(dh[0], dm[0], h[0]); g.sgluGateBackward(dh[1], dm[1], h[1]);
    record(`sgluGateBackward G=${G}`, ...dl(dh), 1e-7);
  });
  guarded('crossEntropy', () => {
    for (const [T, V] of [[9, 1001], [4, 50000]]) {
      const r = R();
      const tg = Int32Array.from({ length: T }, (_, i) => (i === 2 || i === T - 1 ? -100 : r.int(0, V)));
      const L = both(r.arr(T * V, 3), [T, V]);
      const a = ref.crossEntropy(L[0], tg, null, 1), b = g.crossEntropy(L[1], tg, null, 1);
      recordScalar(`crossEntropy loss ${T}×${V}`, b.loss, a.loss, 1e-5);
      rows.push({ check: `crossEntropy count ${T}×${V}`, maxAbs: Math.abs(a.count - b.count), rel: Math.abs(a.count - b.count), tol: 0, ok: a.count === b.count });
      const a2 = ref.crossEntropy(L[0], tg, L[0], 0.25), b2 = g.crossEntropy(L[1], tg, L[1], 0.25);  // dLogits aliases logits
      recordScalar(`crossEntropy loss (aliased dLogits) ${T}×${V}`, b2.loss, a2.loss, 1e-5);
      record(`crossEntropy dLogits (aliased) ${T}×${V}`, ...dl(L), 1e-5);
    }
  });
  guarded('adamw', () => {
    const r = R(), n = 1003;
    const p = both(r.arr(n), [n]), gr = both(r.arr(n), [n]), m = both(r.arr(n, 0.1), [n]), v = both(Float32Array.from(r.arr(n, 0.1), Math.abs), [n]);
    const o = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 7, gradScale: 0.5 };
    ref.adamw(p[0], gr[0], m[0], v[0], o); g.adamw(p[1], gr[1], m[1], v[1], o);
    record('adamw param', ...dl(p), 1e-6); record('adamw m', ...dl(m), 1e-6); record('adamw v', ...dl(v), 1e-6);
  });
  guarded('memory', () => {
    const r = R(), rowsN = 37, cols = 19;
    const x = r.arr(rowsN * cols, 5);
    const a = both(x, [rowsN, cols]), b16 = poisoned([rowsN, cols], 'bf16');
    ref.copy(b16[0], a[0]); g.copy(b16[1], a[1]);
    record('copy f32→bf16 (round to nearest even)', ...dl(b16), 0);
    const back = poisoned([rowsN, cols]);
    ref.copy(back[0], b16[0]); g.copy(back[1], b16[1]);
    record('copy bf16→f32', ...dl(back), 0);
    const idx = Int32Array.of(5, 0, 36, 5, 12);
    for (const [label, src] of [['f32', a], ['bf16', b16]] as const) {
      const o = poisoned([idx.length, cols], label);
      ref.gatherRows(o[0], src[0], idx); g.gatherRows(o[1], src[1], idx);
      record(`gatherRows ${label}`, ...dl(o), 0);
    }
    const vr = [ref.rows(a[0], 7, 11), g.rows(a[1], 7, 11)];
    record('rows view download', g.download(vr[1]!), ref.download(vr[0]!), 0);
    ref.fill(vr[0]!, 2.5); g.fill(vr[1]!, 2.5);
    record('fill through a rows view', ...dl(a), 0);
    record('upload/download bf16 bits', g.download(g.uploadBF16(Uint16Array.of(0x3f80, 0xc000, 0x4049, 1), [4])), ref.download(ref.uploadBF16(Uint16Array.of(0x3f80, 0xc000, 0x4049, 1), [4])), 0);
  });
}

// ---- bf16 activations (mixed precision): the same kernels with bf16 storage, against the reference
// backend on the same bf16 inputs (its outputs rounded once; ours may differ by an ulp) ----------------
function bf16Checks(g: CudaBackend): void {
  const ref = new ReferenceBackend();
  const both = (d: Float32Array, s: number[], dt: DType = 'bf16'): [Tensor, Tensor] => [ref.upload(d, s, dt), g.upload(d, s, dt)];
  const out = (s: number[], dt: DType = 'bf16'): [Tensor, Tensor] => { const t = g.empty(s, dt); g.fill(t, NaN); return [ref.zeros(s, dt), t]; };
  const cmp = (check: string, p: [Tensor, Tensor], tol = 1e-2) => record(`bf16 ${check}`, g.download(p[1]), ref.download(p[0]), tol);
  guarded('bf16 matmul', () => {
    for (const [M, N, K] of [[33, 70, 129], [1, 300, 64], [130, 8, 200]])
      for (const [ta, tb, acc, at, bt, ct] of [[false, true, false, 'bf16', 'bf16', 'bf16'], [false, false, true, 'f32', 'bf16', 'bf16'], [true, false, true, 'bf16', 'bf16', 'f32'], [false, true, false, 'bf16', 'f32', 'f32']] as const) {
        const r = R();
        const A = both(r.arr(M * K), ta ? [K, M] : [M, K], at), B = both(r.arr(K * N), tb ? [N, K] : [K, N], bt);
        const C: [Tensor, Tensor] = acc ? both(r.arr(M * N), [M, N], ct) : out([M, N], ct);
        ref.matmul(C[0], A[0], B[0], { transA: ta, transB: tb, accumulate: acc }); g.matmul(C[1], A[1], B[1], { transA: ta, transB: tb, accumulate: acc });
        cmp(`matmul ${M}×${N}×${K} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} A ${at} B ${bt} C ${ct}${acc ? ' acc' : ''}`, C);
      }
  });
  guarded('bf16 gemv (decode rows)', () => {
    for (const [M, N, K] of [[1, 1000, 1024], [5, 333, 2816], [8, 64, 5632]])
      for (const [at, ct, acc] of [['f32', 'f32', true], ['bf16', 'bf16', false], ['bf16', 'f32', false]] as const) {
        const r = R();
        const A = both(r.arr(M * K), [M, K], at), W = both(r.arr(N * K, 0.05), [N, K]);
        const C: [Tensor, Tensor] = acc ? both(r.arr(M * N), [M, N], ct) : out([M, N], ct);
        ref.matmul(C[0], A[0], W[0], { transB: true, accumulate: acc }); g.matmul(C[1], A[1], W[1], { transB: true, accumulate: acc });
        cmp(`gemv ${M}×${N}×${K} A ${at} C ${ct}${acc ? ' acc' : ''}`, C, ct === 'f32' && at === 'f32' ? 1e-2 : 1.5e-2);
      }
  });
  guarded('decode fusions', () => {
    for (const [M, N, K] of [[1, 700, 1024], [2, 300, 2816], [6, 64, 2816], [8, 100, 512]])
      for (const label of ['plain', 'normA', 'gluA', 'normGate'] as const)
        for (const at of ['f32', 'bf16'] as const) {
          const r = R(), cols = label === 'gluA' ? 2 * K : K;
          const A = both(r.arr(M * cols, 2), [M, cols], at), W = both(r.arr(N * K, 0.05), [N, K]), U = both(r.arr(M * 4 * K), [M, 4 * K]);
          const o = label === 'plain' ? {} : label === 'normA' ? { normA: 1e-6 } : label === 'gluA' ? { gluA: true } : null;
          const C = both(r.arr(M * N), [M, N], 'f32');
          ref.matmul(C[0], A[0], W[0], { transB: true, accumulate: true, ...(o ?? { normGate: { qkvu: U[0], eps: 1e-6 } }) });
          g.matmul(C[1], A[1], W[1], { transB: true, accumulate: true, ...(o ?? { normGate: { qkvu: U[1], eps: 1e-6 } }) });
          cmp(`gemv ${label} ${M}×${N}×${K} (A ${at}, acc)`, C, 1e-2);
        }
    for (const [B, nh, dh, lrpe, slots] of [[1, 8, 128, true, null], [3, 2, 64, false, Int32Array.of(4, 0, 2)], [2, 4, 32, true, Int32Array.of(1, 3)], [1, 2, 160, true, null]] as const) {
      const r = R(), H = nh * dh, dk = lrpe ? 2 * dh : dh, rows = slots ? 5 : B;
      const decay = slopeDecay(nh);
      const X = both(r.arr(B * 4 * H), [B, 4 * H]), S = both(r.arr(rows * nh * dk * dh, 0.5), [rows, nh, dk, dh], 'f32');
      const th = lrpe ? both(Float32Array.from({ length: H }, (_, i) => 10000 ** (-2 * i / H)), [nh, dh], 'f32') : null;
      const pos = Int32Array.from({ length: B }, () => r.int(0, 70000)), mask = Int32Array.from({ length: B }, (_, i) => (i === 1 ? 0 : 1));
      const q = ref.zeros([B, 1, nh * dk], 'bf16'), k = ref.zeros([B, 1, nh * dk], 'bf16'), v = ref.zeros([B, 1, H], 'bf16');
      const o = out([B, 1, H]);
      ref.glaQKV(q, k, v, X[0], nh, th?.[0] ?? null, pos, mask);
      ref.lightningForward(o[0], q, k, v, decay, S[0], 64, slots);
      g.glaStep(o[1], X[1], nh, th?.[1] ?? null, pos, mask, decay, S[1], slots);
      const tag = `B=${B} nh=${nh} dh=${dh}${lrpe ? ' lrpe' : ''}${slots ? ' slots' : ''}`;
      cmp(`glaStep o ${tag}`, o); cmp(`glaStep state ${tag}`, S, 1e-2);
    }
    // the batch-1 projection and step in one kernel (a cluster of 16 blocks a head, dh = 128) against
    // the reference's matmul (normA) → glaQKV → lightningForward
    for (const [nh, D, lrpe, slots, masked, xt] of [[2, 384, true, null, false, 'f32'], [3, 1024, false, Int32Array.of(2), false, 'bf16'], [1, 256, true, Int32Array.of(0), true, 'bf16']] as const) {
      const r = R(), dh = 128, H = nh * dh, dk = lrpe ? 2 * dh : dh, rows = slots ? 3 : 1;
      const decay = slopeDecay(nh);
      const x = both(r.arr(D, 2), [1, D], xt), W = both(r.arr(4 * H * D, 0.05), [4 * H, D], 'bf16');
      const S = both(r.arr(rows * nh * dk * dh, 0.5), [rows, nh, dk, dh], 'f32');
      const th = lrpe ? both(Float32Array.from({ length: H }, (_, i) => 10000 ** (-2 * i / H)), [nh, dh], 'f32') : null;
      const pos = Int32Array.of(r.int(0, 70000)), mask = masked ? Int32Array.of(0) : null;
      const X = out([1, 4 * H]), o = out([1, 1, H]);
      ref.matmul(X[0], x[0], W[0], { transB: true, normA: 1e-6 });
      const q = ref.zeros([1, 1, nh * dk], 'bf16'), k = ref.zeros([1, 1, nh * dk], 'bf16'), v = ref.zeros([1, 1, H], 'bf16');
      ref.glaQKV(q, k, v, X[0], nh, th?.[0] ?? null, pos, mask);
      ref.lightningForward(o[0], q, k, v, decay, S[0], 64, slots);
      const S0 = g.upload(g.download(S[1]), S[1].shape, 'f32');
      for (const cs of [16, 8]) {
        g.stepCluster = cs;
        g.copy(S[1], S0);
        g.fill(X[1], NaN); g.fill(o[1], NaN);
        const fused = g.glaProjectStep(o[1], X[1], x[1], W[1], 1e-6, nh, th?.[1] ?? null, pos, mask, decay, S[1], slots);
        const tag = `nh=${nh} D=${D} x ${xt}${lrpe ? ' lrpe' : ''}${slots ? ' slots' : ''}${masked ? ' v masked' : ''}, clusters of ${cs}`;
        if (!fused) { recordError(`glaProjectStep ${tag}`, new Error('not fused on this GPU (needs sm_90 clusters)')); continue; }
        cmp(`glaProjectStep qkvu ${tag}`, X); cmp(`glaProjectStep o ${tag}`, o); cmp(`glaProjectStep state ${tag}`, S, 1e-2);
      }
      g.stepCluster = 0;
      g.free(S0);
    }
  });
  guarded('bf16 srmsnorm', () => {
    const r = R(), T = 33, D = 1000;
    const x = both(r.arr(T * D, 3), [T, D], 'f32'), y = out([T, D]), rs = out([T], 'f32');
    ref.srmsnorm(y[0], rs[0], x[0], 1e-6); g.srmsnorm(y[1], rs[1], x[1], 1e-6);
    cmp('srmsnorm y (x f32)', y); cmp('srmsnorm rstd', rs, 1e-6);
    const dy = both(r.arr(T * D), [T, D]), dx = both(r.arr(T * D), [T, D], 'f32');
    ref.srmsnormBackward(dx[0], dy[0], y[0], rs[0], true); g.srmsnormBackward(dx[1], dy[1], y[1], rs[1], true);
    cmp('srmsnormBackward dx f32 acc', dx, 1e-4);
  });
  guarded('bf16 gla', () => {
    const r = R(), T = 23, nh = 3, dh = 8, H = nh * dh;
    for (const lrpe of [false, true]) {
      const dk = lrpe ? 2 * dh : dh;
      const X = both(r.arr(T * 4 * H, 2), [T, 4 * H]);
      const th = lrpe ? both(Float32Array.from({ length: H }, (_, i) => 10000 ** (-2 * i / H)), [nh, dh], 'f32') : null;
      const pos = Int32Array.from({ length: T }, () => r.int(0, 5000)), mask = Int32Array.from({ length: T }, (_, i) => (i % 5 === 2 ? 0 : 1));
      const q = out([1, T, nh * dk]), k = out([1, T, nh * dk]), v = out([1, T, H]);
      ref.glaQKV(q[0], k[0], v[0], X[0], nh, th?.[0] ?? null, pos, mask); g.glaQKV(q[1], k[1], v[1], X[1], nh, th?.[1] ?? null, pos, mask);
      cmp(`glaQKV q${lrpe ? ' lrpe' : ''}`, q); cmp(`glaQKV k${lrpe ? ' lrpe' : ''}`, k); cmp('glaQKV v', v, 0);
      const G = both(r.arr(T * 4 * H), [T, 4 * H]), dth = lrpe ? both(r.arr(H), [nh, dh], 'f32') : null;
      ref.glaQKVBackward(G[0], dth?.[0] ?? null, q[0], k[0], v[0], X[0], nh, th?.[0] ?? null, pos, mask);
      g.glaQKVBackward(G[1], dth?.[1] ?? null, q[1], k[1], v[1], X[1], nh, th?.[1] ?? null, pos, mask);
      cmp(`glaQKVBackward dqkvu${lrpe ? ' lrpe' : ''}`, G);
      if (dth) cmp('glaQKVBackward dθ (f32)', dth, 1e-4);
    }
    const o = both(r.arr(T * H, 2), [T, H]), X = both(r.arr(T * 4 * H), [T, 4 * H]), a = out([T, H]), rs = out([T], 'f32');
    ref.normGate(a[0], rs[0], o[0], X[0], 1e-6); g.normGate(a[1], rs[1], o[1], X[1], 1e-6);
    cmp('normGate a', a);
    const dA = both(r.arr(T * H), [T, H]), dO = out([T, H]), G = both(r.arr(T * 4 * H), [T, 4 * H]);
    ref.normGateBackward(dO[0], G[0], dA[0], o[0], rs[0], X[0]); g.normGateBackward(dO[1], G[1], dA[1], o[1], rs[1], X[1]);
    cmp('normGateBackward dO', dO); cmp('normGateBackward dqkvu', G);
    const h = both(r.arr(T * 2 * H), [T, 2 * H]), m = out([T, H]);
    ref.sgluGate(m[0], h[0]); g.sgluGate(m[1], h[1]); cmp('sgluGate', m);
    const dm = both(r.arr(T * H), [T, H]), dh_ = out([T, 2 * H]);
    ref.sgluGateBackward(dh_[0], dm[0], h[0]); g.sgluGateBackward(dh_[1], dm[1], h[1]); cmp('sgluGateBackward', dh_);
  });
  guarded('bf16 lightning', () => {
    for (const [B, N, nh, dk, dv, st] of [[2, 150, 2, 128, 128, false], [1, 70, 2, 256, 128, true], [3, 1, 2, 128, 128, true]] as const) {
      const r = R();
      const decay = slopeDecay(nh);
      const q = both(r.arr(B * N * nh * dk, 0.3), [B, N, nh * dk]), k = both(r.arr(B * N * nh * dk, 0.3), [B, N, nh * dk]), v = both(r.arr(B * N * nh * dv), [B, N, nh * dv]);
      const S = st ? both(r.arr(B * nh * dk * dv), [B, nh, dk, dv], 'f32') : null;
      const o = out([B, N, nh * dv]);
      ref.lightningForward(o[0], q[0], k[0], v[0], decay, S?.[0] ?? null, 64); g.lightningForward(o[1], q[1], k[1], v[1], decay, S?.[1] ?? null, 64);
      const tag = `B=${B} N=${N} dk=${dk} dv=${dv}${st ? ' state' : ''}`;
      cmp(`lightningForward ${tag}`, o, 2e-2);
      if (S) cmp(`lightningForward state ${tag}`, S, 2e-2);
      if (N > 1 && !st) {
        const dO = both(r.arr(B * N * nh * dv), [B, N, nh * dv]), dq = out([B, N, nh * dk]), dk_ = out([B, N, nh * dk]), dv_ = out([B, N, nh * dv]);
        ref.lightningBackward(dq[0], dk_[0], dv_[0], dO[0], q[0], k[0], v[0], decay, 64); g.lightningBackward(dq[1], dk_[1], dv_[1], dO[1], q[1], k[1], v[1], decay, 64);
        cmp(`lightningBackward dq ${tag}`, dq, 2e-2); cmp(`lightningBackward dk ${tag}`, dk_, 2e-2); cmp(`lightningBackward dv ${tag}`, dv_, 2e-2);
      }
    }
  });
  guarded('bf16 crossEntropy', () => {
    const r = R(), T = 6, V = 50000;
    const tg = Int32Array.from({ length: T }, (_, i) => (i === 2 ? -100 : r.int(0, V)));
    const L = both(r.arr(T * V, 3), [T, V]);
    const a = ref.crossEntropy(L[0], tg, L[0], 0.5), b = g.crossEntropy(L[1], tg, L[1], 0.5);
    recordScalar('bf16 crossEntropy loss', b.loss, a.loss, 1e-5);
    cmp('crossEntropy dLogits (aliased)', L);
  });
}

// ---- the whole model vs the fixture -----------------------------------------------------------------
function fixtureDir(): string | null {
  for (const c of [opt('--fixture'), '.gpu/fixtures/tnl-ref-small', '../shared/fixtures/tnl-ref-small', 'shared/fixtures/tnl-ref-small'])
    if (c && existsSync(join(c, 'model.safetensors'))) return resolve(c);
  return null;
}
function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) { const d = Math.abs(a[i]! - b[i]!); if (Number.isNaN(d)) return NaN; m = Math.max(m, d); }
  return m;
}
function fixtureChecks(be: CudaBackend, dir: string, label: string, tolScale: number): void {
  const config = loadConfig(dir);
  const load = (block: number) => {
    const p = allocParams(be, config);
    const f = SafetensorsFile.open(join(dir, 'model.safetensors'));
    try { loadParams(be, p, config, f, f.path); } finally { f.close(); }
    return new TnlModel(config, be, p, { blockSize: block });
  };
  const ex = SafetensorsFile.open(join(dir, 'expected.safetensors'));
  const get = (n: string) => ex.readAs(n, 'f32').data as Float32Array;
  const ids = Int32Array.from(ex.read('input_ids').data as BigInt64Array, (x) => Number(x));
  const P = Number(ex.metadata.prompt_len), N = ids.length / 2, V = config.vocab_size;
  const abs = (check: string, d: number, tol: number) => rows.push({ check: `${label}: ${check}`, maxAbs: d, rel: NaN, tol, ok: d <= tol });
  guarded(`${label}: logits/loss/grads`, () => {
    const model = load(64);
    abs('logits_parallel max |Δ|', maxAbsDiff(be.download(model.forward(ids, 2, N)), get('logits_parallel')), 1e-4 * tolScale);
    const g = model.allocGrads();
    const { loss } = model.lossAndGrads(ids, 2, N, g);
    abs('loss |Δ|', Math.abs(loss - get('loss')[0]!), 1e-5 * tolScale);
    let worst = 0, worstName = '';
    for (const e of exportParams(be, g, config)) {
      const r = errs(e.data, get('grad.' + e.name)).rel;
      if (!(r <= worst)) { worst = r; worstName = e.name; }
    }
    rows.push({ check: `${label}: gradients, worst relative error`, maxAbs: NaN, rel: worst, tol: 1e-4 * tolScale, ok: worst <= 1e-4 * tolScale, note: worstName });
  });
  for (const block of [1, 64, 256]) guarded(`${label}: prefill/decode block ${block}`, () => {
    const model = load(block);
    const pre = new Int32Array(2 * P);
    for (let b = 0; b < 2; b++) pre.set(ids.subarray(b * N, b * N + P), b * P);
    const state = model.newState(2);
    abs(`prefill (block ${block}) logits max |Δ|`, maxAbsDiff(be.download(model.prefill(pre, 2, P, state, { allLogits: true })), get('logits_prefill')), 1e-4 * tolScale);
    const expDec = get('logits_decode');
    let worst = 0;
    for (let s = 0; s < N - P; s++) {
      const l = be.download(model.decode(Int32Array.from([ids[P + s]!, ids[N + P + s]!]), state));
      for (let b = 0; b < 2; b++) worst = Math.max(worst, maxAbsDiff(l.subarray(b * V, (b + 1) * V), expDec.subarray((b * (N - P) + s) * V, (b * (N - P) + s + 1) * V)));
    }
    abs(`decode after block-${block} prefill, worst max |Δ|`, worst, 1e-4 * tolScale);
  });
  guarded(`${label}: greedy`, () => {
    const model = load(64);
    const want = Array.from(ex.read('greedy_ids').data as BigInt64Array, Number);
    const state = model.newState(1);
    let logits = be.download(model.prefill(ids.subarray(0, P), 1, P, state));
    const got: number[] = [];
    while (got.length < want.length) {
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
      got.push(best);
      logits = be.download(model.decode(Int32Array.of(best), state));
    }
    const same = got.every((x, i) => x === want[i]);
    let firstDiff = got.findIndex((x, i) => x !== want[i]);
    if (firstDiff < 0) firstDiff = got.length;
    rows.push({ check: `${label}: greedy_ids (${want.length} tokens) equal`, maxAbs: NaN, rel: NaN, tol: 0, ok: same, note: same ? 'identical' : `first difference at ${firstDiff}` });
  });
  guarded(`${label}: chunked prefill`, () => {
    const model = load(64);
    const x = ids.subarray(0, 280);
    const s1 = model.newState(1), s2 = model.newState(1);
    const one = be.download(model.prefill(x, 1, 280, s1));
    model.prefill(x.subarray(0, 123), 1, 123, s2);
    const two = be.download(model.prefill(x.subarray(123), 1, 157, s2));
    abs('chunked prefill (123 + 157) vs one, logits', maxAbsDiff(one, two), 1e-5 * tolScale);
    let ws = 0;
    for (let l = 0; l < s1.layers.length; l++) ws = Math.max(ws, maxAbsDiff(be.download(s1.layers[l]!), be.download(s2.layers[l]!)));
    abs('chunked prefill states', ws, 1e-4 * tolScale);
  });
  ex.close();
}

// Mixed precision (bf16 weights and activations) on the fixture, and decode steps replayed as CUDA
// graphs (Decoder) against the same steps run eagerly: identical kernels, so identical logits.
function mixedAndGraphChecks(be: CudaBackend, dir: string): void {
  const config = loadConfig(dir);
  const p = allocParams(be, config);
  const f = SafetensorsFile.open(join(dir, 'model.safetensors'));
  try { loadParams(be, p, config, f, f.path); } finally { f.close(); }
  const model = new TnlModel(config, be, p);
  const mixed = model.withDType('bf16', 'bf16');
  const ex = SafetensorsFile.open(join(dir, 'expected.safetensors'));
  const get = (n: string) => ex.readAs(n, 'f32').data as Float32Array;
  const ids = Int32Array.from(ex.read('input_ids').data as BigInt64Array, (x) => Number(x));
  const P = Number(ex.metadata.prompt_len), N = ids.length / 2, V = config.vocab_size;
  guarded('mixed precision: fixture', () => {
    record('mixed precision: logits_parallel', be.download(mixed.forward(ids, 2, N)), get('logits_parallel'), 3e-2);
    const g = model.allocGrads();
    const { loss } = mixed.lossAndGrads(ids, 2, N, g);
    recordScalar('mixed precision: loss', loss, get('loss')[0]!, 1e-2);
    let worst = 0, worstName = '', theta = 0;
    for (const e of exportParams(be, g, config)) {
      const r = errs(e.data, get('grad.' + e.name)).rel;
      if (e.name.endsWith('theta')) theta = Math.max(theta, r);
      else if (!(r <= worst)) { worst = r; worstName = e.name; }
    }
    rows.push({ check: 'mixed precision: gradients of matrices, worst relative error', maxAbs: NaN, rel: worst, tol: 5e-2, ok: worst <= 5e-2, note: worstName });
    rows.push({ check: 'mixed precision: gradient of θ (sums of near-cancelling terms)', maxAbs: NaN, rel: theta, tol: 0.5, ok: theta <= 0.5 });
  });
  for (const [label, m] of [['f32', model], ['bf16 mixed', mixed]] as const) guarded(`graphs ${label}`, () => {
    const pre = new Int32Array(2 * P);
    for (let b = 0; b < 2; b++) pre.set(ids.subarray(b * N, b * N + P), b * P);
    const eagerState = m.newState(2), graphState = m.newState(2);
    m.prefill(pre, 2, P, eagerState); m.prefill(pre, 2, P, graphState);
    const dec = new Decoder(m, graphState, { graphs: true });
    const expDec = get('logits_decode');
    let same = 0, vsFixture = 0;
    for (let s = 0; s < N - P; s++) {
      const step = Int32Array.from([ids[P + s]!, ids[N + P + s]!]);
      const a = be.download(m.decode(step, eagerState)), b = dec.stepToHost(step);
      same = Math.max(same, maxAbsDiff(a, b));
      for (let q = 0; q < 2; q++) vsFixture = Math.max(vsFixture, maxAbsDiff(b.subarray(q * V, (q + 1) * V), expDec.subarray((q * (N - P) + s) * V, (q * (N - P) + s + 1) * V)));
    }
    dec.dispose();
    rows.push({ check: `graphs ${label}: ${N - P} decode steps replayed vs eager, max |Δ|`, maxAbs: same, rel: NaN, tol: 0, ok: same === 0 });
    const tol = label === 'f32' ? 1e-4 : 0.15;
    rows.push({ check: `graphs ${label}: replayed decode vs fixture logits_decode, max |Δ|`, maxAbs: vsFixture, rel: NaN, tol, ok: vsFixture <= tol });
    // a pool with slots, two batch sizes (one graph each), rows cleared between steps
    const pool = m.newState(5), eagerPool = m.newState(5);
    const poolDec = new Decoder(m, pool, { graphs: true });
    let worst = 0;
    for (let s = 0; s < 12; s++) {
      const slots = s % 3 === 2 ? Int32Array.of(4, 0, 2) : Int32Array.of(3, 1);
      const step = Int32Array.from(slots, (x, i) => (x * 7 + s * 13 + i) % V);
      if (s === 7) { m.clearSlot(pool, 1); m.clearSlot(eagerPool, 1); }
      const a = be.download(m.decode(step, eagerPool, slots)), b = poolDec.stepToHost(step, slots);
      worst = Math.max(worst, maxAbsDiff(a, b));
    }
    poolDec.dispose();
    rows.push({ check: `graphs ${label}: slot pool, batch 2 and 3, cleared row, replayed vs eager`, maxAbs: worst, rel: NaN, tol: 0, ok: worst === 0 });
    // tokens picked inside the step (DeviceLoop, graphs) against the host's greedy loop over downloaded logits
    const hostState = m.newState(2), devState = m.newState(2);
    m.prefill(pre, 2, P, hostState); m.prefill(pre, 2, P, devState);
    const hostDec = new Decoder(m, hostState, { graphs: true });
    const first = Int32Array.from([ids[P]!, ids[N + P]!]);
    let cur = first, diff = 0, lpErr = 0;
    const loop = new DeviceLoop(m, devState, { temperature: 0, depth: 3 });
    for (const picks of loop.run(first, 16)) {
      const lg = hostDec.stepToHost(cur);
      const want = Int32Array.from({ length: 2 }, (_, b) => argmax(lg.subarray(b * V, (b + 1) * V)));
      for (let b = 0; b < 2; b++) {
        if (picks.ids[b] !== want[b]) diff++;
        const row = lg.subarray(b * V, (b + 1) * V);
        let mx = -Infinity, z = 0;
        for (const x of row) mx = Math.max(mx, x);
        for (const x of row) z += Math.exp(x - mx);
        lpErr = Math.max(lpErr, Math.abs(picks.logprobs[b]! - (row[want[b]!]! - mx - Math.log(z))));
      }
      cur = want;
    }
    loop.dispose(); hostDec.dispose();
    const posOk = devState.positions.every((x, b) => x === hostState.positions[b]);
    rows.push({ check: `device loop ${label}: 16 greedy steps picked on the GPU vs the host's argmax (tokens differing)`, maxAbs: diff, rel: NaN, tol: 0, ok: diff === 0 && posOk, note: posOk ? '' : 'positions differ' });
    rows.push({ check: `device loop ${label}: log-probabilities vs the host's, max |Δ|`, maxAbs: lpErr, rel: NaN, tol: 1e-4, ok: lpErr <= 1e-4 });
    // the server's path: a pool with slots, per-row temperatures and seeds, picks against the host
    // implementation on the same step's logits (logitsRow)
    const sp = m.newState(4), sdec = new Decoder(m, sp, { graphs: true }), ref = new ReferenceBackend();
    const rule = { temperatures: Float32Array.of(0, 0.9, 1.3), seeds: Int32Array.of(7, -3, 123456), columns: V - 5 };
    let spIds: Int32Array = Int32Array.of(3, 5, 7), spDiff = 0, spGreedy = 0, spLp = 0;
    const spSlots = Int32Array.of(2, 0, 3);
    for (let step = 0; step < 10; step++) {
      const pos = Int32Array.from(spSlots, (x) => sp.positions[x]!);
      const picks = sdec.stepPicks(spIds, spSlots, rule);
      const lg = new Float32Array(3 * V);
      for (let b = 0; b < 3; b++) lg.set(sdec.logitsRow(b)!, b * V);
      const hostIds = new Int32Array(3), hring = ref.tokenRing(3, 1);
      ref.sampleTokens(ref.upload(lg, [3, V]), { ids: hostIds, positions: pos, ring: hring, temperature: 0, seed: 0, temperatures: rule.temperatures, seeds: rule.seeds, columns: rule.columns });
      for (let b = 0; b < 3; b++) {
        if (picks.ids[b] !== hostIds[b]) { spDiff++; if (b === 0) spGreedy++; }
        else spLp = Math.max(spLp, Math.abs(picks.logprobs[b]! - hring.logprobs[b]!));
        if (!(picks.ids[b]! < rule.columns)) spDiff += 100;
      }
      spIds = picks.ids;
    }
    sdec.dispose();
    rows.push({ check: `server picks ${label}: 10 steps × 3 rows (slots, per-row T 0 / 0.9 / 1.3, seeds, columns < V) vs the host implementation on those logits`, maxAbs: spDiff, rel: NaN, tol: 1, ok: spGreedy === 0 && spDiff <= 1, note: `greedy differing ${spGreedy}` });
    rows.push({ check: `server picks ${label}: log-probabilities of the same picks, max |Δ|`, maxAbs: spLp, rel: NaN, tol: 1e-4, ok: spLp <= 1e-4 });
  });
  ex.close();
}

/** generateTokens' two paths (TNL_DEVICE_SAMPLING=0 forces the host's picks) give the same greedy tokens. */
async function generateChecks(be: CudaBackend, dir: string): Promise<void> {
  const config = loadConfig(dir);
  const p = allocParams(be, config);
  const f = SafetensorsFile.open(join(dir, 'model.safetensors'));
  try { loadParams(be, p, config, f, f.path); } finally { f.close(); }
  const model = new TnlModel(config, be, p);
  const prompt = [1, 15, 27, 3, 99, 4];
  // runs fn with the device picks allowed or not (TNL_DEVICE_SAMPLING=0 forces the host's)
  const picking = async <T>(device: boolean, fn: () => Promise<T>): Promise<T> => {
    const prev = process.env.TNL_DEVICE_SAMPLING;
    process.env.TNL_DEVICE_SAMPLING = device ? '1' : '0';
    try { return await fn(); } finally { if (prev === undefined) delete process.env.TNL_DEVICE_SAMPLING; else process.env.TNL_DEVICE_SAMPLING = prev; }
  };
  const collect = (device: boolean) => picking(device, async () => {
    const out: number[] = [];
    for await (const t of generateTokens(model, prompt, { maxTokens: 12, temperature: 0, stopIds: [] })) out.push(t.id);
    return out;
  });
  const [a, b] = [await collect(true), await collect(false)];
  const diff = a.filter((x, i) => x !== b[i]).length + Math.abs(a.length - b.length);
  rows.push({ check: 'generateTokens f32: 12 greedy tokens picked on the GPU vs on the host (tokens differing)', maxAbs: diff, rel: NaN, tol: 0, ok: diff === 0, note: a.join(' ') });
  // the server's engine: the same requests, submitted together, with the batch picked on the GPU and on the host
  const serve = (device: boolean) => picking(device, async () => {
    const engine = new Engine(model, { maxSeqs: 4, prefillChunk: 8, prefixCache: 0, log: () => {} });
    const outs = [[5, 10], [17, 7], [3, 12], [9, 9], [12, 6]].map(([len, max], i) => {
      const toks: number[] = [];
      const job = engine.submit({
        promptIds: Array.from({ length: len! }, (_, j) => (j * 31 + i * 7 + 3) % config.vocab_size), n: 1, maxTokens: max!,
        sampling: i === 4 ? { temperature: 0.9, seed: 11 } : { temperature: 0 }, stopIds: [],
        onToken: (_, t) => { toks.push(t.id); }, onFinish: () => {},
      });
      return { toks, done: job.done };
    });
    await Promise.all(outs.map((o) => o.done));
    return outs.map((o) => o.toks);
  });
  const [d1, h1, d2] = [await serve(true), await serve(false), await serve(true)];
  const greedyDiff = d1.slice(0, 4).reduce((n, t, i) => n + t.filter((x, j) => x !== h1[i]![j]).length + Math.abs(t.length - h1[i]!.length), 0);
  rows.push({ check: 'engine f32: 4 greedy requests batched, picked on the GPU vs on the host (tokens differing)', maxAbs: greedyDiff, rel: NaN, tol: 0, ok: greedyDiff === 0 });
  const again = JSON.stringify(d1) === JSON.stringify(d2);
  rows.push({ check: 'engine f32: a seeded request (T = 0.9) picked on the GPU draws the same tokens on a second run', maxAbs: again ? 0 : 1, rel: NaN, tol: 0, ok: again, note: d1[4]!.join(' ') });
}

/** sampleTokens against the host backends' implementation (the same hash and rule) on fresh logits. */
function samplingChecks(g: CudaBackend): void {
  guarded('sampleTokens', () => {
    const ref = new ReferenceBackend();
    const B = 3, V = 64000, r = R();
    const x = Float32Array.from({ length: B * V }, () => 4 * r.u());
    x[V + 17] = x[V + 900] = 50;  // a tie in row 1: the first largest wins
    const L = g.upload(x, [B, V]), Lh = ref.upload(x, [B, V]);
    const ids = new Int32Array(B), pos = Int32Array.of(5, 1000, 123456), idsH = new Int32Array(B), posH = Int32Array.from(pos);
    g.bindInts(ids); g.bindInts(pos);
    const ring = g.tokenRing(B, 3), ringH = ref.tokenRing(B, 3);
    let greedyDiff = 0, lp = 0, drawDiff = 0, draws = 0;
    for (let step = 0; step < 40; step++) {
      const T = step < 4 ? 0 : 0.8;
      g.sampleTokens(L, { ids, positions: pos, ring, temperature: T, seed: 1234 });
      ref.sampleTokens(Lh, { ids: idsH, positions: posH, ring: ringH, temperature: T, seed: 1234 });
      g.mark()();
      const slot = (step % 3) * B;
      for (let b = 0; b < B; b++) {
        const d = ring.ids[slot + b] !== ringH.ids[slot + b];
        if (T === 0) greedyDiff += d ? 1 : 0; else { drawDiff += d ? 1 : 0; draws++; }
        if (!d) lp = Math.max(lp, Math.abs(ring.logprobs[slot + b]! - ringH.logprobs[slot + b]!));
      }
    }
    g.unbindInts(ids); g.unbindInts(pos);
    const fed = ids.every((v, b) => v === idsH[b]) && pos.every((v, b) => v === posH[b]);
    ring.free();
    rows.push({ check: 'sampleTokens greedy (3×64000, a tie): picks differing from the host implementation', maxAbs: greedyDiff, rel: NaN, tol: 0, ok: greedyDiff === 0 && fed, note: fed ? '' : 'ids / positions not written back' });
    rows.push({ check: 'sampleTokens T=0.8, same seed: draws differing from the host implementation (f32 vs f64 log near ties)', maxAbs: drawDiff / draws, rel: NaN, tol: 0.02, ok: drawDiff / draws <= 0.02, note: `${drawDiff} of ${draws}` });
    rows.push({ check: 'sampleTokens: log-probabilities of the same picks vs the host implementation, max |Δ|', maxAbs: lp, rel: NaN, tol: 1e-4, ok: lp <= 1e-4 });
    // the draws follow softmax(x / T): 6 logits, 6000 steps (each position a fresh draw)
    const xs = Float32Array.of(1, 0.5, 0, -1, 2, 0.25), T = 0.7, n = 6000;
    const L6 = g.upload(xs, [1, 6]), id1 = new Int32Array(1), pos1 = new Int32Array(1), ring1 = g.tokenRing(1, n);
    g.bindInts(id1); g.bindInts(pos1);
    for (let i = 0; i < n; i++) g.sampleTokens(L6, { ids: id1, positions: pos1, ring: ring1, temperature: T, seed: 99 });
    g.mark()();
    g.unbindInts(id1); g.unbindInts(pos1);
    const count = new Float64Array(6);
    for (const id of ring1.ids) count[id]!++;
    const w = Array.from(xs, (v) => Math.exp(v / T)), tot = w.reduce((a, b) => a + b, 0);
    const dev = Math.max(...w.map((v, i) => Math.abs(count[i]! / n - v / tot)));
    ring1.free();
    rows.push({ check: 'sampleTokens T=0.7: frequencies of 6000 draws vs softmax(x/T), max |Δ|', maxAbs: dev, rel: NaN, tol: 0.025, ok: dev <= 0.025 && pos1[0] === n });
    for (const t of [L, L6]) g.free(t);
  });
}

// `tnl train`'s loop on the GPU, f32 and mixed precision, on a small synthetic corpus: both must learn
// (validation loss well under the unigram baseline) and end close to each other.
async function trainerChecks(be: CudaBackend): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-train-'));
  const words = 'the cat dog sat ran on a mat under tree house small big red blue quickly slowly and then'.split(' ');
  let seed = 7;
  const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32; };
  const lines = Array.from({ length: 3000 }, () => `the ${words[Math.floor(rnd() * 8) + 1]} ${words[Math.floor(rnd() * 4) + 3]} on the ${words[Math.floor(rnd() * 6) + 10]}.`);
  writeFileSync(join(dir, 'corpus.jsonl'), Array.from({ length: 300 }, (_, d) => JSON.stringify({ text: lines.slice(10 * d, 10 * d + 10).join(' ') })).join('\n'));  // whole documents go to the validation split
  const res: Record<string, { val: number; unigram: number; tps: number }> = {};
  for (const precision of ['f32', 'bf16'] as const) {
    const r = await train({ ...DEFAULT_SETTINGS, out: join(dir, precision), data: join(dir, 'corpus.jsonl'), model: 'small', vocabSize: 512, seqLen: 128, batchSize: 8,
      steps: 60, warmup: 10, evalEvery: 60, evalBatches: 4, saveEvery: 60, precision }, be);
    res[precision] = { val: r.finalValLoss, unigram: r.unigramValLoss, tps: r.tokensPerSec };
  }
  results.trainer = res;
  for (const p of ['f32', 'bf16'] as const)
    rows.push({ check: `trainer ${p}: validation loss vs unigram`, maxAbs: res[p]!.val, rel: res[p]!.val / res[p]!.unigram, tol: 0.8, ok: res[p]!.val / res[p]!.unigram <= 0.8, note: `${res[p]!.val.toFixed(3)} vs ${res[p]!.unigram.toFixed(3)}, ${Math.round(res[p]!.tps)} tokens/s` });
  recordScalar('trainer: mixed-precision final validation loss vs f32', res.bf16!.val, res.f32!.val, 0.05);
  rmSync(dir, { recursive: true, force: true });
}

// ---- main ------------------------------------------------------------------------------------------------
const avail = cudaAvailable();
results.available = avail;
if (!avail.ok) {
  console.log(`gpu-check: CUDA unavailable: ${avail.reason}`);
  writeFileSync(join(outDir, 'gpu-check.json'), JSON.stringify(results, null, 1));
  process.exit(2);
}
const g = new CudaBackend({ lightning: 'fp32' });
const gtc = new CudaBackend({ lightning: 'tc' });
console.log(`gpu-check: ${g.describe()}; NVRTC ${g.drv.nvrtcVersion().join('.')}; seed ${seed0}`);
results.device = g.describe();
try {
  results.compile = g.warmup();
  console.log(`modules: ${(results.compile as { file: string; origin: string; ms: number }[]).map((m) => `${m.file} ${m.origin} ${m.ms.toFixed(0)} ms`).join(', ')}`);
} catch (e) {
  console.log(`compile failed: ${(e as Error).message}`);
  results.compileError = (e as Error).message;
  writeFileSync(join(outDir, 'gpu-check.json'), JSON.stringify(results, null, 1));
  process.exit(1);
}
const t0 = performance.now();
if (!flag('--bench-only')) {
  kernelChecks(g, gtc);
  bf16Checks(g);
  samplingChecks(g);
  const dir = fixtureDir();
  if (dir) {
    fixtureChecks(g, dir, 'model fp32', 1);
    fixtureChecks(gtc, dir, 'model, lightning=tc (fixture dv=32: exact kernel)', 1e3);
    mixedAndGraphChecks(g, dir);
    try { await generateChecks(g, dir); } catch (e) { recordError('generateTokens device picks', e); }
    try { await trainerChecks(g); } catch (e) { recordError('trainer', e); }
  } else rows.push({ check: 'fixture', maxAbs: NaN, rel: NaN, tol: 0, ok: false, note: 'tnl-ref-small not found (--fixture DIR)' });
  results.checkSeconds = (performance.now() - t0) / 1000;
  results.rows = rows;
  console.log(fmtTable(['check', 'max |Δ|', 'rel', 'tol', 'ok', 'note'], rows.map((r) => [r.check, r.maxAbs, r.rel, r.tol, r.ok ? 'ok' : 'FAIL', r.note ?? ''])));
  const bad = rows.filter((r) => !r.ok);
  console.log(`\n${rows.length - bad.length}/${rows.length} checks passed in ${(results.checkSeconds as number).toFixed(1)} s${bad.length ? '; FAILED: ' + bad.map((r) => r.check).join('; ') : ''}`);
  writeFileSync(join(outDir, 'gpu-check.json'), JSON.stringify(results, null, 1));
}
const failed = rows.filter((r) => !r.ok);

if (flag('--profile')) {
  const prof: Record<string, unknown> = {};
  benchTrainE2E(g, 'tnl-385m', 8, 2048, 1, (p) => { prof.train = p; console.log('\nprofile: tnl-385m training step 8×2048 (mixed precision)\n' + fmtProfile(p, 45)); });
  for (const batch of [1, 64])
    benchDecodeE2E(g, 'tnl-385m', batch, [1024], { graphs: [false], steps: 4, onProfile: (p) => { prof[`decode${batch}`] = p; console.log(`\nprofile: tnl-385m decode step, batch ${batch} (eager)\n` + fmtProfile(p, 30)); } });
  writeFileSync(join(outDir, 'profile.json'), JSON.stringify(prof, null, 1));
}
if (flag('--pieces')) {
  const pieces = decodePieces(g);
  console.log('\ndecode pieces inside a graph (385M, batch 1), µs per call\n' + fmtTable(['what', 'µs', 'GB/s'], pieces.map((p) => [p.what, p.us, p.GBps ?? '-'])));
  const model = deviceRandomModel(g, presetConfig('tnl-385m')).withDType('bf16', 'bf16');
  const dec: unknown[] = [];
  for (const [label, pdl, pf] of [[`PDL + prefetch hints ${decodePrefetch.distance} kernels ahead`, true, true], ['PDL, no prefetch hints', true, false], ['no PDL, prefetch hints', false, true]] as const) {
    g.pdl = pdl; g.prefetchHints = pf;
    const r = benchDecodeE2E(g, 'tnl-385m', 1, [1024], { graphs: [true], model })[0]!;
    dec.push({ label, ...r });
    console.log(`decode 385M batch 1, ${label}: ${r.msPerStep.toFixed(3)} ms/step (GPU ${r.gpuMsPerStep?.toFixed(3)}), ${Math.round(r.tokensPerSec)} tokens/s`);
  }
  g.pdl = true; g.prefetchHints = true;
  const chosen = decodePrefetch.distance;
  for (const d of [1, 2, 4, 6]) {
    decodePrefetch.distance = d;
    const r = benchDecodeE2E(g, 'tnl-385m', 1, [1024], { graphs: [true], model })[0]!;
    dec.push({ label: `prefetch ${d} kernels ahead`, ...r });
    console.log(`decode 385M batch 1, prefetch ${d} kernels ahead: ${r.msPerStep.toFixed(3)} ms/step (GPU ${r.gpuMsPerStep?.toFixed(3)}), ${Math.round(r.tokensPerSec)} tokens/s`);
  }
  decodePrefetch.distance = chosen;
  // the ceiling that prefetching could reach: every layer after the first on layer 1's weights (27.8 MB, L2-resident)
  const layers = model.params.layers;
  for (let l = 2; l < layers.length; l++) layers[l] = { ...layers[1]! };
  const r = benchDecodeE2E(g, 'tnl-385m', 1, [1024], { graphs: [true], model })[0]!;
  dec.push({ label: 'layers 2.. sharing layer 1 weights (L2-resident)', ...r });
  console.log(`decode 385M batch 1, layers sharing weights (L2-resident): ${r.msPerStep.toFixed(3)} ms/step (GPU ${r.gpuMsPerStep?.toFixed(3)}), ${Math.round(r.tokensPerSec)} tokens/s`);
  writeFileSync(join(outDir, 'pieces.json'), JSON.stringify({ pieces, dec }, null, 1));
}
if (flag('--train')) {
  // the training row alone (quick iteration on training kernels)
  const r = benchTrainE2E(g, 'tnl-385m', 8, 2048, 5);
  console.log(`train ${r.preset} ${r.batch}×${r.seq} ${r.precision}: ${r.msPerStep.toFixed(1)} ms/step, ${Math.round(r.tokensPerSec)} tokens/s, peak ${r.peakGiB.toFixed(1)} GiB`);
  writeFileSync(join(outDir, 'train.json'), JSON.stringify(r, null, 1));
}
if (flag('--decode')) {
  // the decode rows alone (quick iteration on decode kernels)
  const both = { sampling: ['host', 'device'] as DecodeE2ERow['sampling'][] };
  const rows = [...benchDecodeE2E(g, 'tnl-385m', 1, [1024, 65536], both), ...benchDecodeE2E(g, 'tnl-385m', 64, [1024], { sampling: ['host', 'device', 'server'] }), ...benchDecodeE2E(g, 'tnl-1b', 1, [1024], both)];
  {
    // what the host path adds on top of the download at batch 64: one Sampler per row, as the server runs them
    const V = presetConfig('tnl-385m').vocab_size, lg = Float32Array.from({ length: 64 * V }, (_, i) => Math.sin(i * 0.37) * 4);
    const samplers = Array.from({ length: 64 }, (_, b) => new Sampler({ temperature: 0.8, seed: b }));
    const t0 = performance.now();
    for (let rep = 0; rep < 5; rep++) for (let b = 0; b < 64; b++) samplers[b]!.sample(lg.subarray(b * V, (b + 1) * V), 0, false);
    console.log(`host sampling, 64 rows of ${V} at temperature 0.8 (the server's host path per step): ${((performance.now() - t0) / 5).toFixed(2)} ms`);
  }
  for (const r of rows) console.log(`decode ${r.preset} batch ${r.batch} context ${r.context}, tokens ${r.sampling}: ${r.msPerStep.toFixed(3)} ms/step (GPU ${r.gpuMsPerStep?.toFixed(3)}), ${Math.round(r.tokensPerSec)} tokens/s`);
  for (const r of benchDecodeE2E(g, 'tnl-385m', 1, [65536, 1024], { sampling: ['device'], graphs: [] }))
    console.log(`decode ${r.preset} batch ${r.batch} context ${r.context}, tokens device (64K first): ${r.msPerStep.toFixed(3)} ms/step, ${Math.round(r.tokensPerSec)} tokens/s`);
  for (const r of benchDecodeE2E(g, 'tnl-385m', 1, [65536, 1024], { sampling: ['device'], graphs: [], steps: 1024 }))
    console.log(`decode ${r.preset} batch ${r.batch} context ${r.context}, tokens device (64K first, 1024 steps): ${r.msPerStep.toFixed(3)} ms/step, ${Math.round(r.tokensPerSec)} tokens/s`);
  // side by side: the projection and the step as two kernels (glaProjectStep off)
  const variants: Record<string, unknown> = {};
  for (const [label, fused, cs] of [['projection and step unfused', false, 0], ['clusters of 16', true, 16], ['clusters of 8', true, 8]] as const) {
    g.fusedStep = fused; g.stepCluster = cs;
    const vr = [...benchDecodeE2E(g, 'tnl-385m', 1, [1024], { sampling: ['host', 'device'] }), ...benchDecodeE2E(g, 'tnl-1b', 1, [1024])];
    variants[label] = vr;
    for (const r of vr) console.log(`decode ${r.preset} batch ${r.batch} context ${r.context}, tokens ${r.sampling}, ${label}: ${r.msPerStep.toFixed(3)} ms/step (GPU ${r.gpuMsPerStep?.toFixed(3)}), ${Math.round(r.tokensPerSec)} tokens/s`);
  }
  g.fusedStep = true; g.stepCluster = 0;
  writeFileSync(join(outDir, 'decode.json'), JSON.stringify({ rows, variants }, null, 1));
}
if (flag('--bench')) {
  const lengths = (opt('--lengths') ?? '512,2048,8192,32768').split(',').map(Number);
  const bench = await runCudaBench(g, { lengths, e2e: !flag('--no-e2e'), anchors: !flag('--no-anchors'), long: !flag('--no-long') });
  writeFileSync(join(outDir, 'bench.json'), JSON.stringify(bench, null, 1));
}
process.exit(failed.length ? 1 : 0);
