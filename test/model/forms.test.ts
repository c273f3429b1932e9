// The model's evaluation orders agree with each other, on configurations the fixture lacks:
// parallel = block prefill = recurrent decode; left padding is exact; the backward matches finite
// differences (tied head, LRPE on every layer, a non-power-of-two head count).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backendsUnderTest } from '../helpers/backends.ts';
import { maxAbsDiff } from '../helpers/fixture.ts';
import { parseConfig } from '../../src/config/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { exportParams, paramEntries } from '../../src/model/params.ts';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { f32 } from '../../src/backends/host.ts';

const cfg = (o: Record<string, unknown> = {}) => parseConfig({
  vocab_size: 50, decoder_embed_dim: 24, decoder_layers: 3, decoder_attention_heads: 6, hidden_dim: 24, glu_dim: 40,
  linear_use_lrpe_list: [1, 0, 1], init_std: 0.2, ...o,
});
const ids = (n: number, seed: number, V = 50) => Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919 + seed * 104729) % (V - 3)));

for (const be of await backendsUnderTest()) {
  test(`${be.name}: parallel logits = block prefill (any block) = prefill + decode, 6 heads, LRPE on layers 0 and 2, tied`, () => {
    const model = TnlModel.random(be, cfg(), 1);
    const x = ids(37, 1);
    const par = be.download(model.forward(x, 1, 37));
    for (const block of [1, 5, 16, 64]) {
      const m = new TnlModel(model.config, be, model.params, { blockSize: block });
      const st = m.newState(1);
      const pre = be.download(m.prefill(x.subarray(0, 30), 1, 30, st, { allLogits: true }));
      assert.ok(maxAbsDiff(pre, par.subarray(0, 30 * 50)) < 2e-5, `block ${block} prefill`);
      for (let t = 30; t < 37; t++) {
        const l = be.download(m.decode(x.subarray(t, t + 1), st));
        assert.ok(maxAbsDiff(l, par.subarray(t * 50, (t + 1) * 50)) < 2e-5, `block ${block} decode at ${t}`);
      }
    }
  });

  test(`${be.name}: a left-padded batch gives each prompt exactly its unpadded logits`, () => {
    const model = TnlModel.random(be, cfg(), 2);
    const a = ids(9, 2), b = ids(4, 3);
    const N = 9, batch = new Int32Array(2 * N), mask = new Int32Array(2 * N).fill(1);
    batch.set(a, 0);
    batch.set(b, N + (N - 4));
    mask.fill(0, N, N + N - 4);
    const st = model.newState(2);
    const lp = be.download(model.prefill(batch, 2, N, st, { vMask: mask }));
    const alone = (x: Int32Array) => { const s = model.newState(1); return be.download(model.prefill(x, 1, x.length, s)); };
    assert.ok(maxAbsDiff(lp.subarray(0, 50), alone(a)) < 1e-5);
    assert.ok(maxAbsDiff(lp.subarray(50), alone(b)) < 1e-5, 'padded prompt differs from alone');
    // decoding on continues to agree with the unpadded sequences
    const next = Int32Array.of(7, 8);
    const d = be.download(model.decode(next, st));
    const sb = model.newState(1);
    model.prefill(b, 1, 4, sb);
    const db = be.download(model.decode(Int32Array.of(8), sb));
    // positions differ (padding advances them) but LRPE is relative: logits agree
    assert.ok(maxAbsDiff(d.subarray(50), db) < 1e-5);
  });

  test(`${be.name}: the decoding state has a fixed size whatever the context`, () => {
    const model = TnlModel.random(be, cfg(), 3);
    const st = model.newState(1);
    const sizes = () => st.layers.map((t) => t.size);
    const before = sizes();
    model.prefill(ids(200, 4), 1, 200, st);
    for (let i = 0; i < 5; i++) model.decode(Int32Array.of(5), st);
    assert.deepEqual(sizes(), before);
    assert.deepEqual(before, [6 * 8 * 4, 6 * 4 * 4, 6 * 8 * 4]);
  });
}

test('backward matches central finite differences (tied head, LRPE everywhere, padding row)', () => {
  const be = new ReferenceBackend();
  const config = cfg({ linear_use_lrpe_list: [1, 1, 1], vocab_size: 20, pad_token_id: 0 });
  const model = TnlModel.random(be, config, 5);
  const x = Int32Array.from([0, 4, 9, 0, 13, 2, 19, 7, 4, 11, 0, 5]);
  const B = 2, N = 6;
  const g = model.allocGrads();
  model.lossAndGrads(x, B, N, g);
  const grads = new Map(exportParams(be, g, config).map((e) => [e.name, e.data]));
  const loss = () => { const h = model.allocGrads(); return model.lossAndGrads(x, B, N, h).loss; };
  let checked = 0;
  for (const e of paramEntries(config)) {
    const t = f32(e.get(model.params));
    const cols = t.length / e.get(model.params).shape[0]!;
    const gr = grads.get(e.name)!;
    // a few coordinates per tensor, including the largest gradient
    let big = 0;
    for (let i = 1; i < gr.length; i++) if (Math.abs(gr[i]!) > Math.abs(gr[big]!)) big = i;
    // (the embedding's padding row is excluded: by design its lookup gradient is dropped, spec §6)
    const isEmbed = e.name === 'model.embed_tokens.weight';
    for (const i of [big, 0, Math.floor(gr.length / 2), gr.length - 1].filter((i) => !isEmbed || i >= cols)) {
      const at = e.rowStart * cols + i;
      const orig = t[at]!, h = 2e-3;
      t[at] = orig + h; const lp = loss();
      t[at] = orig - h; const lm = loss();
      t[at] = orig;
      const fd = (lp - lm) / (2 * h);
      assert.ok(Math.abs(fd - gr[i]!) <= 2e-3 + 2e-2 * Math.abs(fd), `${e.name}[${i}]: analytic ${gr[i]} vs finite difference ${fd}`);
      checked++;
    }
  }
  // the padding row of the tied embedding still gets the head's gradient
  const emb = grads.get('model.embed_tokens.weight')!;
  assert.ok(emb.subarray(0, 24).some((v) => v !== 0));
  assert.ok(checked > 40);
});

for (const be of await backendsUnderTest()) {
  test(`${be.name}: sequences in a state pool (slots) decode exactly as alone`, () => {
    const model = TnlModel.random(be, cfg(), 4);
    const pool = model.newState(4);
    const a = ids(11, 5), b = ids(6, 6);
    model.prefill(a, 1, 11, pool, { slots: Int32Array.of(2) });
    model.prefill(b, 1, 6, pool, { slots: Int32Array.of(0) });
    const both = be.download(model.decode(Int32Array.of(9, 10), pool, Int32Array.of(2, 0)));
    const alone = (x: Int32Array, next: number) => { const s = model.newState(1); model.prefill(x, 1, x.length, s); return be.download(model.decode(Int32Array.of(next), s)); };
    assert.ok(maxAbsDiff(both.subarray(0, 50), alone(a, 9)) < 1e-5);
    assert.ok(maxAbsDiff(both.subarray(50), alone(b, 10)) < 1e-5);
    assert.deepEqual(Array.from(pool.positions), [7, 0, 12, 0]);
    model.clearSlot(pool, 2);
    assert.equal(pool.positions[2], 0);
    assert.ok(be.download(pool.layers[0]!).subarray(2 * 6 * 8 * 4, 3 * 6 * 8 * 4).every((v) => v === 0));
  });
}
