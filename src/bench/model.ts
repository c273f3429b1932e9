// Model-level benchmarks on one backend: prefill, decode at several context lengths, training
// steps (with and without activation checkpointing), and attention forms side by side.
import type { Backend, DType, Tensor } from '../backends/backend.ts';
import type { ModelConfig } from '../config/index.ts';
import { dims, slopeDecay } from '../config/index.ts';
import { TnlModel } from '../model/transnormer.ts';
import { AdamW } from '../train/optimizer.ts';
import { Decoder } from '../generate/decoder.ts';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}
/** Median seconds of `reps` runs after one warm-up. */
export function timeIt(fn: () => void, reps = 3): number {
  fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); fn(); t.push((performance.now() - t0) / 1000); }
  return median(t);
}

function ids(n: number, V: number, seed = 1): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919 + seed * 104729) % (V - 3)));
}

export interface PrefillRow { dtype: DType; seq: number; tokensPerSec: number; ms: number }
export function benchPrefill(be: Backend, config: ModelConfig, dtype: DType, seq: number, reps = 3): PrefillRow {
  const model = TnlModel.random(be, config, 0, dtype);
  const x = ids(seq, config.vocab_size);
  const s = timeIt(() => { const st = model.newState(1); model.prefill(x, 1, seq, st); }, reps);
  return { dtype, seq, tokensPerSec: seq / s, ms: s * 1000 };
}

export interface DecodeRow { dtype: DType; context: number; tokensPerSec: number; msPerToken: number; stateBytes: number }
/**
 * Decode speed after contexts of each given length (prefilled in chunks). The contexts' steps are
 * interleaved round by round, so drift in the machine's speed (shared hosts) hits every context
 * alike and the comparison between context lengths is fair.
 */
export function benchDecode(be: Backend, model: TnlModel, contexts: number[], steps = 160): DecodeRow[] {
  const chunk = 2048;
  const states = contexts.map((context) => {
    const st = model.newState(1);
    const x = ids(context, model.config.vocab_size, 2);
    for (let s = 0; s < context; s += chunk) be.free(model.prefill(x.subarray(s, Math.min(context, s + chunk)), 1, Math.min(chunk, context - s), st));
    return st;
  });
  const tok = Int32Array.of(5);
  const decoders = states.map((st) => new Decoder(model, st));
  const step = (c: number) => decoders[c]!.stepToHost(tok);
  for (let i = 0; i < 16; i++) states.forEach((_, c) => step(c));
  const times = contexts.map(() => [] as number[]);
  for (let i = 0; i < steps; i++)
    states.forEach((_, c) => { const t0 = performance.now(); step(c); times[c]!.push(performance.now() - t0); });
  for (const d of decoders) d.dispose();
  return contexts.map((context, c) => {
    const ms = median(times[c]!);
    return { dtype: model.dtype, context, tokensPerSec: 1000 / ms, msPerToken: ms, stateBytes: states[c]!.layers.reduce((a, t) => a + t.size * 4, 0) };
  });
}

export interface TrainRow { checkpoint: boolean; seq: number; batch: number; tokensPerSec: number; ms: number; activationBytes: number }
/** Forward + backward + AdamW step; activationBytes counts every tensor the step allocates. */
export function benchTrain(be: Backend, config: ModelConfig, seq: number, batch: number, checkpoint: boolean, reps = 3): TrainRow {
  const counting = countingBackend(be);
  const model = TnlModel.random(counting.be, config, 0);
  const grads = model.allocGrads();
  const opt = new AdamW(counting.be, model.params, { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });
  const x = ids(seq * batch, config.vocab_size, 3);
  const step = () => {
    model.zeroGrads(grads);
    model.lossAndGrads(x, batch, seq, grads, null, { checkpoint });
    opt.update(grads, 1e-3, 1);
  };
  step();
  counting.reset();
  step();
  const activationBytes = counting.peakLive();
  const s = timeIt(step, reps);
  return { checkpoint, seq, batch, tokensPerSec: (seq * batch) / s, ms: s * 1000, activationBytes };
}

/**
 * Wraps a backend so that every tensor allocated through it is counted until it is freed (or
 * garbage collected); peakLive() is the most bytes held at once.
 */
