// tnl plan <preset|dir> --gpus N [--tp T]: per-GPU memory of training on a T × D grid (weights,
// gradients, AdamW moments, activations, workspace, peak), the decoding state, communication per
// step, and which T × D of each preset fit in 80 and 141 GiB GPUs. Formulas: src/parallel/plan.ts.
import type { Command } from 'commander';
import { loadConfig, paramCounts, presetConfig, PRESETS, type ModelConfig } from '../config/index.ts';
import { UsageError } from '../errors.ts';
import { fits, GPU_DEFAULTS, GPU_SIZES, minGpusToFit, planMemory, RESERVE_BYTES, validTp, type MemoryPlan, type PlanOptions } from '../parallel/plan.ts';
import { int, isModelDir, run } from './common.ts';
import { fmtBytes, fmtCount } from './info.ts';

/** The presets of the fit table: the released sizes and the paper sizes. */
export const PLAN_PRESETS = ['tnl-385m', 'tnl-1b', 'tnl-7b', 'tnl2-3b', 'tnl-13b', 'tnl-65b', 'tnl-175b'];

export interface PlanRequest {
  gpus: number;
  /** Tensor-parallel size; omitted: the smallest T that fits in 80 GiB (else the least memory). */
  tp?: number;
  seq: number;
  microBatch: number;
  checkpointing: boolean;
}

function base(r: PlanRequest): Omit<PlanOptions, 'T' | 'D'> {
  return { ...GPU_DEFAULTS, seq: r.seq, microBatch: r.microBatch, checkpointing: r.checkpointing };
}

/** The T to show: the one asked for (checked), else the smallest that fits in 80 GiB, else the least memory. */
export function chooseTp(c: ModelConfig, r: PlanRequest): number {
  const ts = validTp(c, r.gpus);
  if (r.tp !== undefined) {
    if (r.gpus % r.tp) throw new UsageError(`--tp ${r.tp} does not divide --gpus ${r.gpus}`);
    if (!ts.includes(r.tp)) throw new UsageError(`--tp ${r.tp}: tensor parallelism needs heads ${c.decoder_attention_heads}, glu ${c.glu_dim === -1 ? c.decoder_embed_dim : c.glu_dim} and vocab ${c.vocab_size} divisible by it (valid for ${r.gpus} GPUs: ${ts.join(', ')})`);
    return r.tp;
  }
  const plans = ts.map((T) => ({ T, p: planMemory(c, { ...base(r), T, D: r.gpus / T }) }));
  const ok = plans.find((x) => fits(x.p, GPU_SIZES[0]!.bytes));
  return (ok ?? plans.reduce((a, b) => (b.p.total < a.p.total ? b : a))).T;
}

export function planJson(name: string, c: ModelConfig, r: PlanRequest): Record<string, unknown> {
  const T = chooseTp(c, r);
  const p = planMemory(c, { ...base(r), T, D: r.gpus / T });
  const grid = validTp(c, r.gpus).map((t) => {
    const q = planMemory(c, { ...base(r), T: t, D: r.gpus / t });
    return { T: t, D: r.gpus / t, total: q.total, fits: Object.fromEntries(GPU_SIZES.map((g) => [g.name, fits(q, g.bytes)])) };
  });
  const presets = PLAN_PRESETS.map((n) => presetRow(n, r));
  return { model: name, gpus: r.gpus, options: { ...base(r), reserveBytes: RESERVE_BYTES }, plan: p, grid, presets };
}

function presetRow(n: string, r: PlanRequest) {
  const c = presetConfig(n);
  const cells = validTp(c, r.gpus).map((T) => {
    const q = planMemory(c, { ...base(r), T, D: r.gpus / T });
    return { T, D: r.gpus / T, total: q.total, fits: GPU_SIZES.map((g) => fits(q, g.bytes)) };
  });
  const min = GPU_SIZES.map((g) => minGpusToFit(c, g.bytes, base(r)));
  return { preset: n, params: paramCounts(c).total, cells, minGpus: min };
}

const gib = (b: number) => `${(b / 1024 ** 3).toFixed(b < 10 * 1024 ** 3 ? 2 : 1)} GiB`;

