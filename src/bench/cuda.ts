// `tnl bench --backend cuda`: Lightning Attention kernels at the device README's shapes (b=4, h=32,
// d=128, bf16; n = 512…32K) timed with CUDA events (medians), beside the memory floor from a
// device-to-device copy measured in the same run, PyTorch SDPA and flash-linear-attention (when
// installed) from a small Python script in the same call, and end-to-end model numbers.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CudaBackend } from '../backends/cuda/index.ts';
import type { MatmulOptions, Tensor } from '../backends/backend.ts';
import { lastSegment, lightningPlan, type LightningTuning } from '../backends/cuda/plan.ts';
import { presetConfig, slopeDecay, type ModelConfig } from '../config/index.ts';
import { TnlModel } from '../model/transnormer.ts';
import { allocParams, lrpeThetaInit, paramTensors } from '../model/params.ts';
import { AdamW } from '../train/optimizer.ts';
import { Decoder } from '../generate/decoder.ts';
import { DeviceLoop } from '../generate/device-loop.ts';

/** Anchors measured on the H100 machine (../shared/device/README.md), ms: forward / backward. */
export const ANCHORS: Record<number, { reference: [number, number]; fla: [number, number]; sdpa: [number, number] }> = {
  512: { reference: [0.170, 1.074], fla: [0.180, 0.604], sdpa: [0.038, 0.202] },
  2048: { reference: [0.644, 4.310], fla: [0.262, 1.110], sdpa: [0.260, 1.086] },
  8192: { reference: [2.559, 17.20], fla: [0.980, 4.417], sdpa: [3.832, 11.92] },
  32768: { reference: [10.06, 68.65], fla: [3.862, 17.79], sdpa: [56.30, 176.0] },
};

/** The reference PyTorch+Triton model on the H100 (issue #10): 385M, bf16, batch 8 × 2048. */
export const REF_385M = { trainTokensPerSec: 96075, trainPeakGiB: 30.1, decodeTokensPerSec: 28.7 };

export interface CopyBandwidth { bytes: number; ms: number; tbps: number }
/** Device-to-device copy of `bytes`, counting bytes read plus written (TB/s). */
export function copyBandwidth(be: CudaBackend, bytes = 2 ** 30): CopyBandwidth {
  const a = be.empty([bytes / 4]), b = be.empty([bytes / 4]);
  be.randn(a, 1);
  const t = be.timeMs(() => be.copy(b, a), 20, 3);
  be.free(a); be.free(b);
  return { bytes, ms: t.median, tbps: (2 * bytes) / (t.median * 1e-3) / 1e12 };
}

export interface LightningRow {
  n: number;
  fwdMs: number; bwdMs: number; fwdBwdMs: number;
  /** Forward through the mma.sync kernel (wgmma off), for comparison. */
  mmaSyncFwdMs?: number;
  /** Forward bytes (q, k, v read, o written, bf16) over the copy rate. */
  floorMs: number; fwdTBps: number;
  /** Matrix work per second: forward 4·d·(64 + d) per token and head (chunk 64), backward 3× that. */
  fwdTflops: number; bwdTflops: number;
  /** The allocator's high-water mark over these runs: q, k, v, dO, o, dq, dk, dv and the kernels' scratch. */
  peakMiB: number;
  /** ‖o_tc − o_fp32‖/‖o_fp32‖ and max|o_tc − o_fp32|/max|o_fp32| against the exact fp32 kernel on the same inputs. */
  relErr?: number; maxErr?: number;
  exactFwdMs?: number;
}


function relErrors(a: Float32Array, b: Float32Array): { rel: number; max: number } {
  let num = 0, den = 0, mx = 0, ref = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d; den += b[i]! * b[i]!;
    mx = Math.max(mx, Math.abs(d)); ref = Math.max(ref, Math.abs(b[i]!));
    if (!Number.isFinite(a[i]!)) return { rel: NaN, max: NaN };
  }
  return { rel: Math.sqrt(num / Math.max(den, 1e-300)), max: mx / Math.max(ref, 1e-300) };
}

