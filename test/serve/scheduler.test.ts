// The engine (continuous batching over a state pool) against generate.ts's own single-sequence
// loop: whatever joins or leaves the batch, however prompts are chunked, whichever slot a
// sequence lands in, and whether its prompt came from the prefix cache, every sequence must
// produce exactly the tokens it produces alone. The reference backend (float64 accumulation)
// keeps batch composition from changing any logit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createBackend } from '../../src/backends/index.ts';
import { presetConfig } from '../../src/config/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { generateTokens } from '../../src/generate/generate.ts';
import { Engine, OverloadedError, ShuttingDownError, decodeBuckets, type EngineRequest, type FinishReason } from '../../src/serve/scheduler.ts';
import { Rng } from '../../src/util/rng.ts';

const model = TnlModel.random(createBackend('reference'), presetConfig('tiny'), 3);
const V = model.config.vocab_size;

function prompt(len: number, seed: number): number[] {
  const r = new Rng(seed);
  return Array.from({ length: len }, () => 3 + Math.floor(r.float() * (V - 3)));
}

async function reference(ids: number[], maxTokens: number, opts: { temperature?: number; seed?: number } = {}): Promise<number[]> {
  const out: number[] = [];
  for await (const t of generateTokens(model, ids, { temperature: 0, ...opts, maxTokens, stopIds: [] })) out.push(t.id);
  return out;
}

interface Run { tokens: number[][]; reasons: (FinishReason | null)[]; cached: number; done: Promise<void> }
function request(engine: Engine, ids: number[], maxTokens: number, extra: Partial<EngineRequest> = {}): Run & { job: ReturnType<Engine['submit']> } {
  const n = extra.n ?? 1;
  const run: Run = { tokens: Array.from({ length: n }, () => []), reasons: new Array(n).fill(null), cached: -1, done: Promise.resolve() };
  const job = engine.submit({
    promptIds: ids, n, maxTokens, sampling: { temperature: 0 }, stopIds: [],
    onAdmit: (i) => { run.cached = i.cachedTokens; },
    onToken: (s, t) => { run.tokens[s]!.push(t.id); },
    onFinish: (s, r) => { assert.equal(run.reasons[s], null, 'onFinish called twice'); run.reasons[s] = r; },
    ...extra,
  });
  run.done = job.done;
  return Object.assign(run, { job });
}

const tick = () => new Promise((r) => setImmediate(r));

test('continuous batching: requests joining and leaving at every step each get exactly their solo tokens', async () => {
  const engine = new Engine(model, { maxSeqs: 4, prefillChunk: 7, prefixCache: 0, log: () => {} });
  const sizes: number[] = [];
  const decode = model.decode.bind(model);
  const spy = Object.create(model) as TnlModel;
  spy.decode = (ids, st, slots) => { sizes.push(ids.length); return decode(ids, st, slots); };
  (engine as unknown as { model: TnlModel }).model = spy;

  const specs = [[5, 12], [40, 6], [17, 15], [1, 9], [23, 4], [64, 10], [9, 14], [30, 3]] as const;
  const runs: (Run & { ids: number[]; max: number })[] = [];
  for (const [i, [len, max]] of specs.entries()) {
    const ids = prompt(len, 100 + i);
    runs.push({ ...request(engine, ids, max), ids, max });
    // let a few steps pass between arrivals so requests join a running batch
    for (let k = 0; k < i % 3; k++) await tick();
  }
  await Promise.all(runs.map((r) => r.done));
  for (const r of runs) {
    assert.deepEqual(r.tokens[0], await reference(r.ids, r.max), `prompt of ${r.ids.length}`);
    assert.equal(r.reasons[0], 'length');
  }
  assert.equal(engine.running(), 0);
  assert.equal(engine.freeSlots(), 4);
  assert.ok(Math.max(...sizes) === 4, `batch sizes ${sizes.join(',')}`);
  assert.ok(new Set(sizes).size >= 3, `the batch should grow and shrink: ${sizes.join(',')}`);
  // few shapes: decode batches are padded to 1, 2, 4 (maxSeqs 4)
  assert.deepEqual([...new Set(sizes)].sort(), [1, 2, 4]);
});

