// Sharded data parallelism (ZeRO-3 / FSDP) over D ranks, combined with tensor parallelism over T
// ranks: T × D ranks train one model (grid: world rank = d·T + t, see comm.ts makeGrid).
//
// Units. A rank's TP-local tensors are grouped in units: the embedding, each layer (qkvu, out, θ,
// w12, w3) and the untied head (tensor-parallel.ts unitLayouts). Each unit is one flat f32 vector,
// padded to a multiple of D, and DP rank d keeps only its 1/D slice of it: the fp32 master weights,
// their gradient and the two AdamW moments. Nothing else is persistent.
// Per step:
//   forward   for each unit in order: all-gather the full unit from the D shards (over the dp
//             group), run it, free the gathered copy (the activations stay);
//   backward  for each unit in reverse: all-gather again, back-propagate into a full-unit gradient
//             buffer, reduce-scatter it over dp (sum) into this rank's gradient shard, free both;
//   update    AdamW on the shards (weight decay per tensor segment: matrices yes, θ no);
//   the loss is the mean over the global batch: the token count is all-reduced over dp before the
//   backward, so the gradients equal the single-device gradient of the whole batch.
// With D = 1 the gathered copy and the gradient buffer are the shards themselves (no copy).
//
// Checkpoints are sharded: each rank writes rank-XXXXX.safetensors (its shards of every unit:
// param/<unit>, m/<unit>, v/<unit>) and rank 0 a manifest.json (format, T, D, config, layouts).
// openShardedCheckpoint() assembles full reference-named tensors from any such folder, one tensor
// at a time, so it loads at another T × D (ShardedTnl.load) and into the single-device model
// (model/params.ts loadParams accepts it as a tensor source).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Backend, Tensor } from '../backends/backend.ts';
import { f32ToBF16Bits } from '../backends/host.ts';
import { configToJson, embedScale, parseConfig, type ModelConfig } from '../config/index.ts';
import { FormatError, ShapeError, UsageError } from '../errors.ts';
import { syncDir, writeFileAtomic } from '../io/atomic.ts';
import type { FloatTarget, FloatTensor } from '../io/reader.ts';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors.ts';
import { shiftedTargets } from '../model/head.ts';
import { paramEntries, type NamedTensorSource } from '../model/params.ts';
import { trainPositions, type TnlModel } from '../model/transnormer.ts';
import type { AdamWConfig } from '../train/optimizer.ts';
import type { Communicator, Grid } from './comm.ts';
import { withMemTag } from './memory.ts';
import {
  asLayerParams, extractTp, gatherVocab, insertTp, layerUnit, tpDims, tpEmbeddingBackward, tpEmbeddingForward,
  tpEntries, tpGlaBackward, tpGlaForward, tpGlaShapes, tpHeadBackward, tpHeadForward, tpSgluBackward, tpSgluForward,
  unitLayouts, unitViews, vocabParallelCrossEntropy,
  type TensorKey, type TpContext, type TpDims, type TpEntry, type TpGlaActs, type TpGlaShape, type TpSgluActs, type UnitLayout,
} from './tensor-parallel.ts';

export interface ShardedOptions {
  /** Lightning Attention block length (default 64). */
  blockSize?: number;
}
export interface ShardedTrainOptions {
  /** Keep only each layer's input and recompute the layer in the backward. */
  checkpoint?: boolean;
  /** Multiplies the loss gradient (e.g. 1/accumulation steps). */
  gradScale?: number;
}

export type ShardKind = 'param' | 'grad' | 'm' | 'v';

interface Unit {
  layout: UnitLayout;
  /** Length padded to a multiple of D, and this rank's slice of it. */
  padded: number;
  shard: number;
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
  /** Pieces of this rank's shard: [start, end) within the shard, and whether weight decay applies. */
  segments: { start: number; end: number; matrix: boolean }[];
}

export const padTo = (n: number, d: number) => Math.ceil(n / d) * d;

export class ShardedTnl {
  readonly tpd: TpDims;
  readonly units: Map<string, Unit>;
  readonly shapes: TpGlaShape[];
  readonly blockSize: number;
  /** AdamW steps taken. */
  step = 0;

