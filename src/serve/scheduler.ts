// The engine: one loop owning the model and a pool of recurrent states, running every request
// that holds a slot as one continuous batch.
//
// Each iteration (one turn of the event loop, so HTTP stays responsive between them):
//  1. admit waiting requests (FIFO) into free slots: a request of n sequences takes n slots; its
//     first slot starts from a cached state when an earlier prompt is a prefix of this one (the
//     prefix state cache below), else from zero (clearSlot);
//  2. run one prefill chunk (≤ prefillChunk tokens) of one request still prefilling, round-robin,
//     so a long prompt never stalls the others;
//  3. run one batched decode step for every running sequence: model.decode(ids, pool, slots) →
//     logits [B, V] downloaded once, each sequence sampling from its row with its own sampler.
// A request whose prompt is done samples its first token from the prefill logits; with n > 1 the
// prompt is prefilled once and the state rows copied into the other n − 1 slots. A sequence ends
// on eos, a stop string (the caller says so), max_tokens, cancellation (client gone, shutdown) or
// an error; its slot goes back to the free list at once (the state is a fixed-size pool row: TNL's
// memory per sequence does not grow with the context).
//
// Few shapes: the backend reuses freed activation buffers by exact size, so the engine keeps the
// shapes it runs few — a decode batch of B sequences is padded to the next of 1, 2, 4, 8, 16, 24,
// … (multiples of 8) with rows on scratch slots, and a prompt's last partial chunk is split into
// power-of-two pieces — and the buffer pool reaches a small steady state instead of collecting
// buffers of every size it ever met (measured: reuse is worth 20–50% of decode throughput).
//
// Prefix state cache: because a TNL sequence's whole context is its fixed-size state, the state
// after a prompt (and after prompt + generated text) can be kept, and a later request whose token
// ids start with that prefix — the next turn of a chat sends the whole conversation again —
// continues from it instead of prefilling the prefix again. Entries live in a second,
// preallocated pool (fixed memory), keyed by their token ids (hash + exact comparison), evicted
// least recently used; an entry that a request extended is replaced by the extension.
import type { Backend } from '../backends/backend.ts';
import type { ModelState, TnlModel } from '../model/transnormer.ts';
import { TnlError } from '../errors.ts';
import { Sampler, type Sampled, type SamplingOptions } from '../generate/sampling.ts';
import { Decoder } from '../generate/decoder.ts';
import { deviceSamplingApplies } from '../generate/device-loop.ts';
import { ServerMetrics } from './metrics.ts';

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

export interface GeneratedToken extends Sampled {
  /** 0-based position among this sequence's generated tokens. */
  index: number;
}

export interface EngineRequest {
  promptIds: readonly number[] | Int32Array;
  /** Sequences sharing the prompt (OpenAI n). */
  n: number;
  /** Most tokens per sequence (≥ 1). */
  maxTokens: number;
  /** Sampling; with a seed, sequence i uses seed + i. */
  sampling: SamplingOptions;
  /** Token ids that end a sequence with "stop" (not emitted): eos, unless ignore_eos. */
  stopIds: readonly number[];
  /** Report the sampled token's logprob. */
  logprobs?: boolean;
  /** Also report this many alternatives per token. */
  topLogprobs?: number;
  /** When the request arrived (performance.now()); default: at submit. */
  arrival?: number;
  /** The request got its slots; `cachedTokens` prompt tokens came from the prefix cache. */
  onAdmit?(info: { cachedTokens: number }): void;
  /** A new token of sequence `seq`. Return true to end the sequence here ("stop": a stop string matched). */
  onToken(seq: number, token: GeneratedToken): boolean | void;
  /** Sequence `seq` ended (called exactly once per sequence, also for cancelled or failed ones). */
  onFinish(seq: number, reason: FinishReason, error?: Error): void;
}

/** The wait queue is full: answer 429 with Retry-After. */
export class OverloadedError extends TnlError {
  constructor(message: string, readonly retryAfterSeconds: number) { super(message); }
}
/** The engine is shutting down: answer 503. */
export class ShuttingDownError extends TnlError {}

