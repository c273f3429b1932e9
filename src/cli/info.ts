// tnl info <preset|dir>: parameters and memory of a model configuration.
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { loadConfig, memoryEstimate, paramCounts, presetConfig, PRESETS, dims, type ModelConfig } from '../config/index.ts';
import { int, run } from './common.ts';
import { planJson, planLines } from './plan.ts';

export function fmtBytes(b: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(b < 10 && i > 0 ? 2 : 1)} ${u[i]}`;
}
export function fmtCount(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}K` : String(n);
}

export function describeConfig(name: string, c: ModelConfig, seq: number): Record<string, unknown> {
  const p = paramCounts(c), m = memoryEstimate(c), d = dims(c);
  return {
    model: name,
    shape: { layers: d.L, d_model: d.D, heads: d.nh, head_dim: d.dh, hidden: d.H, glu: d.G, vocab: d.V, tied: c.tie_word_embeddings, lrpe_layers: c.linear_use_lrpe_list.flatMap((x, i) => (x ? [i] : [])) },
    parameters: { total: p.total, non_embedding: p.nonEmbedding, embedding: p.embedding, head: p.head },
    memory_bytes: {
      weights_f32: m.weightsBytes.f32, weights_bf16: m.weightsBytes.bf16,
      training_state_adamw_f32: m.trainingStateBytes,
      activations_per_sequence: { seq, full: m.activationBytesPerToken.full * seq, checkpointed: m.activationBytesPerToken.checkpointed * seq },
      decode_state_per_sequence: m.decodeStateBytesPerSequence,
    },
  };
}

export function register(program: Command): void {
  program.command('info')
    .description('parameters and memory (weights, training state, decoding state per sequence) of a preset or model folder')
    .argument('[model]', `a model folder or a preset (${PRESETS.map((p) => p.name).join(', ')}); omit to list the presets`)
    .option('--seq <n>', 'sequence length for the activation estimate', '2048')
    .option('--json', 'print JSON')
    .option('--gpus <n>', 'per-GPU memory when training on n GPUs (as tnl plan)')
    .option('--tp <t>', 'with --gpus: tensor-parallel size (default: the smallest that fits)')
    .action(run(async (spec: string | undefined, o: { seq: string; json?: boolean; gpus?: string; tp?: string }) => {
      if (!spec) {
        for (const p of PRESETS) {
          const c = p.config();
          console.log(`${p.name.padEnd(10)} ${fmtCount(paramCounts(c).total).padStart(8)}  ${p.note}`);
        }
        return;
      }
      const c = existsSync(spec) ? loadConfig(spec) : presetConfig(spec);
      if (o.gpus !== undefined) {
        const req = { gpus: int('--gpus', o.gpus, 1), tp: o.tp === undefined ? undefined : int('--tp', o.tp, 1), seq: int('--seq', o.seq, 1), microBatch: 1, checkpointing: false };
        if (o.json) console.log(JSON.stringify(planJson(spec, c, req), null, 2));
        else for (const l of planLines(spec, c, req)) console.log(l);
        return;
      }
      const info = describeConfig(spec, c, Number(o.seq));
      if (o.json) { console.log(JSON.stringify(info, null, 2)); return; }
      const p = paramCounts(c), m = memoryEstimate(c), d = dims(c);
      const seq = Number(o.seq);
      console.log(`${spec}: ${d.L} layers × d ${d.D}, ${d.nh} heads of ${d.dh}, glu ${d.G}, vocab ${d.V}, head ${c.tie_word_embeddings ? 'tied' : 'untied'}, LRPE on layers [${c.linear_use_lrpe_list.flatMap((x, i) => (x ? [i] : [])).join(', ')}]`);
      console.log(`parameters        ${fmtCount(p.total)} (${p.total.toLocaleString('en-US')}; non-embedding ${fmtCount(p.nonEmbedding)})`);
      console.log(`weights           ${fmtBytes(m.weightsBytes.f32)} f32, ${fmtBytes(m.weightsBytes.bf16)} bf16`);
      console.log(`training state    ${fmtBytes(m.trainingStateBytes)} (f32 weights + gradients + AdamW moments)`);
      console.log(`activations       ${fmtBytes(m.activationBytesPerToken.full * seq)} per sequence of ${seq} (${fmtBytes(m.activationBytesPerToken.checkpointed * seq)} with layer checkpointing)`);
      console.log(`decoding state    ${fmtBytes(m.decodeStateBytesPerSequence)} per sequence, at any context length`);
    }));
}