  private constructor(readonly be: Backend, readonly grid: Grid, readonly config: ModelConfig, opts: ShardedOptions) {
    this.tpd = tpDims(config, grid.T, grid.tp.rank);
    this.shapes = tpGlaShapes(config, grid.T, grid.tp.rank);
    this.blockSize = opts.blockSize ?? 64;
    const D = grid.D, d = grid.dp.rank;
    this.units = new Map();
    for (const layout of unitLayouts(config, grid.T)) {
      const padded = padTo(layout.length, D), shard = padded / D;
      const lo = d * shard, hi = lo + shard;
      const segments: Unit['segments'] = [];
      for (const t of layout.tensors) {
        const s = Math.max(lo, t.offset), e = Math.min(hi, t.offset + t.size);
        if (s < e) segments.push({ start: s - lo, end: e - lo, matrix: t.matrix });
      }
      if (layout.length < hi) segments.push({ start: Math.max(layout.length, lo) - lo, end: shard, matrix: true }); // padding
      const param = withMemTag(be, 'weights', () => be.zeros([shard, 1]));
      const grad = withMemTag(be, 'grads', () => be.zeros([shard, 1]));
      const [m, v] = withMemTag(be, 'moments', () => [be.zeros([shard, 1]), be.zeros([shard, 1])]);
      this.units.set(layout.name, { layout, padded, shard, param, grad, m, v, segments });
    }
  }

  get T(): number { return this.grid.T; }
  get D(): number { return this.grid.D; }

  /**
   * The rank's shards filled from full reference-named tensors (a single-device model, a model
   * folder, a sharded checkpoint of any T × D). Optional m, v sources restore AdamW moments.
   */
  static fromSource(be: Backend, grid: Grid, config: ModelConfig, src: NamedTensorSource, opts: ShardedOptions = {},
                    moments?: { m: NamedTensorSource; v: NamedTensorSource; step: number }): ShardedTnl {
    const s = new ShardedTnl(be, grid, config, opts);
    s.fill('param', src);
    if (moments) { s.fill('m', moments.m); s.fill('v', moments.v); s.step = moments.step; }
    return s;
  }

  /** Shard a single-device model held by every rank (e.g. built from the same seed). */
  static fromModel(be: Backend, grid: Grid, model: TnlModel, opts: ShardedOptions = {}): ShardedTnl {
    return ShardedTnl.fromSource(be, grid, model.config, modelSource(model), { blockSize: model.blockSize, ...opts });
  }

  private fill(kind: 'param' | 'm' | 'v', src: NamedTensorSource): void {
    const { T } = this.grid, r = this.grid.tp.rank;
    const byUnit = new Map<string, TpEntry[]>();
    for (const e of tpEntries(this.config, T)) byUnit.set(e.unit, [...(byUnit.get(e.unit) ?? []), e]);
    const have = new Set(src.names());
    for (const u of this.units.values()) {
      const flat = new Float32Array(u.padded);
      for (const e of byUnit.get(u.layout.name) ?? []) {
        if (!have.has(e.name)) throw new FormatError(`missing tensor ${e.name}${kind === 'param' ? '' : ` (optimizer ${kind})`}`);
        const t = src.readAs(e.name, 'f32');
        const n = e.shape.reduce((a, b) => a * b, 1);
        if (t.data.length !== n) throw new ShapeError(`${e.name}: has [${t.shape.join(', ')}], the config implies [${e.shape.join(', ')}]`);
        const lt = u.layout.tensors.find((x) => x.key === e.key)!;
        const cols = lt.shape[lt.shape.length - 1]!;
        flat.set(extractTp(e, t.data, r, T), lt.offset + e.localRowStart * cols);
      }
      const d = this.grid.dp.rank;
      const shard = flat.subarray(d * u.shard, (d + 1) * u.shard);
      const dst = kind === 'param' ? u.param : kind === 'm' ? u.m : u.v;
      const tmp = this.be.upload(shard, [u.shard, 1]);
      this.be.copy(dst, tmp);
      this.be.free(tmp);
    }
  }

  // ---- gathering parameters and scattering gradients -------------------------------------------

