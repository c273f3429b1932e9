// Packing loader: fixed-length training batches cut from a split's token stream.
//
// The split is one stream of documents packed back to back, each ending in EOS (see shards.ts).
// It is cut into non-overlapping windows of seqLen tokens; the tail shorter than a window is
// left out. Two forms of batch:
//   - 'plain' (default): `inputIds` only, [batchSize, seqLen] row-major. The model shifts
//     internally, as the reference trains: loss over positions 0 … seqLen−2 predicting the
//     tokens at 1 … seqLen−1 of the same row. Window w is tokens [w·seqLen, (w+1)·seqLen).
//   - 'shifted': `inputIds` and `targets`, both [batchSize, seqLen]; targets are the inputs
//     shifted by one (targets[r, t] = the token after inputIds[r, t]), so every position has a
//     target. Window w is tokens [w·seqLen, (w+1)·seqLen + 1): its last token is the first of the
//     next window.
// Training order: each epoch visits every window once, in an order shuffled by (seed, epoch);
// a batch is batchSize consecutive windows of that order, and the last windows that do not fill
// a batch are skipped for that epoch. The loader's position is a small JSON object (LoaderState);
// a loader restored from it yields exactly the batches the original would have yielded next.
import { UsageError } from '../errors.ts';
import type { TokenSource } from './shards.ts';
import { Rng, mix32, permutation } from '../util/rng.ts';

export type BatchForm = 'plain' | 'shifted';

export interface Batch {
  /** Token ids, [rows, seqLen] row-major. */
  inputIds: Int32Array;
  /** 'shifted' form only: next-token targets, [rows, seqLen] row-major. */
  targets?: Int32Array;
  /** Rows in this batch: batchSize, except possibly the last validation batch. */
  rows: number;
  seqLen: number;
  /** Training: the epoch and the batch's number within it. Validation: epoch 0, batch number. */
  epoch: number;
  step: number;
}

/** Where a training loader stands: the next batch is number `cursor` of epoch `epoch`. */
export interface LoaderState {
  version: 1;
  seed: number;
  epoch: number;
  cursor: number;
  /** The shape it was made for; restoring into a loader of another shape is refused. */
  batchSize: number;
  seqLen: number;
  form: BatchForm;
  windows: number;
}

export interface LoaderOptions {
  batchSize: number;
  seqLen: number;
  /** Seed of the window order (default 0). */
  seed?: number;
  /** Batch form (default 'plain'). */
  form?: BatchForm;
  /** Start from this position (as returned by state()) instead of epoch 0, batch 0. */
  state?: LoaderState;
}

/** Number of windows of `seqLen` a stream of `tokens` tokens gives in `form`. */
export function countWindows(tokens: number, seqLen: number, form: BatchForm = 'plain'): number {
  return Math.max(0, Math.floor((form === 'shifted' ? tokens - 1 : tokens) / seqLen));
}