export function benchLightning(be: CudaBackend, opts: { B?: number; H?: number; D?: number; lengths?: number[]; reps?: number; copyTBps: number; checkUpTo?: number; exactUpTo?: number }): LightningRow[] {
  const B = opts.B ?? 4, H = opts.H ?? 32, D = opts.D ?? 128, reps = opts.reps ?? 10;
  const decay = slopeDecay(H);
  const rows: LightningRow[] = [];
  for (const n of opts.lengths ?? [512, 2048, 8192, 32768]) {
    const shape = [B, n, H * D];
    const mk = (seed: number) => { const t = be.empty(shape, 'bf16'); be.randn(t, seed, 0.3); return t; };
    const q = mk(11 + n), k = mk(12 + n), v = mk(13 + n), dO = mk(14 + n);
    const o = be.empty(shape, 'bf16'), dq = be.empty(shape, 'bf16'), dk = be.empty(shape, 'bf16'), dv = be.empty(shape, 'bf16');
    be.mem.peakBytes = be.mem.allocatedBytes;
    const fwd = be.timeMs(() => be.lightningForwardBF16(o, q, k, v, decay), reps);
    const bwd = be.timeMs(() => be.lightningBackwardBF16(dq, dk, dv, dO, q, k, v, decay), reps);
    const both = be.timeMs(() => { be.lightningForwardBF16(o, q, k, v, decay); be.lightningBackwardBF16(dq, dk, dv, dO, q, k, v, decay); }, reps);
    const bytes = 4 * B * n * H * D * 2;
    const prevT = be.lightningTuning;
    be.lightningTuning = { ...prevT, wgmma: false };
    const mmaFwd = be.timeMs(() => be.lightningForwardBF16(o, q, k, v, decay), reps);
    be.lightningTuning = prevT;
    const flops = 4 * B * n * H * D * (64 + D);
    const row: LightningRow = { n, mmaSyncFwdMs: mmaFwd.median, fwdMs: fwd.median, bwdMs: bwd.median, fwdBwdMs: both.median, floorMs: bytes / (opts.copyTBps * 1e12) * 1e3, fwdTBps: bytes / (fwd.median * 1e-3) / 1e12,
      fwdTflops: flops / (fwd.median * 1e-3) / 1e12, bwdTflops: (3 * flops) / (bwd.median * 1e-3) / 1e12, peakMiB: be.mem.peakBytes / 2 ** 20 };
    if (n <= (opts.checkUpTo ?? 32768)) {
      // the same bf16 inputs through the exact fp32 kernel (fp32 arithmetic and state): the float32 reference
      const oTc = be.empty(shape, 'f32'), oEx = be.empty(shape, 'f32');
      const ll = be.upload(Float32Array.from(decay, Math.log), [H]);
      be.lightningPass(oTc, q, k, v, B, n, H, D, D, ll, null, 0, false, true);
      const ex = () => be.lightningPass(oEx, q, k, v, B, n, H, D, D, ll, null, 0, false, false);
      if (n <= (opts.exactUpTo ?? 8192)) row.exactFwdMs = be.timeMs(ex, 3, 1).median; else ex();
      const e = relErrors(be.download(oTc), be.download(oEx));
      row.relErr = e.rel; row.maxErr = e.max;
      for (const t of [oTc, oEx, ll]) be.free(t);
    }
    for (const t of [q, k, v, dO, o, dq, dk, dv]) be.free(t);
    rows.push(row);
  }
  return rows;
}

/** ‖a − ref‖/‖ref‖ computed on the device (a bf16 or f32, ref f32). */
export function deviceRelErr(be: CudaBackend, a: ReturnType<CudaBackend['empty']>, ref: ReturnType<CudaBackend['empty']>): number {
  const d = be.empty(a.shape, 'f32');
  be.copy(d, a);
  be.scaleInPlace(d, -1);
  be.addInPlace(d, ref);
  const num = be.sumSquares(d), den = be.sumSquares(ref);
  be.free(d);
  return Math.sqrt(num / Math.max(den, 1e-300));
}

export interface LongRow {
  variant: string; kernel: string; B: number; n: number; G: number; L: number; LG: number;
  fwdMs: number; fwdTBps: number; bwdMs?: number;
  /** ‖o − o_fp32‖/‖o_fp32‖ against the exact fp32 kernel on the same bf16 inputs. */
  relErr: number;
}

/** Segment lengths around the defaults (TNL_BENCH_LONG_SWEEP=1): L and the last block's LG. */
function sweepVariants(): [string, LightningTuning][] {
  const v: [string, LightningTuning][] = [];
  for (const L of [1024, 2048, 4096]) for (const f of [1, 1.25, 1.5, 1.75, 2]) v.push([`seq L=${L} LG=${f}L`, { seg: L, lastSeg: lastSegment(L, f) }]);
  return v;
}

/**
 * Few long sequences (b=1, h=32, d=128, n=128K by default): the sequence-parallel form against the
 * one-block-per-head form, with several segment lengths; effective TB/s counts q, k, v read and o
 * written once (the extra k, v reads of the state pass are the kernel's own cost).
 */