  /** The full (TP-local) unit: all-gathered from the dp shards, or the shard itself when D = 1. */
  private gather(name: string): { flat: Tensor; views: Map<TensorKey, Tensor> } {
    const u = this.units.get(name)!, be = this.be;
    if (this.D === 1) return { flat: u.param, views: unitViews(be, u.param, u.layout) };
    const flat = withMemTag(be, 'weights', () => be.empty([u.padded, 1]));
    this.grid.dp.allGather(flat, u.param);
    return { flat, views: unitViews(be, flat, u.layout) };
  }
  private releaseGathered(name: string, flat: Tensor): void {
    if (flat !== this.units.get(name)!.param) this.be.free(flat);
  }
  /** A zeroed full-unit gradient buffer (D > 1), or the gradient shard itself (D = 1). */
  private gradBuffer(name: string): { flat: Tensor; views: Map<TensorKey, Tensor> } {
    const u = this.units.get(name)!, be = this.be;
    const flat = this.D === 1 ? u.grad : withMemTag(be, 'grads', () => be.zeros([u.padded, 1]));
    return { flat, views: unitViews(be, flat, u.layout) };
  }
  /** Reduce-scatter a full-unit gradient over dp and add this rank's slice to its shard. */
  private commitGrad(name: string, flat: Tensor): void {
    const u = this.units.get(name)!, be = this.be;
    if (flat === u.grad) return;
    const part = withMemTag(be, 'grads', () => be.empty([u.shard, 1]));
    this.grid.dp.reduceScatter(part, flat);
    be.addInPlace(u.grad, part);
    be.free(part);
    be.free(flat);
  }

  private ctx(B: number, N: number): TpContext {
    return { be: this.be, tp: this.grid.tp, B, N, positions: trainPositions(B, N), vMask: null, blockSize: this.blockSize, act: 'f32' };
  }
  private get headUnit(): string { return this.config.tie_word_embeddings ? 'embed' : 'head'; }
  private get headKey(): TensorKey { return this.config.tie_word_embeddings ? 'embed' : 'head'; }

  private checkIds(ids: Int32Array, B: number, N: number): void {
    if (ids.length !== B * N) throw new UsageError(`expected ${B}×${N} = ${B * N} token ids, got ${ids.length}`);
    const V = this.config.vocab_size;
    for (const id of ids) if (id < 0 || id >= V) throw new UsageError(`token id ${id} is outside the vocabulary [0, ${V})`);
  }

  /** Embedding and every layer; with a tape, what the backward needs (or each layer's input when checkpointing). */
  private trunk(ids: Int32Array, ctx: TpContext, tape: { x?: Tensor; gla?: TpGlaActs; sglu?: TpSgluActs }[] | null, checkpoint: boolean): Tensor {
    const be = this.be;
    const x = withMemTag(be, 'activations', () => be.empty([ctx.B * ctx.N, this.config.decoder_embed_dim]));
    const e = this.gather('embed');
    withMemTag(be, 'activations', () => tpEmbeddingForward(ctx, x, e.views.get('embed')!, ids, embedScale(this.config), this.tpd.vocabStart));
    this.releaseGathered('embed', e.flat);
    for (let l = 0; l < this.config.decoder_layers; l++) {
      const g = this.gather(layerUnit(l));
      const p = asLayerParams(g.views);
      withMemTag(be, 'activations', () => {
        if (tape && checkpoint) { const keep = be.empty(x.shape); be.copy(keep, x); tape.push({ x: keep }); }
        const gla = tpGlaForward(ctx, p, this.shapes[l]!, x);
        const sglu = tpSgluForward(ctx, p, x);
        if (tape && !checkpoint) tape.push({ gla, sglu });
        else freeActs(be, gla, sglu);
      });
      this.releaseGathered(layerUnit(l), g.flat);
    }
    return x;
  }

  /** This rank's vocabulary columns of the logits [B·N, V/T] (parallel form, every position). */
  forward(ids: Int32Array, B: number, N: number): Tensor {
    this.checkIds(ids, B, N);
    const ctx = this.ctx(B, N), be = this.be;
    const x = this.trunk(ids, ctx, null, false);
    const w = this.gather(this.headUnit);
    const { logits, acts } = withMemTag(be, 'activations', () => tpHeadForward(ctx, x, w.views.get(this.headKey)!));
    this.releaseGathered(this.headUnit, w.flat);
    be.free(acts.y); be.free(acts.r); be.free(x);
    return logits;
  }

