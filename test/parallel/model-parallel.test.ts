// Tensor parallelism (T = 2, 4), sharded data parallelism (D = 2) and both (T × D = 2 × 2) with the
// in-process communicator, against the single-device model on the reference backend: logits, loss
// and every gradient (1e-5 relative, max |Δ| / max |ref| per tensor), AdamW steps with gradient
// clipping, sharded checkpoints written at T = 2 and read at T = 4, at 2 × 2 and by the
// single-device loader, and a failing rank ending every rank.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { allocParams, exportParams, loadParams, paramTensors, type Params } from '../../src/model/params.ts';
import { AdamW } from '../../src/train/optimizer.ts';
import { runRanks, RankError } from '../../src/parallel/comm.ts';
import { assembleShards, openShardedCheckpoint } from '../../src/parallel/fsdp.ts';
import { ADAMW, batch, relErr, tinyConfig, type CfgName } from './helpers.ts';
import type { Job, JobResult, ModelArgs } from './ranks/model-ranks.ts';

const MOD = new URL('./ranks/model-ranks.ts', import.meta.url);
const TOL = 1e-5;
const be = new ReferenceBackend();
const worst: Record<string, number> = {};
const note = (what: string, e: number) => { worst[what] = Math.max(worst[what] ?? 0, e); return e; };

function single(cfg: CfgName, seed: number, ids: Int32Array, B: number, N: number) {
  const model = TnlModel.random(be, tinyConfig(cfg), seed);
  const logits = be.download(model.forward(ids, B, N));
  const g = model.allocGrads();
  const r = model.lossAndGrads(ids, B, N, g);
  return { model, logits, loss: r.loss, count: r.count, grads: new Map(exportParams(be, g, model.config).map((e) => [e.name, e.data])) };
}

function checkEval(label: string, cfg: CfgName, T: number, D: number, B: number, N: number, ids: Int32Array, res: JobResult[], seed: number): void {
  const ref = single(cfg, seed, ids, B, N);
  const V = ref.model.config.vocab_size, Bl = B / D;
  res.forEach((r, rank) => {
    assert.equal(r.kind, 'eval');
    if (r.kind !== 'eval') return;
    const d = Math.floor(rank / T);
    const want = ref.logits.subarray(d * Bl * N * V, (d + 1) * Bl * N * V);
    assert.ok(note('logits', relErr(r.logits, want)) < TOL, `${label}: logits of rank ${rank}: ${relErr(r.logits, want)}`);
    assert.equal(r.count, ref.count);
    assert.ok(note('loss', Math.abs(r.loss - ref.loss) / ref.loss) < TOL, `${label}: loss ${r.loss} vs ${ref.loss}`);
  });
  const src = assembleShards(ref.model.config, T, D, res.map((r) => (r as { grads: Record<string, Float32Array> }).grads));
  assert.deepEqual(src.names().sort(), [...ref.grads.keys()].sort());
  for (const [name, want] of ref.grads) {
    const got = src.full(name);
    assert.ok(note('grads', relErr(got, want)) < TOL, `${label}: gradient ${name}: ${relErr(got, want)}`);
  }
}