/** The human-readable report (also for `tnl info --gpus N --tp T`). */
export function planLines(name: string, c: ModelConfig, r: PlanRequest): string[] {
  const T = chooseTp(c, r), D = r.gpus / T;
  const p: MemoryPlan = planMemory(c, { ...base(r), T, D });
  const L: string[] = [];
  L.push(`${name}: ${fmtCount(paramCounts(c).total)} parameters on ${r.gpus} GPU${r.gpus > 1 ? 's' : ''} as T = ${T} (tensor parallel) × D = ${D} (sharded data parallel)${r.tp === undefined ? ' [T chosen: the smallest that fits 80 GiB]' : ''}`);
  L.push(`micro-batch ${r.microBatch} × ${r.seq} tokens per data-parallel rank, bf16 compute weights, fp32 master/gradients/AdamW, f32 activations${r.checkpointing ? ', layer checkpointing' : ''}`);
  L.push('per GPU:');
  L.push(`  weights        ${fmtBytes(p.weights.total).padStart(10)}  = fp32 master ${fmtBytes(p.weights.master)} + bf16 compute ${fmtBytes(p.weights.compute)} + gathered units ${fmtBytes(p.weights.gathered)}`);
  L.push(`  gradients      ${fmtBytes(p.grads.total).padStart(10)}  = fp32 shard ${fmtBytes(p.grads.shard)} + reduce-scatter buffers ${fmtBytes(p.grads.buffers)}`);
  L.push(`  AdamW m, v     ${fmtBytes(p.moments).padStart(10)}  (fp32, sharded over D = ${D})`);
  L.push(`  activations    ${fmtBytes(p.activations).padStart(10)}  per micro-batch (${fmtBytes(p.activationsFull)} kept per layer, ${fmtBytes(p.activationsCheckpointed)} with layer checkpointing)`);
  L.push(`  workspace      ${fmtBytes(p.workspace).padStart(10)}  (backward temporaries)`);
  L.push(`  peak           ${fmtBytes(p.total).padStart(10)}  + ${fmtBytes(RESERVE_BYTES)} reserve (CUDA context, NCCL, allocator) → ${GPU_SIZES.map((g) => `${g.name}: ${fits(p, g.bytes) ? 'fits' : 'does not fit'}`).join(', ')}`);
  L.push(`  decode state   ${fmtBytes(p.decodeStatePerSequence).padStart(10)}  per sequence (this GPU's ${c.decoder_attention_heads / T} heads), at any context length`);
  L.push(`  per step       TP all-reduces ${fmtBytes(p.comm.tpBytes)} sent, FSDP gathers + reduce-scatter ${fmtBytes(p.comm.dpBytes)} sent; ${(p.trainFlopsPerToken / 1e9).toFixed(1)} GFLOP per token (forward + backward)`);
  L.push('');
  L.push(`every T × D of ${r.gpus} GPUs:`);
  L.push(`     T ×    D     weights   gradients     moments activations        peak   ${GPU_SIZES.map((g) => g.name.padStart(8)).join(' ')}`);
  for (const t of validTp(c, r.gpus)) {
    const q = planMemory(c, { ...base(r), T: t, D: r.gpus / t });
    L.push(`  ${String(t).padStart(4)} × ${String(r.gpus / t).padEnd(4)} ${[q.weights.total, q.grads.total, q.moments, q.activations, q.total].map((b) => gib(b).padStart(11)).join(' ')}   ${GPU_SIZES.map((g) => (fits(q, g.bytes) ? 'yes' : 'no').padStart(8)).join(' ')}`);
  }
  L.push('');
  L.push(`presets on ${r.gpus} GPUs (peak per GPU for each T; ✓ fits 80 GiB, ◐ fits only 141 GiB, ✗ neither), and the fewest GPUs that fit:`);
  const rows = PLAN_PRESETS.map((n) => presetRow(n, r));
  const allT = [...new Set(rows.flatMap((x) => x.cells.map((y) => y.T)))].sort((a, b) => a - b);
  L.push(`  ${'preset'.padEnd(10)} ${'params'.padStart(8)} ${allT.map((t) => `T=${t}`.padStart(13)).join('')}   min GPUs 80 GiB / 141 GiB`);
  for (const x of rows) {
    const cells = allT.map((t) => {
      const y = x.cells.find((z) => z.T === t);
      if (!y) return '—'.padStart(13);
      const mark = y.fits[0] ? '✓' : y.fits[1] ? '◐' : '✗';
      return `${gib(y.total)} ${mark}`.padStart(13);
    }).join('');
    const mins = x.minGpus.map((m) => (m ? `${m.gpus} (${m.T}×${m.D})` : '> 4096')).join(' / ');
    L.push(`  ${x.preset.padEnd(10)} ${fmtCount(x.params).padStart(8)} ${cells}   ${mins}`);
  }
  return L;
}

export function configFor(spec: string): ModelConfig {
  if (isModelDir(spec)) return loadConfig(spec);
  if (PRESETS.some((p) => p.name === spec)) return presetConfig(spec);
  throw new UsageError(`${spec}: no such model folder, and not a preset (${PRESETS.map((p) => p.name).join(', ')})`);
}

export function register(program: Command): void {
  program.command('plan')
    .description('per-GPU memory of training on T × D GPUs (tensor × sharded data parallel), and which configurations fit in 80 and 141 GiB')
    .argument('<model>', `a model folder or a preset (${PRESETS.map((p) => p.name).join(', ')})`)
    .option('--gpus <n>', 'number of GPUs', '1')
    .option('--tp <t>', 'tensor-parallel size (divides --gpus; default: the smallest that fits 80 GiB)')
    .option('--seq <n>', 'sequence length', '2048')
    .option('--micro-batch <n>', 'sequences per micro-batch on each data-parallel rank', '1')
    .option('--checkpointing', 'layer checkpointing (recompute each layer in the backward)')
    .option('--json', 'print JSON')
    .action(run(async (spec: string, o: { gpus: string; tp?: string; seq: string; microBatch: string; checkpointing?: boolean; json?: boolean }) => {
      const c = configFor(spec);
      const r: PlanRequest = {
        gpus: int('--gpus', o.gpus, 1), tp: o.tp === undefined ? undefined : int('--tp', o.tp, 1),
        seq: int('--seq', o.seq, 1), microBatch: int('--micro-batch', o.microBatch, 1), checkpointing: !!o.checkpointing,
      };
      if (o.json) console.log(JSON.stringify(planJson(spec, c, r), null, 2));
      else console.log(planLines(spec, c, r).join('\n'));
    }));
}