export interface EngineOptions {
  /** Sequence slots in the state pool: most sequences running at once (default 64). */
  maxSeqs?: number;
  /** Most requests waiting for slots; beyond it submit() throws OverloadedError (default 256). */
  maxQueue?: number;
  /** Prompt tokens per request in one prefill call (default 256). */
  prefillChunk?: number;
  /**
   * Most requests whose chunks go into one prefill call (default 1): more makes prefill calls
   * bigger (more efficient on some machines) and each engine step longer.
   */
  prefillBatch?: number;
  /** Prefix state cache entries (default maxSeqs; 0 turns it off). */
  prefixCache?: number;
  /** Shared metrics (the HTTP layer adds its own); created when absent. */
  metrics?: ServerMetrics;
  /** Where unexpected errors are reported (default: stderr). */
  log?: (line: string) => void;
  /**
   * Most bytes of freed activation buffers the backend keeps for reuse (host backends'
   * poolLimitBytes; default 512 MiB, never raised). Its steady state is what the engine's few
   * shapes need (about 70 MiB for the small preset, 200 MiB for bench-29m).
   */
  bufferPoolBytes?: number;
  /**
   * Sample only ids below this (default: the model's vocabulary): the tokenizer's size when the
   * model's embedding is padded beyond it, so no sequence produces an id the tokenizer lacks.
   */
  sampleVocab?: number;
}

type JobState = 'waiting' | 'prefill' | 'running' | 'done';

interface Seq {
  readonly job: Job;
  readonly index: number;
  readonly slot: number;
  readonly sampler: Sampler;
  /** Generated token ids (kept for the prefix cache key). */
  readonly tokens: number[];
  /** Sampled but not yet fed to the model. */
  pending: number;
  lastAt: number;
  finished: boolean;
  /** The logits row the last token was sampled from (valid during the step that produced it; a
   * function where it stayed on the device, which gives null once a later step has run). */
  row: Float32Array | (() => Float32Array | null) | null;
  /** Picked inside the decode step (the request's options allow it on this backend): its temperature and seed. */
  readonly device: { temperature: number; seed: number } | null;
}

export class Job {
  state: JobState = 'waiting';
  /** The prompt (4 bytes a token: a 16K-token prompt holds 64 KiB). */
  readonly ids: Int32Array;
  /** Hash of the whole prompt (the prefix cache's key). */
  hash = 0;
  slots: number[] = [];
  seqs: Seq[] = [];
  /** Prompt tokens already in the first slot's state. */
  pos = 0;
  cachedTokens = 0;
  cacheEntry: CacheEntry | null = null;
  cancelRequested: FinishReason | null = null;
  finishedCount = 0;
  readonly arrival: number;
  readonly done: Promise<void>;
  resolveDone!: () => void;
  constructor(readonly engine: Engine, readonly req: EngineRequest) {
    this.arrival = req.arrival ?? performance.now();
    this.ids = req.promptIds instanceof Int32Array ? req.promptIds : Int32Array.from(req.promptIds);
    this.done = new Promise((r) => { this.resolveDone = r; });
  }
  /** End every sequence of this request now (finish reason "abort" by default); frees its slots. */
  cancel(reason: FinishReason = 'abort'): void { this.engine.cancel(this, reason); }
}

interface CacheEntry {
  ids: Int32Array;
  hash: number;
  row: number;
  logits: Float32Array;
  lastUsed: number;
}

/** Polynomial hashes of every prefix of ids: h[k] hashes ids[0..k). */
function prefixHashes(ids: ArrayLike<number>): Float64Array {
  const h = new Float64Array(ids.length + 1);
  let a = 0x811c9dc5 | 0, b = 0x2545f491 | 0;
  for (let i = 0; i < ids.length; i++) {
    a = Math.imul(a ^ ids[i]!, 0x01000193);
    b = (Math.imul(b, 0x5bd1e995) + ids[i]! + 0x9e3779b9) | 0;
    h[i + 1] = (a >>> 0) * 2097152 + ((b >>> 0) & 0x1fffff);
  }
  return h;
}

