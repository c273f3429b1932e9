// TransNormerLLM: embedding → L × (GLA token mixer, SGLU channel mixer) → SRMSNorm → head.
// Written once against the Backend interface. Three ways to run it, all exact:
//  - forward/backward: the parallel training form (Lightning blocks, zero initial state);
//  - prefill: the block form with a carried recurrent state (any chunking);
//  - decode: one token per sequence, the O(1) recurrent step.
import type { Backend, DType, Tensor } from '../backends/backend.ts';
import type { ModelConfig } from '../config/index.ts';
import { dims, embedScale, layerDecay } from '../config/index.ts';
import { UsageError } from '../errors.ts';
import { allocParams, initParams, paramTensors, type Params } from './params.ts';
import { freeAll, type StepContext } from './context.ts';
import { glaBackward, glaForward, glaStep, type GlaActs, type GlaShape } from './gla.ts';
import { sgluBackward, sgluForward, sgluStep, type SgluActs } from './sglu.ts';
import { headBackward, headForward, headLogits, shiftedTargets } from './head.ts';
import { embeddingBackward, embeddingForward } from './embedding.ts';
import { Rng } from '../util/rng.ts';

/** How many kernels ahead a decode step's kernels hint weights into L2 (benchmarks vary it). */
export const decodePrefetch = { distance: 3 };

export interface ModelOptions {
  /** Lightning Attention block length (default 64). */
  blockSize?: number;
  /**
   * Storage of activations: 'f32' (default) or 'bf16' (mixed precision: bf16 activations and
   * products with fp32 accumulation; the residual stream, norms' rstd and the state stay f32).
   */
  compute?: DType;
}

/** The recurrent state of B sequences: per layer [B, nh, dk, dh], plus each sequence's next position. */
export interface ModelState {
  readonly batch: number;
  readonly layers: Tensor[];
  readonly positions: Int32Array;
}

export interface TrainOptions {
  /** Recompute each layer in the backward instead of keeping its activations. */
  checkpoint?: boolean;
  /** Multiplies the loss gradient (e.g. 1/accumulation steps). */
  gradScale?: number;
}

interface LayerTape { x?: Tensor; gla?: GlaActs; sglu?: SgluActs }

export class TnlModel {
  readonly blockSize: number;
  readonly compute: DType;
  private readonly shapes: GlaShape[];

  constructor(readonly config: ModelConfig, readonly be: Backend, readonly params: Params, opts: ModelOptions = {}) {
    this.blockSize = opts.blockSize ?? 64;
    this.compute = opts.compute ?? 'f32';
    if (!be.activationDTypes.includes(this.compute))
      throw new UsageError(`the ${be.name} backend keeps activations in ${be.activationDTypes.join(' or ')}, not ${this.compute} (bf16 compute needs the cuda or reference backend)`);
    const { nh, H, dh } = dims(config);
    this.shapes = config.linear_use_lrpe_list.map((_, l) => ({ heads: nh, H, dh, decay: layerDecay(config, l) }));
  }

  /** A randomly initialised model (the reference's init), deterministic by seed. */
  static random(be: Backend, config: ModelConfig, seed = 0, dtype: DType = 'f32', opts: ModelOptions = {}): TnlModel {
    const p = allocParams(be, config, 'f32');
    const rng = new Rng(seed);
    initParams(be, p, config, () => rng.float());
    const model = new TnlModel(config, be, p, opts);
    return dtype === 'f32' ? model : model.withDType(dtype);
  }

  /**
   * The same weights in another dtype (matrices only; θ stays f32), computing with activations in
   * `compute` (default: as this model). Matrices already in `dtype` are shared, not copied.
   */
  withDType(dtype: DType, compute: DType = this.compute): TnlModel {
    const src = this.params, be = this.be;
    const conv = (t: Tensor) => { if (t.dtype === dtype) return t; const o = be.empty(t.shape, dtype); be.copy(o, t); return o; };
    const p: Params = {
      embed: conv(src.embed), head: src.head ? conv(src.head) : null,
      layers: src.layers.map((l) => ({ qkvu: conv(l.qkvu), out: conv(l.out), theta: l.theta, w12: conv(l.w12), w3: conv(l.w3) })),
    };
    return new TnlModel(this.config, be, p, { blockSize: this.blockSize, compute });
  }

  /** Copies (and rounds) `master`'s weights into this model's, tensor by tensor (mixed-precision training). */
  refreshFrom(master: Params): void {
    const dst = paramTensors(this.params), src = paramTensors(master);
    dst.forEach((t, i) => { if (t !== src[i]) this.be.copy(t, src[i]!); });
  }

  get dtype(): DType { return this.params.embed.dtype; }
  private get headWeight(): Tensor { return this.params.head ?? this.params.embed; }

  private ctx(B: number, N: number, positions: Int32Array, vMask: Int32Array | null): StepContext {
    return { be: this.be, B, N, positions, vMask, blockSize: this.blockSize, act: this.compute };
  }

