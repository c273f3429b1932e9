// The backend seam. The model never loops over numbers: it allocates tensors and calls these
// coarse, fused kernels, each with an explicit backward. Every backend (reference, cpu, cuda)
// implements this one interface; the reference backend is the oracle the others are tested against.
//
// Conventions
// - A tensor is row-major. Kernels that take "rows × cols" treat a tensor as 2-D:
//   rows = product of all dims but the last, cols = the last dim.
// - Activations are token-major: [T, C] with T = batch × seqLen tokens, sequence b at rows
//   b·N … b·N+N−1. Attention inputs are [B, N, heads·d] (head h occupies columns h·d … h·d+d−1).
// - Outputs are passed in, preallocated by the caller (no hidden allocation in the hot loop);
//   `accumulate` adds into the output instead of overwriting it.
// - Small integer inputs (token ids, targets, positions, masks) are host Int32Arrays; a device
//   backend uploads them itself.
// - f32 is the default dtype. bf16 tensors hold raw bfloat16 bits; they appear as weights (the B
//   operand of matmul, the embedding table) and are computed with fp32 accumulation.
// - Mixed precision: a backend whose `activationDTypes` includes 'bf16' also takes bf16 activations
//   (each activation tensor argument independently f32 or bf16: matmul A, B, C; srmsnorm x, y, dx,
//   dy; the GLA, Lightning, SGLU and loss tensors). The residual stream, rstd, θ, the recurrent
//   state, parameter gradients and optimiser moments stay f32. Arithmetic is fp32 (or better)
//   whatever the storage; bf16 outputs are rounded to nearest even.

export type DType = 'f32' | 'bf16';

export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
}

export interface MatmulOptions {
  /** A is stored as [K, M] and used transposed. */
  transA?: boolean;
  /** B is stored as [N, K] and used transposed (the nn.Linear form y = x Wᵀ). */
  transB?: boolean;
  /** C += A·B instead of C = A·B. */
  accumulate?: boolean;
  /** Use SRMS(A) (row-wise, this eps) in place of A: the norm before a projection, fused in decode. */
  normA?: number;
  /** A is [M, 2K]; use A[:, :K] ⊙ A[:, K:] (SGLU's gate) in place of it, fused in decode. */
  gluA?: boolean;
  /** Use normGate(A, qkvu) (GLA's output: SRMS(A) ⊙ u, u = columns [3K, 4K) of qkvu) in place of A, fused in decode. */
  normGate?: { qkvu: Tensor; eps: number };
  /** A hint: bring this tensor (a later step's weights) into cache while the product waits for its input. */
  prefetch?: Tensor | null;
}

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
  /** Multiplies the gradient before use (gradient clipping, accumulation averaging). */
  gradScale: number;
}

export interface Backend {
  readonly name: string;
  /** Storage types this backend accepts for activations (always 'f32'; 'bf16' for mixed precision). */
  readonly activationDTypes: readonly DType[];
  /** One line describing the kernels in use (ISA, threads, fallbacks). */
  describe(): string;

  // ---- memory -------------------------------------------------------------------------------
  empty(shape: readonly number[], dtype?: DType): Tensor;
  zeros(shape: readonly number[], dtype?: DType): Tensor;
  /** Copy host data in (f32 data → bf16 tensor rounds to nearest even). */
  upload(data: Float32Array, shape: readonly number[], dtype?: DType): Tensor;
  /** Upload raw bfloat16 bits as a bf16 tensor. */
  uploadBF16(bits: Uint16Array, shape: readonly number[]): Tensor;
  /** Copy out as float32 (bf16 is widened). */
  download(t: Tensor): Float32Array;
  /** A tensor sharing `t`'s storage: rows [rowStart, rowStart+rowCount) of its 2-D view. */
  rows(t: Tensor, rowStart: number, rowCount: number): Tensor;
  /** Same storage, new shape with the same element count. */
  reshape(t: Tensor, shape: readonly number[]): Tensor;
  /** out[i] = src[rowIdx[i]] over 2-D rows (e.g. the last token of each sequence). */
  gatherRows(out: Tensor, src: Tensor, rowIdx: Int32Array): void;
  /** dst ← src (same size; converts between dtypes). */
  copy(dst: Tensor, src: Tensor): void;
  fill(t: Tensor, value: number): void;
  /** Release storage now (optional for garbage-collected backends). */
  free(t: Tensor): void;