  /** The full logits [B·N, V] of this rank's micro-batch (gathered over the TP group, host array). */
  logits(ids: Int32Array, B: number, N: number): Float32Array {
    const l = this.forward(ids, B, N);
    const out = gatherVocab(this.be, this.grid.tp, l);
    this.be.free(l);
    return out;
  }

  /**
   * Forward and backward of this DP rank's micro-batch (B sequences of N tokens; labels default to
   * ids, −100 ignored). The loss is the mean over the whole global batch (every DP rank's tokens);
   * gradients accumulate into the shards (zeroGrads between steps) and equal the single-device
   * gradient of the global batch.
   */
  lossAndGrads(ids: Int32Array, B: number, N: number, labels: Int32Array | null = null, opts: ShardedTrainOptions = {}): { loss: number; count: number } {
    this.checkIds(ids, B, N);
    const be = this.be, ctx = this.ctx(B, N), checkpoint = opts.checkpoint ?? false;
    const targets = shiftedTargets(labels ?? ids, B, N);
    const cnt = Float64Array.of(targets.reduce((s, t) => s + (t !== -100 ? 1 : 0), 0));
    this.grid.dp.allReduceHost(cnt);
    const count = cnt[0]!;
    if (count === 0) return { loss: NaN, count: 0 };

    const tape: { x?: Tensor; gla?: TpGlaActs; sglu?: TpSgluActs }[] = [];
    const x = this.trunk(ids, ctx, tape, checkpoint);
    const w = this.gather(this.headUnit);
    const W = w.views.get(this.headKey)!;
    const { logits, acts } = withMemTag(be, 'activations', () => tpHeadForward(ctx, x, W));
    const local = vocabParallelCrossEntropy(be, this.grid.tp, logits, this.tpd.vocabStart, targets, logits, (opts.gradScale ?? 1) / count, this.tpd.V);
    const lossSum = Float64Array.of(local.loss);
    this.grid.dp.allReduceHost(lossSum);

    // backward: head, then the layers in reverse, then the embedding
    const dx = withMemTag(be, 'workspace', () => be.empty(x.shape));
    be.free(x);
    const gHead = this.gradBuffer(this.headUnit);
    withMemTag(be, 'workspace', () => tpHeadBackward(ctx, dx, gHead.views.get(this.headKey)!, W, logits, acts));
    be.free(logits);
    this.releaseGathered(this.headUnit, w.flat);
    if (!this.config.tie_word_embeddings) this.commitGrad('head', gHead.flat);

    for (let l = this.config.decoder_layers - 1; l >= 0; l--) {
      const name = layerUnit(l);
      const pg = this.gather(name);
      const p = asLayerParams(pg.views);
      let t = tape[l]!;
      if (checkpoint) {
        const xr = t.x!;
        t = withMemTag(be, 'activations', () => ({ gla: tpGlaForward(ctx, p, this.shapes[l]!, xr), sglu: tpSgluForward(ctx, p, xr) }));
        be.free(xr);
      }
      const gg = this.gradBuffer(name);
      const g = asLayerParams(gg.views);
      withMemTag(be, 'workspace', () => {
        tpSgluBackward(ctx, p, g, t.sglu!, dx);
        tpGlaBackward(ctx, p, g, this.shapes[l]!, t.gla!, dx);
      });
      tape[l] = {};
      this.releaseGathered(name, pg.flat);
      this.commitGrad(name, gg.flat);
    }
    const gEmb = this.config.tie_word_embeddings ? gHead : this.gradBuffer('embed');
    tpEmbeddingBackward(ctx, gEmb.views.get('embed')!, dx, ids, embedScale(this.config), this.tpd.vocabStart, this.config.pad_token_id);
    this.commitGrad('embed', gEmb.flat);
    be.free(dx);
    return { loss: lossSum[0]! / count, count };
  }

  zeroGrads(): void {
    for (const u of this.units.values()) this.be.fill(u.grad, 0);
  }

