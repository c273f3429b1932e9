// Memory (and communication) planning for T × D model parallelism: the bytes one GPU needs, from
// the config alone. The formulas follow what src/parallel allocates, tensor by tensor (fsdp.ts,
// tensor-parallel.ts), and a test checks them against the bytes an in-process run really
// allocates (TrackingBackend), within 10%.
import type { ModelConfig } from '../config/index.ts';
import { dims } from '../config/index.ts';
import { checkTp, tpDims, unitLayouts } from './tensor-parallel.ts';

export const GiB = 1024 ** 3;

export interface PlanOptions {
  /** Tensor-parallel size T; D = gpus / T. */
  T: number;
  D: number;
  /** Sequences per micro-batch on one data-parallel rank, and their length. */
  microBatch: number;
  seq: number;
  /** Layer (activation) checkpointing: keep each layer's input, recompute the layer in the backward. */
  checkpointing: boolean;
  /** dtype of the weights the kernels read: bf16 keeps a bf16 copy of the shard (and gathers bf16);
   *  f32 computes straight from the fp32 master (the CPU backends do, and the tests). */
  computeDType: 'bf16' | 'f32';
  /** Full units gathered at once (1: gather, use, free; 2: the next unit is prefetched while one runs). */
  prefetch: number;
}

export const GPU_DEFAULTS: Omit<PlanOptions, 'T' | 'D'> = { microBatch: 1, seq: 2048, checkpointing: false, computeDType: 'bf16', prefetch: 2 };

/** Bytes per GPU by category (each its own peak); `total` is the peak of their sum over the step. */
export interface MemoryPlan {
  T: number;
  D: number;
  /** fp32 master shard, the bf16 compute shard, and the full units gathered for use (transient). */
  weights: { master: number; compute: number; gathered: number; total: number };
  /** fp32 gradient shard, plus the full-unit buffers that are reduce-scattered into it (transient). */
  grads: { shard: number; buffers: number; total: number };
  /** AdamW m and v (fp32 shards). */
  moments: number;
  /** Activations kept for the backward of one micro-batch (with or without layer checkpointing). */
  activations: number;
  /** Activations both ways, for the table. */
  activationsFull: number;
  activationsCheckpointed: number;
  /** Temporaries of the backward (residual gradient, one layer's intermediate gradients). */
  workspace: number;
  total: number;
  /** Recurrent decoding state of one sequence on this GPU (its heads only): fixed at any context. */
  decodeStatePerSequence: number;
  /** Communication per optimizer step (one micro-batch), bytes each GPU sends (ring algorithms). */
  comm: { tpBytes: number; dpBytes: number };
  /** Model FLOPs per token for a training step (forward + backward), on one GPU (its 1/T share). */
  trainFlopsPerToken: number;
}

/**
 * The per-GPU memory of training a TNL config on a T × D grid. Every term is the size of tensors
 * the parallel code allocates (f32 activations: the Backend interface's A and C operands are f32):
 *
 *  units    the TP-local tensors of the embedding, of each layer and of the untied head, each a flat
 *           vector padded to a multiple of D; this GPU's shard of unit u has s_u = ⌈n_u/D⌉ values.
 *  weights  master 4·Σs_u; compute copy 2·Σs_u (bf16 only); gathered units (D > 1): prefetch ×
 *           max_u(D·s_u) × 2 (bf16) or 4 (f32). With D = 1 nothing is gathered (the shard is the unit).
 *  grads    shard 4·Σs_u; buffers (D > 1): the full unit being back-propagated plus the slice
 *           reduce-scattered out of it, 4·(D·s_u + s_u); when the head is tied the embedding's buffer
 *           lives through the whole backward (it receives the head's and the lookup's gradients).
 *  moments  8·Σs_u.
 *  activations per micro-batch of K = B·S tokens, kept per layer (spec §2 order):
 *           h, g [K, D] (token/channel norm outputs), three rstd [K], qkvu [K, 4H/T], q and k
 *           [K, (nh/T)·dk] (dk = 2·dh with LRPE), v, o, a [K, H/T], h12 [K, 2G/T], m [K, G/T];
 *           plus the residual x [K, D] and the head's y [K, D], rstd [K], logits [K, V/T] (the
 *           logits' gradient overwrites them). Checkpointing keeps L inputs [K, D] instead, plus one
 *           recomputed layer and the [K, D] partial sum being all-reduced.
 *  workspace dx [K, D] plus the largest backward temporaries: the head's dy [K, D]; SGLU's
 *           dm, dh12 or dh12, dg; GLA's dO, dqkvu, dq, dk, dv or dqkvu, dh.
 */