/** Fixed-size, preallocated store of recurrent states keyed by token-id prefixes. */
class PrefixCache {
  private readonly entries: CacheEntry[] = [];
  readonly pool: ModelState | null;
  private tick = 0;
  constructor(private readonly model: TnlModel, readonly capacity: number) {
    this.pool = capacity > 0 ? model.newState(capacity) : null;
  }

  /** The longest entry whose ids are a prefix of `ids` (possibly all of it). */
  lookup(ids: ArrayLike<number>, hashes: Float64Array): CacheEntry | null {
    let best: CacheEntry | null = null;
    for (const e of this.entries) {
      const n = e.ids.length;
      if (n > ids.length || (best && n <= best.ids.length) || hashes[n] !== e.hash) continue;
      let same = true;
      for (let i = 0; i < n; i++) if (e.ids[i] !== ids[i]) { same = false; break; }
      if (same) best = e;
    }
    if (best) best.lastUsed = ++this.tick;
    return best;
  }

  /**
   * Keep the state of `slot` (having consumed exactly `ids`) with the logits of its next token.
   * Replaces `replace` (an entry this one extends) or the least recently used entry.
   */
  store(ids: Int32Array, hash: number, pool: ModelState, slot: number, logits: Float32Array, replace: CacheEntry | null): CacheEntry | null {
    if (!this.pool || ids.length === 0) return null;
    for (const e of this.entries) if (e.hash === hash && e.ids.length === ids.length && e.ids.every((v, i) => v === ids[i])) {
      e.lastUsed = ++this.tick;
      return e;
    }
    let e: CacheEntry;
    if (replace && this.entries.includes(replace)) e = replace;
    else if (this.entries.length < this.capacity) {
      e = { ids, hash, row: this.entries.length, logits: new Float32Array(logits.length), lastUsed: 0 };
      this.entries.push(e);
    } else {
      e = this.entries.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
    }
    e.ids = ids;
    e.hash = hash;
    e.lastUsed = ++this.tick;
    if (e.logits.length !== logits.length) e.logits = new Float32Array(logits.length);
    e.logits.set(logits);
    copyRow(this.model.be, this.pool, e.row, pool, slot);
    return e;
  }

  load(e: CacheEntry, pool: ModelState, slot: number): void {
    copyRow(this.model.be, pool, slot, this.pool!, e.row);
  }
  get size(): number { return this.entries.length; }
}

/** Decode batch sizes the engine runs: 1, 2, 4, 8, then multiples of 8, and maxSeqs. */
export function decodeBuckets(maxSeqs: number): number[] {
  const b: number[] = [];
  for (const x of [1, 2, 4, 8]) if (x < maxSeqs) b.push(x);
  for (let x = 16; x < maxSeqs; x += 8) b.push(x);
  b.push(maxSeqs);
  return b;
}

/** Copy one sequence's recurrent state (every layer's rows and its position) between pools. */
export function copyRow(be: Backend, dst: ModelState, dstSlot: number, src: ModelState, srcSlot: number): void {
  src.layers.forEach((s, l) => {
    const d = dst.layers[l]!;
    const per = s.size / src.batch / s.shape[s.shape.length - 1]!;
    be.copy(be.rows(d, dstSlot * per, per), be.rows(s, srcSlot * per, per));
  });
  dst.positions[dstSlot] = src.positions[srcSlot]!;
}