  private checkIds(ids: Int32Array, B: number, N: number): void {
    if (ids.length !== B * N) throw new UsageError(`expected ${B}×${N} = ${B * N} token ids, got ${ids.length}`);
    const V = this.config.vocab_size;
    for (const id of ids) if (id < 0 || id >= V) throw new UsageError(`token id ${id} is outside the vocabulary [0, ${V})`);
  }

  /** x = scale·E[ids], then every layer; returns the final residual stream [T, D] (and the tape when asked). */
  private trunk(ids: Int32Array, ctx: StepContext, states: Tensor[] | null, tape: LayerTape[] | null, checkpoint: boolean, slots: Int32Array | null = null): Tensor {
    const { be } = this;
    const x = be.empty([ctx.B * ctx.N, this.config.decoder_embed_dim]);
    embeddingForward(be, x, this.params.embed, ids, embedScale(this.config));
    const decode = !tape && states && ctx.N === 1;
    // a decode step's weights in the order its kernels read them: each kernel hints a later one's into L2
    const decodeWeights = decode ? this.params.layers.flatMap((p) => [p.qkvu, p.out, p.w12, p.w3]) : [];
    this.params.layers.forEach((lp, l) => {
      if (tape && checkpoint) { const keep = be.empty(x.shape); be.copy(keep, x); tape.push({ x: keep }); }
      if (decode) {
        const pf = (j: number) => decodeWeights[4 * l + j + decodePrefetch.distance] ?? null;
        glaStep(ctx, lp, this.shapes[l]!, x, states[l]!, slots, [pf(0), pf(1)]);
        sgluStep(ctx, lp, x, [pf(2), pf(3)]);
        return;
      }
      const gla = glaForward(ctx, lp, this.shapes[l]!, x, states ? states[l]! : null, slots);
      const sglu = sgluForward(ctx, lp, x);
      if (tape && !checkpoint) tape.push({ gla, sglu });
      else { freeAll(be, gla); freeAll(be, sglu); }
    });
    return x;
  }

  /** Logits [B·N, V] for every position, by the parallel (training) form. */
  forward(ids: Int32Array, B: number, N: number, vMask: Int32Array | null = null): Tensor {
    this.checkIds(ids, B, N);
    const x = this.trunk(ids, this.ctx(B, N, trainPositions(B, N), vMask), null, null, false);
    const logits = headLogits(this.be, x, this.headWeight);
    this.be.free(x);
    return logits;
  }

  /** Mean next-token cross-entropy (forward only; labels default to ids, −100 ignored). */
  loss(ids: Int32Array, B: number, N: number, labels: Int32Array | null = null): { loss: number; count: number } {
    const logits = this.forward(ids, B, N);
    const r = this.be.crossEntropy(logits, shiftedTargets(labels ?? ids, B, N), null, 1);
    this.be.free(logits);
    return { loss: r.count ? r.loss / r.count : NaN, count: r.count };
  }

  /**
   * Mean next-token cross-entropy of ids (labels default to ids; −100 ignored) and its gradient,
   * accumulated into `grads` (allocate with allocGrads; zero it between steps).
   */
  lossAndGrads(ids: Int32Array, B: number, N: number, grads: Params, labels: Int32Array | null = null, opts: TrainOptions = {}): { loss: number; count: number } {
    this.checkIds(ids, B, N);
    const { be, params, config } = this;
    const checkpoint = opts.checkpoint ?? false;
    const ctx = this.ctx(B, N, trainPositions(B, N), null);
    const tape: LayerTape[] = [];
    const x = this.trunk(ids, ctx, null, tape, checkpoint);
    const { logits, acts } = headForward(be, x, this.headWeight, this.compute);
    const targets = shiftedTargets(labels ?? ids, B, N);
    let count = 0;
    for (const t of targets) if (t !== -100) count++;
    if (count === 0) { be.free(logits); freeAll(be, acts); be.free(x); for (const t of tape) { if (t.x) be.free(t.x); if (t.gla) freeAll(be, t.gla); if (t.sglu) freeAll(be, t.sglu); } return { loss: NaN, count: 0 }; }
    const { loss } = be.crossEntropy(logits, targets, logits, (opts.gradScale ?? 1) / count);
    const dx = be.empty(x.shape);
    headBackward(be, dx, grads.head ?? grads.embed, this.headWeight, logits, acts);
    be.free(logits); freeAll(be, acts); be.free(x);
    for (let l = params.layers.length - 1; l >= 0; l--) {
      let t = tape[l]!;
      if (checkpoint) {
        const xr = t.x!;
        const gla = glaForward(ctx, params.layers[l]!, this.shapes[l]!, xr, null);
        const sglu = sgluForward(ctx, params.layers[l]!, xr);
        t = { gla, sglu };
      }
      sgluBackward(ctx, params.layers[l]!, grads.layers[l]!, t.sglu!, dx);
      glaBackward(ctx, params.layers[l]!, grads.layers[l]!, this.shapes[l]!, t.gla!, dx);
      freeAll(be, t.sglu!); freeAll(be, t.gla!);
      if (tape[l]!.x) be.free(tape[l]!.x!);
      tape[l] = {};
    }
    embeddingBackward(be, grads.embed, dx, ids, embedScale(config), config.pad_token_id);
    be.free(dx);
    return { loss: loss / count, count };
  }