export function benchLong(be: CudaBackend, opts: { B?: number; H?: number; D?: number; n?: number; reps?: number; variants?: [string, LightningTuning][] } = {}): LongRow[] {
  const B = opts.B ?? 1, H = opts.H ?? 32, D = opts.D ?? 128, n = opts.n ?? 131072, reps = opts.reps ?? 10;
  const variants = opts.variants ?? (process.env.TNL_BENCH_LONG_SWEEP ? sweepVariants() : [['seq L=2048', {}], ['seq L=1024', { seg: 1024 }], ['seq L=2048, last segment L', { lastSeg: 2048 }], ['seq L=2048 G≤2', { maxG: 2 }], ['seq L=4096', { seg: 4096 }], ['seq L=2048 mma.sync', { wgmma: false }], ['one block per head', { maxG: 1 }]]);
  // layer 0's decay (TNL's slopes; the state-only passes of the fast-decaying heads are short) and the
  // last layer's (slopes × 1e-5: no head decays enough to shorten them)
  const decays: [string, Float64Array][] = [['', slopeDecay(H)], [", last layer's decay", slopeDecay(H, 1e-5)]];
  const shape = [B, n, H * D];
  const mk = (seed: number) => { const t = be.empty(shape, 'bf16'); be.randn(t, seed, 0.3); return t; };
  const q = mk(21), k = mk(22), v = mk(23), dO = mk(24);
  const o = be.empty(shape, 'bf16'), dq = be.empty(shape, 'bf16'), dk = be.empty(shape, 'bf16'), dv = be.empty(shape, 'bf16');
  const oEx = be.empty(shape, 'f32');
  const bytes = 4 * B * n * H * D * 2;
  const rows: LongRow[] = [];
  const prev = be.lightningTuning;
  try {
    for (const [suffix, decay] of decays) {
      const ll = be.upload(Float32Array.from(decay, Math.log), [H]);
      be.lightningTuning = prev;
      be.lightningPass(oEx, q, k, v, B, n, H, D, D, ll, null, 0, false, false);
      be.free(ll);
      for (const [variant, tuning] of suffix ? variants.slice(0, 1) : variants) {
        be.lightningTuning = { ...prev, ...tuning };
        const plan = lightningPlan({ B, N: n, nh: H, DK: D, DV: D, smemLimit: be.drv.smemOptin, tensorCores: true, bf16In: true, smCount: be.drv.smCount, hopper: be.drv.cc[0] === 9 && be.drv.cc[1] === 0, tuning: be.lightningTuning });
        be.fill(o, NaN);
        be.lightningForwardBF16(o, q, k, v, decay);
        const relErr = deviceRelErr(be, o, oEx);
        const fwd = be.timeMs(() => be.lightningForwardBF16(o, q, k, v, decay), reps);
        const row: LongRow = { variant: variant + suffix, kernel: plan.kernel, B, n, G: plan.G, L: plan.L, LG: plan.LG, fwdMs: fwd.median, fwdTBps: bytes / (fwd.median * 1e-3) / 1e12, relErr };
        if (variant === variants[0]![0] || tuning.maxG === 1) row.bwdMs = be.timeMs(() => be.lightningBackwardBF16(dq, dk, dv, dO, q, k, v, decay), 3, 1).median;
        rows.push(row);
      }
    }
  } finally { be.lightningTuning = prev; }
  for (const t of [q, k, v, dO, o, dq, dk, dv, oEx]) be.free(t);
  return rows;
}

const ANCHOR_PY = String.raw`
import json, sys
out = {}
try:
    import torch, triton
    import torch.nn.functional as F
    from triton.testing import do_bench
    out['torch'] = torch.__version__; out['triton'] = triton.__version__
    out['device'] = torch.cuda.get_device_name()
    B, H, D = 4, 32, 128
    lengths = [int(x) for x in sys.argv[1].split(',')]
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as e:
        chunk_simple_gla = None; out['fla'] = 'not installed (%s)' % type(e).__name__
    slopes = torch.tensor([2 ** (-8 * (i + 1) / H) for i in range(H)], device='cuda')
    rows = []
    for n in lengths:
        r = {'n': n}
        q, k, v = (torch.randn(B, H, n, D, device='cuda', dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        g = torch.randn(B, H, n, D, device='cuda', dtype=torch.bfloat16)
        f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        r['sdpa_fwd'] = do_bench(f, warmup=10, rep=50, return_mode='median')
        o = f()
        r['sdpa_bwd'] = do_bench(lambda: o.backward(g, retain_graph=True), warmup=5, rep=50, return_mode='median', grad_to_none=[q, k, v])
        del o
        if chunk_simple_gla is not None:
            qt, kt, vt = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
            gate = (-slopes).view(1, 1, H).expand(B, n, H).contiguous().float()
            def ff():
                try:
                    return chunk_simple_gla(qt, kt, vt, g_gamma=-slopes, scale=1.0)[0]
                except TypeError:
                    return chunk_simple_gla(qt, kt, vt, g=gate, scale=1.0)[0]
            r['fla_fwd'] = do_bench(ff, warmup=10, rep=50, return_mode='median')
            oo = ff(); gt = g.transpose(1, 2).contiguous()
            r['fla_bwd'] = do_bench(lambda: oo.backward(gt, retain_graph=True), warmup=5, rep=50, return_mode='median', grad_to_none=[qt, kt, vt])
            del oo
        rows.append(r)
        del q, k, v, g
        torch.cuda.empty_cache()
    out['rows'] = rows
except Exception as e:
    out['error'] = '%s: %s' % (type(e).__name__, e)
print(json.dumps(out))
`;

