// Turning logits into the next token: greedy, temperature, top-k, top-p, repetition penalty (the
// Hugging Face rule), OpenAI-style presence/frequency penalties and logit_bias, with a seeded
// generator so a run with a seed is reproducible. Written to be cheap per token, since the server
// samples every running sequence at every decode step: scratch buffers reused across calls, one
// exponential per vocabulary entry (none for greedy without logprobs), top-k / top-p sorting only
// the candidates that can be in the nucleus (a histogram of log-probabilities finds them), top
// logprobs by partial selection. test/generate/sampling.test.ts checks it against a plain
// sort-everything sampler.
import { UsageError } from '../errors.ts';
import { Rng } from '../util/rng.ts';

export interface SamplingOptions {
  /** 0 = greedy (default 1). */
  temperature?: number;
  /** Keep the k most likely tokens (0 = all). */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1 = all). */
  topP?: number;
  /** > 1 discourages tokens already seen (HF: divide positive logits, multiply negative ones). */
  repetitionPenalty?: number;
  /** OpenAI: subtract presencePenalty once per seen token and frequencyPenalty × its count. */
  presencePenalty?: number;
  frequencyPenalty?: number;
  seed?: number;
  /** Token id → bias added to its logit before the penalties (OpenAI logit_bias, −100…100). */
  logitBias?: ReadonlyMap<number, number> | null;
}

export function validateSampling(o: SamplingOptions): void {
  const bad = (what: string) => { throw new UsageError(what); };
  if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature))) bad(`temperature must be ≥ 0, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) bad(`top-k must be an integer ≥ 0, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) bad(`top-p must be in (0, 1], got ${o.topP}`);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) bad(`repetition penalty must be > 0, got ${o.repetitionPenalty}`);
  for (const k of ['presencePenalty', 'frequencyPenalty'] as const)
    if (o[k] !== undefined && !(Math.abs(o[k]!) <= 2)) bad(`${k === 'presencePenalty' ? 'presence' : 'frequency'} penalty must be in [−2, 2], got ${o[k]}`);
}

export interface Sampled { id: number; logprob: number; top?: { id: number; logprob: number }[] }

// Scratch shared by every sampler: the event loop samples one sequence at a time.
let X = new Float64Array(0), LP = new Float64Array(0), E = new Float64Array(0);
let IDX = new Int32Array(0);
function scratch(V: number): void {
  if (X.length < V) { X = new Float64Array(V); LP = new Float64Array(V); E = new Float64Array(V); IDX = new Int32Array(V); }
}

const BUCKETS = 64;

export class Sampler {
  private readonly rng: Rng;
  private readonly counts = new Map<number, number>();
  constructor(private readonly o: SamplingOptions = {}) {
    validateSampling(o);
    this.rng = new Rng(o.seed ?? (Math.random() * 2 ** 32) >>> 0);
  }

  observe(ids: Iterable<number>): void {
    for (const id of ids) this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
  }

