import { test } from 'node:test';
import assert from 'node:assert/strict';
import { baseSlopes, configToJson, layerDecay, paramCounts, parseConfig, presetConfig, PRESETS, stateBytesPerSequence } from '../../src/config/index.ts';
import { ConfigError } from '../../src/errors.ts';

test('slopes follow the reference, unsorted for non-powers of two (spec §3)', () => {
  assert.deepEqual(baseSlopes(4), [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]);
  assert.deepEqual(baseSlopes(6), [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]);
  const s20 = baseSlopes(20);
  const want20 = [...Array.from({ length: 16 }, (_, i) => 2 ** (-0.5 * (i + 1))), 2 ** -0.25, 2 ** -0.75, 2 ** -1.25, 2 ** -1.75];
  s20.forEach((s, i) => assert.ok(Math.abs(s - want20[i]!) < 1e-12, `head ${i}: ${s} vs ${want20[i]}`));
  const s32 = baseSlopes(32);
  assert.ok(Math.abs(s32[0]! - 2 ** -0.25) < 1e-12 && Math.abs(s32[31]! - 2 ** -8) < 1e-12);
});

test('per-layer decay: s·(1 − l/(L−1) + 1e-5)', () => {
  const c = presetConfig('tiny'); // 2 layers, 4 heads
  const l0 = layerDecay(c, 0), l1 = layerDecay(c, 1);
  assert.ok(Math.abs(l0[0]! - Math.exp(-0.25 * 1.00001)) < 1e-7);
  assert.ok(Math.abs(l1[3]! - Math.exp(-(2 ** -8) * 1e-5)) < 1e-12);
});

test('absent tie_word_embeddings means tied; the fixture config parses', () => {
  const c = parseConfig({ decoder_embed_dim: 64, decoder_layers: 2, decoder_attention_heads: 4, hidden_dim: 64, glu_dim: 128, vocab_size: 100, linear_use_lrpe_list: [1, 0] });
  assert.equal(c.tie_word_embeddings, true);
  assert.equal(parseConfig({ ...configToJson(c), tie_word_embeddings: false }).tie_word_embeddings, false);
});

test('bad fields are each named', () => {
  const bad = { decoder_embed_dim: 64, decoder_layers: 2, decoder_attention_heads: 5, hidden_dim: 64, glu_dim: 'x', vocab_size: 100, linear_use_lrpe_list: [1], linear_act_fun: 'relu', frobnicate: 1 };
  assert.throws(() => parseConfig(bad, 'cfg.json'), (e: Error) => {
    assert.ok(e instanceof ConfigError);
    for (const s of ['cfg.json', 'glu_dim', 'hidden_dim: 64 is not divisible', 'linear_use_lrpe_list: has 1 entries', 'linear_act_fun', 'frobnicate: unknown field']) assert.ok(e.message.includes(s), `missing "${s}" in ${e.message}`);
    return true;
  });
});

test('preset sizes match the published counts', () => {
  // spec §9 and §11: 1B tied = 1,020,266,496 parameters; 385M non-embedding 333.4M
  assert.equal(paramCounts(presetConfig('tnl-1b')).total, 1_020_266_496);
  assert.ok(Math.abs(paramCounts(presetConfig('tnl-385m')).nonEmbedding / 1e6 - 333.4) < 0.05);
  assert.ok(Math.abs(paramCounts(presetConfig('bench-29m')).total / 1e6 - 29.2) < 0.1);
  for (const p of PRESETS) assert.ok(paramCounts(p.config()).total > 0);
  // decode state of the 1B: 16 layers × 16 heads × 128×128 f32, the first layer 2× (LRPE) → 17 × 1 MiB
  assert.equal(stateBytesPerSequence(presetConfig('tnl-1b')), 17 * 16 * 128 * 128 * 4);
});
