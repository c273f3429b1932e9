// NCCL through koffi: the Communicator of comm.ts for one process per GPU. Collectives are enqueued
// on the backend's compute stream, so they are ordered with the kernels around them exactly as
// the in-process communicator's synchronous calls are (the model code is the same for both).
//
// Setup: rank 0 calls NcclCommunicator.uniqueId() (128 opaque bytes naming its bootstrap socket),
// the launcher (launch.ts) passes them to every rank, and each calls NcclCommunicator.init(rank,
// size, id, device). Sub-groups (the TP and DP axes of a grid) come from split(), i.e.
// ncclCommSplit (NCCL ≥ 2.18).
//
// Status: exercised on one H100 with NCCL 2.28.3 by test/parallel/nccl.test.ts (a communicator of
// size 1: every call, argument marshalling, bf16, f64 staging, split, the error path, and the id
// carried by the launcher); it skips where libnccl.so.2 or a GPU is missing. Runs of 2–8 ranks
// (real reductions between GPUs) need a machine of several GPUs, not lent so far.
// Where libnccl.so.2 (or koffi) is absent, ncclAvailable() says so and init() throws NcclError
// with that reason; nothing fails at import time.
import { createRequire } from 'node:module';
import type { DType, Tensor } from '../backends/backend.ts';
import { ShapeError } from '../errors.ts';
import { CommError, type Communicator, type ReduceOp } from './comm.ts';

/** An NCCL call failed, or NCCL cannot be loaded. */
export class NcclError extends CommError {}

// Values from nccl.h (stable since NCCL 2.0; bf16 since 2.10).
export const NCCL_UNIQUE_ID_BYTES = 128;
export const NCCL_DTYPE = { int8: 0, uint8: 1, int32: 2, uint32: 3, int64: 4, uint64: 5, float16: 6, float32: 7, float64: 8, bfloat16: 9 } as const;
export const NCCL_OP = { sum: 0, prod: 1, max: 2, min: 3, avg: 4 } as const;
export const NCCL_RESULT = ['ncclSuccess', 'ncclUnhandledCudaError', 'ncclSystemError', 'ncclInternalError', 'ncclInvalidArgument', 'ncclInvalidUsage', 'ncclRemoteError', 'ncclInProgress'];