export class Engine {
  readonly maxSeqs: number;
  readonly maxQueue: number;
  readonly prefillChunk: number;
  readonly prefillBatch: number;
  readonly metrics: ServerMetrics;
  readonly pool: ModelState;
  private decoder: Decoder | null = null;
  private readonly cache: PrefixCache;
  private readonly freeSlotList: number[];
  private readonly waiting: Job[] = [];
  private readonly prefillQ: Job[] = [];
  private runningSeqs: Seq[] = [];
  private rr = 0;
  private loopScheduled = false;
  private inStep = false;
  private readonly deferredCancels: [Job, FinishReason][] = [];
  private draining = false;
  private idleWaiters: (() => void)[] = [];
  private avgRequestSeconds = 1;
  private readonly log: (line: string) => void;
  private readonly V: number;
  private readonly sampleV: number;
  private readonly buckets: number[];
  private readonly scratch: number[];

  constructor(readonly model: TnlModel, opts: EngineOptions = {}) {
    this.maxSeqs = opts.maxSeqs ?? 64;
    this.maxQueue = opts.maxQueue ?? 256;
    this.prefillChunk = opts.prefillChunk ?? 256;
    this.prefillBatch = opts.prefillBatch ?? 1;
    for (const [k, v, min] of [['maxSeqs', this.maxSeqs, 1], ['maxQueue', this.maxQueue, 0], ['prefillChunk', this.prefillChunk, 1], ['prefillBatch', this.prefillBatch, 1]] as const)
      if (!Number.isInteger(v) || v < min) throw new RangeError(`${k} must be an integer ≥ ${min}, got ${v}`);
    const cacheSize = opts.prefixCache ?? this.maxSeqs;
    if (!Number.isInteger(cacheSize) || cacheSize < 0) throw new RangeError(`prefixCache must be an integer ≥ 0, got ${cacheSize}`);
    this.V = model.config.vocab_size;
    this.sampleV = Math.min(this.V, opts.sampleVocab ?? this.V);
    if (!(Number.isInteger(this.sampleV) && this.sampleV >= 1)) throw new RangeError(`sampleVocab must be an integer ≥ 1, got ${opts.sampleVocab}`);
    const be = model.be as { poolLimitBytes?: number };
    const poolCap = opts.bufferPoolBytes ?? 512 * 1024 * 1024;
    if (typeof be.poolLimitBytes === 'number' && be.poolLimitBytes > poolCap) be.poolLimitBytes = poolCap;
    this.buckets = decodeBuckets(this.maxSeqs);
    let gap = 0;
    for (let i = 1; i < this.buckets.length; i++) gap = Math.max(gap, this.buckets[i]! - this.buckets[i - 1]! - 1);
    // rows maxSeqs … maxSeqs + gap − 1 are scratch: padding rows of a decode batch write there
    this.scratch = Array.from({ length: gap }, (_, i) => this.maxSeqs + i);
    this.pool = model.newState(this.maxSeqs + gap);
    this.cache = new PrefixCache(model, cacheSize);
    this.freeSlotList = Array.from({ length: this.maxSeqs }, (_, i) => this.maxSeqs - 1 - i);
    this.metrics = opts.metrics ?? new ServerMetrics(this);
    this.log = opts.log ?? ((line) => process.stderr.write(line + '\n'));
  }

