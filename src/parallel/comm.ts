// Collective communication for model parallelism: one interface, two implementations.
//
//  - InProcessCommunicator (this file): n worker_threads of one process, each a rank running the
//    same SPMD code; collectives go through one SharedArrayBuffer and Atomics, synchronously from
//    the rank's point of view (as an NCCL call enqueued on the compute stream is, for the code
//    that follows it). It works on host tensors (reference and cpu backends) and is what the
//    sharding logic is unit-tested with in CI.
//  - NcclCommunicator (nccl.ts): NCCL through koffi, one process per GPU, on device tensors.
//
// Semantics (the same for both, and the ones NCCL defines):
//  - allReduce(t, op): every rank's t ← op over ranks of t (in place). Sums are taken in rank
//    order, so every rank gets bit-identical results.
//  - reduceScatter(out, inp): inp holds size·n values; rank r receives Σ_ranks inp[r·n … r·n+n).
//  - allGather(out, inp): out (size·n values) ← the ranks' inp, concatenated in rank order.
//  - broadcast(t, root): every rank's t ← root's t.
//  - allReduceHost(x, op): the same on a small host Float64Array (loss sums, norms, row
//    statistics); NCCL stages it through device memory.
//  - split(color, key): MPI/NCCL-style sub-communicators (collective over this communicator):
//    ranks with the same color form a group, ordered by key then by rank.
// A failing rank ends every rank: the in-process version records the first error in shared memory
// and every other rank, waiting or entering a collective, throws CommAbortedError naming the
// failing rank and its message (no hang); a collective that waits longer than the timeout aborts
// everyone too.
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { Tensor } from '../backends/backend.ts';
import { HostTensor } from '../backends/host.ts';
import { ShapeError, TnlError } from '../errors.ts';

export type ReduceOp = 'sum' | 'max';

export interface Communicator {
  readonly rank: number;
  readonly size: number;
  /** A short name for messages ("world", "tp", "dp", "nccl" …). */
  readonly name: string;
  allReduce(t: Tensor, op?: ReduceOp): void;
  reduceScatter(out: Tensor, inp: Tensor): void;
  allGather(out: Tensor, inp: Tensor): void;
  broadcast(t: Tensor, root: number): void;
  /** Small host values (statistics, loss sums): reduced in float64, in place. */
  allReduceHost(x: Float64Array, op?: ReduceOp): void;
  barrier(): void;
  split(color: number, key: number, name?: string): Communicator;
}

/** A collective failed: a peer rank failed, timed out, or left while this rank waited for it. */
export class CommError extends TnlError {}
/** Another rank failed: its rank and message are in this error's message. */
export class CommAbortedError extends CommError {
  constructor(readonly failedRank: number, readonly original: string) {
    super(`rank ${failedRank} failed: ${original}`);
  }
}

// ---- the grid ---------------------------------------------------------------------------------

/** The communicators of a T×D grid: world rank = d·T + t (the TP ranks of a replica are adjacent). */
export interface Grid {
  world: Communicator;
  tp: Communicator;
  dp: Communicator;
  T: number;
  D: number;
}
export function makeGrid(world: Communicator, T: number): Grid {
  if (!Number.isInteger(T) || T < 1 || world.size % T !== 0)
    throw new ShapeError(`tensor-parallel size ${T} does not divide the ${world.size} ranks`);
  const D = world.size / T;
  const t = world.rank % T, d = Math.floor(world.rank / T);
  const tp = T === 1 ? selfComm(world.rank, 'tp') : world.split(d, t, 'tp');
  const dp = D === 1 ? selfComm(world.rank, 'dp') : world.split(t, d, 'dp');
  return { world, tp, dp, T, D };
}

// ---- a communicator of one rank ----------------------------------------------------------------