  // ---- dense ----------------------------------------------------------------------------------
  /**
   * C[M,N] (+)= op(A)[M,K] · op(B)[K,N]. B may be bf16; with bf16 activations A and C may be too
   * (a bf16/f32 operand pair is computed as bf16 × bf16 with fp32 accumulation).
   */
  matmul(c: Tensor, a: Tensor, b: Tensor, opts?: MatmulOptions): void;
  /** y += x (same size). */
  addInPlace(y: Tensor, x: Tensor): void;
  /** x *= s. */
  scaleInPlace(x: Tensor, s: number): void;
  /** Σ x² over the whole tensor, or over every tensor of a list (one result: a gradient norm), as float64. */
  sumSquares(x: Tensor | readonly Tensor[]): number;

  // ---- embedding ----------------------------------------------------------------------------
  /** out[t] = scale · table[ids[t]]. */
  embedding(out: Tensor, table: Tensor, ids: Int32Array, scale: number): void;
  /** dTable[ids[t]] += scale · dOut[t], skipping rows whose id is `paddingIdx`. */
  embeddingBackward(dTable: Tensor, dOut: Tensor, ids: Int32Array, scale: number, paddingIdx: number): void;

  // ---- SimpleRMSNorm: y = x / sqrt(mean(x²) + eps), no weight --------------------------------
  /** Per row; writes y and rstd[row] = 1/sqrt(mean(x²)+eps). */
  srmsnorm(y: Tensor, rstd: Tensor, x: Tensor, eps: number): void;
  /** dx (+)= rstd · (dy − y · mean(dy ⊙ y)), from the saved output y and rstd. */
  srmsnormBackward(dx: Tensor, dy: Tensor, y: Tensor, rstd: Tensor, accumulate: boolean): void;

  // ---- gated linear attention pieces ---------------------------------------------------------
  /**
   * From the fused projection qkvu [T, 4H] (column blocks q̃ | k̃ | ṽ | u, heads of width dh):
   * q = lrpe(silu(q̃)), k = lrpe(silu(k̃)) into [T, nh·dk]; v = ṽ into [T, H], zeroed where
   * vMask[t] = 0. With theta (nh·dh values) dk = 2·dh: per head [x⊙cos(θ·p), x⊙sin(θ·p)] with
   * p = positions[t]; without theta dk = dh.
   */
  glaQKV(q: Tensor, k: Tensor, v: Tensor, qkvu: Tensor, heads: number,
         theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null): void;
  /** Backward of glaQKV: writes columns [0, 3H) of dqkvu; dTheta (+)= ∂/∂θ when theta is given. */
  glaQKVBackward(dqkvu: Tensor, dTheta: Tensor | null, dq: Tensor, dk: Tensor, dv: Tensor,
                 qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null,
                 vMask: Int32Array | null): void;
  /**
   * Causal linear attention with per-head exponential decay λ_h, for B sequences of N tokens:
   * o_t = λ^{t+1}·q_t·S_in + Σ_{j≤t} λ^{t−j} (q_t·k_j) v_j, and the carried state
   * S_out = λ^N·S_in + Σ_j λ^{N−1−j} k_jᵀ v_j. q, k: [B, N, nh·dk]; v, o: [B, N, nh·dv];
   * state: [B, nh, dk, dv] or null (zero in, not written). `blockSize` is the Lightning block
   * length (masked products inside a block, the state carried between blocks); N = 1 is the
   * recurrent decode step. With `slots`, sequence b reads and writes state row slots[b] (a state
   * pool [S, nh, dk, dv] shared by the sequences of a continuous batch).
   */
  lightningForward(o: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array,
                   state: Tensor | null, blockSize: number, slots?: Int32Array | null): void;
  /**
   * Optional fusion for the recurrent step (N = 1): glaQKV of qkvu [B, 4H] then lightningForward into
   * o [B, 1, H] (state, slots as there), without materialising q, k, v.
   */
  glaStep?(o: Tensor, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null,
           decay: Float64Array, state: Tensor, slots?: Int32Array | null, prefetch?: Tensor | null): void;
  /**
   * Optional fusion one level further, for a decode step: qkvu = SRMS(x)·wᵀ (x [B, D], w [4H, D],
   * eps the norm's) and then glaStep, in one launch. Returns false, having done nothing, where the
   * backend cannot fuse these shapes; the caller then runs the matmul and glaStep.
   */
  glaProjectStep?(o: Tensor, qkvu: Tensor, x: Tensor, w: Tensor, eps: number, heads: number, theta: Tensor | null, positions: Int32Array | null,
                  vMask: Int32Array | null, decay: Float64Array, state: Tensor, slots?: Int32Array | null, prefetch?: Tensor | null): boolean;
  /** Backward of lightningForward from a zero initial state: dq, dk, dv (overwritten). */
  lightningBackward(dq: Tensor, dk: Tensor, dv: Tensor, dO: Tensor, q: Tensor, k: Tensor, v: Tensor,
                    decay: Float64Array, blockSize: number): void;
  /** a = srms(o) ⊙ u, with u = columns [3H, 4H) of qkvu and the norm over the whole row of o. */
  normGate(a: Tensor, rstd: Tensor, o: Tensor, qkvu: Tensor, eps: number): void;
  /** Backward of normGate: dO (overwritten) and columns [3H, 4H) of dqkvu. */
  normGateBackward(dO: Tensor, dqkvu: Tensor, dA: Tensor, o: Tensor, rstd: Tensor, qkvu: Tensor): void;

