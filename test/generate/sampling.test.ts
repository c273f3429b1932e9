// generate/sampling.ts's Sampler against a plain sort-everything sampler written here: the same options and seed must
// pick the same tokens with the same logprobs (two independent implementations of one rule).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler, validateSampling, type Sampled, type SamplingOptions } from '../../src/generate/sampling.ts';
import { Rng } from '../../src/util/rng.ts';

// The oracle: the plain rule, sorting the whole vocabulary for every token.
class PlainSampler {
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

function logSoftmax(x: Float64Array, temp: number): Float64Array {
  let mx = -Infinity;
  for (const v of x) mx = Math.max(mx, v / temp);
  let s = 0;
  for (const v of x) s += Math.exp(v / temp - mx);
  const lse = mx + Math.log(s);
  return x.map((v) => v / temp - lse);
}
function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

function randomLogits(V: number, rng: Rng, scale: number): Float32Array {
  return Float32Array.from({ length: V }, () => (rng.float() * 2 - 1) * scale);
}

const CASES: SamplingOptions[] = [
  { temperature: 0 },
  { temperature: 1 },
  { temperature: 0.7 },
  { temperature: 1.3, topP: 0.9 },
  { temperature: 0.8, topK: 40 },
  { temperature: 1, topK: 7, topP: 0.5 },
  { temperature: 0.9, topP: 0.3 },
  { temperature: 1, presencePenalty: 0.8, frequencyPenalty: 0.4 },
  { temperature: 0, repetitionPenalty: 1.3, presencePenalty: -0.5 },
  { temperature: 0.6, topP: 0.95, repetitionPenalty: 1.2, frequencyPenalty: 1.5 },
];

test('Sampler picks the same tokens and logprobs as Sampler (same seed, many option sets)', () => {
  const rng = new Rng(42);
  for (const [ci, o] of CASES.entries()) {
    for (const [V, scale] of [[512, 4], [1000, 12], [3000, 2]] as const) {
      const seed = 1000 + ci;
      const a = new PlainSampler({ ...o, seed }), b = new Sampler({ ...o, seed });
      a.observe([3, 3, 5]); b.observe([3, 3, 5]);
      for (let step = 0; step < 40; step++) {
        // peaked rows now and then, so ties at the top and tiny nuclei occur too
        const logits = randomLogits(V, rng, scale);
        if (step % 5 === 0) logits[step % V] = 50;
        const top = step % 3 === 0 ? 5 : 0;
        const x = a.sample(logits, top), y = b.sample(logits, top);
        assert.equal(y.id, x.id, `case ${JSON.stringify(o)} V ${V} step ${step}`);
        assert.ok(Math.abs(y.logprob - x.logprob) <= 1e-12, `logprob ${y.logprob} vs ${x.logprob}`);
        if (top) {
          assert.deepEqual(y.top!.map((t) => t.id), x.top!.map((t) => t.id));
          for (let i = 0; i < top; i++) assert.ok(Math.abs(y.top![i]!.logprob - x.top![i]!.logprob) <= 1e-12);
        }
      }
    }
  }
});

test('Sampler: top alternatives are sorted, the sampled logprob is a log-softmax value', () => {
  const logits = Float32Array.from([1, 3, 3, 0, -2, 2]);
  const s = new Sampler({ temperature: 0 }).sample(logits, 4);
  assert.equal(s.id, 1); // first of the tied maxima
  assert.deepEqual(s.top!.map((t) => t.id), [1, 2, 5, 0]);
  const lse = Math.log([1, 3, 3, 0, -2, 2].reduce((a, v) => a + Math.exp(v), 0));
  assert.ok(Math.abs(s.logprob - (3 - lse)) < 1e-9);
  // without logprobs requested the value is not computed
  assert.ok(Number.isNaN(new Sampler({ temperature: 0 }).sample(logits, 0, false).logprob));
});

test('Sampler: logit_bias forces or bans tokens', () => {
  const rng = new Rng(7);
  const logits = randomLogits(300, rng, 3);
  const forced = new Sampler({ temperature: 1, seed: 1, logitBias: new Map([[123, 100]]) });
  for (let i = 0; i < 20; i++) assert.equal(forced.sample(logits).id, 123);
  const banned = new Sampler({ temperature: 0, logitBias: new Map([[new Sampler({ temperature: 0 }).sample(logits).id, -100]]) });
  const best = new Sampler({ temperature: 0 }).sample(logits).id;
  assert.notEqual(banned.sample(logits).id, best);
});

test('Sampler: a seed reproduces a sequence, another seed gives another', () => {
  const rng = new Rng(9);
  const rows = Array.from({ length: 30 }, () => randomLogits(400, rng, 1));
  const run = (seed: number) => { const s = new Sampler({ temperature: 1, seed }); return rows.map((r) => s.sample(r).id); };
  assert.deepEqual(run(5), run(5));
  assert.notDeepEqual(run(5), run(6));
});