export function planMemory(c: ModelConfig, o: PlanOptions): MemoryPlan {
  const { T, D } = o;
  checkTp(c, T);
  const td = tpDims(c, T, 0);
  const units = unitLayouts(c, T);
  const shard = (n: number) => Math.ceil(n / D);
  const S = units.reduce((s, u) => s + shard(u.length), 0);
  const full = (u: { length: number }) => shard(u.length) * D;
  const cb = o.computeDType === 'bf16' ? 2 : 4;

  // weights
  const master = 4 * S;
  const compute = o.computeDType === 'bf16' ? 2 * S : 0;
  const maxUnit = Math.max(...units.map(full));
  const gathered = D > 1 ? Math.min(o.prefetch, units.length) * maxUnit * cb : 0;

  // gradients
  const gradShard = 4 * S;
  let buffers = 0;
  if (D > 1) {
    const layerUnits = units.filter((u) => u.name.startsWith('layer.'));
    const emb = units.find((u) => u.name === 'embed')!;
    const during = (u: { length: number }) => 4 * (full(u) + shard(u.length));
    buffers = c.tie_word_embeddings
      ? 4 * full(emb) + Math.max(4 * shard(emb.length), ...layerUnits.map(during))
      : Math.max(...units.map(during));
  }

  // activations of one micro-batch
  const K = o.microBatch * o.seq;
  const { D: Dm, L, HL, GL, nhL, dh, VL } = td;
  const dkOf = (l: number) => (c.linear_use_lrpe_list[l] ? 2 * dh : dh);
  const layerActs = (l: number) => 4 * K * (2 * Dm + 3 + 4 * HL + 2 * nhL * dkOf(l) + 3 * HL + 3 * GL);
  const perLayer = Array.from({ length: L }, (_, l) => layerActs(l));
  const xBytes = 4 * K * Dm;
  const head = 4 * K * (Dm + 1 + VL);
  const activationsFull = perLayer.reduce((a, b) => a + b, 0) + xBytes + head;
  const activationsCheckpointed = L * xBytes + xBytes + Math.max(Math.max(...perLayer) + xBytes, head);
  const activations = o.checkpointing ? activationsCheckpointed : activationsFull;

  // backward temporaries
  const sglu = 4 * K * Math.max(3 * GL, 2 * GL + Dm);
  const gla = Math.max(...Array.from({ length: L }, (_, l) => 4 * K * Math.max(6 * HL + 2 * nhL * dkOf(l), 4 * HL + Dm)));
  const workspace = xBytes + Math.max(xBytes, sglu, gla);

  const weights = { master, compute, gathered, total: master + compute + gathered };
  const grads = { shard: gradShard, buffers, total: gradShard + buffers };
  const moments = 8 * S;

  // The peak total is not the sum of the category peaks (they happen at different moments). It is
  // the persistent shards plus the largest of three moments of the step:
  //  F   end of the forward: the tape, the residual, the head's y/rstd/logits, the head unit gathered;
  //  HB  head backward: the tape, the head's y/rstd/logits, dx and dy, the head unit gathered, its
  //      full gradient buffer;
  //  LB  backward of the last layer: the tape (or the saved inputs and the recomputed layer), dx
  //      and the layer's temporaries, the layer unit gathered, its gradient buffer, and the tied
  //      embedding's gradient buffer that waits for the lookup's gradient.
  const persistent = master + compute + gradShard + moments;
  const unitOf = (n: string) => units.find((u) => u.name === n)!;
  const headU = unitOf(c.tie_word_embeddings ? 'embed' : 'head');
  const layerMax = Math.max(...units.filter((u) => u.name.startsWith('layer.')).map(full));
  const gat = (unit: number) => (D > 1 ? (unit + (Math.min(o.prefetch, units.length) - 1) * layerMax) * cb : 0);
  const gbuf = (unit: number) => (D > 1 ? 4 * unit : 0);
  const tiedEmbBuf = c.tie_word_embeddings ? gbuf(full(headU)) : 0;
  const lastL = L - 1;
  const sgluActs = 4 * K * (Dm + 1 + 3 * GL);
  const tape = o.checkpointing ? L * xBytes : perLayer.reduce((a, b) => a + b, 0);
  const F = gat(full(headU)) + tape + xBytes + head;
  const HB = gat(full(headU)) + gbuf(full(headU)) + tape + head + 2 * xBytes;
  const lbActs = o.checkpointing
    ? L * xBytes + perLayer[lastL]! + Math.max(xBytes /* the recompute's partial sum */, sglu, gla - sgluActs)
    : tape + Math.max(sglu, gla - sgluActs);
  const LB = gat(layerMax) + gbuf(layerMax) + tiedEmbBuf + xBytes + lbActs;
  const total = persistent + Math.max(F, HB, LB);

  // decode state: this GPU's heads
  const decodeStatePerSequence = c.linear_use_lrpe_list.reduce((s, _, l) => s + 4 * nhL * dkOf(l) * dh, 0);

  // communication per step: TP all-reduces of [K, D] f32 (ring: 2(T−1)/T of the bytes sent per GPU):
  // per layer 2 forward (+2 recomputed when checkpointing) and 2 backward, plus the embedding's and
  // the head's; FSDP: each unit gathered twice (forward, backward) and its gradient reduce-scattered.
  const arCount = L * (o.checkpointing ? 6 : 4) + 2;
  const tpBytes = T > 1 ? arCount * xBytes * (2 * (T - 1)) / T : 0;
  const P = units.reduce((s, u) => s + full(u), 0);
  const dpBytes = D > 1 ? ((D - 1) / D) * P * (2 * cb + 4) : 0;

  // FLOPs: 2 per multiply-add of every matmul (weights, head) and of the attention state update and
  // read-out (recurrent form: 2·nh·dk·dh multiply-adds per token), ×3 for forward + backward.
  const d = dims(c);
  const matmulParams = L * (4 * d.H * d.D + d.D * d.H + 3 * d.D * d.G) + d.V * d.D;
  const attn = c.linear_use_lrpe_list.reduce((s, _, l) => s + 2 * d.nh * dkOf(l) * dh, 0);
  const trainFlopsPerToken = (3 * 2 * (matmulParams + attn)) / T;

  return {
    T, D, weights, grads, moments, activations, activationsFull, activationsCheckpointed, workspace, total,
    decodeStatePerSequence, comm: { tpBytes, dpBytes }, trainFlopsPerToken,
  };
}