  /** √(Σ g²) over the whole model (every parameter lives in exactly one shard of one rank). */
  gradNorm(): number {
    const x = Float64Array.of(this.be.sumSquares([...this.units.values()].map((u) => u.grad)));
    this.grid.world.allReduceHost(x);
    return Math.sqrt(x[0]!);
  }

  /** One AdamW step on this rank's shards (as train/optimizer.ts AdamW: θ not decayed unless decayTheta). */
  update(cfg: AdamWConfig, lr: number, gradScale = 1): void {
    this.step++;
    const be = this.be;
    for (const u of this.units.values())
      for (const s of u.segments) {
        const view = (t: Tensor) => be.rows(t, s.start, s.end - s.start);
        be.adamw(view(u.param), view(u.grad), view(u.m), view(u.v), {
          lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps,
          weightDecay: s.matrix || cfg.decayTheta ? cfg.weightDecay : 0, step: this.step, gradScale,
        });
      }
  }

  /** This rank's shards of every unit (host copies), for checkpoints and tests. */
  exportShards(kind: ShardKind): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    for (const [name, u] of this.units) out[name] = this.be.download(u[kind]);
    return out;
  }

  // ---- sharded checkpoints ------------------------------------------------------------------------

  /**
   * Every rank writes its shards; rank 0 writes the manifest last and moves the folder into place
   * (collective over the world: call it on every rank). `extra` is stored in the manifest.
   */
  saveSharded(dir: string, extra: Record<string, unknown> = {}): void {
    const world = this.grid.world;
    const tmp = join(dirname(dir), `.${basename(dir)}.tmp-sharded`);
    if (world.rank === 0) { rmSync(tmp, { recursive: true, force: true }); mkdirSync(tmp, { recursive: true }); }
    world.barrier();
    const tensors = [...this.units.entries()].flatMap(([name, u]) =>
      (['param', 'm', 'v'] as const).map((k) => ({ name: `${k}/${name}`, dtype: 'F32' as const, shape: [u.shard], data: () => this.be.download(u[k]) })));
    writeSafetensors(join(tmp, rankFile(world.rank)), tensors, { tp_rank: String(this.grid.tp.rank), dp_rank: String(this.grid.dp.rank) });
    world.barrier();
    if (world.rank === 0) {
      const manifest: ShardManifest = {
        format: MANIFEST_FORMAT, T: this.T, D: this.D, step: this.step, config: configToJson(this.config),
        units: [...this.units.values()].map((u) => ({ name: u.layout.name, length: u.layout.length, padded: u.padded, tensors: u.layout.tensors.map((t) => ({ key: t.key, shape: t.shape, offset: t.offset })) })),
        files: Array.from({ length: this.T * this.D }, (_, r) => rankFile(r)),
        extra,
      };
      writeFileAtomic(join(tmp, 'config.json'), JSON.stringify(configToJson(this.config), null, 2) + '\n');
      writeFileAtomic(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      syncDir(tmp);
      const old = join(dirname(dir), `.${basename(dir)}.old-sharded`);
      rmSync(old, { recursive: true, force: true });
      if (existsSync(dir)) renameSync(dir, old);
      renameSync(tmp, dir);
      syncDir(dirname(dir));
      rmSync(old, { recursive: true, force: true });
    }
    world.barrier();
  }

  /** Load a sharded checkpoint written at any T × D (weights, AdamW moments and step) on this grid. */
  static load(dir: string, be: Backend, grid: Grid, opts: ShardedOptions = {}): ShardedTnl {
    const ck = openShardedCheckpoint(dir);
    try {
      return ShardedTnl.fromSource(be, grid, ck.config, ck.source('param'), opts, { m: ck.source('m'), v: ck.source('v'), step: ck.step });
    } finally { ck.close(); }
  }
}

function freeActs(be: Backend, gla: TpGlaActs, sglu: TpSgluActs): void {
  for (const t of [gla.h, gla.r1, gla.qkvu, gla.q, gla.k, gla.v, gla.o, gla.a, gla.r2, sglu.g, sglu.r3, sglu.h12, sglu.m]) be.free(t);
}

// ---- reference-named tensors from shards ------------------------------------------------------------