function checkShape(batchSize: number, seqLen: number, form: BatchForm): void {
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new UsageError(`loader: batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isInteger(seqLen) || seqLen <= 0 || (form === 'plain' && seqLen < 2))
    throw new UsageError(`loader: seqLen must be an integer ≥ ${form === 'plain' ? 2 : 1}, got ${seqLen}`);
  if (form !== 'plain' && form !== 'shifted') throw new UsageError(`loader: form must be "plain" or "shifted", got ${JSON.stringify(form)}`);
}

/** Fill row `row` of `batch` with window `w`. `scratch` holds seqLen+1 tokens. */
function fillRow(src: TokenSource, w: number, row: number, seqLen: number, inputIds: Int32Array, targets: Int32Array | undefined, scratch: Int32Array): void {
  const start = w * seqLen;
  if (!targets) {
    src.read(start, seqLen, inputIds, row * seqLen);
    return;
  }
  src.read(start, seqLen + 1, scratch, 0);
  inputIds.set(scratch.subarray(0, seqLen), row * seqLen);
  targets.set(scratch.subarray(1, seqLen + 1), row * seqLen);
}

export class PackedLoader implements Iterable<Batch> {
  readonly batchSize: number;
  readonly seqLen: number;
  readonly form: BatchForm;
  /** Windows in the stream, and full batches per epoch (floor(windows / batchSize)). */
  readonly windows: number;
  readonly batchesPerEpoch: number;
  private seed: number;
  private epoch = 0;
  private cursor = 0;
  private order: Uint32Array | null = null;
  private orderEpoch = -1;
  private readonly scratch: Int32Array;

  constructor(
    private readonly source: TokenSource,
    opts: LoaderOptions,
  ) {
    this.form = opts.form ?? 'plain';
    checkShape(opts.batchSize, opts.seqLen, this.form);
    this.batchSize = opts.batchSize;
    this.seqLen = opts.seqLen;
    this.seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(this.seed)) throw new UsageError(`loader: seed must be an integer, got ${this.seed}`);
    this.windows = countWindows(source.tokens, this.seqLen, this.form);
    this.batchesPerEpoch = Math.floor(this.windows / this.batchSize);
    if (this.batchesPerEpoch === 0)
      throw new UsageError(
        `loader: ${source.tokens} tokens give ${this.windows} windows of ${this.seqLen}, fewer than one batch of ${this.batchSize}; use a smaller batch or sequence, or more data`,
      );
    this.scratch = new Int32Array(this.seqLen + 1);
    if (opts.state) this.restore(opts.state);
  }

  /** The position, to save with a checkpoint (plain JSON). */
  state(): LoaderState {
    return {
      version: 1,
      seed: this.seed,
      epoch: this.epoch,
      cursor: this.cursor,
      batchSize: this.batchSize,
      seqLen: this.seqLen,
      form: this.form,
      windows: this.windows,
    };
  }

  /** Continue from a saved position (its seed included). Refused when the shape or data differ. */
  restore(state: LoaderState): void {
    const s = state as Partial<LoaderState> | null;
    if (!s || typeof s !== 'object' || s.version !== 1) throw new UsageError(`loader: not a loader state (version 1): ${JSON.stringify(state)}`);
    const expect = (field: keyof LoaderState, want: unknown) => {
      if (s[field] !== want) throw new UsageError(`loader: saved state has ${field} ${JSON.stringify(s[field])}, this loader has ${JSON.stringify(want)}`);
    };
    expect('batchSize', this.batchSize);
    expect('seqLen', this.seqLen);
    expect('form', this.form);
    expect('windows', this.windows);
    const int = (v: unknown, name: string, max = Number.MAX_SAFE_INTEGER) => {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) throw new UsageError(`loader: saved state's ${name} is invalid: ${JSON.stringify(v)}`);
      return v;
    };
    if (typeof s.seed !== 'number' || !Number.isSafeInteger(s.seed)) throw new UsageError(`loader: saved state's seed is invalid: ${JSON.stringify(s.seed)}`);
    this.seed = s.seed;
    this.epoch = int(s.epoch, 'epoch');
    this.cursor = int(s.cursor, 'cursor', this.batchesPerEpoch - 1);
    this.order = null;
    this.orderEpoch = -1;
  }

  /** The window order of `epoch`: a permutation of 0 … windows−1 seeded by (seed, epoch). */
  windowOrder(epoch: number): Uint32Array {
    if (this.orderEpoch !== epoch || !this.order) {
      this.order = permutation(this.windows, new Rng(mix32(this.seed, epoch)));
      this.orderEpoch = epoch;
    }
    return this.order;
  }

  /** The next training batch; epochs follow one another without end. */
  next(): Batch {
    const order = this.windowOrder(this.epoch);
    const { batchSize, seqLen } = this;
    const inputIds = new Int32Array(batchSize * seqLen);
    const targets = this.form === 'shifted' ? new Int32Array(batchSize * seqLen) : undefined;
    const base = this.cursor * batchSize;
    for (let r = 0; r < batchSize; r++) fillRow(this.source, order[base + r], r, seqLen, inputIds, targets, this.scratch);
    const batch: Batch = { inputIds, rows: batchSize, seqLen, epoch: this.epoch, step: this.cursor };
    if (targets) batch.targets = targets;
    this.cursor++;
    if (this.cursor === this.batchesPerEpoch) {
      this.epoch++;
      this.cursor = 0;
    }
    return batch;
  }

  /** Batches without end (use with a step limit, or break). */
  *[Symbol.iterator](): Iterator<Batch> {
    for (;;) yield this.next();
  }
}

export interface ValidationOptions {
  batchSize: number;
  seqLen: number;
  form?: BatchForm;
  /** Stop after this many batches (the first ones, always the same). Default: all. */
  maxBatches?: number;
  /** Leave out a last batch with fewer than batchSize rows (default false: it comes, with `rows` < batchSize). */
  dropLast?: boolean;
}

/**
 * Validation batches: the stream's windows in order (window 0, 1, 2 …, none overlapping), batchSize
 * per batch. The same every time it is called. Yields nothing when the stream holds no window.
 */
export function* validationBatches(source: TokenSource, opts: ValidationOptions): Generator<Batch> {
  const form = opts.form ?? 'plain';
  checkShape(opts.batchSize, opts.seqLen, form);
  const { batchSize, seqLen } = opts;
  const windows = countWindows(source.tokens, seqLen, form);
  let batches = opts.dropLast ? Math.floor(windows / batchSize) : Math.ceil(windows / batchSize);
  if (opts.maxBatches !== undefined) batches = Math.min(batches, Math.max(0, Math.floor(opts.maxBatches)));
  const scratch = new Int32Array(seqLen + 1);
  for (let b = 0; b < batches; b++) {
    const rows = Math.min(batchSize, windows - b * batchSize);
    const inputIds = new Int32Array(rows * seqLen);
    const targets = form === 'shifted' ? new Int32Array(rows * seqLen) : undefined;
    for (let r = 0; r < rows; r++) fillRow(source, b * batchSize + r, r, seqLen, inputIds, targets, scratch);
    const batch: Batch = { inputIds, rows, seqLen, epoch: 0, step: b };
    if (targets) batch.targets = targets;
    yield batch;
  }
}