/** What the CUDA backend provides to the communicator: device addresses, its stream, and staging. */
export interface NcclDevice {
  /** Device address of a tensor's first element. */
  pointer(t: Tensor): number | bigint;
  /** The stream collectives are enqueued on (the backend's compute stream; 0 = legacy default). */
  readonly stream: number | bigint;
  /** A device buffer of at least `bytes` bytes, owned by the device (reused between calls). */
  scratch(bytes: number): number | bigint;
  /** Host → device and device → host copies on `stream`; toHost returns once the data is there. */
  toDevice(dst: number | bigint, src: ArrayBufferView): void;
  toHost(dst: ArrayBufferView, src: number | bigint): void;
  /** Wait until everything enqueued on `stream` has run. */
  synchronize(): void;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;
interface NcclLib { f: Record<string, Fn>; version: number; path: string }

const FUNCS: [string, string, string[], boolean?][] = [
  ['ncclGetVersion', 'int', ['void *']],
  ['ncclGetUniqueId', 'int', ['void *']],
  ['ncclCommInitRank', 'int', ['void *', 'int', 'ncclUniqueId', 'int']],
  ['ncclCommDestroy', 'int', ['uint64_t']],
  ['ncclCommAbort', 'int', ['uint64_t']],
  ['ncclCommGetAsyncError', 'int', ['uint64_t', 'void *']],
  ['ncclGetErrorString', 'const char *', ['int']],
  ['ncclAllReduce', 'int', ['uint64_t', 'uint64_t', 'size_t', 'int', 'int', 'uint64_t', 'uint64_t']],
  ['ncclReduceScatter', 'int', ['uint64_t', 'uint64_t', 'size_t', 'int', 'int', 'uint64_t', 'uint64_t']],
  ['ncclAllGather', 'int', ['uint64_t', 'uint64_t', 'size_t', 'int', 'uint64_t', 'uint64_t']],
  ['ncclBroadcast', 'int', ['uint64_t', 'uint64_t', 'size_t', 'int', 'int', 'uint64_t', 'uint64_t']],
  ['ncclGroupStart', 'int', []],
  ['ncclGroupEnd', 'int', []],
  ['ncclCommUserRank', 'int', ['uint64_t', 'void *']],
  ['ncclCommCount', 'int', ['uint64_t', 'void *']],
  // newer than 2.0: bound when present
  ['ncclCommSplit', 'int', ['uint64_t', 'int', 'int', 'void *', 'void *'], true],
  ['ncclGetLastError', 'const char *', ['uint64_t'], true],
];

let lib: NcclLib | null = null;
let loadError: string | null = null;

/** The sonames tried, in order: TNL_NCCL (a path or name) first. */
export function ncclSonames(env: NodeJS.ProcessEnv = process.env): string[] {
  return env.TNL_NCCL ? [env.TNL_NCCL, 'libnccl.so.2', 'libnccl.so'] : ['libnccl.so.2', 'libnccl.so'];
}

function loadNccl(): NcclLib | null {
  if (lib || loadError) return lib;
  let koffi: { load: (p: string) => { func: (n: string, r: string, a: string[]) => Fn }; struct: Fn; array: Fn; default?: unknown };
  try {
    const m = createRequire(import.meta.url)('koffi');
    koffi = (m.default ?? m) as typeof koffi;
  } catch (e) { loadError = `koffi could not be loaded (${(e as Error).message})`; return null; }
  const errs: string[] = [];
  for (const name of ncclSonames()) {
    let handle;
    try { handle = koffi.load(name); } catch (e) { errs.push(`${name}: ${(e as Error).message.split('\n')[0]}`); continue; }
    try {
      // ncclUniqueId is passed by value in ncclCommInitRank: a struct of 128 bytes
      try { koffi.struct('ncclUniqueId', { internal: koffi.array('uint8_t', NCCL_UNIQUE_ID_BYTES, 'Typed') }); } catch { /* already defined */ }
      const f: Record<string, Fn> = {};
      for (const [n, ret, args, optional] of FUNCS) {
        try { f[n] = handle.func(n, ret, args); } catch (e) { if (!optional) throw new Error(`symbol ${n} missing (${(e as Error).message})`); }
      }
      const v = new Int32Array(1);
      f.ncclGetVersion!(v);
      lib = { f, version: v[0]!, path: name };
      return lib;
    } catch (e) { errs.push(`${name}: ${(e as Error).message}`); }
  }
  loadError = `NCCL unavailable: cannot load ${ncclSonames().join(' or ')} (${errs.join('; ')}); install NCCL 2 (e.g. the nvidia-nccl wheel's lib folder on LD_LIBRARY_PATH) or set TNL_NCCL to libnccl.so.2's path`;
  return null;
}

/** Whether NCCL loads here, and its version (e.g. 22703 = 2.27.3) or the reason it does not. */
export function ncclAvailable(): { ok: true; version: number; path: string } | { ok: false; reason: string } {
  const l = loadNccl();
  return l ? { ok: true, version: l.version, path: l.path } : { ok: false, reason: loadError ?? 'unknown' };
}

function need(): NcclLib {
  const l = loadNccl();
  if (!l) throw new NcclError(loadError ?? 'NCCL unavailable');
  return l;
}

function check(l: NcclLib, call: string, code: number, comm: bigint | null = null): void {
  if (code === 0) return;
  const name = NCCL_RESULT[code] ?? `ncclResult ${code}`;
  let detail = '';
  try { detail = l.f.ncclGetErrorString!(code) ?? ''; } catch { /* best effort */ }
  let last = '';
  try { if (l.f.ncclGetLastError) last = l.f.ncclGetLastError(comm ?? 0n) ?? ''; } catch { /* best effort */ }
  throw new NcclError(`NCCL call ${call} failed: ${name} (${code})${detail ? ': ' + detail : ''}${last ? ` — ${last}` : ''}`);
}

function ncclType(d: DType): number {
  return d === 'bf16' ? NCCL_DTYPE.bfloat16 : NCCL_DTYPE.float32;
}

export class NcclCommunicator implements Communicator {
  private destroyed = false;

  private constructor(private readonly l: NcclLib, private readonly comm: bigint, readonly rank: number, readonly size: number,
                      private readonly dev: NcclDevice, readonly name: string) {}

  /** A new unique id (rank 0 makes it; every rank passes the same bytes to init). */
  static uniqueId(): Uint8Array {
    const l = need();
    const id = new Uint8Array(NCCL_UNIQUE_ID_BYTES);
    check(l, 'ncclGetUniqueId', l.f.ncclGetUniqueId!(id));
    return id;
  }