/** PyTorch SDPA and flash-linear-attention (if installed) at the same shapes, from python3 in this call. */
export function runAnchors(lengths: number[], python = process.env.TNL_PYTHON ?? 'python3'): Record<string, unknown> {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-anchor-'));
  const f = join(dir, 'anchors.py');
  writeFileSync(f, ANCHOR_PY);
  const r = spawnSync(python, [f, lengths.join(',')], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) return { error: `${python} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').slice(-3).join(' | ')}` };
  try { return JSON.parse(r.stdout.trim().split('\n').at(-1)!); } catch { return { error: `no JSON from ${python}: ${r.stdout.slice(0, 300)}` }; }
}

export interface ModelRow { what: string; lightning: string; tokens: number; ms: number; tokensPerSec: number }
/** End to end on the bench-29m preset: prefill, one training step (forward+backward), decode. */
export async function benchModel(be: CudaBackend, preset = 'bench-29m'): Promise<ModelRow[]> {
  const config = presetConfig(preset);
  const rows: ModelRow[] = [];
  const tick = async () => { (globalThis as { gc?: () => void }).gc?.(); await new Promise((r) => setImmediate(r)); };
  const model = TnlModel.random(be, config, 0);
  const ids = (n: number) => Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919) % (config.vocab_size - 3)));
  const time = async (fn: () => void, reps = 5) => {
    fn(); be.sync(); await tick();
    const t: number[] = [];
    for (let i = 0; i < reps; i++) { const t0 = performance.now(); fn(); be.sync(); t.push(performance.now() - t0); await tick(); }
    return t.sort((a, b) => a - b)[t.length >> 1]!;
  };
  const mode = be.opts.lightning;
  for (const N of [2048, 8192]) {
    const x = ids(N);
    const ms = await time(() => { const st = model.newState(1); model.prefill(x, 1, N, st); });
    rows.push({ what: `prefill 1×${N}`, lightning: mode, tokens: N, ms, tokensPerSec: N / ms * 1e3 });
  }
  {
    const Bt = 8, N = 1024, x = ids(Bt * N), g = model.allocGrads();
    const ms = await time(() => { model.zeroGrads(g); model.lossAndGrads(x, Bt, N, g); }, 3);
    rows.push({ what: `train step ${Bt}×${N} (fwd+bwd)`, lightning: mode, tokens: Bt * N, ms, tokensPerSec: Bt * N / ms * 1e3 });
  }
  {
    const st = model.newState(1);
    model.prefill(ids(1024), 1, 1024, st);
    const tok = Int32Array.of(5);
    const steps = 32;
    const ms = await time(() => { for (let i = 0; i < steps; i++) be.download(model.decode(tok, st)); }, 3);
    rows.push({ what: `decode 1 seq (${steps} steps)`, lightning: mode, tokens: steps, ms: ms / steps, tokensPerSec: steps / ms * 1e3 });
  }
  return rows;
}

/** A model with normal(0, init_std²) weights drawn on the device (fast for 1B-sized benchmarks); θ as initialised. */
export function deviceRandomModel(be: CudaBackend, config: ModelConfig, seed = 1): TnlModel {
  const p = allocParams(be, config, 'f32');
  const thetas = new Set(p.layers.map((l) => l.theta));
  for (const t of paramTensors(p)) if (!thetas.has(t)) be.randn(t, seed++, config.init_std);
  for (const l of p.layers) if (l.theta) be.copy(l.theta, be.upload(lrpeThetaInit(l.theta.size), l.theta.shape));
  return new TnlModel(config, be, p);
}

const benchIds = (n: number, V: number, salt: number) => Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919 + salt * 104729) % (V - 3)));