export function countingBackend(inner: Backend): { be: Backend; reset: () => void; peakLive: () => number } {
  let live = 0, peak = 0;
  const sizes = new WeakMap<Tensor, number>();
  const registry = new FinalizationRegistry<number>((bytes) => { live -= bytes; });
  const track = <T extends Tensor>(t: T): T => {
    const bytes = t.size * (t.dtype === 'bf16' ? 2 : 4);
    live += bytes; peak = Math.max(peak, live);
    sizes.set(t, bytes);
    registry.register(t, bytes, t);
    return t;
  };
  const be = Object.create(inner) as Backend;
  be.empty = (shape, dtype) => track(inner.empty(shape, dtype));
  be.zeros = (shape, dtype) => track(inner.zeros(shape, dtype));
  be.free = (t) => {
    const bytes = sizes.get(t);
    if (bytes !== undefined) { live -= bytes; sizes.delete(t); registry.unregister(t); }
    inner.free(t);
  };
  return { be, reset: () => { live = 0; peak = 0; }, peakLive: () => peak };
}

export interface AttentionRow { method: 'lightning' | 'naive-quadratic' | 'softmax'; n: number; ms: number; workingBytes: number }
/**
 * One layer's attention (nh heads, d per head, one sequence) three ways: the Lightning block
 * kernel; the naive quadratic form ((QKᵀ ⊙ M)V with the n×n decay mask); causal softmax attention.
 * The quadratic forms run head by head through the backend's matmul with an n×n score matrix.
 */
export function benchAttention(be: Backend, n: number, nh: number, d: number, blockSize: number, skipQuadraticAbove = 16384): AttentionRow[] {
  const rand = (size: number) => Float32Array.from({ length: size }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  const q = be.upload(rand(n * nh * d), [1, n, nh * d]), k = be.upload(rand(n * nh * d).reverse(), [1, n, nh * d]), v = be.upload(rand(n * nh * d), [1, n, nh * d]);
  const o = be.empty([1, n, nh * d]);
  const decay = slopeDecay(nh);
  const rows: AttentionRow[] = [];
  const s = timeIt(() => be.lightningForward(o, q, k, v, decay, null, blockSize), 2);
  rows.push({ method: 'lightning', n, ms: s * 1000, workingBytes: 4 * nh * d * d + 4 * blockSize * blockSize });
  if (n > skipQuadraticAbove) return rows;
  // per head: contiguous copies of q, k, v columns, then two GEMMs around an n×n score matrix
  const Qh = new Float32Array(n * d), Kh = new Float32Array(n * d), Vh = new Float32Array(n * d);
  const qd = be.download(q), kd = be.download(k), vd = be.download(v);
  const heads = Math.min(nh, 2); // time two heads and scale: the cost is the same per head
  for (const method of ['naive-quadratic', 'softmax'] as const) {
    let total = 0;
    for (let h = 0; h < heads; h++) {
      for (let t = 0; t < n; t++) for (let c = 0; c < d; c++) { Qh[t * d + c] = qd[t * nh * d + h * d + c]!; Kh[t * d + c] = kd[t * nh * d + h * d + c]!; Vh[t * d + c] = vd[t * nh * d + h * d + c]!; }
      const Qt = be.upload(Qh, [n, d]), Kt = be.upload(Kh, [n, d]), Vt = be.upload(Vh, [n, d]);
      const S = be.empty([n, n]), O = be.empty([n, d]);
      const lam = decay[h]!;
      const t0 = performance.now();
      be.matmul(S, Qt, Kt, { transB: true });
      const sd = (S as unknown as { data: Float32Array }).data;
      if (method === 'naive-quadratic') {
        const pw = new Float32Array(n);
        for (let i = 0; i < n; i++) pw[i] = lam ** i;
        for (let i = 0; i < n; i++) { const row = i * n; for (let j = 0; j <= i; j++) sd[row + j] = sd[row + j]! * pw[i - j]!; sd.fill(0, row + i + 1, row + n); }
      } else {
        const scale = 1 / Math.sqrt(d);
        for (let i = 0; i < n; i++) {
          const row = i * n; let mx = -Infinity;
          for (let j = 0; j <= i; j++) mx = Math.max(mx, sd[row + j]! * scale);
          let sum = 0;
          for (let j = 0; j <= i; j++) { const e = Math.exp(sd[row + j]! * scale - mx); sd[row + j] = e; sum += e; }
          for (let j = 0; j <= i; j++) sd[row + j] = sd[row + j]! / sum;
          sd.fill(0, row + i + 1, row + n);
        }
      }
      be.matmul(O, S, Vt);
      total += performance.now() - t0;
    }
    rows.push({ method, n, ms: (total / heads) * nh, workingBytes: 4 * n * n + 4 * 4 * n * d });
  }
  return rows;
}

export function describeModel(c: ModelConfig): string {
  const d = dims(c);
  return `${d.L}×${d.D}, ${d.nh} heads, glu ${d.G}, vocab ${d.V}`;
}