/** The trivial communicator of size 1 (collectives copy or do nothing); works on any backend. */
export function selfComm(worldRank = 0, name = 'self'): Communicator {
  const c: Communicator = {
    rank: 0, size: 1, name: `${name}(rank ${worldRank})`,
    allReduce() { /* nothing to reduce */ },
    reduceScatter(out, inp) { sameSize(out, inp, 1, 'reduceScatter'); copyHost(out, inp); },
    allGather(out, inp) { sameSize(inp, out, 1, 'allGather'); copyHost(out, inp); },
    broadcast() { /* root is this rank */ },
    allReduceHost() { /* nothing */ },
    barrier() { /* nothing */ },
    split: () => c,
  };
  return c;
}
function copyHost(out: Tensor, inp: Tensor): void {
  if (out === inp) return;
  if (!(out instanceof HostTensor) || !(inp instanceof HostTensor) || out.dtype !== inp.dtype)
    throw new ShapeError('selfComm: copies between host tensors of one dtype only (use backend.copy for device tensors)');
  out.data.set(inp.data);
}
function sameSize(small: Tensor, big: Tensor, n: number, what: string): void {
  if (big.size !== small.size * n)
    throw new ShapeError(`${what}: the large buffer has ${big.size} elements, expected ${n} × ${small.size}`);
}

// ---- shared memory layout ------------------------------------------------------------------------
//
// ctrl (Int32Array):
//   [0] abort: 0, or failing rank + 1       [1] registry lock       [2] groups registered
//   [3] error message length (bytes)         [4] first-failure claim
//   [8 .. 8+n) rank status: 0 running, 1 done, 2 failed
//   [GROUPS + 4g ..]: group g: member mask (low 31 ranks, high ranks), arrival count, generation
// then the error message (UTF-8), then one data slot per rank.

const ABORT = 0, LOCK = 1, NGROUPS = 2, ERRLEN = 3, CLAIM = 4, STATUS = 8;
const MAX_RANKS = 62;
const MAX_GROUPS = 256;
const GROUPS = STATUS + 64;
const CTRL_INTS = GROUPS + 4 * MAX_GROUPS;
const ERR_BYTES = 4096;
const WAIT_SLICE_MS = 20;

export interface SharedWorldInit {
  sab: SharedArrayBuffer;
  size: number;
  slotBytes: number;
  timeoutMs: number;
}

/** Shared memory for an in-process world of `size` ranks; each rank's slot holds `slotBytes`. */
export function createSharedWorld(size: number, opts: { slotBytes?: number; timeoutMs?: number } = {}): SharedWorldInit {
  if (!Number.isInteger(size) || size < 1 || size > MAX_RANKS) throw new ShapeError(`world size must be 1…${MAX_RANKS}, got ${size}`);
  const slotBytes = Math.max(64, Math.ceil((opts.slotBytes ?? 1 << 20) / 64) * 64);
  const header = CTRL_INTS * 4 + ERR_BYTES;
  const sab = new SharedArrayBuffer(Math.ceil(header / 64) * 64 + size * slotBytes);
  return { sab, size, slotBytes, timeoutMs: opts.timeoutMs ?? 120_000 };
}

type F32orF64 = Float32Array | Float64Array;

class SharedWorld {
  readonly ctrl: Int32Array;
  readonly err: Uint8Array;
  readonly dataBase: number;
  constructor(readonly init: SharedWorldInit) {
    this.ctrl = new Int32Array(init.sab, 0, CTRL_INTS);
    this.err = new Uint8Array(init.sab, CTRL_INTS * 4, ERR_BYTES);
    this.dataBase = Math.ceil((CTRL_INTS * 4 + ERR_BYTES) / 64) * 64;
  }
  slotF32(rank: number): Float32Array { return new Float32Array(this.init.sab, this.dataBase + rank * this.init.slotBytes, this.init.slotBytes / 4); }
  slotF64(rank: number): Float64Array { return new Float64Array(this.init.sab, this.dataBase + rank * this.init.slotBytes, this.init.slotBytes / 8); }
  slotU16(rank: number): Uint16Array { return new Uint16Array(this.init.sab, this.dataBase + rank * this.init.slotBytes, this.init.slotBytes / 2); }