  /** Join the communicator named by `id` as `rank` of `size` (blocks until every rank has joined). */
  static init(rank: number, size: number, id: Uint8Array, dev: NcclDevice, name = 'nccl'): NcclCommunicator {
    const l = need();
    if (id.length !== NCCL_UNIQUE_ID_BYTES) throw new NcclError(`NCCL unique id must be ${NCCL_UNIQUE_ID_BYTES} bytes, got ${id.length}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new NcclError(`NCCL rank ${rank} outside [0, ${size})`);
    const out = new BigUint64Array(1);
    check(l, 'ncclCommInitRank', l.f.ncclCommInitRank!(out, size, { internal: id }, rank));
    return new NcclCommunicator(l, out[0]!, rank, size, dev, name);
  }

  get version(): number { return this.l.version; }

  private live(): bigint {
    if (this.destroyed) throw new NcclError(`${this.name}: communicator used after destroy()`);
    return this.comm;
  }
  private p(t: Tensor): bigint { return BigInt(this.dev.pointer(t)); }
  private get s(): bigint { return BigInt(this.dev.stream); }

  allReduce(t: Tensor, op: ReduceOp = 'sum'): void {
    if (t.dtype !== 'f32' && op !== 'sum') throw new ShapeError(`${this.name} allReduce ${op}: f32 tensors only`);
    const c = this.live(), ptr = this.p(t);
    check(this.l, 'ncclAllReduce', this.l.f.ncclAllReduce!(ptr, ptr, t.size, ncclType(t.dtype), NCCL_OP[op], c, this.s), c);
  }
  reduceScatter(out: Tensor, inp: Tensor): void {
    if (inp.size !== out.size * this.size) throw new ShapeError(`${this.name} reduceScatter: input has ${inp.size} elements, expected ${this.size} × ${out.size}`);
    const c = this.live();
    check(this.l, 'ncclReduceScatter', this.l.f.ncclReduceScatter!(this.p(inp), this.p(out), out.size, ncclType(out.dtype), NCCL_OP.sum, c, this.s), c);
  }
  allGather(out: Tensor, inp: Tensor): void {
    if (out.size !== inp.size * this.size) throw new ShapeError(`${this.name} allGather: output has ${out.size} elements, expected ${this.size} × ${inp.size}`);
    if (out.dtype !== inp.dtype) throw new ShapeError(`${this.name} allGather: dtypes differ (${out.dtype} vs ${inp.dtype})`);
    const c = this.live();
    check(this.l, 'ncclAllGather', this.l.f.ncclAllGather!(this.p(inp), this.p(out), inp.size, ncclType(inp.dtype), c, this.s), c);
  }
  broadcast(t: Tensor, root: number): void {
    const c = this.live(), ptr = this.p(t);
    check(this.l, 'ncclBroadcast', this.l.f.ncclBroadcast!(ptr, ptr, t.size, ncclType(t.dtype), root, c, this.s), c);
  }
  /** Staged through the device's scratch buffer; returns with the result on the host. */
  allReduceHost(x: Float64Array, op: ReduceOp = 'sum'): void {
    const c = this.live();
    if (x.length === 0) return;
    const buf = BigInt(this.dev.scratch(x.byteLength));
    this.dev.toDevice(buf, x);
    check(this.l, 'ncclAllReduce', this.l.f.ncclAllReduce!(buf, buf, x.length, NCCL_DTYPE.float64, NCCL_OP[op], c, this.s), c);
    this.dev.toHost(x, buf);
  }
  barrier(): void {
    this.allReduceHost(new Float64Array(1));
    this.dev.synchronize();
  }
  split(color: number, key: number, name = `${this.name}/${color}`): NcclCommunicator {
    const c = this.live();
    if (!this.l.f.ncclCommSplit) throw new NcclError(`${this.name}: ncclCommSplit needs NCCL ≥ 2.18 (loaded ${this.l.version})`);
    const out = new BigUint64Array(1);
    check(this.l, 'ncclCommSplit', this.l.f.ncclCommSplit(c, color, key, out, null), c);
    const rank = new Int32Array(1), size = new Int32Array(1);
    const f = this.l.f;
    check(this.l, 'ncclCommUserRank', f.ncclCommUserRank!(out[0]!, rank), out[0]!);
    check(this.l, 'ncclCommCount', f.ncclCommCount!(out[0]!, size), out[0]!);
    return new NcclCommunicator(this.l, out[0]!, rank[0]!, size[0]!, this.dev, name);
  }

  /** NCCL's asynchronous error state (a peer failed, a network error): null when healthy. */
  asyncError(): string | null {
    const r = new Int32Array(1);
    check(this.l, 'ncclCommGetAsyncError', this.l.f.ncclCommGetAsyncError!(this.live(), r));
    return r[0] === 0 || r[0] === 7 ? null : (NCCL_RESULT[r[0]!] ?? `ncclResult ${r[0]}`);
  }
  /** Free the communicator (after the stream's work is done). */
  destroy(): void {
    if (this.destroyed) return;
    this.dev.synchronize();
    check(this.l, 'ncclCommDestroy', this.l.f.ncclCommDestroy!(this.comm));
    this.destroyed = true;
  }
  /** Tear it down at once, whatever is in flight (a peer failed). */
  abort(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    check(this.l, 'ncclCommAbort', this.l.f.ncclCommAbort!(this.comm));
  }
}