export interface TrainE2ERow { preset: string; batch: number; seq: number; precision: string; msPerStep: number; tokensPerSec: number; peakGiB: number; loss: number }
/**
 * One mixed-precision optimizer step as `tnl train --precision bf16` runs it: zero the f32
 * gradients, forward + backward on the bf16 copy, gradient norm, AdamW on the f32 master weights,
 * refresh of the bf16 copy. Peak memory: the allocator's high-water mark over the timed steps, less
 * what was allocated before (so: weights, gradients, moments, activations; the caching pool's idle
 * blocks not counted).
 */
export function benchTrainE2E(be: CudaBackend, preset = 'tnl-385m', B = 8, N = 2048, steps = 3, onProfile?: (p: KernelTime[]) => void): TrainE2ERow {
  const config = presetConfig(preset);
  const before = be.mem.allocatedBytes;  // whatever the process already holds is not the step's
  const master = deviceRandomModel(be, config);
  const worker = master.withDType('bf16', 'bf16');
  const grads = master.allocGrads();
  const opt = new AdamW(be, master.params, { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });
  const x = benchIds(B * N, config.vocab_size, 1);
  let loss = NaN;
  const step = () => {
    master.zeroGrads(grads);
    loss = worker.lossAndGrads(x, B, N, grads).loss;
    const norm = AdamW.gradNorm(be, grads);
    opt.update(grads, 1e-4, Math.min(1, 1 / (norm + 1e-6)));
    worker.refreshFrom(master.params);
  };
  step(); be.sync();
  be.mem.peakBytes = be.mem.allocatedBytes;
  const t: number[] = [];
  for (let i = 0; i < steps; i++) { const t0 = performance.now(); step(); be.sync(); t.push(performance.now() - t0); }
  const ms = t.sort((a, b) => a - b)[t.length >> 1]!;
  if (onProfile) onProfile(profileKernels(be, step));
  const row = { preset, batch: B, seq: N, precision: 'bf16 mixed', msPerStep: ms, tokensPerSec: (B * N) / ms * 1e3, peakGiB: (be.mem.peakBytes - before) / 2 ** 30, loss };
  for (const t of [...paramTensors(grads), ...paramTensors(worker.params), ...paramTensors(master.params)]) be.free(t);
  opt.free();
  return row;
}

export interface KernelTime { name: string; calls: number; ms: number }
/** GPU time of every kernel, GEMM and copy `fn` enqueues (events around each), most time first. */
export function profileKernels(be: CudaBackend, fn: () => void): KernelTime[] {
  be.sync();
  be.drv.profileStart();
  try { fn(); be.sync(); } catch (e) { be.drv.profileStop(); throw e; }
  return be.drv.profileStop();
}
export function fmtProfile(p: KernelTime[], top = 25): string {
  const total = p.reduce((s, r) => s + r.ms, 0);
  return fmtTable(['kernel', 'calls', 'ms', '%'], [...p.slice(0, top).map((r) => [r.name, r.calls, r.ms, (100 * r.ms) / total]), ['total', p.reduce((s, r) => s + r.calls, 0), total, 100]]);
}

/**
 * What each piece of a batch-1 decode step costs inside a CUDA graph (where the step runs): `reps`
 * back-to-back calls recorded once, the replay timed, per call. Eager event timings of small kernels
 * measure the host's launch gaps instead.
 */