  /** Record the first failure and wake every waiter. Returns false if another rank failed first. */
  abort(rank: number, message: string): boolean {
    const won = Atomics.compareExchange(this.ctrl, CLAIM, 0, rank + 1) === 0;
    if (won) {
      const bytes = new TextEncoder().encode(message).subarray(0, ERR_BYTES);
      this.err.set(bytes);
      Atomics.store(this.ctrl, ERRLEN, bytes.length);
      Atomics.store(this.ctrl, ABORT, rank + 1); // published after the message is in place
    }
    const n = Atomics.load(this.ctrl, NGROUPS);
    for (let g = 0; g < n; g++) Atomics.notify(this.ctrl, GROUPS + 4 * g + 3);
    return won;
  }
  aborted(): { rank: number; message: string } | null {
    const a = Atomics.load(this.ctrl, ABORT);
    if (a === 0) return null;
    const len = Atomics.load(this.ctrl, ERRLEN);
    return { rank: a - 1, message: new TextDecoder().decode(this.err.slice(0, len)) || '(no message)' };
  }
  setStatus(rank: number, s: 0 | 1 | 2): void { Atomics.store(this.ctrl, STATUS + rank, s); }
  status(rank: number): number { return Atomics.load(this.ctrl, STATUS + rank); }

  /** The group slot of a member set (registered on first use, by whichever member comes first). */
  groupSlot(members: readonly number[]): number {
    let lo = 0, hi = 0;
    for (const m of members) { if (m < 31) lo |= 1 << m; else hi |= 1 << (m - 31); }
    const c = this.ctrl;
    while (Atomics.compareExchange(c, LOCK, 0, 1) !== 0) Atomics.wait(c, LOCK, 1, 1);
    try {
      const n = Atomics.load(c, NGROUPS);
      for (let g = 0; g < n; g++) if (c[GROUPS + 4 * g] === lo && c[GROUPS + 4 * g + 1] === hi) return g;
      if (n >= MAX_GROUPS) throw new CommError(`more than ${MAX_GROUPS} communicator groups`);
      c[GROUPS + 4 * n] = lo; c[GROUPS + 4 * n + 1] = hi;
      Atomics.store(c, GROUPS + 4 * n + 2, 0); Atomics.store(c, GROUPS + 4 * n + 3, 0);
      Atomics.store(c, NGROUPS, n + 1);
      return n;
    } finally {
      Atomics.store(c, LOCK, 0);
      Atomics.notify(c, LOCK);
    }
  }
}

/**
 * One rank's view of an in-process world (or of a sub-group of it). Every collective is two
 * barriers around a copy: each rank writes its contribution into its own slot, waits until every
 * member has written, reads what it needs from the members' slots, and waits again before the
 * slots may be reused. Data larger than a slot goes in chunks.
 */
export class InProcessCommunicator implements Communicator {
  readonly rank: number;
  readonly size: number;
  private readonly w: SharedWorld;
  private readonly g: number;
  /** Collectives so far (for timeout messages). */
  private calls = 0;

  /** `members`: world ranks of this group in group-rank order; `worldRank`: this thread's rank. */
  constructor(init: SharedWorldInit | SharedWorld, readonly worldRank: number, readonly members: readonly number[], readonly name = 'world') {
    this.w = init instanceof SharedWorld ? init : new SharedWorld(init);
    const r = members.indexOf(worldRank);
    if (r < 0) throw new CommError(`rank ${worldRank} is not a member of group [${members.join(', ')}]`);
    this.rank = r;
    this.size = members.length;
    this.g = this.w.groupSlot(members);
  }

  static world(init: SharedWorldInit, rank: number): InProcessCommunicator {
    return new InProcessCommunicator(init, rank, Array.from({ length: init.size }, (_, i) => i), 'world');
  }