/**
 * Full reference-named tensors (model/params.ts names and shapes) assembled from the shards of a
 * T × D run: getShard(unit, tpRank, dpRank) returns that rank's flat shard of the unit. One tensor is
 * assembled per readAs call (only the shards of its unit are read).
 */
export class ShardedTensorSource implements NamedTensorSource {
  private readonly entries: Map<string, TpEntry>;
  private readonly layouts: Map<string, UnitLayout>;
  constructor(readonly config: ModelConfig, readonly T: number, readonly D: number,
              private readonly getShard: (unit: string, tpRank: number, dpRank: number) => Float32Array) {
    this.entries = new Map(tpEntries(config, T).map((e) => [e.name, e]));
    this.layouts = new Map(unitLayouts(config, T).map((u) => [u.name, u]));
  }
  names(): string[] { return [...this.entries.keys()]; }
  has(name: string): boolean { return this.entries.has(name); }

  /** The full tensor as float32. */
  full(name: string): Float32Array {
    const e = this.entries.get(name);
    if (!e) throw new FormatError(`sharded checkpoint: no tensor ${name}`);
    const u = this.layouts.get(e.unit)!;
    const lt = u.tensors.find((t) => t.key === e.key)!;
    const cols = lt.shape[lt.shape.length - 1]!;
    const shard = padTo(u.length, this.D) / this.D;
    const full = new Float32Array(e.shape.reduce((a, b) => a * b, 1));
    const start = lt.offset + e.localRowStart * cols, len = e.localRows * cols;
    for (let t = 0; t < this.T; t++) {
      const piece = new Float32Array(len);
      for (let d = Math.floor(start / shard); d * shard < start + len; d++) {
        const s = this.getShard(e.unit, t, d);
        if (s.length !== shard) throw new FormatError(`shard of ${e.unit} (tp ${t}, dp ${d}) has ${s.length} values, expected ${shard}`);
        const lo = Math.max(start, d * shard), hi = Math.min(start + len, (d + 1) * shard);
        piece.set(s.subarray(lo - d * shard, hi - d * shard), lo - start);
      }
      insertTp(e, full, piece, t, this.T);
    }
    return full;
  }

  readAs<T extends FloatTarget>(name: string, target: T): FloatTensor<T> {
    const e = this.entries.get(name);
    if (!e) throw new FormatError(`sharded checkpoint: no tensor ${name}`);
    const data = this.full(name);
    if (target === 'f32') return { dtype: target, shape: [...e.shape], data } as FloatTensor<T>;
    if (target === 'bf16') return { dtype: target, shape: [...e.shape], data: Uint16Array.from(data, f32ToBF16Bits) } as FloatTensor<T>;
    throw new FormatError(`sharded checkpoint: cannot convert ${name} to ${target}`);
  }
}

/** Full reference-named tensors from shards returned by ranks (rank r's shards at index r = d·T + t). */
export function assembleShards(config: ModelConfig, T: number, D: number, perRank: Record<string, Float32Array>[]): ShardedTensorSource {
  if (perRank.length !== T * D) throw new ShapeError(`${perRank.length} ranks' shards for a ${T} × ${D} grid`);
  return new ShardedTensorSource(config, T, D, (unit, t, d) => {
    const s = perRank[d * T + t]![unit];
    if (!s) throw new FormatError(`rank ${d * T + t} has no shard of ${unit}`);
    return s;
  });
}

/** Reference-named f32 tensors of a single-device model (read one at a time). */
export function modelSource(model: TnlModel): NamedTensorSource {
  const entries = new Map(paramEntries(model.config).map((e) => [e.name, e]));
  const be = model.be;
  return {
    names: () => [...entries.keys()],
    readAs<T extends FloatTarget>(name: string, target: T): FloatTensor<T> {
      const e = entries.get(name);
      if (!e) throw new FormatError(`model: no tensor ${name}`);
      const t = e.get(model.params);
      const cols = t.shape[t.shape.length - 1]!;
      const view = e.rows === t.size / cols ? t : be.rows(t, e.rowStart, e.rows);
      const data = be.download(view);
      if (target === 'f32') return { dtype: target, shape: [...e.shape], data } as FloatTensor<T>;
      if (target === 'bf16') return { dtype: target, shape: [...e.shape], data: Uint16Array.from(data, f32ToBF16Bits) } as FloatTensor<T>;
      throw new FormatError(`model: cannot convert ${name} to ${target}`);
    },
  };
}

