// The Decoder records a decode step once per batch shape and replays it. Its graph logic is tested
// here on a recording backend that behaves like CUDA graph capture (calls are recorded, not run;
// replay reruns them reading the host arrays' current contents): replayed steps must give exactly
// the logits of eager decode steps, across batch sizes, slots and cleared rows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { presetConfig } from '../../src/config/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { Decoder } from '../../src/generate/decoder.ts';
import { recordingBackend } from '../helpers/recording.ts';

test('replayed decode steps equal eager ones (batch sizes, slots, cleared rows, LRPE positions)', () => {
  const be = recordingBackend(new ReferenceBackend());
  const model = TnlModel.random(be, presetConfig('tiny'), 3);
  assert.ok(model.config.linear_use_lrpe_list[0], 'the tiny preset has an LRPE layer (positions are an input)');
  const V = model.config.vocab_size;
  const pool = model.newState(5), eagerPool = model.newState(5);
  const dec = new Decoder(model, pool, { graphs: true });
  assert.ok(dec.graphs);
  let worst = 0;
  for (let s = 0; s < 10; s++) {
    const slots = s % 4 === 3 ? Int32Array.of(4, 0, 2) : Int32Array.of(3, 1);
    const ids = Int32Array.from(slots, (x, i) => (x * 7 + s * 13 + i) % V);
    if (s === 6) { model.clearSlot(pool, 1); model.clearSlot(eagerPool, 1); }
    const a = be.download(model.decode(ids, eagerPool, slots));
    const b = be.download(dec.step(ids, slots));
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  }
  assert.equal(worst, 0);
  assert.ok(be.replays >= 6, `expected replays, got ${be.replays}`);
  assert.deepEqual(Array.from(pool.positions), Array.from(eagerPool.positions));
  dec.dispose();
});

test('the decoder checks ids and slots itself (a replay would not)', () => {
  const be = recordingBackend(new ReferenceBackend());
  const model = TnlModel.random(be, presetConfig('tiny'), 3);
  const dec = new Decoder(model, model.newState(2));
  assert.throws(() => dec.step(Int32Array.of(1, model.config.vocab_size)), /outside the vocabulary/);
  assert.throws(() => dec.step(Int32Array.of(1, 2, 3)), /state holds 2 sequences/);
  assert.throws(() => dec.step(Int32Array.of(1), Int32Array.of(2)), /slots must name 1 rows of a state of 2/);
});

test('without capture support the decoder decodes eagerly', () => {
  const be = new ReferenceBackend();
  const model = TnlModel.random(be, presetConfig('tiny'), 3);
  const dec = new Decoder(model, model.newState(1));
  assert.equal(dec.graphs, false);
  const st = model.newState(1);
  const want = be.download(model.decode(Int32Array.of(5), st));
  const got = be.download(dec.step(Int32Array.of(5)));
  assert.deepEqual(Array.from(got), Array.from(want));
  const next = dec.stepToHost(Int32Array.of(7));
  assert.deepEqual(Array.from(next), Array.from(be.download(model.decode(Int32Array.of(7), st))));
});