test('batched prefill (several requests per prefill call) is exact too', async () => {
  const engine = new Engine(model, { maxSeqs: 6, prefillChunk: 8, prefillBatch: 3, prefixCache: 0, log: () => {} });
  const shapes: number[] = [];
  const prefill = model.prefill.bind(model);
  const spy = Object.create(model) as TnlModel;
  spy.prefill = (ids, B, N, st, o) => { if (N > 1) shapes.push(B); return prefill(ids, B, N, st, o); }; // N = 1: decode steps
  (engine as unknown as { model: TnlModel }).model = spy;
  const runs = [[3, 5], [20, 4], [17, 6], [8, 3], [33, 5], [16, 7], [2, 4]].map(([len, max], i) => ({ ids: prompt(len!, 200 + i), max: max!, run: null as unknown as ReturnType<typeof request> }));
  for (const r of runs) r.run = request(engine, r.ids, r.max);
  await Promise.all(runs.map((r) => r.run.done));
  for (const r of runs) assert.deepEqual(r.run.tokens[0], await reference(r.ids, r.max), `prompt of ${r.ids.length}`);
  assert.ok(shapes.some((b) => b > 1), `prefill calls were never batched: ${shapes.join(',')}`);
  assert.ok(Math.max(...shapes) <= 3);
});

test('few shapes: prompt tails go in power-of-two pieces, decode batches in buckets; padding rows never disturb real ones', async () => {
  assert.deepEqual(decodeBuckets(64), [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]);
  assert.deepEqual(decodeBuckets(5), [1, 2, 4, 5]);
  const engine = new Engine(model, { maxSeqs: 20, prefillChunk: 16, prefixCache: 0, log: () => {} });
  const calls: [number, number][] = [];
  const prefill = model.prefill.bind(model);
  const spy = Object.create(model) as TnlModel;
  spy.prefill = (ids, B, N, st, o) => { calls.push([B, N]); return prefill(ids, B, N, st, o); };
  (engine as unknown as { model: TnlModel }).model = spy;
  const runs = Array.from({ length: 11 }, (_, i) => ({ ids: prompt(5 + i * 4, 300 + i), max: 3 + (i % 5) }));
  const rs = runs.map((r) => request(engine, r.ids, r.max));
  await Promise.all(rs.map((r) => r.done));
  for (const [i, r] of runs.entries()) assert.deepEqual(rs[i]!.tokens[0], await reference(r.ids, r.max), `prompt of ${r.ids.length}`);
  for (const [B, N] of calls) {
    if (N === 1) assert.ok(decodeBuckets(20).includes(B), `decode batch ${B}`);
    else assert.ok(B === 1 && (N === 16 || (N & (N - 1)) === 0), `prefill piece ${B}×${N}`);
  }
  // a 41-token prompt: 16 + 16 + 8 + 1
  assert.ok(calls.some(([, N]) => N === 8));
});

test('n > 1: the prompt is prefilled once and copied; greedy copies agree, seeded ones follow seed + i', async () => {
  const engine = new Engine(model, { maxSeqs: 8, prefillChunk: 16, log: () => {} });
  const ids = prompt(37, 7);
  const g = request(engine, ids, 10, { n: 3 });
  const s = request(engine, ids, 10, { n: 3, sampling: { temperature: 1, seed: 50 } });
  await Promise.all([g.done, s.done]);
  const want = await reference(ids, 10);
  for (const t of g.tokens) assert.deepEqual(t, want);
  for (let i = 0; i < 3; i++) assert.deepEqual(s.tokens[i], await reference(ids, 10, { temperature: 1, seed: 50 + i }), `sequence ${i}`);
  assert.notDeepEqual(s.tokens[0], s.tokens[1]);
});

test('prefix state cache: a later prompt that extends an earlier one (or its output) resumes from the cached state, exactly', async () => {
  const engine = new Engine(model, { maxSeqs: 2, prefillChunk: 8, prefixCache: 4, log: () => {} });
  const p = prompt(30, 11);
  const a = request(engine, p, 8);
  await a.done;
  assert.equal(a.cached, 0);
  // the same prompt again: nothing to prefill
  const same = request(engine, p, 8);
  await same.done;
  assert.equal(same.cached, 30);
  assert.deepEqual(same.tokens[0], a.tokens[0]);
  // a longer prompt starting with p
  const longer = [...p, ...prompt(21, 12)];
  const b = request(engine, longer, 6);
  await b.done;
  assert.equal(b.cached, 30);
  assert.deepEqual(b.tokens[0], await reference(longer, 6));
  // the next turn of a conversation: prompt + the generated tokens (7 of 8 were fed) + new text
  const turn2 = [...p, ...a.tokens[0]!, ...prompt(9, 13)];
  const c = request(engine, turn2, 5);
  await c.done;
  assert.equal(c.cached, 30 + 7);
  assert.deepEqual(c.tokens[0], await reference(turn2, 5));
  // a different prompt shares nothing
  const d = request(engine, prompt(12, 14), 3);
  await d.done;
  assert.equal(d.cached, 0);
  assert.ok(engine.cacheEntries() <= 4);
});