  /** Zeroed f32 gradients laid out like the parameters. */
  allocGrads(): Params {
    return allocParams(this.be, this.config, 'f32');
  }
  zeroGrads(g: Params): void {
    for (const t of paramTensors(g)) this.be.fill(t, 0);
  }

  // ---- inference ------------------------------------------------------------------------------

  /** A fresh (zero) recurrent state for `batch` sequences: its size never grows with the context. */
  newState(batch: number): ModelState {
    const { nh, dh } = dims(this.config);
    const layers = this.params.layers.map((l) => this.be.zeros([batch, nh, l.theta ? 2 * dh : dh, dh]));
    return { batch, layers, positions: new Int32Array(batch) };
  }

  /**
   * Block prefill of B sequences of N tokens each, continuing `state` (chunked prefill is exact).
   * vMask marks padding (0) for left-padded batches. With `slots`, sequence b continues state row
   * slots[b] of a larger state (a pool shared by a continuous batch); otherwise row b. Returns
   * logits of the last position of each sequence [B, V], or of every position [B·N, V] with
   * `allLogits`.
   */
  prefill(ids: Int32Array, B: number, N: number, state: ModelState,
          opts: { vMask?: Int32Array | null; allLogits?: boolean; slots?: Int32Array | null } = {}): Tensor {
    const slots = opts.slots ?? null;
    this.checkStateStep(ids, B, N, state, slots);
    const row = (b: number) => (slots ? slots[b]! : b);
    const positions = new Int32Array(B * N);
    for (let b = 0; b < B; b++) for (let n = 0; n < N; n++) positions[b * N + n] = state.positions[row(b)]! + n;
    const logits = this.stateStep(ids, B, N, positions, state, opts.vMask ?? null, slots, opts.allLogits ?? false);
    for (let b = 0; b < B; b++) state.positions[row(b)] = state.positions[row(b)]! + N;
    return logits;
  }

  /** The checks of prefill and decode: ids within the vocabulary, B sequences (rows `slots`) of `state`. */
  checkStateStep(ids: Int32Array, B: number, N: number, state: ModelState, slots: Int32Array | null): void {
    this.checkIds(ids, B, N);
    if (slots ? slots.length !== B || slots.some((s) => !(s >= 0 && s < state.batch)) : state.batch !== B)
      throw new UsageError(slots ? `slots must name ${B} rows of a state of ${state.batch}` : `state holds ${state.batch} sequences, got ${B}`);
  }

  /**
   * The body of prefill and decode with every host input given (and nothing checked): the step a
   * decode graph records, so that replaying it reads the same `ids`, `positions` and `slots` arrays.
   * state.positions is not advanced.
   */
  stateStep(ids: Int32Array, B: number, N: number, positions: Int32Array, state: ModelState, vMask: Int32Array | null, slots: Int32Array | null, allLogits: boolean): Tensor {
    const x = this.trunk(ids, this.ctx(B, N, positions, vMask), state.layers, null, false, slots);
    let last = x;
    if (!allLogits && N > 1) {
      last = this.be.empty([B, this.config.decoder_embed_dim]);
      this.be.gatherRows(last, x, Int32Array.from({ length: B }, (_, b) => b * N + N - 1));
      this.be.free(x);
    }
    const logits = headLogits(this.be, last, this.headWeight);
    this.be.free(last);
    return logits;
  }

  /** One recurrent step: the next token of each sequence → logits [B, V] (rows `slots` of a pool). */
  decode(ids: Int32Array, state: ModelState, slots: Int32Array | null = null): Tensor {
    return this.prefill(ids, ids.length, 1, state, { slots });
  }

  /** Reset row `slot` of a state (pool) to the empty context: zero state, position 0. */
  clearSlot(state: ModelState, slot: number): void {
    for (const t of state.layers) {
      const perSlot = t.size / state.batch / t.shape[t.shape.length - 1]!;
      this.be.fill(this.be.rows(t, slot * perSlot, perSlot), 0);
    }
    state.positions[slot] = 0;
  }
}

/** Positions 0..N−1 for each of B sequences. */
export function trainPositions(B: number, N: number): Int32Array {
  const p = new Int32Array(B * N);
  for (let b = 0; b < B; b++) for (let n = 0; n < N; n++) p[b * N + n] = n;
  return p;
}