  // ---- observation (metrics, tests) -------------------------------------------------------------
  queueDepth(): number { return this.waiting.length; }
  /** Sequences holding a slot (prefilling or decoding). */
  running(): number { return this.maxSeqs - this.freeSlotList.length; }
  prefilling(): number { return this.prefillQ.length; }
  decoding(): number { return this.runningSeqs.length; }
  freeSlots(): number { return this.freeSlotList.length; }
  slots(): number { return this.maxSeqs; }
  cacheEntries(): number { return this.cache.size; }
  get isDraining(): boolean { return this.draining; }
  /** Bytes of recurrent state: the slot pool plus the prefix cache pool (fixed at start). */
  stateBytes(): number {
    const bytes = (s: ModelState | null) => (s ? s.layers.reduce((a, t) => a + t.size * 4, 0) : 0);
    return bytes(this.pool) + bytes(this.cache.pool);
  }
  idle(): boolean { return this.waiting.length === 0 && this.prefillQ.length === 0 && this.runningSeqs.length === 0; }
  /** Resolves when no request is waiting or running. */
  whenIdle(): Promise<void> {
    if (this.idle()) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  // ---- requests ---------------------------------------------------------------------------------

  /** Queue a request. Throws OverloadedError (queue full), ShuttingDownError, or RangeError (bad request). */
  submit(req: EngineRequest): Job {
    return this.submitAll([req])[0]!;
  }

  /** Queue several requests (one HTTP request with several prompts): all or none. */
  submitAll(reqs: EngineRequest[]): Job[] {
    if (this.draining) throw new ShuttingDownError('the server is shutting down and accepts no new requests');
    let seqs = 0;
    for (const r of reqs) {
      if (!(Number.isInteger(r.n) && r.n >= 1)) throw new RangeError(`n must be an integer ≥ 1, got ${r.n}`);
      if (!(Number.isInteger(r.maxTokens) && r.maxTokens >= 1)) throw new RangeError(`maxTokens must be an integer ≥ 1, got ${r.maxTokens}`);
      if (r.promptIds.length === 0) throw new RangeError('the prompt is empty');
      for (const id of r.promptIds) if (!(Number.isInteger(id) && id >= 0 && id < this.V)) throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.V})`);
      seqs += r.n;
    }
    if (seqs > this.maxSeqs) throw new RangeError(`the request needs ${seqs} sequences; the server runs at most ${this.maxSeqs} at once`);
    if (this.waiting.length + reqs.length > this.maxQueue) {
      this.metrics.rejected.inc();
      throw new OverloadedError(`the server is busy: ${this.waiting.length} requests are already waiting (limit ${this.maxQueue}); retry later`, this.retryAfter());
    }
    const jobs = reqs.map((r) => new Job(this, r));
    this.waiting.push(...jobs);
    this.kick();
    return jobs;
  }

  /** Seconds a client should wait before retrying, from the recent request duration and the queue. */
  retryAfter(): number {
    const est = this.avgRequestSeconds * Math.max(1, this.waiting.length / this.maxSeqs);
    return Math.min(60, Math.max(1, Math.ceil(est)));
  }

  cancel(job: Job, reason: FinishReason = 'abort'): void {
    if (job.state === 'done') return;
    if (this.inStep) { if (!job.cancelRequested) { job.cancelRequested = reason; this.deferredCancels.push([job, reason]); } return; }
    this.doCancel(job, reason);
  }

  /** Stop accepting requests (submit throws ShuttingDownError); running and queued ones go on. */
  drain(): void { this.draining = true; }

  /** Cancel every queued and running request (finish reason "abort"). */
  cancelAll(reason: FinishReason = 'abort'): void {
    const jobs = new Set<Job>([...this.waiting, ...this.prefillQ, ...this.runningSeqs.map((s) => s.job)]);
    for (const j of jobs) this.cancel(j, reason);
  }

  // ---- the loop ---------------------------------------------------------------------------------

  private kick(): void {
    if (this.loopScheduled) return;
    this.loopScheduled = true;
    setImmediate(() => this.loop());
  }

  private loop(): void {
    this.loopScheduled = false;
    try {
      this.step();
    } catch (e) {
      // A bug in the engine itself: fail everything running, keep serving.
      this.log(`tnl serve: engine error: ${(e as Error).stack ?? e}`);
      this.failAll(e as Error);
    }
    if (!this.idle()) this.kick();
    else { const w = this.idleWaiters; this.idleWaiters = []; for (const r of w) r(); }
  }

  /** One iteration: admit, one prefill chunk, one decode step. */
  step(): void {
    const t0 = performance.now();
    this.inStep = true;
    try {
      this.admit();
      if (this.prefillQ.length) this.prefillOne();
      if (this.runningSeqs.length) this.decodeStep();
    } finally {
      this.inStep = false;
      while (this.deferredCancels.length) { const [j, r] = this.deferredCancels.shift()!; this.doCancel(j, r); }
    }
    this.metrics.step.observe((performance.now() - t0) / 1000);
  }

  private admit(): void {
    while (this.waiting.length && this.freeSlotList.length >= this.waiting[0]!.req.n) {
      const job = this.waiting.shift()!;
      if (job.cancelRequested) { this.doCancel(job, job.cancelRequested); continue; }
      job.slots = this.freeSlotList.splice(this.freeSlotList.length - job.req.n, job.req.n).reverse();
      job.state = 'prefill';
      const ids = job.ids, slot0 = job.slots[0]!;
      const hashes = prefixHashes(ids);
      job.hash = hashes[ids.length]!;
      const hit = this.cache.pool ? this.cache.lookup(ids, hashes) : null;
      this.metrics.promptTokens.inc(ids.length);
      if (hit) {
        this.cache.load(hit, this.pool, slot0);
        job.pos = hit.ids.length;
        job.cachedTokens = hit.ids.length;
        job.cacheEntry = hit;
        this.metrics.cachedPromptTokens.inc(hit.ids.length);
      } else {
        this.model.clearSlot(this.pool, slot0);
      }
      this.safe(job, () => job.req.onAdmit?.({ cachedTokens: job.cachedTokens }));
      if (job.state !== 'prefill') continue;
      if (job.pos === ids.length) this.startDecoding(job, Float32Array.from(hit!.logits));
      else this.prefillQ.push(job);
    }
  }

  /**
   * One prefill call: the request next in round-robin order takes up to prefillChunk tokens, and
   * (with prefillBatch > 1) the following requests with at least as many tokens left join the same
   * call with as many tokens each (a call runs B sequences of equal length).
   */
  private prefillOne(): void {
    const q = this.prefillQ;
    const i0 = this.rr % q.length;
    const first = q[i0]!;
    const left = first.ids.length - first.pos;
    // a full chunk, or the largest power of two that fits (few distinct shapes)
    const len = left >= this.prefillChunk ? this.prefillChunk : 2 ** Math.floor(Math.log2(left));
    const group: Job[] = [];
    for (let k = 0; k < q.length && group.length < this.prefillBatch; k++) {
      const j = q[(i0 + k) % q.length]!;
      if (!j.cancelRequested && j.ids.length - j.pos >= len) group.push(j);
    }
    if (group.length === 0) { this.rr = i0 + 1; return; }
    const B = group.length;
    const chunk = new Int32Array(B * len), slots = new Int32Array(B);
    group.forEach((j, b) => { chunk.set(j.ids.subarray(j.pos, j.pos + len), b * len); slots[b] = j.slots[0]!; });
    let logits: Float32Array | null = null;
    try {
      const t = this.model.prefill(chunk, B, len, this.pool, { slots });
      if (group.some((j) => j.pos + len === j.ids.length)) logits = this.model.be.download(t);
    } catch (e) {
      for (const j of group) this.failJob(j, e as Error);
      return;
    }
    // the round-robin pointer moves past the last request served
    const lastServed = q.indexOf(group[B - 1]!);
    let next = q[(lastServed + 1) % q.length]!;
    group.forEach((j, b) => {
      j.pos += len;
      if (j.pos < j.ids.length) return;
      q.splice(q.indexOf(j), 1);
      const row = logits!.subarray(b * this.V, (b + 1) * this.V);
      j.cacheEntry = this.cache.store(j.ids, j.hash, this.pool, j.slots[0]!, row, j.cacheEntry);
      this.startDecoding(j, row);
    });
    if (next.state !== 'prefill') next = q[0]!;
    this.rr = q.length ? Math.max(0, q.indexOf(next)) : 0;
  }

  /** The prompt is in slot 0: copy it to the siblings, sample each sequence's first token. */
  private startDecoding(job: Job, allLogits: Float32Array): void {
    const { req } = job;
    const logits = allLogits.subarray(0, this.sampleV);
    const slot0 = job.slots[0]!;
    for (let s = 1; s < job.slots.length; s++) copyRow(this.model.be, this.pool, job.slots[s]!, this.pool, slot0);
    job.state = 'running';
    const now = performance.now();
    const device = deviceSamplingApplies(this.model.be, { ...req.sampling, topLogprobs: req.topLogprobs ?? 0 });
    for (let s = 0; s < req.n; s++) {
      const seed = req.sampling.seed === undefined ? undefined : req.sampling.seed + s;
      const seq: Seq = {
        job, index: s, slot: job.slots[s]!, sampler: new Sampler({ ...req.sampling, seed }),
        tokens: [], pending: -1, lastAt: now, finished: false, row: logits,
        device: device ? { temperature: req.sampling.temperature ?? 1, seed: seed ?? (Math.random() * 2 ** 32) | 0 } : null,
      };
      job.seqs.push(seq);
    }
    for (const seq of job.seqs) {
      if (seq.finished) continue;
      const s = this.sampleSeq(seq, logits);
      if (!s) continue;
      this.accept(seq, s, logits);
      if (!seq.finished) this.runningSeqs.push(seq);
    }
  }

  private decodeStep(): void {
    const seqs = this.runningSeqs;
    const B = seqs.length, V = this.V;
    const Bp = this.buckets.find((b) => b >= B) ?? B;
    const ids = new Int32Array(Bp), slots = new Int32Array(Bp);
    for (let b = 0; b < B; b++) { ids[b] = seqs[b]!.pending; slots[b] = seqs[b]!.slot; }
    for (let b = B; b < Bp; b++) slots[b] = this.scratch[b - B]!; // padding rows (token 0)
    // every sequence's tokens picked inside the step where all of them allow it: only the picks come
    // to the host, not B rows of logits, and no row is sampled in JavaScript
    const device = seqs.every((s) => s.device);
    let logits: Float32Array | null = null, picks: { ids: Int32Array; logprobs: Float32Array } | null = null;
    try {
      this.decoder ??= new Decoder(this.model, this.pool);
      if (device) {
        const temperatures = new Float32Array(Bp), seeds = new Int32Array(Bp);
        for (let b = 0; b < B; b++) { temperatures[b] = seqs[b]!.device!.temperature; seeds[b] = seqs[b]!.device!.seed; }
        picks = this.decoder.stepPicks(ids, slots, { temperatures, seeds, columns: this.sampleV });
      } else logits = this.decoder.stepToHost(ids, slots);
    } catch (e) {
      this.log(`tnl serve: decode step failed: ${(e as Error).message}`);
      for (const job of new Set(seqs.map((s) => s.job))) this.failJob(job, e as Error);
      return;
    }
    const decoder = this.decoder, step = decoder.stepCount;
    for (let b = 0; b < B; b++) {
      const seq = seqs[b]!;
      if (seq.finished || seq.job.cancelRequested) continue;
      if (picks) {
        this.accept(seq, { id: picks.ids[b]!, logprob: picks.logprobs[b]! }, () => decoder.logitsRow(b, step)?.subarray(0, this.sampleV) ?? null);
        continue;
      }
      const row = logits!.subarray(b * V, b * V + this.sampleV);
      const s = this.sampleSeq(seq, row);
      if (s) this.accept(seq, s, row);
    }
    this.runningSeqs = this.runningSeqs.filter((s) => !s.finished);
  }

  private sampleSeq(seq: Seq, row: Float32Array): Sampled | null {
    const { req } = seq.job;
    try {
      return seq.sampler.sample(row, req.topLogprobs ?? 0, !!req.logprobs || (req.topLogprobs ?? 0) > 0);
    } catch (e) {
      this.failJob(seq.job, e as Error);
      return null;
    }
  }

  /** A sampled token: eos ends the sequence; otherwise emit it and check the limits. */
  private accept(seq: Seq, s: Sampled, row: Seq['row']): void {
    const job = seq.job, req = job.req;
    const now = performance.now();
    seq.row = row;
    if (req.stopIds.includes(s.id)) { this.finishSeq(seq, 'stop', undefined, true); return; }
    const index = seq.tokens.length;
    seq.tokens.push(s.id);
    this.metrics.generatedTokens.inc();
    this.metrics.tokenRate.add(1);
    if (index === 0) this.metrics.ttft.observe((now - job.arrival) / 1000);
    else this.metrics.itl.observe((now - seq.lastAt) / 1000);
    seq.lastAt = now;
    let stop: boolean | void = false;
    try {
      stop = req.onToken(seq.index, { ...s, index });
    } catch (e) {
      this.failJob(job, e as Error);
      return;
    }
    if (seq.finished) return;
    if (stop) this.finishSeq(seq, 'stop');
    else if (seq.tokens.length >= req.maxTokens) this.finishSeq(seq, 'length', undefined, true);
    else seq.pending = s.id;
  }

  private finishSeq(seq: Seq, reason: FinishReason, error?: Error, cacheable = false): void {
    if (seq.finished) return;
    seq.finished = true;
    const job = seq.job;
    // Keep the state after prompt + generated text: a following chat turn starts with it.
    const row = typeof seq.row === 'function' ? (cacheable ? seq.row() : null) : seq.row;
    if (cacheable && row && this.cache.pool) {
      const ids = job.ids;
      const fed = reason === 'length' ? seq.tokens.length - 1 : seq.tokens.length;
      if (fed > 0) {
        const key = new Int32Array(ids.length + fed);
        key.set(ids);
        for (let i = 0; i < fed; i++) key[ids.length + i] = seq.tokens[i]!;
        this.cache.store(key, prefixHashes(key)[key.length]!, this.pool, seq.slot, row, null);
      }
    }
    seq.row = null;
    this.freeSlotList.push(seq.slot);
    this.metrics.finished.inc(1, { reason });
    this.safe(job, () => job.req.onFinish(seq.index, reason, error));
    if (++job.finishedCount === job.req.n) this.jobDone(job);
  }

  private jobDone(job: Job): void {
    job.state = 'done';
    const secs = (performance.now() - job.arrival) / 1000;
    this.metrics.e2e.observe(secs);
    this.avgRequestSeconds = 0.9 * this.avgRequestSeconds + 0.1 * secs;
    job.resolveDone();
  }

  private doCancel(job: Job, reason: FinishReason, error?: Error): void {
    if (job.state === 'done') return;
    if (job.state === 'waiting') {
      const i = this.waiting.indexOf(job);
      if (i >= 0) this.waiting.splice(i, 1);
    } else if (job.state === 'prefill') {
      const i = this.prefillQ.indexOf(job);
      if (i >= 0) { this.prefillQ.splice(i, 1); if (this.rr > i) this.rr--; }
    }
    if (job.state === 'waiting' || job.state === 'prefill') {
      // no sequences yet: free the slots (if any) and report every sequence
      this.freeSlotList.push(...job.slots);
      job.slots = [];
      job.state = 'done';
      for (let s = 0; s < job.req.n; s++) {
        this.metrics.finished.inc(1, { reason });
        this.safe(null, () => job.req.onFinish(s, reason, error));
      }
      this.jobDone(job);
      return;
    }
    for (const seq of job.seqs) this.finishSeq(seq, reason, error);
    this.runningSeqs = this.runningSeqs.filter((s) => !s.finished);
  }

  /** End a request with an error now (its slots must not be used again in this step). */
  private failJob(job: Job, e: Error): void {
    this.log(`tnl serve: request failed: ${e.message}`);
    this.doCancel(job, 'error', e);
  }

  private failAll(e: Error): void {
    const jobs = new Set<Job>([...this.prefillQ, ...this.runningSeqs.map((s) => s.job)]);
    this.inStep = false;
    for (const j of jobs) this.doCancel(j, 'error', e);
  }

  /** Run a caller's callback; a throw cancels that request (never the loop). */
  private safe(job: Job | null, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.log(`tnl serve: callback error: ${(e as Error).message}`);
      if (job && job.state !== 'done') this.deferredCancels.push([job, 'error']);
    }
  }
}