/** Tensor-parallel sizes that split this config over `gpus` GPUs (T divides gpus, heads, glu, vocab). */
export function validTp(c: ModelConfig, gpus: number): number[] {
  const out: number[] = [];
  for (let T = 1; T <= gpus; T++) {
    if (gpus % T) continue;
    try { checkTp(c, T); out.push(T); } catch { /* not a divisor */ }
  }
  return out;
}

/** What a GPU keeps besides the tensors: CUDA context, NCCL buffers, allocator slack. */
export const RESERVE_BYTES = 2 * GiB;
export const GPU_SIZES = [{ name: '80 GiB', bytes: 80 * GiB }, { name: '141 GiB', bytes: 141 * GiB }];

export function fits(p: MemoryPlan, capacity: number, reserve = RESERVE_BYTES): boolean {
  return p.total + reserve <= capacity;
}

/** The fewest GPUs (a power of two up to 4096) on which some T × D fits, and that T × D. */
export function minGpusToFit(c: ModelConfig, capacity: number, base: Omit<PlanOptions, 'T' | 'D'>): { gpus: number; T: number; D: number } | null {
  for (let n = 1; n <= 4096; n *= 2)
    for (const T of validTp(c, n)) {
      const p = planMemory(c, { ...base, T, D: n / T });
      if (fits(p, capacity)) return { gpus: n, T, D: n / T };
    }
  return null;
}