  // ---- SGLU: m = h[:, :G] ⊙ h[:, G:] ----------------------------------------------------------
  sgluGate(m: Tensor, h: Tensor): void;
  sgluGateBackward(dh: Tensor, dm: Tensor, h: Tensor): void;

  // ---- loss ----------------------------------------------------------------------------------
  /**
   * Softmax cross-entropy per row of logits [T, V] against targets[t] (−100 = ignored).
   * Returns the summed loss over non-ignored rows and their count. When dLogits is given it
   * receives (softmax − onehot)·gradScale for counted rows and 0 for ignored ones (it may alias
   * logits).
   */
  crossEntropy(logits: Tensor, targets: Int32Array, dLogits: Tensor | null, gradScale: number): { loss: number; count: number };

  // ---- optimiser ------------------------------------------------------------------------------
  /** One AdamW step (decoupled weight decay) on param with grad; m, v are f32 moments. */
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, opts: AdamWOptions): void;

  // ---- token selection inside a decode step (decode loops that run ahead of the host) ----------
  /**
   * Picks the next token of each row of logits [B, V] (f32): the first largest at temperature 0,
   * else a draw from softmax(x / T) by the Gumbel-max rule with noise hashed from (the row's seed,
   * positions[b], column) (src/backends/token-pick.ts). Writes the pick into ids[b], advances
   * positions[b] and appends (pick, log-probability at temperature 1) to the ring's next slot.
   * On a device backend the writes go to the arrays' device copies: bound ones (bindInts) feed the
   * next step where they are, so a recorded step can be replayed without the host; unbound ones are
   * this launch's copies, and the ring is then the only way the picks reach the host.
   */
  sampleTokens?(logits: Tensor, pick: TokenPick): void;
  /** A ring for sampleTokens: `slots` steps of `rows` picks, readable on the host. */
  tokenRing?(rows: number, slots: number): TokenRing;
  /**
   * Keeps `a` on the device from now on: kernels given `a` read (and sampleTokens writes) its device
   * copy, uploaded from the array's contents here; nothing is copied per call or replay. (Backends
   * without it compute on the host arrays themselves.)
   */
  bindInts?(a: Int32Array): void;
  /** Copies a bound array's device contents back into it and stops keeping it (frees the copy). */
  unbindInts?(a: Int32Array): void;
  /** Marks how far the queued work has got: the returned function waits until it has run. */
  mark?(): () => void;

  // ---- graphs (optional: device backends) -------------------------------------------------------
  /**
   * Records the calls `body` makes as one replayable graph (a decode step): replay() reruns them
   * with the current contents of the host integer arrays `body` passed in, writing into the same
   * tensors `body` returned.
   */
  capture?<T>(body: () => T, opts?: { hostCopy?: boolean }): CapturedGraph<T>;
}

/** What sampleTokens needs besides the logits: B ids and positions (written), the ring, the rule. */
export interface TokenPick {
  ids: Int32Array;
  positions: Int32Array;
  ring: TokenRing;
  /** 0 = greedy. */
  temperature: number;
  /** Row b's noise is seeded by seed ^ b·0x9e3779b9 (or seeds[b]). */
  seed: number;
  /** Per-row temperatures and seeds, overriding `temperature` and `seed` (a server's batch of requests). */
  temperatures?: Float32Array;
  seeds?: Int32Array;
  /** Pick among the first `columns` of each row (default: all of them). */
  columns?: number;
}

/**
 * Where sampleTokens leaves its picks: step s (counted from the ring's creation) in slot s % slots,
 * row b at ids[slot·rows + b] and logprobs[slot·rows + b]; on the host once the step has run.
 */
export interface TokenRing {
  readonly rows: number;
  readonly slots: number;
  readonly ids: Int32Array;
  readonly logprobs: Float32Array;
  free(): void;
}

export interface CapturedGraph<T> {
  readonly result: T;
  replay(): void;
  /**
   * Recorded with hostCopy (an f32 tensor result): the result's values after the last replay, copied
   * to the host inside the graph; waits for it. A view valid until the next replay.
   */
  hostResult?(): Float32Array;
  destroy(): void;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** rows × cols of a tensor's 2-D view. */
export function dims2(t: Tensor): [number, number] {
  const cols = t.shape.length ? t.shape[t.shape.length - 1]! : 1;
  return [cols ? t.size / cols : 0, cols];
}
