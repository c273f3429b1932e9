// The memory planner against the bytes really allocated: an in-process 2 × 2 run (and a 1 × 1 run
// in this thread) of tiny models counts every tensor each rank allocates and frees
// (TrackingBackend), by category; the planner's numbers for the same T, D, micro-batch and
// sequence length must match each category's peak and the total peak within 10%.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { paramCounts, presetConfig } from '../../src/config/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { makeGrid, runRanks, selfComm } from '../../src/parallel/comm.ts';
import { ShardedTnl } from '../../src/parallel/fsdp.ts';
import { TrackingBackend, type MemReport } from '../../src/parallel/memory.ts';
import { GiB, planMemory, validTp, minGpusToFit, GPU_DEFAULTS, type PlanOptions } from '../../src/parallel/plan.ts';
import { batch, tinyConfig, type CfgName } from './helpers.ts';
import type { Job, JobResult, ModelArgs } from './ranks/model-ranks.ts';

const MOD = new URL('./ranks/model-ranks.ts', import.meta.url);
const N = 16;
const ids = batch(4, N, 21);

function compare(label: string, cfg: CfgName, o: PlanOptions, m: MemReport): string {
  const p = planMemory(tinyConfig(cfg), o);
  const pairs: [string, number, number][] = [
    ['weights', p.weights.total, m.peak.weights], ['grads', p.grads.total, m.peak.grads], ['moments', p.moments, m.peak.moments],
    ['activations', p.activations, m.peak.activations], ['workspace', p.workspace, m.peak.workspace], ['total', p.total, m.peakTotal],
  ];
  const rows = pairs.map(([k, plan, got]) => {
    const rel = Math.abs(plan - got) / got;
    assert.ok(rel <= 0.1, `${label}: ${k}: planned ${plan} B, allocated ${got} B (${(rel * 100).toFixed(1)}%)`);
    return `${k} ${plan}/${got}`;
  });
  return `${label}: ${rows.join(', ')}`;
}

const base = { microBatch: 2, seq: N, computeDType: 'f32' as const, prefetch: 1 };

test('planner = allocated bytes (±10%) for a 2 × 2 in-process run: tied and untied, with and without layer checkpointing', async () => {
  const cases: { cfg: CfgName; ck: boolean }[] = [{ cfg: 'h8-tied', ck: false }, { cfg: 'h8-tied', ck: true }, { cfg: 'h6-untied', ck: false }, { cfg: 'h6-untied', ck: true }];
  const jobs: Job[] = cases.map((c, i) => ({ kind: 'memory', cfg: c.cfg, seed: 30 + i, B: 4, N, ids, checkpoint: c.ck }));
  const res = await runRanks<ModelArgs, JobResult[]>(4, MOD, { T: 2, jobs });
  const lines: string[] = [];
  res.forEach((r, rank) => r.forEach((j, i) => {
    if (j.kind !== 'memory') return assert.fail('memory job');
    const c = cases[i]!;
    const line = compare(`rank ${rank} ${c.cfg}${c.ck ? ' checkpointed' : ''}`, c.cfg, { ...base, T: 2, D: 2, checkpointing: c.ck }, j.step);
    if (rank === 0) lines.push(line);
  }));
  console.log('# planned/allocated bytes:\n# ' + lines.join('\n# '));
});

test('planner = allocated bytes (±10%) for T × D = 1 (the shard is the unit: nothing gathered)', () => {
  const grid = makeGrid(selfComm(), 1);
  for (const cfg of ['h8-tied', 'h6-untied'] as CfgName[])
    for (const ck of [false, true]) {
      const ref = new ReferenceBackend();
      const be = new TrackingBackend(ref);
      const s = ShardedTnl.fromModel(be, grid, TnlModel.random(ref, tinyConfig(cfg), 3));
      be.resetPeaks();
      s.lossAndGrads(ids.subarray(0, 2 * N), 2, N, null, { checkpoint: ck });
      compare(`1×1 ${cfg}${ck ? ' checkpointed' : ''}`, cfg, { ...base, T: 1, D: 1, checkpointing: ck }, be.report());
    }
});

test('planner at scale: shards shrink as 1/(T·D), activations as the TP split, and the table is sane', () => {
  const c7 = presetConfig('tnl-7b');
  const a = planMemory(c7, { ...GPU_DEFAULTS, T: 1, D: 8 }), b = planMemory(c7, { ...GPU_DEFAULTS, T: 8, D: 1 });
  // 7B params × (4 master + 2 bf16 + 4 grad + 8 moments) = 18 bytes per parameter, over 8 GPUs
  const P = paramCounts(c7).total;
  assert.ok(Math.abs((a.weights.master + a.weights.compute + a.grads.shard + a.moments) - (18 * P) / 8) / ((18 * P) / 8) < 0.01);
  assert.ok(Math.abs((b.weights.master + b.weights.compute + b.grads.shard + b.moments) - (18 * P) / 8) / ((18 * P) / 8) < 0.01);
  assert.ok(b.activations < a.activations / 2, 'TP splits most activations');
  assert.ok(planMemory(c7, { ...GPU_DEFAULTS, T: 8, D: 1, checkpointing: true }).activations < b.activations / 3);
  assert.deepEqual(validTp(c7, 8), [1, 2, 4, 8]);
  assert.deepEqual(validTp(presetConfig('tnl2-3b'), 8), [1, 2, 4]); // 20 heads
  const fit = minGpusToFit(presetConfig('tnl-175b'), 80 * GiB, GPU_DEFAULTS)!;
  assert.ok(fit.gpus >= 32 && fit.gpus <= 256, `175B fits on ${fit.gpus} GPUs`);
});

test('tnl plan: the command prints the breakdown, the T × D table and the preset table; JSON; bad --tp is a usage error', async () => {
  const { Command } = await import('commander');
  const plan = await import('../../src/cli/plan.ts');
  const { UsageError } = await import('../../src/errors.ts');
  const capture = async (argv: string[]) => {
    const out: string[] = [];
    const log = console.log;
    console.log = (s: string) => { out.push(String(s)); };
    try {
      const p = new Command('tnl').exitOverride();
      plan.register(p);
      await p.parseAsync(['node', 'tnl', ...argv]);
    } finally { console.log = log; }
    return out.join('\n');
  };
  const text = await capture(['plan', 'tnl-7b', '--gpus', '8', '--tp', '8', '--checkpointing']);
  assert.match(text, /T = 8 \(tensor parallel\) × D = 1/);
  assert.match(text, /layer checkpointing/);
  for (const n of plan.PLAN_PRESETS) assert.match(text, new RegExp(`^  ${n} `, 'm'));
  const j = JSON.parse(await capture(['plan', 'tnl-1b', '--gpus', '8', '--tp', '2', '--json'])) as { plan: { T: number; D: number; total: number }; grid: unknown[] };
  assert.equal(j.plan.T, 2); assert.equal(j.plan.D, 4);
  assert.equal(j.grid.length, 4);
  assert.equal(j.plan.total, planMemory(presetConfig('tnl-1b'), { ...GPU_DEFAULTS, T: 2, D: 4 }).total);
  const req = { gpus: 8, tp: 3, seq: 2048, microBatch: 1, checkpointing: false };
  assert.throws(() => plan.chooseTp(presetConfig('tnl-7b'), req), UsageError);
  assert.throws(() => plan.chooseTp(presetConfig('tnl2-3b'), { ...req, tp: 8 }), /20.*divisible/);
});