export function decodePieces(be: CudaBackend, preset = 'tnl-385m', reps = 50): { what: string; us: number; GBps?: number }[] {
  const config = presetConfig(preset);
  const { D, H, G, nh, dh } = { D: config.decoder_embed_dim, H: config.hidden_dim, G: config.glu_dim, nh: config.decoder_attention_heads, dh: config.hidden_dim / config.decoder_attention_heads };
  const mk = (shape: number[], dtype: 'f32' | 'bf16' = 'bf16') => { const t = be.empty(shape, dtype); be.randn(t, shape.length + shape[0]!, 0.05); return t; };
  const x = mk([1, D], 'f32'), qkvu = mk([1, 4 * H]), o = mk([1, 1, H]), rows: { what: string; us: number; GBps?: number }[] = [];
  const time = (what: string, fn: () => void, bytes?: number) => {
    fn(); be.sync();
    const g = be.capture(() => { for (let i = 0; i < reps; i++) fn(); });
    const ms = be.timeMs(() => g.replay(), 10, 2).median / reps;
    g.destroy();
    rows.push({ what, us: ms * 1e3, ...(bytes ? { GBps: bytes / (ms * 1e-3) / 1e9 } : {}) });
  };
  const cases: [string, number, number, Tensor, MatmulOptions][] = [
    ['qkvu (norm fused)', 4 * H, D, x, { normA: 1e-6 }], ['out (norm gate fused, accumulate)', D, H, o, { accumulate: true, normGate: { qkvu, eps: 1e-6 } }],
    ['w12 (norm fused)', 2 * G, D, x, { normA: 1e-6 }], ['w3 (gate fused, accumulate)', D, G, mk([1, 2 * G]), { gluA: true, accumulate: true }],
    ['head (norm fused)', config.vocab_size, D, x, { normA: 1e-6 }]];
  for (const [what, N, K, a, opt] of cases) {
    const w = mk([N, K]), c = be.empty([1, N], opt.accumulate ? 'f32' : 'bf16');
    for (const split of [null, 1, 4]) {
      be.gemvSplitOverride = split;
      time(`gemv ${what} ${N}×${K}${split === null ? '' : ` (split ${split})`}`, () => be.matmul(c, a, w, { transB: true, ...opt }), N * K * 2);
    }
    be.gemvSplitOverride = null;
    for (const t of [w, c]) be.free(t);
  }
  const st = be.zeros([1, nh, dh, dh]);
  const decay = slopeDecay(nh);
  time('glaStep (q, k, v, state update)', () => be.glaStep(o, qkvu, nh, null, null, null, decay, st), st.size * 8);
  const wq = mk([4 * H, D]);
  for (const cs of [16, 8]) {
    be.stepCluster = cs;
    const k = be.projectStepKernel(nh);
    if (k && be.glaProjectStep(o, qkvu, x, wq, 1e-6, nh, null, null, null, decay, st))
      time(`glaProjectStep (qkvu gemv + step, one kernel; clusters of ${cs}, ${k.fits} fit at once)`, () => be.glaProjectStep(o, qkvu, x, wq, 1e-6, nh, null, null, null, decay, st), wq.size * 2 + st.size * 8);
  }
  be.stepCluster = 0;
  be.free(wq);
  const a = be.empty([1, H], 'bf16'), r = be.empty([1]);
  time('normGate', () => be.normGate(a, r, o, qkvu, 1e-6));
  const logits = mk([1, config.vocab_size], 'f32'), ids = new Int32Array(1), pos = new Int32Array(1), ring = be.tokenRing(1, 4);
  be.bindInts(ids); be.bindInts(pos);
  for (const T of [0, 1]) time(`sampleTokens 1×${config.vocab_size} (${T ? 'temperature 1' : 'greedy'})`, () => be.sampleTokens(logits, { ids, positions: pos, ring, temperature: T, seed: 1 }), config.vocab_size * 4);
  be.unbindInts(ids); be.unbindInts(pos); ring.free(); be.free(logits);
  const one = be.empty([1]);
  time('tiny kernel (launch floor)', () => be.scaleInPlace(one, 1));
  return rows;
}

export interface DecodeE2ERow {
  preset: string; batch: number; context: number; graphs: boolean;
  /**
   * 'host': the logits downloaded every step (a host sampler's loop); 'device': greedy picks inside
   * the step, steps queued ahead (DeviceLoop); 'server': picks at temperature 0.8 inside the step,
   * each step waited for and its picks fed back by the host (Decoder.stepPicks, the server's batch).
   */
  sampling: 'host' | 'device' | 'server';
  msPerStep: number; tokensPerSec: number; weightGB: number; weightTBps: number; gpuMsPerStep?: number;
}
/**
 * Decode steps (bf16 weights and activations) after a prefill of `context` tokens per sequence:
 * each step embeds, runs every layer's recurrent step and the head, and either downloads the logits
 * (as a loop sampling on the host does) or picks the tokens on the device and feeds them to the next
 * step (generation's loop with greedy or temperature sampling). weightTBps: weight bytes read per
 * step over the step time.
 */