// ---- the checkpoint folder ---------------------------------------------------------------------------

export const MANIFEST_FORMAT = 'tnl-sharded-v1';
const rankFile = (r: number) => `rank-${String(r).padStart(5, '0')}.safetensors`;

export interface ShardManifest {
  format: string;
  T: number;
  D: number;
  step: number;
  config: Record<string, unknown>;
  units: { name: string; length: number; padded: number; tensors: { key: string; shape: number[]; offset: number }[] }[];
  files: string[];
  extra: Record<string, unknown>;
}

export interface ShardedCheckpoint {
  dir: string;
  config: ModelConfig;
  T: number;
  D: number;
  step: number;
  extra: Record<string, unknown>;
  /** Full reference-named tensors of the weights or of an AdamW moment. */
  source(kind: 'param' | 'm' | 'v'): ShardedTensorSource;
  close(): void;
}

export function isShardedCheckpoint(dir: string): boolean {
  return existsSync(join(dir, 'manifest.json'));
}

/** Open a sharded checkpoint folder (any T × D): checks the manifest against the config's layout. */
export function openShardedCheckpoint(dir: string): ShardedCheckpoint {
  const mpath = join(dir, 'manifest.json');
  let m: ShardManifest;
  try { m = JSON.parse(readFileSync(mpath, 'utf8')); } catch (e) { throw new FormatError(`${mpath}: unreadable manifest (${(e as Error).message})`); }
  if (m.format !== MANIFEST_FORMAT) throw new FormatError(`${mpath}: format ${JSON.stringify(m.format)}, expected ${MANIFEST_FORMAT}`);
  const config = parseConfig(m.config, `${mpath} (config)`);
  const layouts = unitLayouts(config, m.T);
  const bad = layouts.length !== m.units.length || layouts.some((u, i) => {
    const w = m.units[i]!;
    return w.name !== u.name || w.length !== u.length || w.padded !== padTo(u.length, m.D) ||
      w.tensors.length !== u.tensors.length || w.tensors.some((t, j) => t.key !== u.tensors[j]!.key || t.offset !== u.tensors[j]!.offset || t.shape.join() !== u.tensors[j]!.shape.join());
  });
  if (bad) throw new FormatError(`${mpath}: unit layout does not match its config at T = ${m.T}`);
  if (!Array.isArray(m.files) || m.files.length !== m.T * m.D) throw new FormatError(`${mpath}: lists ${m.files?.length} rank files for ${m.T} × ${m.D} ranks`);
  const files = new Map<number, SafetensorsFile>();
  const file = (r: number) => {
    let f = files.get(r);
    if (!f) {
      const p = join(dir, m.files[r]!);
      if (!existsSync(p)) throw new FormatError(`${dir}: missing rank file ${m.files[r]} (rank ${r} of ${m.T} × ${m.D})`);
      f = SafetensorsFile.open(p);
      files.set(r, f);
    }
    return f;
  };
  // the shards of the unit being assembled are cached (one unit at a time)
  let cacheKey = '';
  let cache = new Map<string, Float32Array>();
  const source = (kind: 'param' | 'm' | 'v') => new ShardedTensorSource(config, m.T, m.D, (unit, t, d) => {
    if (cacheKey !== `${kind}/${unit}`) { cacheKey = `${kind}/${unit}`; cache = new Map(); }
    const k = `${t}/${d}`;
    let s = cache.get(k);
    if (!s) {
      const f = file(d * m.T + t);
      if (!f.has(`${kind}/${unit}`)) throw new FormatError(`${f.path}: no tensor ${kind}/${unit}`);
      s = f.readAs(`${kind}/${unit}`, 'f32').data;
      cache.set(k, s);
    }
    return s;
  });
  return {
    dir, config, T: m.T, D: m.D, step: m.step, extra: m.extra ?? {},
    source,
    close: () => { for (const f of files.values()) f.close(); files.clear(); },
  };
}

export type { Communicator };
