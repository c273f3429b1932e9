// The engine on a device backend picks every running sequence's token inside the decode step
// (Decoder.stepPicks) when all of them allow it. Run here on a backend that records graphs and keeps
// bound arrays apart as a GPU does: greedy requests must still produce exactly their solo tokens,
// seeded draws must not depend on what else is in the batch, picks stay below sampleVocab, and a
// finished sequence still leaves its state and logits in the prefix cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { presetConfig } from '../../src/config/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { generateTokens } from '../../src/generate/generate.ts';
import { Decoder } from '../../src/generate/decoder.ts';
import { Engine, type EngineRequest } from '../../src/serve/scheduler.ts';
import { recordingBackend } from '../helpers/recording.ts';
import { Rng } from '../../src/util/rng.ts';

const host = TnlModel.random(new ReferenceBackend(), presetConfig('tiny'), 3);
const V = host.config.vocab_size;
/** The same weights on the device-like backend. */
function deviceModel(): TnlModel {
  return new TnlModel(host.config, recordingBackend(new ReferenceBackend(), { device: true }), host.params);
}

function prompt(len: number, seed: number): number[] {
  const r = new Rng(seed);
  return Array.from({ length: len }, () => 3 + Math.floor(r.float() * (V - 3)));
}

function run(engine: Engine, ids: number[], maxTokens: number, extra: Partial<EngineRequest> = {}): { tokens: number[]; cached: () => number; done: Promise<void> } {
  const tokens: number[] = [];
  let cached = -1;
  const job = engine.submit({
    promptIds: ids, n: 1, maxTokens, sampling: { temperature: 0 }, stopIds: [],
    onAdmit: (i) => { cached = i.cachedTokens; }, onToken: (_, t) => { tokens.push(t.id); }, onFinish: () => {},
    ...extra,
  });
  return { tokens, cached: () => cached, done: job.done };
}

/** Counts the decode steps that went through stepPicks and through stepToHost. */
function countSteps(): { picks: number; logits: number; restore: () => void } {
  const c = { picks: 0, logits: 0, restore: () => {} };
  const sp = Decoder.prototype.stepPicks, sh = Decoder.prototype.stepToHost;
  Decoder.prototype.stepPicks = function (...a) { c.picks++; return sp.apply(this, a); };
  Decoder.prototype.stepToHost = function (...a) { c.logits++; return sh.apply(this, a); };
  c.restore = () => { Decoder.prototype.stepPicks = sp; Decoder.prototype.stepToHost = sh; };
  return c;
}

test('device picks: greedy requests joining a running batch each get exactly their solo tokens', async () => {
  const count = countSteps();
  try {
    const engine = new Engine(deviceModel(), { maxSeqs: 4, prefillChunk: 9, prefixCache: 0, log: () => {} });
    const specs = [[5, 10], [31, 6], [12, 12], [2, 8], [20, 5]] as const;
    const runs = specs.map(([len, max], i) => ({ ids: prompt(len, 50 + i), max, r: run(engine, prompt(len, 50 + i), max) }));
    await Promise.all(runs.map((x) => x.r.done));
    assert.ok(count.picks > 0 && count.logits === 0, `decode steps: ${count.picks} picked inside the step, ${count.logits} through logits`);
    for (const x of runs) {
      const want: number[] = [];
      for await (const t of generateTokens(host, x.ids, { temperature: 0, maxTokens: x.max, stopIds: [] })) want.push(t.id);
      assert.deepEqual(x.r.tokens, want);
    }
  } finally {
    count.restore();
  }
});

test('device picks: a seeded draw does not depend on the batch around it; sampleVocab bounds the picks', async () => {
  const ids = prompt(9, 7);
  const alone = new Engine(deviceModel(), { maxSeqs: 4, prefixCache: 0, log: () => {} });
  const a = run(alone, ids, 12, { sampling: { temperature: 1.2, seed: 99 } });
  await a.done;
  const busy = new Engine(deviceModel(), { maxSeqs: 4, prefixCache: 0, log: () => {} });
  const others = [run(busy, prompt(14, 1), 20, { sampling: { temperature: 0.7, seed: 1 } }), run(busy, prompt(3, 2), 20)];
  const b = run(busy, ids, 12, { sampling: { temperature: 1.2, seed: 99 } });
  await Promise.all([b.done, ...others.map((o) => o.done)]);
  assert.deepEqual(b.tokens, a.tokens);
  const c = run(alone, ids, 12, { sampling: { temperature: 1.2, seed: 100 } });
  await c.done;
  assert.notDeepEqual(c.tokens, a.tokens, 'another seed, another draw');
  const small = new Engine(deviceModel(), { maxSeqs: 2, prefixCache: 0, sampleVocab: 40, log: () => {} });
  const d = run(small, ids, 30, { sampling: { temperature: 3, seed: 5 } });
  await d.done;
  assert.ok(d.tokens.every((t) => t < 40), `picks ${d.tokens.join(' ')}`);
});

test('device picks: requests that need the whole row (top-p) send the batch through the logits; the prefix cache still fills', async () => {
  const count = countSteps();
  try {
    const engine = new Engine(deviceModel(), { maxSeqs: 2, prefixCache: 4, log: () => {} });
    const ids = prompt(11, 3);
    const first = run(engine, ids, 6);
    await first.done;
    assert.ok(count.picks > 0 && count.logits === 0);
    // the finished sequence's state and last logits are cached: prompt + its tokens continue from there
    const again = run(engine, [...ids, ...first.tokens.slice(0, -1)], 4);
    await again.done;
    assert.equal(again.cached(), ids.length + first.tokens.length - 1);
    const before = count.logits;
    const p = run(engine, prompt(6, 4), 5, { sampling: { temperature: 0.8, topP: 0.9, seed: 2 } });
    await p.done;
    assert.ok(count.logits > before, 'top-p decodes through the logits');
  } finally {
    count.restore();
  }
});