const N = 12;
const ids4 = batch(4, N, 7);
const dir = mkdtempSync(join(tmpdir(), 'tnl-shard-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const ck = join(dir, 'ckpt-t2');
const trainBatches = [batch(4, N, 11), batch(4, N, 12), batch(4, N, 13)];
const CLIP = 0.5;

/** Three AdamW steps of the single-device model with the same clipping. */
function singleTrain(cfg: CfgName, seed: number) {
  const model = TnlModel.random(be, tinyConfig(cfg), seed);
  const opt = new AdamW(be, model.params, ADAMW);
  const g = model.allocGrads();
  const losses: number[] = [];
  for (const ids of trainBatches) {
    model.zeroGrads(g);
    losses.push(model.lossAndGrads(ids, 4, N, g).loss);
    const norm = AdamW.gradNorm(be, g);
    opt.update(g, ADAMW.lr, norm > CLIP ? CLIP / norm : 1);
  }
  // the moments laid out like the parameters, for reference names
  const like = (ts: typeof opt.m): Params => {
    const p = paramTensors(model.params), idx = (t: unknown) => ts[p.indexOf(t as never)]!;
    return { embed: idx(model.params.embed), head: model.params.head ? idx(model.params.head) : null, layers: model.params.layers.map((l) => ({ qkvu: idx(l.qkvu), out: idx(l.out), theta: l.theta ? idx(l.theta) : null, w12: idx(l.w12), w3: idx(l.w3) })) };
  };
  const named = (p: Params) => new Map(exportParams(be, p, model.config).map((e) => [e.name, e.data]));
  return { model, losses, params: named(model.params), m: named(like(opt.m)), v: named(like(opt.v)) };
}

function checkTrain(label: string, cfg: CfgName, T: number, D: number, r: JobResult[], ref: ReturnType<typeof singleTrain>): void {
  const tr = r.map((x) => { assert.equal(x.kind, 'train'); return x as Extract<JobResult, { kind: 'train' }>; });
  tr.forEach((x) => x.losses.forEach((l, i) => assert.ok(note('loss', Math.abs(l - ref.losses[i]!) / ref.losses[i]!) < TOL, `${label}: loss of step ${i}`)));
  for (const kind of ['params', 'm', 'v'] as const) {
    const src = assembleShards(ref.model.config, T, D, tr.map((x) => x[kind]));
    for (const [name, want] of ref[kind]) {
      const e = relErr(src.full(name), want);
      assert.ok(note(`adamw ${kind}`, e) < TOL, `${label}: after 3 AdamW steps, ${kind} of ${name}: ${e}`);
    }
  }
}

test('T = 2: logits, loss, every gradient = single device (6 heads: non-power-of-two slopes split 3 + 3; untied); 3 AdamW steps; checkpoint written', async () => {
  const jobs: Job[] = [
    { kind: 'eval', cfg: 'h6-untied', seed: 1, B: 4, N, ids: ids4 },
    { kind: 'eval', cfg: 'h8-tied', seed: 2, B: 4, N, ids: ids4, checkpoint: true },
    { kind: 'train', cfg: 'h8-tied', seed: 3, B: 4, N, batches: trainBatches, clip: CLIP, save: ck },
  ];
  const res = await runRanks<ModelArgs, JobResult[]>(2, MOD, { T: 2, jobs });
  checkEval('T=2 h6', 'h6-untied', 2, 1, 4, N, ids4, res.map((r) => r[0]!), 1);
  checkEval('T=2 h8 tied, layer checkpointing', 'h8-tied', 2, 1, 4, N, ids4, res.map((r) => r[1]!), 2);
  checkTrain('T=2', 'h8-tied', 2, 1, res.map((r) => r[2]!), singleTrain('h8-tied', 3));
});

test('T = 4: logits, loss, every gradient = single device (8 heads tied, 4 heads untied); the T = 2 checkpoint loads at T = 4', async () => {
  const jobs: Job[] = [
    { kind: 'eval', cfg: 'h8-tied', seed: 4, B: 4, N, ids: ids4 },
    { kind: 'eval', cfg: 'h4-untied', seed: 5, B: 4, N, ids: ids4 },
    { kind: 'load', dir: ck, B: 4, N, ids: ids4 },
  ];
  const res = await runRanks<ModelArgs, JobResult[]>(4, MOD, { T: 4, jobs });
  checkEval('T=4 h8 tied', 'h8-tied', 4, 1, 4, N, ids4, res.map((r) => r[0]!), 4);
  checkEval('T=4 h4 (one head per rank)', 'h4-untied', 4, 1, 4, N, ids4, res.map((r) => r[1]!), 5);
  // the checkpoint into the single-device model (T × D = 1) through the sharded source
  const c = openShardedCheckpoint(ck);
  assert.equal(c.T, 2); assert.equal(c.D, 1); assert.equal(c.step, 3);
  const p = allocParams(be, c.config);
  loadParams(be, p, c.config, c.source('param'), ck);
  c.close();
  const single1 = be.download(new TnlModel(c.config, be, p).forward(ids4, 4, N));
  const trained = singleTrain('h8-tied', 3);
  assert.ok(note('checkpoint', relErr(single1, be.download(trained.model.forward(ids4, 4, N)))) < TOL, 'checkpoint = single-device training');
  for (const r of res) {
    const l = r[2]!;
    assert.equal(l.kind, 'load');
    if (l.kind !== 'load') continue;
    assert.equal(l.step, 3);
    assert.ok(note('checkpoint', relErr(l.logits, single1)) < TOL, `T=4 logits of the T=2 checkpoint: ${relErr(l.logits, single1)}`);
  }
});

test('a sharded checkpoint with a rank file missing or a layout that does not match its config is refused by name', () => {
  const bad = join(dir, 'ckpt-bad');
  cpSync(ck, bad, { recursive: true });
  rmSync(join(bad, 'rank-00001.safetensors'));
  const c = openShardedCheckpoint(bad);
  assert.throws(() => c.source('param').full('model.embed_tokens.weight'), /missing rank file rank-00001\.safetensors \(rank 1 of 2 × 1\)/);
  c.close();
  const m = JSON.parse(readFileSync(join(bad, 'manifest.json'), 'utf8'));
  m.units[1].tensors[0].offset = 4;
  writeFileSync(join(bad, 'manifest.json'), JSON.stringify(m));
  assert.throws(() => openShardedCheckpoint(bad), /unit layout does not match its config at T = 2/);
});

test('D = 2 (sharded data parallel, no TP): logits, loss, every gradient = single device on the global batch', async () => {
  const jobs: Job[] = [{ kind: 'eval', cfg: 'h6-untied', seed: 6, B: 4, N, ids: ids4 }];
  const res = await runRanks<ModelArgs, JobResult[]>(2, MOD, { T: 1, jobs });
  checkEval('D=2 h6', 'h6-untied', 1, 2, 4, N, ids4, res.map((r) => r[0]!), 6);
});

test('T × D = 2 × 2: logits, loss, gradients, 3 AdamW steps = single device; the T = 2 checkpoint loads at 2 × 2 (weights, moments, step)', async () => {
  const jobs: Job[] = [
    { kind: 'eval', cfg: 'h6-untied', seed: 7, B: 4, N, ids: ids4, checkpoint: true },
    { kind: 'eval', cfg: 'h8-tied', seed: 8, B: 4, N, ids: ids4 },
    { kind: 'train', cfg: 'h6-untied', seed: 9, B: 4, N, batches: trainBatches, clip: CLIP },
    { kind: 'load', dir: ck, B: 4, N, ids: ids4 },
  ];
  const res = await runRanks<ModelArgs, JobResult[]>(4, MOD, { T: 2, jobs });
  checkEval('2×2 h6, layer checkpointing', 'h6-untied', 2, 2, 4, N, ids4, res.map((r) => r[0]!), 7);
  checkEval('2×2 h8 tied', 'h8-tied', 2, 2, 4, N, ids4, res.map((r) => r[1]!), 8);
  checkTrain('2×2', 'h6-untied', 2, 2, res.map((r) => r[2]!), singleTrain('h6-untied', 9));
  const c = openShardedCheckpoint(ck);
  const p = allocParams(be, c.config);
  loadParams(be, p, c.config, c.source('param'), ck);
  c.close();
  const single1 = be.download(new TnlModel(c.config, be, p).forward(ids4, 4, N));
  res.forEach((r, rank) => {
    const l = r[3]!;
    if (l.kind !== 'load') return assert.fail('load');
    const d = Math.floor(rank / 2), V = 64;
    assert.equal(l.step, 3);
    assert.ok(note('checkpoint', relErr(l.logits, single1.subarray(d * 2 * N * V, (d + 1) * 2 * N * V))) < TOL, `2×2 logits of the T=2 checkpoint`);
  });
});

test('a rank failing mid-forward ends every rank of a 2 × 2 grid with its message', async () => {
  const e = await runRanks<ModelArgs, JobResult[]>(4, MOD, { T: 2, jobs: [{ kind: 'throw', afterLayers: 0 }] }).then(() => null, (x) => x);
  assert.ok(e instanceof RankError);
  assert.equal(e.rank, 3);
  assert.equal(e.message, 'rank 3: injected failure on rank 3');
  e.outcomes.forEach((o, r) => { if (o.ok) assert.fail(`rank ${r} ended normally`); else if (r !== 3) assert.equal(o.error, 'rank 3 failed: injected failure on rank 3'); });
});

test('worst relative errors seen', () => {
  console.log('# parallel vs single device, max |Δ|/max|ref|:', JSON.stringify(Object.fromEntries(Object.entries(worst).map(([k, v]) => [k, Number(v.toExponential(2))]))));
  assert.ok(Object.keys(worst).length >= 5);
});