  /** Mark this rank finished (1) or failed (2, with the error broadcast to every rank). */
  finish(error: unknown | null): void {
    if (error === null) { this.w.setStatus(this.worldRank, 1); return; }
    if (!(error instanceof CommAbortedError)) this.w.abort(this.worldRank, errorMessage(error));
    this.w.setStatus(this.worldRank, 2);
  }

  /** Throws CommAbortedError when some rank has failed. */
  checkAbort(): void {
    const a = this.w.aborted();
    if (a) throw new CommAbortedError(a.rank, a.message);
  }

  barrier(): void {
    this.calls++;
    const c = this.w.ctrl, cnt = GROUPS + 4 * this.g + 2, gen = GROUPS + 4 * this.g + 3;
    this.checkAbort();
    if (this.size === 1) return;
    const g0 = Atomics.load(c, gen);
    if (Atomics.add(c, cnt, 1) === this.size - 1) {
      Atomics.store(c, cnt, 0);
      Atomics.add(c, gen, 1);
      Atomics.notify(c, gen);
      return;
    }
    const t0 = Date.now();
    while (Atomics.load(c, gen) === g0) {
      this.checkAbort();
      for (const m of this.members) {
        if (m === this.worldRank || this.w.status(m) === 0) continue;
        if (Atomics.load(c, gen) !== g0) return; // it passed the barrier before it ended
        const msg = `${this.name}: rank ${m} ended while rank ${this.worldRank} waits for it in collective #${this.calls}`;
        this.w.abort(this.worldRank, msg);
        this.checkAbort();
      }
      if (Date.now() - t0 > this.w.init.timeoutMs) {
        this.w.abort(this.worldRank, `${this.name}: collective #${this.calls} timed out after ${this.w.init.timeoutMs} ms on rank ${this.worldRank} (members [${this.members.join(', ')}])`);
        this.checkAbort();
      }
      Atomics.wait(c, gen, g0, WAIT_SLICE_MS);
    }
  }

  // ---- on plain arrays (the tensor methods call these) -------------------------------------------

