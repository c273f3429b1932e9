// The decode loop that picks tokens inside the step (DeviceLoop) against the host's loop (Decoder
// and argmax over downloaded logits), on a backend that records graphs and keeps bound arrays apart
// from the host's as a GPU does; and the host implementation of sampleTokens that the CUDA kernel
// is checked against on the GPU machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { HostTokenRing, noiseKey, noiseUniform, rowSeed } from '../../src/backends/token-pick.ts';
import { presetConfig } from '../../src/config/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { Decoder } from '../../src/generate/decoder.ts';
import { DeviceLoop, deviceSamplingApplies } from '../../src/generate/device-loop.ts';
import { argmax } from '../../src/generate/sampling.ts';
import { recordingBackend } from '../helpers/recording.ts';

function logSoftmaxAt(row: Float32Array, i: number): number {
  let mx = -Infinity, z = 0;
  for (const x of row) mx = Math.max(mx, x);
  for (const x of row) z += Math.exp(x - mx);
  return row[i]! - mx - Math.log(z);
}

test('greedy picks inside the step equal the host loop over downloaded logits (graphs, bound arrays, 2 sequences)', () => {
  const be = recordingBackend(new ReferenceBackend(), { device: true });
  const model = TnlModel.random(be, presetConfig('tiny'), 5);
  const V = model.config.vocab_size;
  const hostState = model.newState(2), devState = model.newState(2);
  const prompt = Int32Array.of(3, 9, 4, 1, 7, 2);
  model.prefill(prompt, 2, 3, hostState); model.prefill(prompt, 2, 3, devState);
  const first = Int32Array.of(11, 12);
  const dec = new Decoder(model, hostState, { graphs: false });
  const loop = new DeviceLoop(model, devState, { temperature: 0, depth: 3 });
  let cur = first, steps = 0;
  for (const picks of loop.run(first, 9)) {
    const lg = dec.stepToHost(cur);
    const want = Int32Array.from({ length: 2 }, (_, b) => argmax(lg.subarray(b * V, (b + 1) * V)));
    assert.deepEqual(Array.from(picks.ids), Array.from(want), `step ${steps}`);
    for (let b = 0; b < 2; b++) assert.ok(Math.abs(picks.logprobs[b]! - logSoftmaxAt(lg.subarray(b * V, (b + 1) * V), want[b]!)) < 1e-5);
    cur = want;
    steps++;
  }
  assert.equal(steps, 9);
  assert.equal(be.replays, 8, 'the steps after the first are replays');
  assert.deepEqual(Array.from(devState.positions), Array.from(hostState.positions));
  // a second run continues from the state where the first left it
  const more = [...loop.run(cur, 2)].map((p) => Array.from(p.ids));
  const lg = dec.stepToHost(cur);
  assert.deepEqual(more[0], [0, 1].map((b) => argmax(lg.subarray(b * V, (b + 1) * V))));
  loop.dispose(); dec.dispose();
});

test('stopping a run early: the queued steps still run and count in the positions', () => {
  const be = recordingBackend(new ReferenceBackend(), { device: true });
  const model = TnlModel.random(be, presetConfig('tiny'), 5);
  const state = model.newState(1);
  const loop = new DeviceLoop(model, state, { temperature: 0.8, seed: 7, depth: 4 });
  let n = 0;
  for (const _ of loop.run(Int32Array.of(5), 20)) if (++n === 3) break;
  // 3 read, and the queue kept 4 ahead: steps 0..5 were launched
  assert.equal(state.positions[0], 6);
  assert.throws(() => [...loop.run(Int32Array.of(model.config.vocab_size), 1)], /outside the vocabulary/);
  loop.dispose();
});

test('temperature draws are reproducible by seed and follow softmax(x / T)', () => {
  const be = new ReferenceBackend();
  const draw = (seed: number) => {
    const model = TnlModel.random(recordingBackend(be, { device: true }), presetConfig('tiny'), 5);
    const loop = new DeviceLoop(model, model.newState(1), { temperature: 1, seed });
    const out = [...loop.run(Int32Array.of(5), 12)].map((p) => p.ids[0]!);
    loop.dispose();
    return out;
  };
  assert.deepEqual(draw(42), draw(42));
  assert.notDeepEqual(draw(42), draw(43));
  // the rule itself, on fixed logits: each position is a fresh draw
  const x = Float32Array.of(1, 0.5, 0, -1, 2, 0.25), T = 0.7, n = 20000;
  const L = be.upload(x, [1, 6]), ids = new Int32Array(1), pos = new Int32Array(1), ring = new HostTokenRing(1, n);
  for (let i = 0; i < n; i++) be.sampleTokens(L, { ids, positions: pos, ring, temperature: T, seed: 99 });
  assert.equal(pos[0], n);
  const w = Array.from(x, (v) => Math.exp(v / T)), tot = w.reduce((a, b) => a + b, 0);
  for (let i = 0; i < 6; i++) {
    const f = ring.ids.filter((id) => id === i).length / n;
    assert.ok(Math.abs(f - w[i]! / tot) < 0.012, `token ${i}: frequency ${f} vs ${w[i]! / tot}`);
  }
  // greedy takes the first of equal largest logits
  const tie = be.upload(Float32Array.of(0, 3, 1, 3), [1, 4]), r1 = new HostTokenRing(1, 1);
  be.sampleTokens(tie, { ids, positions: pos, ring: r1, temperature: 0, seed: 1 });
  assert.equal(r1.ids[0], 1);
  assert.ok(Math.abs(r1.logprobs[0]! - logSoftmaxAt(Float32Array.of(0, 3, 1, 3), 1)) < 1e-6);
});

test('the noise: uniform on (0, 1), different per row, position and column', () => {
  const k = noiseKey(rowSeed(1, 0), 0);
  let sum = 0, lo = 1, hi = 0;
  for (let i = 0; i < 100000; i++) { const u = noiseUniform(k, i); sum += u; lo = Math.min(lo, u); hi = Math.max(hi, u); }
  assert.ok(Math.abs(sum / 100000 - 0.5) < 0.005 && lo > 0 && hi < 1);
  assert.notEqual(noiseKey(rowSeed(1, 0), 0), noiseKey(rowSeed(1, 1), 0));
  assert.notEqual(noiseKey(rowSeed(1, 0), 0), noiseKey(rowSeed(1, 0), 1));
  assert.notEqual(noiseKey(rowSeed(1, 0), 0), noiseKey(rowSeed(2, 0), 0));
  assert.equal(rowSeed(1, 3, Int32Array.of(5, 6, 7, -8)), (-8) >>> 0, 'per-row seeds');
});

test('generation picks on the device only where it can honour the options', () => {
  const host = new ReferenceBackend();
  assert.equal(deviceSamplingApplies(host, { temperature: 0.7 }), false, 'host backends sample on the host');
  const dev = recordingBackend(host, { device: true });
  assert.equal(deviceSamplingApplies(dev, { temperature: 0.7, seed: 3 }), true);
  assert.equal(deviceSamplingApplies(dev, {}), true);
  for (const o of [{ topK: 5 }, { topP: 0.9 }, { repetitionPenalty: 1.1 }, { presencePenalty: 0.5 }, { frequencyPenalty: 0.5 }, { logitBias: new Map([[3, 1]]) }, { topLogprobs: 2 }])
    assert.equal(deviceSamplingApplies(dev, o), false, JSON.stringify(o));
});
