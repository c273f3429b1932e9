// The whole model against the golden outputs of the reference implementation (spec §13).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backendsUnderTest } from '../helpers/backends.ts';
import { FIXTURE, loadExpected, loadFixtureModel, maxAbsDiff, relErr } from '../helpers/fixture.ts';
import { exportParams } from '../../src/model/params.ts';
import { argmax } from '../../src/generate/sampling.ts';

const skip = FIXTURE ? false : 'fixtures not found (../shared/fixtures)';
const N = 300, V = 512;

for (const be of await backendsUnderTest()) {
  test(`${be.name}: logits_parallel and loss match the reference`, { skip }, () => {
    const ex = loadExpected();
    const model = loadFixtureModel(be);
    const logits = be.download(model.forward(ex.ids(), 2, N));
    const d = maxAbsDiff(logits, ex.get('logits_parallel'));
    assert.ok(d <= 1e-4, `max abs logit difference ${d}`);
    const g = model.allocGrads();
    const { loss } = model.lossAndGrads(ex.ids(), 2, N, g);
    assert.ok(Math.abs(loss - ex.get('loss')[0]!) <= 1e-5, `loss ${loss} vs ${ex.get('loss')[0]}`);
    for (const e of exportParams(be, g, model.config)) {
      const r = relErr(e.data, ex.get('grad.' + e.name));
      assert.ok(r <= 1e-4, `grad.${e.name}: relative error ${r}`);
    }
  });

  for (const block of [1, 64, 256]) {
    test(`${be.name}: block prefill (block ${block}) then recurrent decode match logits_prefill and logits_decode`, { skip }, () => {
      const ex = loadExpected();
      const model = loadFixtureModel(be, block);
      const ids = ex.ids(), P = ex.promptLen;
      const pre = new Int32Array(2 * P);
      for (let b = 0; b < 2; b++) pre.set(ids.subarray(b * N, b * N + P), b * P);
      const state = model.newState(2);
      const lp = be.download(model.prefill(pre, 2, P, state, { allLogits: true }));
      assert.ok(maxAbsDiff(lp, ex.get('logits_prefill')) <= 1e-4, 'prefill logits');
      const expDec = ex.get('logits_decode');
      let worst = 0;
      for (let s = 0; s < N - P; s++) {
        const l = be.download(model.decode(Int32Array.from([ids[P + s]!, ids[N + P + s]!]), state));
        for (let b = 0; b < 2; b++)
          worst = Math.max(worst, maxAbsDiff(l.subarray(b * V, (b + 1) * V), expDec.subarray((b * (N - P) + s) * V, (b * (N - P) + s + 1) * V)));
      }
      assert.ok(worst <= 1e-4, `decode logits differ by ${worst}`);
    });
  }

  test(`${be.name}: greedy continuation equals greedy_ids`, { skip }, () => {
    const ex = loadExpected();
    const model = loadFixtureModel(be);
    const want = ex.ints('greedy_ids');
    const state = model.newState(1);
    let logits = be.download(model.prefill(ex.ids().subarray(0, ex.promptLen), 1, ex.promptLen, state));
    const got: number[] = [];
    while (got.length < want.length) {
      got.push(argmax(logits));
      logits = be.download(model.decode(Int32Array.of(got[got.length - 1]!), state));
    }
    assert.deepEqual(got, want);
  });

  test(`${be.name}: chunked prefill (123 + 157) equals one prefill`, { skip }, () => {
    const ex = loadExpected();
    const model = loadFixtureModel(be, 64);
    const ids = ex.ids().subarray(0, 280);
    const s1 = model.newState(1), s2 = model.newState(1);
    const one = be.download(model.prefill(ids, 1, 280, s1));
    model.prefill(ids.subarray(0, 123), 1, 123, s2);
    const two = be.download(model.prefill(ids.subarray(123), 1, 157, s2));
    assert.ok(maxAbsDiff(one, two) <= 1e-5);
    for (let l = 0; l < s1.layers.length; l++) assert.ok(maxAbsDiff(be.download(s1.layers[l]!), be.download(s2.layers[l]!)) <= 1e-4);
  });
}