  allReduceArray(x: F32orF64, op: ReduceOp = 'sum'): void {
    if (this.size === 1) { this.checkAbort(); return; }
    const is64 = x instanceof Float64Array;
    const cap = this.w.init.slotBytes / (is64 ? 8 : 4);
    const slots = this.members.map((m) => (is64 ? this.w.slotF64(m) : this.w.slotF32(m)));
    const mine = slots[this.rank]!;
    for (let o = 0; o < x.length; o += cap) {
      const n = Math.min(cap, x.length - o);
      mine.set(x.subarray(o, o + n));
      this.barrier();
      if (op === 'sum') {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (const sl of slots) s += sl[j]!;
          x[o + j] = s;
        }
      } else {
        for (let j = 0; j < n; j++) {
          let s = -Infinity;
          for (const sl of slots) s = Math.max(s, sl[j]!);
          x[o + j] = s;
        }
      }
      this.barrier();
    }
  }

  /** out[j] = Σ_ranks inp[rank·out.length + j]. */
  reduceScatterArray(out: Float32Array, inp: Float32Array): void {
    const n = out.length, P = this.size;
    if (inp.length !== n * P) throw new ShapeError(`${this.name} reduceScatter: input has ${inp.length} values, expected ${P} × ${n}`);
    if (P === 1) { this.checkAbort(); out.set(inp); return; }
    const cap = Math.floor(this.w.init.slotBytes / 4 / P);
    const slots = this.members.map((m) => this.w.slotF32(m));
    const mine = slots[this.rank]!;
    for (let o = 0; o < n; o += cap) {
      const c = Math.min(cap, n - o);
      for (let k = 0; k < P; k++) mine.set(inp.subarray(k * n + o, k * n + o + c), k * c);
      this.barrier();
      const base = this.rank * c;
      for (let j = 0; j < c; j++) {
        let s = 0;
        for (const sl of slots) s += sl[base + j]!;
        out[o + j] = s;
      }
      this.barrier();
    }
  }

  /** out = concat over ranks of inp (f32 values or raw 16-bit words). */
  allGatherArray(out: Float32Array | Uint16Array, inp: Float32Array | Uint16Array): void {
    const n = inp.length, P = this.size;
    if (out.length !== n * P) throw new ShapeError(`${this.name} allGather: output has ${out.length} values, expected ${P} × ${n}`);
    if (P === 1) { this.checkAbort(); out.set(inp); return; }
    const u16 = inp instanceof Uint16Array;
    const cap = this.w.init.slotBytes / (u16 ? 2 : 4);
    const slots = this.members.map((m) => (u16 ? this.w.slotU16(m) : this.w.slotF32(m)));
    const mine = slots[this.rank]!;
    for (let o = 0; o < n; o += cap) {
      const c = Math.min(cap, n - o);
      mine.set(inp.subarray(o, o + c));
      this.barrier();
      slots.forEach((sl, k) => out.set(sl.subarray(0, c), k * n + o));
      this.barrier();
    }
  }

  broadcastArray(x: Float32Array | Uint16Array | Float64Array, root: number): void {
    if (root < 0 || root >= this.size) throw new ShapeError(`${this.name} broadcast: root ${root} outside [0, ${this.size})`);
    if (this.size === 1) { this.checkAbort(); return; }
    const slot = x instanceof Uint16Array ? this.w.slotU16(this.members[root]!) : x instanceof Float64Array ? this.w.slotF64(this.members[root]!) : this.w.slotF32(this.members[root]!);
    const cap = slot.length;
    for (let o = 0; o < x.length; o += cap) {
      const c = Math.min(cap, x.length - o);
      if (this.rank === root) slot.set(x.subarray(o, o + c));
      this.barrier();
      if (this.rank !== root) x.set(slot.subarray(0, c), o);
      this.barrier();
    }
  }

  // ---- the Communicator interface, on host tensors ------------------------------------------------

  allReduce(t: Tensor, op: ReduceOp = 'sum'): void {
    this.allReduceArray(hostF32(t, 'allReduce'), op);
  }
  reduceScatter(out: Tensor, inp: Tensor): void {
    this.reduceScatterArray(hostF32(out, 'reduceScatter'), hostF32(inp, 'reduceScatter'));
  }
  allGather(out: Tensor, inp: Tensor): void {
    const o = hostData(out, 'allGather'), i = hostData(inp, 'allGather');
    if (o.constructor !== i.constructor) throw new ShapeError(`${this.name} allGather: dtypes differ (${out.dtype} vs ${inp.dtype})`);
    this.allGatherArray(o, i);
  }
  broadcast(t: Tensor, root: number): void {
    this.broadcastArray(hostData(t, 'broadcast'), root);
  }
  allReduceHost(x: Float64Array, op: ReduceOp = 'sum'): void {
    this.allReduceArray(x, op);
  }

  split(color: number, key: number, name = `${this.name}/${color}`): InProcessCommunicator {
    // every member learns every (color, key) pair: one small all-gather
    const mine = new Float32Array([color, key]);
    const all = new Float32Array(2 * this.size);
    this.allGatherArray(all, mine);
    if (Math.fround(color) !== color || Math.fround(key) !== key) throw new ShapeError('split: color and key must be integers below 2^24');
    const group: { key: number; world: number }[] = [];
    for (let r = 0; r < this.size; r++) if (all[2 * r] === color) group.push({ key: all[2 * r + 1]!, world: this.members[r]! });
    group.sort((a, b) => a.key - b.key || a.world - b.world);
    return new InProcessCommunicator(this.w, this.worldRank, group.map((g) => g.world), name);
  }
}

function hostData(t: Tensor, what: string): Float32Array | Uint16Array {
  if (!(t instanceof HostTensor)) throw new ShapeError(`in-process ${what}: needs a host tensor (reference or cpu backend)`);
  return t.data;
}
function hostF32(t: Tensor, what: string): Float32Array {
  const d = hostData(t, what);
  if (!(d instanceof Float32Array)) throw new ShapeError(`in-process ${what}: reductions need f32 tensors, got ${t.dtype}`);
  return d;
}
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---- running n ranks as worker threads -------------------------------------------------------------

