// Turning logits into the next token: greedy, temperature, top-k, top-p, repetition penalty (the
// Hugging Face rule) and OpenAI-style presence/frequency penalties, with a seeded generator so a
// run with a seed is reproducible.
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

export class Sampler {
  private readonly rng: Rng;
  private readonly counts = new Map<number, number>();
  constructor(private readonly o: SamplingOptions = {}) {
    validateSampling(o);
    this.rng = new Rng(o.seed ?? (Math.random() * 2 ** 32) >>> 0);
  }

  /** Count tokens as "seen" (the prompt, then each generated token) for the penalties. */
  observe(ids: Iterable<number>): void {
    for (const id of ids) this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
  }

  /** Pick the next token from one row of logits (not modified). `topLogprobs` > 0 also reports the best alternatives. */
  sample(logits: Float32Array, topLogprobs = 0): Sampled {
    const o = this.o;
    const x = Float64Array.from(logits);
    const rp = o.repetitionPenalty ?? 1, pp = o.presencePenalty ?? 0, fp = o.frequencyPenalty ?? 0;
    if (rp !== 1 || pp !== 0 || fp !== 0)
      for (const [id, n] of this.counts) {
        if (id < 0 || id >= x.length) continue;
        let v = x[id]!;
        if (rp !== 1) v = v > 0 ? v / rp : v * rp;
        x[id] = v - pp - fp * n;
      }
    const temp = o.temperature ?? 1;
    // log-softmax of the (penalised) logits: what logprobs report
    const logp = logSoftmax(x, 1);
    let id: number;
    if (temp === 0) {
      id = argmax(x);
    } else {
      const lp = logSoftmax(x, temp);
      let order = Array.from(lp.keys());
      const k = o.topK ?? 0, p = o.topP ?? 1;
      if (k > 0 || p < 1) {
        order.sort((a, b) => lp[b]! - lp[a]!);
        if (k > 0) order = order.slice(0, k);
        if (p < 1) {
          let cum = 0, cut = order.length;
          for (let i = 0; i < order.length; i++) { cum += Math.exp(lp[order[i]!]!); if (cum >= p) { cut = i + 1; break; } }
          order = order.slice(0, cut);
        }
      }
      let total = 0;
      for (const i of order) total += Math.exp(lp[i]!);
      let r = this.rng.float() * total;
      id = order[order.length - 1]!;
      for (const i of order) { r -= Math.exp(lp[i]!); if (r <= 0) { id = i; break; } }
    }
    this.observe([id]);
    const out: Sampled = { id, logprob: logp[id]! };
    if (topLogprobs > 0) {
      const best = Array.from(logp.keys()).sort((a, b) => logp[b]! - logp[a]!).slice(0, topLogprobs);
      out.top = best.map((i) => ({ id: i, logprob: logp[i]! }));
    }
    return out;
  }
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

function logSoftmax(x: Float64Array, temp: number): Float64Array {
  let mx = -Infinity;
  for (const v of x) mx = Math.max(mx, v / temp);
  let s = 0;
  for (const v of x) s += Math.exp(v / temp - mx);
  const lse = mx + Math.log(s);
  return x.map((v) => v / temp - lse);
}
