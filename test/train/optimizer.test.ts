import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { learningRate, AdamW } from '../../src/train/optimizer.ts';
import { backendsUnderTest } from '../helpers/backends.ts';
import { presetConfig } from '../../src/config/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { exportParams } from '../../src/model/params.ts';
import { relErr } from '../helpers/fixture.ts';
import { DEFAULT_SETTINGS, train, TrainingError } from '../../src/train/trainer.ts';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';

test('warmup then cosine', () => {
  const o = { lr: 1, minLr: 0.1, warmup: 10, total: 110 };
  assert.equal(learningRate(0, o), 0.1);
  assert.equal(learningRate(9, o), 1);
  assert.ok(Math.abs(learningRate(10, o) - 1) < 1e-12);
  assert.ok(Math.abs(learningRate(60, o) - 0.55) < 1e-12); // halfway: min + (max−min)/2
  assert.equal(learningRate(110, o), 0.1);
});

test('AdamW: one step by hand (bias-corrected, decoupled decay; θ not decayed)', () => {
  const be = new ReferenceBackend();
  const model = TnlModel.random(be, presetConfig('tiny'), 0);
  const g = model.allocGrads();
  be.fill(g.layers[0]!.w3, 0.5);
  be.fill(g.layers[0]!.theta!, 0.5);
  const opt = new AdamW(be, model.params, { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 });
  const w = be.download(model.params.layers[0]!.w3)[0]!, th = be.download(model.params.layers[0]!.theta!)[0]!;
  opt.update(g, 0.1, 2); // gradScale 2: g = 1
  // m̂ = 1, v̂ = 1 → update = lr · 1/(1 + eps); weight decay multiplies w by (1 − lr·wd) first
  assert.ok(Math.abs(be.download(model.params.layers[0]!.w3)[0]! - (w * (1 - 0.01) - 0.1 / (1 + 1e-8))) < 1e-6);
  assert.ok(Math.abs(be.download(model.params.layers[0]!.theta!)[0]! - (th - 0.1 / (1 + 1e-8))) < 1e-6);
});

for (const be of await backendsUnderTest()) {
  test(`${be.name}: two accumulated micro-batches give the gradient of the whole batch`, () => {
    const model = TnlModel.random(be, presetConfig('tiny'), 1);
    const ids = Int32Array.from({ length: 2 * 20 }, (_, i) => 3 + ((i * 37) % 500));
    const whole = model.allocGrads(), acc = model.allocGrads();
    model.lossAndGrads(ids, 2, 20, whole);
    model.lossAndGrads(ids.subarray(0, 20), 1, 20, acc, null, { gradScale: 0.5 });
    model.lossAndGrads(ids.subarray(20), 1, 20, acc, null, { gradScale: 0.5 });
    const a = exportParams(be, whole, model.config), b = exportParams(be, acc, model.config);
    a.forEach((t, i) => assert.ok(relErr(b[i]!.data, t.data) < 1e-5, t.name));
  });
}

test('a non-finite loss stops training with the step and the last good checkpoint', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-nan-'));
  try {
    writeFileSync(join(dir, 'c.txt'), 'the cat sat on the mat and the dog ran to the cat. '.repeat(400));
    const s = { ...DEFAULT_SETTINGS, out: join(dir, 'run'), data: join(dir, 'c.txt'), model: 'tiny', vocabSize: 300, seqLen: 16, batchSize: 2, steps: 20, warmup: 0, lr: 1e30, minLr: 1e30, saveEvery: 1, evalEvery: 100, evalBatches: 1, valFraction: 0.2 };
    await assert.rejects(train(s, (await backendsUnderTest()).at(-1)!), (e: Error) => {
      assert.ok(e instanceof TrainingError);
      assert.match(e.message, /step \d+: the loss is (NaN|Infinity)/);
      assert.match(e.message, /Last good checkpoint: .*step-/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