/** What a rank module exports: the SPMD body, called once per rank with its world communicator. */
export type RankMain<A, R> = (comm: InProcessCommunicator, args: A) => R | Promise<R>;

export type RankOutcome<R> = { ok: true; value: R } | { ok: false; error: string; stack?: string };

/** Some rank failed: `rank` is the first to fail and `message` its error; `outcomes` has every rank's end. */
export class RankError extends TnlError {
  constructor(readonly rank: number, readonly original: string, readonly outcomes: RankOutcome<unknown>[], readonly stack0?: string) {
    super(`rank ${rank}: ${original}`);
  }
}

export interface RunRanksOptions {
  /** Bytes of each rank's shared slot (collectives larger than it go in chunks). Default 1 MiB. */
  slotBytes?: number;
  /** A collective waiting longer than this aborts every rank (default 120 s). */
  timeoutMs?: number;
  /** After a failure, ranks still running this long later are terminated (default 5 s). */
  graceMs?: number;
  /** Environment for the workers (default: a copy of process.env). */
  env?: Record<string, string>;
}

const BOOT = fileURLToPath(new URL('./rank-worker.mjs', import.meta.url));

/**
 * Run `n` ranks as worker threads. The module at `moduleUrl` must export
 * `rankMain(comm, args)`; each rank calls it with its world communicator and returns a
 * structured-cloneable value. Resolves to the values in rank order; if any rank throws, every rank
 * ends (the others with CommAbortedError naming it) and this rejects with a RankError carrying the
 * first failing rank's message.
 */
export function runRanks<A, R>(n: number, moduleUrl: URL | string, args: A, opts: RunRanksOptions = {}): Promise<R[]> {
  const init = createSharedWorld(n, opts);
  const world = new SharedWorld(init);
  const graceMs = opts.graceMs ?? 5000;
  const url = typeof moduleUrl === 'string' ? moduleUrl : moduleUrl.href;
  return new Promise((resolve, reject) => {
    const outcomes: (RankOutcome<R> | undefined)[] = new Array(n);
    const workers: Worker[] = [];
    let left = n, killTimer: NodeJS.Timeout | null = null;
    const done = (r: number, o: RankOutcome<R>) => {
      if (outcomes[r]) return;
      outcomes[r] = o;
      if (!o.ok) {
        world.abort(r, o.error); // no-op when an earlier failure is recorded
        world.setStatus(r, 2);
        if (!killTimer) killTimer = setTimeout(() => {
          workers.forEach((w, i) => { if (!outcomes[i]) { done(i, { ok: false, error: `terminated ${graceMs} ms after rank ${world.aborted()?.rank} failed` }); void w.terminate(); } });
        }, graceMs);
      } else world.setStatus(r, 1);
      if (--left === 0) {
        if (killTimer) clearTimeout(killTimer);
        const a = world.aborted();
        if (!a) { resolve(outcomes.map((x) => (x as { value: R }).value)); return; }
        const first = outcomes[a.rank];
        reject(new RankError(a.rank, a.message, outcomes as RankOutcome<unknown>[], first && !first.ok ? first.stack : undefined));
      }
    };
    for (let r = 0; r < n; r++) {
      const w = new Worker(BOOT, { workerData: { init, rank: r, url, args }, env: opts.env ?? { ...process.env } as Record<string, string> });
      workers.push(w);
      w.on('message', (m: RankOutcome<R>) => done(r, m));
      w.on('error', (e) => done(r, { ok: false, error: errorMessage(e), stack: (e as Error).stack }));
      w.on('exit', (code) => { if (!outcomes[r]) done(r, { ok: false, error: `worker exited with code ${code} before reporting` }); });
    }
  });
}