export function benchDecodeE2E(be: CudaBackend, preset: string, batch: number, contexts: number[],
                               opts: { steps?: number; graphs?: boolean[]; sampling?: DecodeE2ERow['sampling'][]; model?: TnlModel; onProfile?: (p: KernelTime[]) => void } = {}): DecodeE2ERow[] {
  const config = presetConfig(preset);
  const model = opts.model ?? deviceRandomModel(be, config).withDType('bf16', 'bf16');
  const weightBytes = paramTensors(model.params).reduce((s, t) => s + t.size * (t.dtype === 'bf16' ? 2 : 4), 0);
  // batch 1 steps are short: more of them, past the after-effects of a long prefill (a few ms slower)
  const steps = opts.steps ?? (batch === 1 ? 256 : 64), rows: DecodeE2ERow[] = [];
  /** Per-step wall time of `run(steps)` after `run(4)` to warm up, as a row. */
  const timed = (context: number, sampling: DecodeE2ERow['sampling'], graphs: boolean, run: (n: number) => void): DecodeE2ERow => {
    run(4);
    const t0 = performance.now();
    run(steps);
    const ms = (performance.now() - t0) / steps;
    return { preset, batch, context, graphs, sampling, msPerStep: ms, tokensPerSec: batch / ms * 1e3, weightGB: weightBytes / 1e9, weightTBps: weightBytes / (ms * 1e-3) / 1e12 };
  };
  for (const context of contexts) {
    const state = model.newState(batch);
    const chunk = Math.max(1, Math.min(context, Math.floor(65536 / batch)));
    for (let s = 0; s < context; s += chunk) {
      const n = Math.min(chunk, context - s);
      be.free(model.prefill(benchIds(batch * n, config.vocab_size, s + 7), batch, n, state));
    }
    const tok = benchIds(batch, config.vocab_size, 3);
    for (const graphs of opts.graphs ?? [true]) {
      const dec = new Decoder(model, state, { graphs });
      const row = timed(context, 'host', graphs, (n) => { for (let i = 0; i < n; i++) dec.stepToHost(tok); });
      dec.dispose();
      if (opts.onProfile && !graphs) opts.onProfile(profileKernels(be, () => { dec.stepToHost(tok); }));
      if (graphs) {
        // the step's GPU time alone: its graph replayed back to back (no uploads, downloads or host work between)
        const pos = Int32Array.from({ length: batch }, () => context);
        const g = be.capture(() => model.stateStep(tok, batch, 1, pos, state, null, null, false));
        row.gpuMsPerStep = be.timeMs(() => g.replay(), 20, 3).median;
        g.destroy();
      }
      rows.push(row);
    }
    if (opts.sampling?.includes('device')) {
      // greedy generation as generateTokens runs it: each step's picks feed the next, 4 steps queued
      const loop = new DeviceLoop(model, state, { temperature: 0 });
      rows.push(timed(context, 'device', true, (n) => { for (const _ of loop.run(tok, n)); }));
      loop.dispose();
    }
    if (opts.sampling?.includes('server')) {
      // the server's loop: each step waits for its picks (temperature 0.8, a seed a row) and feeds them back
      const dec = new Decoder(model, state);
      const rule = { temperatures: new Float32Array(batch).fill(0.8), seeds: Int32Array.from({ length: batch }, (_, b) => b + 1) };
      let next: Int32Array = tok;
      rows.push(timed(context, 'server', true, (n) => { for (let i = 0; i < n; i++) next = dec.stepPicks(next, null, rule).ids; }));
      dec.dispose();
    }
    for (const t of state.layers) be.free(t);
  }
  return rows;
}

export function fmtTable(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? (!Number.isFinite(c) ? String(c) : Math.abs(c) >= 100 ? c.toFixed(0) : Math.abs(c) < 1e-2 && c !== 0 ? c.toExponential(2) : c.toPrecision(3)) : c)))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  return cells.map((r, i) => r.map((c, j) => String(c).padStart(w[j]!)).join('  ') + (i === 0 ? '\n' + w.map((x) => '-'.repeat(x)).join('  ') : '')).join('\n');
}