  /**
   * Pick the next token from one row of logits (not modified). `topLogprobs` > 0 also reports the
   * best alternatives; with `withLogprob` false the sampled token's logprob is NaN (saves a pass
   * over the vocabulary when nobody asked for logprobs).
   */
  sample(logits: Float32Array, topLogprobs = 0, withLogprob = true): Sampled {
    const o = this.o, V = logits.length;
    scratch(V);
    const temp = o.temperature ?? 1;
    const rp = o.repetitionPenalty ?? 1, pp = o.presencePenalty ?? 0, fp = o.frequencyPenalty ?? 0;
    const penalised = rp !== 1 || pp !== 0 || fp !== 0;
    // the logits as they are, or a float64 copy when biases or penalties change them
    let x: Float32Array | Float64Array = logits;
    if (o.logitBias || penalised) {
      x = X;
      for (let i = 0; i < V; i++) x[i] = logits[i]!;
    }
    if (o.logitBias) for (const [id, b] of o.logitBias) if (id >= 0 && id < V) x[id] = x[id]! + b;
    if (penalised)
      for (const [id, n] of this.counts) {
        if (id < 0 || id >= V) continue;
        let v = x[id]!;
        if (rp !== 1) v = v > 0 ? v / rp : v * rp;
        x[id] = v - pp - fp * n;
      }
    // log-softmax at temperature 1 (what logprobs report), as Sampler's logSoftmax(x, 1)
    let lse1 = NaN;
    let id: number;
    const k = o.topK ?? 0, p = o.topP ?? 1;
    if (temp === 0) {
      id = 0;
      for (let i = 1; i < V; i++) if (x[i]! > x[id]!) id = i;
    } else if (k > 0 || p < 1) {
      const lse = logSumExp(x, V, temp);
      const lp = LP, e = E;
      for (let i = 0; i < V; i++) lp[i] = x[i]! / temp - lse;
      const order = this.nucleusOrder(lp, V, k, p);
      const m = order.length;
      let total = 0;
      for (let j = 0; j < m; j++) { const v = Math.exp(lp[order[j]!]!); e[j] = v; total += v; }
      let r = this.rng.float() * total;
      id = order[m - 1]!;
      for (let j = 0; j < m; j++) { r -= e[j]!; if (r <= 0) { id = order[j]!; break; } }
    } else {
      // The whole vocabulary: weights exp(x/T − max) in one pass (Sampler computes exp(x/T − lse),
      // the same weights scaled by a constant: the same distribution and the same draw, the pick
      // differing only if the draw falls within rounding error of a boundary between two tokens).
      const e = E;
      let mx = -Infinity;
      for (let i = 0; i < V; i++) mx = Math.max(mx, x[i]! / temp);
      let total = 0;
      for (let i = 0; i < V; i++) { const v = Math.exp(x[i]! / temp - mx); e[i] = v; total += v; }
      if (temp === 1) lse1 = mx + Math.log(total);
      let r = this.rng.float() * total;
      id = V - 1;
      for (let i = 0; i < V; i++) { r -= e[i]!; if (r <= 0) { id = i; break; } }
    }
    if (Number.isNaN(lse1) && (withLogprob || topLogprobs > 0)) lse1 = logSumExp(x, V, 1);
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    const out: Sampled = { id, logprob: x[id]! - lse1 };
    if (topLogprobs > 0) out.top = topK(x, lse1, V, Math.min(topLogprobs, V)).map((i) => ({ id: i, logprob: x[i]! - lse1 }));
    return out;
  }

  /**
   * Sampler's order (indices by log-probability, descending, ties by index) cut to top-k and then
   * to the smallest prefix whose probability reaches p — computed by sorting only the tokens of
   * the highest log-probability buckets that hold at least k tokens / more than p of the mass.
   */
  private nucleusOrder(lp: Float64Array, V: number, k: number, p: number): Int32Array {
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < V; i++) { const v = lp[i]!; if (v < lo) lo = v; if (v > hi) hi = v; }
    const width = (hi - lo) / BUCKETS;
    const bucketOf = (v: number) => (width > 0 ? Math.min(BUCKETS - 1, Math.floor((hi - v) / width)) : 0);
    const count = new Int32Array(BUCKETS), mass = new Float64Array(BUCKETS);
    for (let i = 0; i < V; i++) { const b = bucketOf(lp[i]!); count[b]!++; mass[b]! += Math.exp(lp[i]!); }
    // how many buckets (from the top) are needed: k tokens (when k > 0), and mass past p with a
    // margin for summation order (when p < 1); otherwise all
    let last = BUCKETS - 1;
    let c = 0, mm = 0;
    for (let b = 0; b < BUCKETS; b++) {
      c += count[b]!; mm += mass[b]!;
      if ((k > 0 && c >= k) || (p < 1 && mm >= p + 1e-6)) { last = b; break; }
    }
    let n = 0;
    const idx = IDX;
    for (let i = 0; i < V; i++) if (bucketOf(lp[i]!) <= last) idx[n++] = i;
    const cand = idx.subarray(0, n).sort((a, b) => lp[b]! - lp[a]! || a - b);
    let order = k > 0 ? cand.subarray(0, Math.min(k, n)) : cand;
    if (p < 1) {
      let cum = 0, cut = order.length;
      for (let i = 0; i < order.length; i++) { cum += Math.exp(lp[order[i]!]!); if (cum >= p) { cut = i + 1; break; } }
      order = order.subarray(0, cut);
    }
    return order;
  }
}

function logSumExp(x: Float32Array | Float64Array, V: number, temp: number): number {
  let mx = -Infinity;
  for (let i = 0; i < V; i++) mx = Math.max(mx, x[i]! / temp);
  let s = 0;
  for (let i = 0; i < V; i++) s += Math.exp(x[i]! / temp - mx);
  return mx + Math.log(s);
}

/** Indices of the n largest log-probabilities x − lse, descending, ties by lower index first (Sampler's stable sort). */
function topK(x: Float32Array | Float64Array, lse: number, V: number, n: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < V; i++) {
    const v = x[i]! - lse;
    if (best.length === n && !(v > x[best[n - 1]!]! - lse)) continue;
    let j = best.length;
    if (j < n) best.push(i); else j = n - 1;
    while (j > 0 && v > x[best[j - 1]!]! - lse) { best[j] = best[j - 1]!; j--; }
    best[j] = i;
  }
  return best;
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}