test('cancel frees the slot at once; the slot is reused cleanly', async () => {
  const engine = new Engine(model, { maxSeqs: 1, prefillChunk: 64, prefixCache: 0, log: () => {} });
  const long = request(engine, prompt(10, 21), 100000);
  while (long.tokens[0]!.length < 5) await tick();
  assert.equal(engine.running(), 1);
  long.job.cancel();
  assert.equal(long.reasons[0], 'abort');
  assert.equal(engine.running(), 0);
  assert.equal(engine.freeSlots(), 1);
  await long.done;
  // a cancelled request still waiting in the queue reports abort too
  const blocker = request(engine, prompt(4, 22), 100000);
  const queued = request(engine, prompt(4, 23), 5);
  await tick();
  queued.job.cancel();
  assert.equal(queued.reasons[0], 'abort');
  assert.equal(engine.queueDepth(), 0);
  blocker.job.cancel();
  // the same slot, reused: no trace of the cancelled sequences
  const ids = prompt(19, 24);
  const fresh = request(engine, ids, 8);
  await fresh.done;
  assert.deepEqual(fresh.tokens[0], await reference(ids, 8));
});

test('eos and stop: a stop id ends the sequence without emitting it; onToken returning true ends it as "stop"', async () => {
  const engine = new Engine(model, { maxSeqs: 2, log: () => {} });
  const ids = prompt(8, 31);
  const want = await reference(ids, 12);
  const eos = want[5]!;
  const first = want.indexOf(eos);
  const a = request(engine, ids, 12, { stopIds: [eos] });
  const b = request(engine, ids, 12, { onToken: function (this: void, _s, t) { b.tokens[0]!.push(t.id); return t.index === 3; } });
  await Promise.all([a.done, b.done]);
  assert.deepEqual(a.tokens[0], want.slice(0, first));
  assert.equal(a.reasons[0], 'stop');
  assert.deepEqual(b.tokens[0], want.slice(0, 4));
  assert.equal(b.reasons[0], 'stop');
});

test('a full queue throws OverloadedError with a retry time; a draining engine refuses work', async () => {
  const engine = new Engine(model, { maxSeqs: 1, maxQueue: 2, log: () => {} });
  const r1 = request(engine, prompt(4, 41), 100000);
  const r2 = request(engine, prompt(4, 42), 100000);
  assert.throws(() => request(engine, prompt(4, 43), 5), (e) => e instanceof OverloadedError && e.retryAfterSeconds >= 1);
  assert.throws(() => engine.submit({ promptIds: [1], n: 2, maxTokens: 1, sampling: {}, stopIds: [], onToken() {}, onFinish() {} }), /at most 1/);
  assert.throws(() => engine.submit({ promptIds: [V], n: 1, maxTokens: 1, sampling: {}, stopIds: [], onToken() {}, onFinish() {} }), /outside the vocabulary/);
  engine.drain();
  assert.throws(() => request(engine, prompt(4, 44), 5), ShuttingDownError);
  engine.cancelAll();
  await Promise.all([r1.done, r2.done]);
  assert.deepEqual([r1.reasons[0], r2.reasons[0]], ['abort', 'abort']);
  await engine.whenIdle();
  assert.equal(engine.running(), 0);
});

test('a throwing callback fails only its own request', async () => {
  const engine = new Engine(model, { maxSeqs: 4, log: () => {} });
  const ids = prompt(6, 51);
  const bad = request(engine, ids, 10, { onToken: (_s, t) => { if (t.index === 2) throw new Error('boom'); } });
  const good = request(engine, ids, 10);
  await Promise.all([bad.done, good.done]);
  assert.equal(bad.reasons[0], 'error');
  assert.deepEqual(good.tokens[0], await reference(ids, 10));
  assert.equal(engine.running(), 0);
});
