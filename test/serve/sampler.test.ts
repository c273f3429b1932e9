// The server's FastSampler against generate/sampling.ts's Sampler: the same options and seed must
// pick the same tokens with the same logprobs (two independent implementations of one rule).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler, type SamplingOptions } from '../../src/generate/sampling.ts';
import { FastSampler } from '../../src/serve/sampler.ts';
import { Rng } from '../../src/util/rng.ts';

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

test('FastSampler picks the same tokens and logprobs as Sampler (same seed, many option sets)', () => {
  const rng = new Rng(42);
  for (const [ci, o] of CASES.entries()) {
    for (const [V, scale] of [[512, 4], [1000, 12], [3000, 2]] as const) {
      const seed = 1000 + ci;
      const a = new Sampler({ ...o, seed }), b = new FastSampler({ ...o, seed });
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

test('FastSampler: top alternatives are sorted, the sampled logprob is a log-softmax value', () => {
  const logits = Float32Array.from([1, 3, 3, 0, -2, 2]);
  const s = new FastSampler({ temperature: 0 }).sample(logits, 4);
  assert.equal(s.id, 1); // first of the tied maxima
  assert.deepEqual(s.top!.map((t) => t.id), [1, 2, 5, 0]);
  const lse = Math.log([1, 3, 3, 0, -2, 2].reduce((a, v) => a + Math.exp(v), 0));
  assert.ok(Math.abs(s.logprob - (3 - lse)) < 1e-9);
  // without logprobs requested the value is not computed
  assert.ok(Number.isNaN(new FastSampler({ temperature: 0 }).sample(logits, 0, false).logprob));
});

test('FastSampler: logit_bias forces or bans tokens', () => {
  const rng = new Rng(7);
  const logits = randomLogits(300, rng, 3);
  const forced = new FastSampler({ temperature: 1, seed: 1, logitBias: new Map([[123, 100]]) });
  for (let i = 0; i < 20; i++) assert.equal(forced.sample(logits).id, 123);
  const banned = new FastSampler({ temperature: 0, logitBias: new Map([[new FastSampler({ temperature: 0 }).sample(logits).id, -100]]) });
  const best = new FastSampler({ temperature: 0 }).sample(logits).id;
  assert.notEqual(banned.sample(logits).id, best);
});

test('FastSampler: a seed reproduces a sequence, another seed gives another', () => {
  const rng = new Rng(9);
  const rows = Array.from({ length: 30 }, () => randomLogits(400, rng, 1));
  const run = (seed: number) => { const s = new FastSampler({ temperature: 1, seed }); return rows.map((r) => s.sample(r).id); };
  assert.deepEqual(run(5), run(5));
  assert.notDeepEqual(run(5), run(6));
});
