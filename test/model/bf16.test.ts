// bf16 weights with fp32 accumulation: how far the fixture's logits move (reported, and bounded).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuBackend } from '../helpers/backends.ts';
import { FIXTURE, loadExpected, loadFixtureModel, maxAbsDiff } from '../helpers/fixture.ts';

const be = await cpuBackend();
test('bf16 weights on the cpu backend stay close to the reference logits', { skip: !FIXTURE ? 'fixtures not found' : !be ? 'native addon not built' : false }, (t) => {
  const ex = loadExpected();
  const model = loadFixtureModel(be!).withDType('bf16');
  assert.equal(model.dtype, 'bf16');
  const logits = be!.download(model.forward(ex.ids(), 2, 300));
  const d = maxAbsDiff(logits, ex.get('logits_parallel'));
  t.diagnostic(`bf16 max abs logit difference on tnl-ref-small: ${d.toExponential(2)} (max |logit| 2.51)`);
  // bf16 keeps 8 bits of mantissa: a relative error of ~0.4% per weight
  assert.ok(d < 0.05, `bf16 logits differ by ${d}`);
  assert.ok(d > 1e-5, 'bf16 weights should not be bit-identical to f32');
  // decode in bf16 agrees with bf16 parallel
  const st = model.newState(1);
  const pre = be!.download(model.prefill(ex.ids().subarray(0, 300), 1, 300, st, { allLogits: true }));
  assert.ok(maxAbsDiff(pre, logits.subarray(0, 300 * 512)) < 1e-3);
});