/** The whole suite: prints tables, returns everything for JSON. */
export async function runCudaBench(be: CudaBackend, opts: { lengths?: number[]; anchors?: boolean; e2e?: boolean; long?: boolean; log?: (s: string) => void } = {}): Promise<Record<string, unknown>> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const lengths = opts.lengths ?? [512, 2048, 8192, 32768];
  const res: Record<string, unknown> = { device: be.describe() };
  const bw = copyBandwidth(be);
  res.copy = bw;
  log(`device-to-device copy: ${bw.tbps.toFixed(2)} TB/s (read + write, ${bw.bytes / 2 ** 30} GiB, ${bw.ms.toFixed(3)} ms)`);
  const rows = benchLightning(be, { lengths, copyTBps: bw.tbps });
  res.lightning = rows;
  let anchors: Record<string, unknown> = { error: 'not run' };
  if (opts.anchors !== false) anchors = runAnchors(lengths);
  res.anchors = anchors;
  const measured = new Map<number, Record<string, number>>();
  for (const r of (anchors.rows as Record<string, number>[] | undefined) ?? []) measured.set(r.n!, r);
  const f2 = (a?: number, b?: number) => (a === undefined ? '-' : `${a.toFixed(3)} / ${b === undefined ? '-' : b.toFixed(3)}`);
  log('\nLightning Attention, b=4 h=32 d=128 bf16, median ms (fwd / bwd); ours: tensor cores, fp32 state');
  log(fmtTable(['n', 'ours fwd', 'ours bwd', 'ours f+b', 'mma.sync fwd', 'floor fwd', 'TB/s fwd', 'TFLOP/s fwd', 'TFLOP/s bwd', 'peak MiB', 'err vs fp32', 'exact fp32 fwd', 'fla (README)', 'fla (now)', 'SDPA (now)', 'ref lightning (README)'],
    rows.map((r) => {
      const a = ANCHORS[r.n], m = measured.get(r.n);
      return [r.n, r.fwdMs, r.bwdMs, r.fwdBwdMs, r.mmaSyncFwdMs ?? '-', r.floorMs, r.fwdTBps, r.fwdTflops, r.bwdTflops, Math.round(r.peakMiB), r.relErr ?? '-', r.exactFwdMs ?? '-', a ? f2(...a.fla) : '-', m?.fla_fwd !== undefined ? f2(m.fla_fwd, m.fla_bwd) : '-',
        m ? f2(m.sdpa_fwd, m.sdpa_bwd) : '-', a ? f2(...a.reference) : '-'];
    })));
  if (opts.long !== false) {
    const long = benchLong(be);
    res.long = long;
    log('\nLong sequences, b=1 h=32 d=128 bf16 n=128K: forward median ms, effective TB/s (q, k, v, o once), backward');
    log(fmtTable(['variant', 'kernel', 'G', 'L', 'LG', 'fwd ms', 'TB/s', 'bwd ms', 'err vs fp32'], long.map((r) => [r.variant, r.kernel, r.G, r.L, r.LG, r.fwdMs, r.fwdTBps, r.bwdMs ?? '-', r.relErr])));
  }
  if (anchors.error) log(`anchors: ${anchors.error}`);
  else if (anchors.fla) log(`fla: ${anchors.fla}`);
  if (opts.e2e !== false) {
    const e2e: ModelRow[] = [];
    for (const mode of ['fp32', 'tc'] as const) {
      const prev = be.opts.lightning;
      (be.opts as { lightning: string }).lightning = mode;
      try { e2e.push(...await benchModel(be)); } finally { (be.opts as { lightning: string }).lightning = prev; }
    }
    res.model = e2e;
    log('\nEnd to end, bench-29m (6×512, 8 heads, vocab 8192), f32 weights, cuBLASLt fp32 GEMMs');
    log(fmtTable(['what', 'lightning', 'ms', 'tokens/s'], e2e.map((r) => [r.what, r.lightning, r.ms, Math.round(r.tokensPerSec)])));
    const train = benchTrainE2E(be);
    res.train385m = train;
    log(`\nTraining, tnl-385m, batch ${train.batch} × ${train.seq}, ${train.precision} (f32 master weights, gradients, AdamW; bf16 products): ` +
      `${train.msPerStep.toFixed(1)} ms/step, ${Math.round(train.tokensPerSec)} tokens/s = ${(train.tokensPerSec / REF_385M.trainTokensPerSec).toFixed(2)}× the reference PyTorch+Triton ` +
      `(${REF_385M.trainTokensPerSec}); peak ${train.peakGiB.toFixed(1)} GiB (reference ${REF_385M.trainPeakGiB})`);
    const both = { sampling: ['host', 'device'] as DecodeE2ERow['sampling'][] }, all = { sampling: ['host', 'device', 'server'] as DecodeE2ERow['sampling'][] };
    const dec = [
      ...benchDecodeE2E(be, 'tnl-385m', 1, [1024, 65536], { graphs: [true, false], ...both }),
      ...benchDecodeE2E(be, 'tnl-385m', 64, [1024], all),
      ...benchDecodeE2E(be, 'tnl-1b', 1, [1024, 65536], both),
      ...benchDecodeE2E(be, 'tnl-1b', 64, [1024], all),
    ];
    res.decode = dec;
    log('\nDecode, bf16 weights and activations (reference Python loop, 385M batch 1: 28.7 tokens/s). Tokens: "host" = the logits downloaded every step;');
    log('"device" = greedy picks inside the step fed to the next one, 4 steps queued ahead (generation\'s loop for greedy and temperature sampling);');
    log('"server" = picks at temperature 0.8 inside the step, each step waited for and its picks fed back by the host (the server\'s batch)');
    log(fmtTable(['model', 'batch', 'context', 'tokens', 'CUDA graphs', 'ms/step', 'tokens/s', 'weights GB', 'weight TB/s', 'GPU ms/step'],
      dec.map((r) => [r.preset, r.batch, r.context, r.sampling, r.graphs ? 'yes' : 'no', r.msPerStep, Math.round(r.tokensPerSec), r.weightGB, r.weightTBps, r.gpuMsPerStep ?? '-'])));
  }
  return res;
}
