// The CUDA backend: device tensors, a caching allocator, cuBLASLt matmuls and every kernel of the
// Backend interface as CUDA C++ compiled at first use (native/cuda/*.cu). All work goes to one
// stream in order; download() waits for it. Host integer inputs (ids, positions, masks, slots) are
// uploaded into pooled buffers, which the stream order makes safe to reuse at once.
//
// Lightning Attention: 'fp32' runs the exact chunked kernel (fp32 state and arithmetic); 'tc' runs
// tensor cores (bf16 operands, fp32 accumulation and state) where the head widths allow: wgmma on
// Hopper for DK = 128, DV a multiple of 128, mma.sync otherwise; sequence-parallel when few
// (sequence, head) blocks would leave SMs idle (plan.ts: lightningPlan). The backward is three
// forward-shaped passes (see lightningBackward).
import type { AdamWOptions, Backend, CapturedGraph, DType, MatmulOptions, Tensor, TokenPick, TokenRing } from '../backend.ts';
import { dims2, numel } from '../backend.ts';
import { f32ToBF16Bits, fromBF16, toBF16 } from '../host.ts';
import { checkPick } from '../token-pick.ts';
import { attnDims } from '../reference/index.ts';
import { ShapeError } from '../../errors.ts';
import { CudaError, Driver, cudaLoadError, loadCudaLibs } from './driver.ts';
import { matmulWithPrologue, prologueOf, type Prologue } from '../prologue.ts';
import { getFunction, loadModule, type CompiledModule } from './modules.ts';
import { alignmentOf, bucketBytes, elementwiseLaunch, gemmShape, gemvSplit, lightningPlan, logDecay, ltProblem, reductionBlocks, rowLaunch, type Launch, type LightningTuning } from './plan.ts';

export { CudaError, cudaAvailable, cudaLoadError, loadCudaLibs } from './driver.ts';

const ESIZE: Record<DType, number> = { f32: 4, bf16: 2 };

function need(cond: boolean, what: string): void {
  if (!cond) throw new ShapeError(what);
}
const shp = (t: Tensor) => `[${t.shape.join(', ')}]`;

// ---- memory ----------------------------------------------------------------------------------------

/** A device allocation; tensors and their views share one. Returned to the pool when collected. */
export class DeviceBuffer {
  constructor(public ptr: number, readonly bytes: number) {}
}

/**
 * Size-bucketed free lists over cuMemAlloc (plan.ts: bucketBytes). While a CUDA graph is captured,
 * every block it touches (allocated, or released, during the capture) belongs to the graph: a
 * release only marks it, and the block goes back to the pool when the graph is destroyed.
 */
export class CachingAllocator {
  private readonly pools = new Map<number, number[]>();
  /** Blocks held by live graphs: whether their owner has released them. */
  private readonly graphHeld = new Map<number, { bytes: number; released: boolean }>();
  /** The blocks of the graph being captured, or null. */
  private capturing: number[] | null = null;
  private readonly registry: FinalizationRegistry<{ ptr: number; bytes: number }>;
  allocatedBytes = 0;
  cachedBytes = 0;
  peakBytes = 0;

  constructor(private readonly drv: Driver) {
    this.registry = new FinalizationRegistry((h) => this.release(h.ptr, h.bytes));
  }

  /** A raw block of at least `bytes` (its real size is bucketBytes(bytes)). */
  allocRaw(bytes: number): { ptr: number; bytes: number } {
    const size = bucketBytes(bytes);
    const pool = this.pools.get(size);
    let ptr = pool?.pop();
    if (ptr !== undefined) this.cachedBytes -= size;
    else {
      ptr = this.drv.tryAlloc(size);
      if (!ptr) { this.emptyCache(); ptr = this.drv.tryAlloc(size); }
      if (!ptr) {
        const { free, total } = this.drv.memGetInfo();
        throw new CudaError(`out of GPU memory: ${size} bytes requested, ${free} of ${total} free, ${this.allocatedBytes} held by tensors`);
      }
    }
    this.allocatedBytes += size;
    this.peakBytes = Math.max(this.peakBytes, this.allocatedBytes);
    if (this.capturing) { this.capturing.push(ptr); this.graphHeld.set(ptr, { bytes: size, released: false }); }
    return { ptr, bytes: size };
  }
  release(ptr: number, bytes: number): void {
    if (!ptr) return;
    const held = this.graphHeld.get(ptr);
    if (held) { held.released = true; return; }
    if (this.capturing) { this.capturing.push(ptr); this.graphHeld.set(ptr, { bytes, released: true }); return; }
    let pool = this.pools.get(bytes);
    if (!pool) { pool = []; this.pools.set(bytes, pool); }
    pool.push(ptr);
    this.allocatedBytes -= bytes;
    this.cachedBytes += bytes;
  }
  /** A buffer returned to the pool when it is garbage-collected (or by free()). */
  alloc(bytes: number): DeviceBuffer {
    const r = this.allocRaw(bytes);
    const buf = new DeviceBuffer(r.ptr, r.bytes);
    this.registry.register(buf, { ptr: r.ptr, bytes: r.bytes }, buf);
    return buf;
  }
  free(buf: DeviceBuffer): void {
    if (!buf.ptr) return;
    this.registry.unregister(buf);
    this.release(buf.ptr, buf.bytes);
    buf.ptr = 0;
  }
  /** Starts recording the blocks a graph capture touches. */
  beginCapture(): void { this.capturing = []; }
  /** Ends the recording: the blocks the captured graph holds. */
  endCapture(): number[] { const c = this.capturing ?? []; this.capturing = null; return c; }
  /** A destroyed graph's blocks: those already released by their owners go back to the pool. */
  releaseGraph(blocks: number[]): void {
    for (const p of blocks) {
      const h = this.graphHeld.get(p);
      if (!h) continue;
      this.graphHeld.delete(p);
      if (h.released) this.release(p, h.bytes);
    }
  }
  /** Gives every cached block back to the driver (after the stream has drained). */
  emptyCache(): void {
    this.drv.sync();
    for (const [size, pool] of this.pools) {
      for (const p of pool) this.drv.memFree(p);
      this.cachedBytes -= size * pool.length;
    }
    this.pools.clear();
  }
}

export class CudaTensor implements Tensor {
  readonly size: number;
  constructor(readonly shape: readonly number[], readonly dtype: DType, readonly buf: DeviceBuffer, readonly offset: number) {
    this.size = numel(shape);
  }
  get ptr(): number {
    if (!this.buf.ptr) throw new CudaError(`use of a freed CUDA tensor [${this.shape.join(', ')}]`);
    return this.buf.ptr + this.offset;
  }
  get bytes(): number { return this.size * ESIZE[this.dtype]; }
}

function dev(t: Tensor, what: string): CudaTensor {
  if (!(t instanceof CudaTensor)) throw new ShapeError(`${what}: expected a CUDA tensor, got a tensor of another backend`);
  return t;
}
/** The dtype bits a mixed-dtype kernel takes: bit i set when tensors[i] is bf16. */
function bfBits(...ts: CudaTensor[]): number {
  return ts.reduce((m, t, i) => m | (t.dtype === 'bf16' ? 1 << i : 0), 0);
}
function devF32(t: Tensor, what: string): CudaTensor {
  const d = dev(t, what);
  if (d.dtype !== 'f32') throw new ShapeError(`${what}: expected an f32 tensor, got ${d.dtype} ${shp(d)}`);
  return d;
}

/** The GEMV kernels' `mode` argument for each matmul prologue (kernels.cu: gemv_body). */
const GEMV_MODE: Record<Prologue, number> = { none: 0, norm: 1, glu: 2, normGate: 3 };

/** A host integer array a recorded graph reads: its device buffer and the page-locked mirror copied to it. */
interface GraphInput { ptr: number; pin: { ref: unknown; buf: ArrayBuffer; free: () => void } }

// ---- the backend ----------------------------------------------------------------------------------------

export interface CudaBackendOptions {
  /** Lightning Attention kernels: 'fp32' exact (default) or 'tc' tensor cores (bf16 operands). */
  lightning?: 'fp32' | 'tc';
  /** f32 GEMMs: 'fp32' exact (default) or 'tf32' tensor cores. */
  gemm?: 'fp32' | 'tf32';
}

const CUDA_R_32F = 0, CUDA_R_16BF = 14;
const CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77;
const LT_WORKSPACE = 32 << 20;

interface LtPlan { desc: number; a: number; b: number; c: number; algo: Buffer; ws: number }

export class CudaBackend implements Backend {
  readonly name = 'cuda';
  readonly activationDTypes: readonly DType[] = ['f32', 'bf16'];
  readonly drv: Driver;
  readonly mem: CachingAllocator;
  readonly opts: Required<CudaBackendOptions>;
  private readonly mods = new Map<string, CompiledModule>();
  private lt: number | null = null;
  private ltWs = 0;
  private readonly ltPlans = new Map<string, LtPlan>();
  private readonly decayCache = new Map<string, CudaTensor>();
  private temps: { ptr: number; bytes: number }[] = [];

  constructor(opts: CudaBackendOptions = {}) {
    const libs = loadCudaLibs();
    if (!libs) throw new CudaError(`CUDA backend unavailable: ${cudaLoadError()}`);
    this.drv = Driver.get(libs);
    this.mem = new CachingAllocator(this.drv);
    const envL = process.env.TNL_CUDA_LIGHTNING;
    this.opts = { lightning: opts.lightning ?? (envL === 'tc' ? 'tc' : 'fp32'), gemm: opts.gemm ?? (process.env.TNL_CUDA_GEMM === 'tf32' ? 'tf32' : 'fp32') };
  }

  describe(): string {
    const d = this.drv;
    return `cuda: ${d.deviceName} (sm_${d.cc[0]}${d.cc[1]}, ${d.smCount} SMs), cuBLASLt ${this.opts.gemm} GEMMs, Lightning ${this.opts.lightning === 'tc' ? 'tensor cores (bf16 operands, fp32 state)' : 'exact fp32'}`;
  }

  // ---- modules and launches ---------------------------------------------------------------------------
  module(file: string): CompiledModule {
    let m = this.mods.get(file);
    if (!m) { m = loadModule(this.drv, file); this.mods.set(file, m); }
    return m;
  }
  /** Compiles (or loads from the cache) both sources now; returns where each came from. */
  warmup(): { file: string; origin: string; ms: number }[] {
    return ['kernels.cu', 'lightning.cu'].map((f) => { const m = this.module(f); return { file: f, origin: m.origin, ms: m.ms }; });
  }
  private readonly smemRaised = new Set<number>();
  private fn(file: string, name: string, smem = 0): number {
    const f = getFunction(this.drv, this.module(file), name);
    // more than 48 KiB of dynamic shared memory needs the function's limit raised (once)
    // (the limit covers dynamic memory beside the function's static shared memory, attribute 1)
    if (smem > 48 * 1024 && !this.smemRaised.has(f)) { this.drv.setMaxDynamicSmem(f, this.drv.smemOptin - this.drv.funcAttr(f, 1)); this.smemRaised.add(f); }
    return f;
  }
  /**
   * `early`: a decode kernel that waits for its predecessor itself (griddepcontrol, kernels.cu), so
   * inside a recorded graph it is launched with programmatic stream serialization: it starts, and
   * prefetches its weights, while the kernel before it finishes (TNL_CUDA_PDL=0 turns this off).
   */
  private launch(name: string, l: Launch, sig: string, args: number[], file = 'kernels.cu', early = false, cluster = 0): void {
    this.drv.launch(name, this.fn(file, name, l.smem), l.grid, l.block, l.smem, sig, args, early && this.graphInputs !== null && this.pdl, cluster);
    this.releaseTemps();
  }
  /** Programmatic dependent launch in recorded graphs, and the prefetch hints of decode kernels (benchmarks turn them off). */
  pdl = process.env.TNL_CUDA_PDL !== '0';
  prefetchHints = process.env.TNL_CUDA_PREFETCH !== '0';
  private ew(n: number): Launch { return elementwiseLaunch(n, this.drv.smCount); }
  /**
   * Upload a small host array into a pooled buffer, valid for the next launch. Under graph capture
   * the array becomes an input of the graph (one per distinct array object): a page-locked mirror
   * whose copy to the device is part of the graph, refilled from the array before each replay. A
   * bound array (bindInts) is its device copy, never uploaded.
   */
  private ints(a: Int32Array | null): number {
    if (!a) return 0;
    const kept = this.bound.get(a);
    if (kept) return kept.ptr;
    const cap = this.graphInputs;
    const input = cap?.get(a);
    if (input) return input.ptr;
    const r = this.mem.allocRaw(Math.max(4, a.byteLength));
    if (cap) {
      const pin = this.drv.hostAlloc(a.byteLength);
      cap.set(a, { ptr: r.ptr, pin });
      this.drv.htodPinned(r.ptr, pin.ref, a.byteLength);
    } else this.drv.htod(r.ptr, a);
    this.temps.push(r);
    return r.ptr;
  }
  private graphInputs: Map<Int32Array, GraphInput> | null = null;
  /** A Float32Array's bits as the Int32Array that ints() uploads: the same view each time, so a graph keeps reading the array. */
  private readonly floatViews = new WeakMap<Float32Array, Int32Array>();
  private floats(a: Float32Array | undefined): number {
    if (!a) return 0;
    let v = this.floatViews.get(a);
    if (!v) { v = new Int32Array(a.buffer, a.byteOffset, a.length); this.floatViews.set(a, v); }
    return this.ints(v);
  }
  /** Arrays kept on the device (bindInts): their device copies. */
  private readonly bound = new Map<Int32Array, { ptr: number; bytes: number }>();

  bindInts(a: Int32Array): void {
    if (this.graphInputs) throw new CudaError('bindInts: not while a graph is being captured');
    let b = this.bound.get(a);
    if (!b) { b = this.mem.allocRaw(Math.max(4, a.byteLength)); this.bound.set(a, b); }
    this.drv.htod(b.ptr, a);
  }
  unbindInts(a: Int32Array): void {
    const b = this.bound.get(a);
    if (!b) return;
    this.drv.dtoh(a, b.ptr, a.byteLength);
    this.mem.release(b.ptr, b.bytes);
    this.bound.delete(a);
  }
  private readonly markEvents: number[] = [];
  mark(): () => void {
    const e = this.markEvents.pop() ?? this.drv.eventCreate();
    this.drv.eventRecord(e);
    let waited = false;
    return () => {
      if (waited) return;
      waited = true;
      this.drv.eventSync(e);
      this.markEvents.push(e);
    };
  }
  /** Each ring's device side: the page-locked host buffer's device address and each row's step count. */
  private readonly rings = new WeakMap<TokenRing, { dptr: number; ctl: { ptr: number; bytes: number } }>();
  tokenRing(rows: number, slots: number): TokenRing {
    need(Number.isInteger(rows) && rows >= 1 && Number.isInteger(slots) && slots >= 1, `tokenRing: rows and slots must be integers ≥ 1, got ${rows}, ${slots}`);
    const n = rows * slots, host = this.drv.hostAllocMapped(2 * n * 4), ctl = this.mem.allocRaw(rows * 4);
    this.drv.memsetD32(ctl.ptr, 0, rows);
    let live = true;
    const ring: TokenRing = {
      rows, slots, ids: new Int32Array(host.buf, 0, n), logprobs: new Float32Array(host.buf, n * 4, n),
      free: () => { if (!live) return; live = false; host.free(); this.mem.release(ctl.ptr, ctl.bytes); },
    };
    this.rings.set(ring, { dptr: host.dptr, ctl });
    return ring;
  }
  sampleTokens(logits: Tensor, pick: TokenPick): void {
    const L = devF32(logits, 'sampleTokens logits'), r = this.rings.get(pick.ring);
    const [B, ld] = dims2(L), V = pick.columns ?? ld;
    need(r !== undefined, 'sampleTokens: the ring was not made by this backend (tokenRing)');
    checkPick(pick, B, ld, L.size);
    if (!B) return;
    // blocks of 512 columns (two a thread), then one block a row combines their Picks
    const NB = Math.max(1, Math.min(256, Math.ceil(V / 512)));
    const part = this.mem.allocRaw(B * NB * 16), pos = this.ints(pick.positions);
    this.launch('sample_tokens', { grid: [NB, B, 1], block: [256, 1, 1], smem: 0 }, 'piifipppp',
      [L.ptr, V, ld, pick.temperature, pick.seed | 0, this.floats(pick.temperatures), this.ints(pick.seeds ?? null), pos, part.ptr], 'kernels.cu', true);
    this.temps.push(part);  // released after the second launch
    this.launch('sample_finish', { grid: [B, 1, 1], block: [256, 1, 1], smem: 0 }, 'piippppip',
      [L.ptr, ld, NB, part.ptr, this.ints(pick.ids), pos, r!.dptr, pick.ring.slots, r!.ctl.ptr], 'kernels.cu', true);
  }

  /**
   * Records what `body` enqueues into a CUDA graph (nothing runs during the capture). replay() copies
   * the current contents of the host integer arrays `body` passed to kernels (ids, positions, slots)
   * into the graph's buffers and launches it; tensors `body` returned are rewritten by every replay.
   * The caller must keep those arrays' lengths, and only use host-side checks it repeats itself.
   */
  capture<T>(body: () => T, opts: { hostCopy?: boolean } = {}): CapturedGraph<T> {
    if (this.graphInputs) throw new CudaError('capture: a graph is already being captured');
    const inputs = new Map<Int32Array, GraphInput>();
    let result: T | undefined;
    let out: { ref: unknown; buf: ArrayBuffer; free: () => void; n: number } | null = null;
    this.graphInputs = inputs;
    this.mem.beginCapture();
    let graph: { launch: () => void; destroy: () => void };
    const freePinned = () => { for (const b of inputs.values()) b.pin.free(); out?.free(); };
    try {
      graph = this.drv.captureGraph(() => {
        result = body();
        if (opts.hostCopy) {
          const t = devF32(result as Tensor, 'capture hostCopy result');
          out = { ...this.drv.hostAlloc(t.bytes), n: t.size };
          this.drv.dtohPinned(out.ref, t.ptr, t.bytes);
        }
      });
    } catch (e) {
      this.mem.releaseGraph(this.mem.endCapture());
      freePinned();
      throw e;
    } finally {
      this.graphInputs = null;
    }
    const blocks = this.mem.endCapture();
    let live = true;
    const hostOut = out as { buf: ArrayBuffer; n: number } | null;
    return {
      result: result as T,
      replay: () => {
        if (!live) throw new CudaError('replay of a destroyed graph');
        if (inputs.size) {
          this.drv.sync();  // the previous replay has read its inputs before they are refilled
          for (const [host, b] of inputs) new Int32Array(b.pin.buf, 0, host.length).set(host);
        }
        graph.launch();
      },
      ...(hostOut ? { hostResult: () => { this.drv.sync(); return new Float32Array(hostOut.buf, 0, hostOut.n); } } : {}),
      destroy: () => {
        if (!live) return;
        live = false;
        this.drv.sync();
        graph.destroy();
        this.mem.releaseGraph(blocks);
        freePinned();
      },
    };
  }
  private releaseTemps(): void {
    for (const t of this.temps) this.mem.release(t.ptr, t.bytes);
    this.temps = [];
  }
  sync(): void { this.drv.sync(); }
  /** Fills t with normal(0, scale²) values from a counter-based generator (checks, benchmarks). */
  randn(t: Tensor, seed: number, scale = 1): void {
    const d = dev(t, 'randn');
    if (!d.size) return;
    this.launch(d.dtype === 'f32' ? 'fill_normal_f32' : 'fill_normal_bf16', this.ew(d.size), 'plif', [d.ptr, d.size, seed | 0, scale]);
  }
  /** Milliseconds `fn` takes on the stream: median of `reps` event-timed runs after `warm` runs. */
  timeMs(fn: () => void, reps = 10, warm = 2): { median: number; min: number; all: number[] } {
    for (let i = 0; i < warm; i++) fn();
    // every run queued before any is waited for (as triton's do_bench): while the GPU runs one, the
    // host enqueues the next, so a run's time is the GPU's and not the host's launch gap before it
    const ev = Array.from({ length: 2 * reps }, () => this.drv.eventCreate());
    let all: number[];
    try {
      for (let i = 0; i < reps; i++) { this.drv.eventRecord(ev[2 * i]!); fn(); this.drv.eventRecord(ev[2 * i + 1]!); }
      all = Array.from({ length: reps }, (_, i) => this.drv.eventElapsed(ev[2 * i]!, ev[2 * i + 1]!));
    } finally {
      for (const e of ev) this.drv.eventDestroy(e);
    }
    const s = [...all].sort((x, y) => x - y);
    return { median: s[s.length >> 1]!, min: s[0]!, all };
  }

  // ---- memory ---------------------------------------------------------------------------------------
  empty(shape: readonly number[], dtype: DType = 'f32'): CudaTensor {
    const n = numel(shape);
    need(Number.isInteger(n) && n >= 0, `empty: bad shape [${shape.join(', ')}]`);
    return new CudaTensor([...shape], dtype, this.mem.alloc(n * ESIZE[dtype]), 0);
  }
  zeros(shape: readonly number[], dtype: DType = 'f32'): CudaTensor {
    const t = this.empty(shape, dtype);
    this.fill(t, 0);
    return t;
  }
  upload(data: Float32Array, shape: readonly number[], dtype: DType = 'f32'): CudaTensor {
    need(data.length === numel(shape), `upload: ${data.length} values for shape [${shape.join(', ')}]`);
    const t = this.empty(shape, dtype);
    this.drv.htod(t.ptr, dtype === 'bf16' ? toBF16(data) : data);
    return t;
  }
  uploadBF16(bits: Uint16Array, shape: readonly number[]): CudaTensor {
    need(bits.length === numel(shape), `uploadBF16: ${bits.length} values for shape [${shape.join(', ')}]`);
    const t = this.empty(shape, 'bf16');
    this.drv.htod(t.ptr, bits);
    return t;
  }
  download(t: Tensor): Float32Array {
    const d = dev(t, 'download');
    if (d.dtype === 'bf16') {
      const bits = new Uint16Array(d.size);
      this.drv.dtoh(bits, d.ptr);
      return fromBF16(bits);
    }
    const out = new Float32Array(d.size);
    this.drv.dtoh(out, d.ptr);
    return out;
  }
  /** The raw bits of a bf16 tensor. */
  downloadBF16(t: Tensor): Uint16Array {
    const d = dev(t, 'downloadBF16');
    need(d.dtype === 'bf16', 'downloadBF16: tensor is not bf16');
    const bits = new Uint16Array(d.size);
    this.drv.dtoh(bits, d.ptr);
    return bits;
  }
  rows(t: Tensor, rowStart: number, rowCount: number): CudaTensor {
    const d = dev(t, 'rows');
    const cols = d.shape[d.shape.length - 1] ?? 1;
    const total = d.size / cols;
    if (rowStart < 0 || rowCount < 0 || rowStart + rowCount > total) throw new ShapeError(`rows(${rowStart}, ${rowCount}) out of range for ${total} rows`);
    return new CudaTensor([rowCount, cols], d.dtype, d.buf, d.offset + rowStart * cols * ESIZE[d.dtype]);
  }
  reshape(t: Tensor, shape: readonly number[]): CudaTensor {
    const d = dev(t, 'reshape');
    need(numel(shape) === d.size, `reshape: [${shape.join(', ')}] does not hold ${d.size} elements`);
    return new CudaTensor([...shape], d.dtype, d.buf, d.offset);
  }
  gatherRows(out: Tensor, src: Tensor, rowIdx: Int32Array): void {
    const o = dev(out, 'gatherRows'), s = dev(src, 'gatherRows');
    const cols = s.shape[s.shape.length - 1]!, rows = s.size / cols;
    need(o.dtype === s.dtype && o.size === rowIdx.length * cols, `gatherRows: output ${shp(o)} does not hold ${rowIdx.length} rows of ${cols}`);
    for (const r of rowIdx) need(r >= 0 && r < rows, `gatherRows: row ${r} outside [0, ${rows})`);
    if (!rowIdx.length) return;
    const n = rowIdx.length * cols;
    this.launch(s.dtype === 'f32' ? 'gather_rows_b32' : 'gather_rows_b16', this.ew(n), 'pppii', [o.ptr, s.ptr, this.ints(rowIdx), rowIdx.length, cols]);
  }
  copy(dst: Tensor, src: Tensor): void {
    const d = dev(dst, 'copy'), s = dev(src, 'copy');
    need(d.size === s.size, `copy: ${s.size} elements into ${d.size}`);
    if (d.dtype === s.dtype) this.drv.dtod(d.ptr, s.ptr, d.bytes);
    else if (d.dtype === 'bf16') this.launch('cvt_f32_bf16', this.ew(Math.ceil(d.size / 8)), 'ppl', [d.ptr, s.ptr, d.size]);
    else this.launch('cvt_bf16_f32', this.ew(Math.ceil(d.size / 8)), 'ppl', [d.ptr, s.ptr, d.size]);
  }
  fill(t: Tensor, value: number): void {
    const d = dev(t, 'fill');
    if (d.dtype === 'bf16') this.drv.memsetD16(d.ptr, f32ToBF16Bits(value), d.size);
    else this.drv.memsetD32(d.ptr, new Uint32Array(Float32Array.of(value).buffer)[0]!, d.size);
  }
  free(t: Tensor): void {
    this.mem.free(dev(t, 'free').buf);
  }

  // ---- dense --------------------------------------------------------------------------------------------
  private ltHandle(): number {
    if (this.lt !== null) return this.lt;
    const lt = this.drv.lt;
    if (!lt) throw new CudaError(`matmul needs cuBLASLt: ${this.drv.ltError}`);
    const box = new BigUint64Array(1);
    this.ltCheck('cublasLtCreate', lt.cublasLtCreate!(box));
    this.lt = Number(box[0]);
    this.ltWs = this.mem.allocRaw(LT_WORKSPACE).ptr;
    return this.lt;
  }
  private ltCheck(call: string, code: number): void {
    if (code !== 0) throw new CudaError(`cuBLASLt call ${call} failed: status ${code}${code === 15 ? ' (CUBLAS_STATUS_NOT_SUPPORTED)' : code === 7 ? ' (CUBLAS_STATUS_INVALID_VALUE)' : ''}`);
  }
  /**
   * The cuBLASLt plan of a product shape, made once: up to 8 algorithms from the heuristic, and when
   * there are several (and no graph is being captured) the fastest of them timed on these operands
   * into a scratch output (outputs over 512 MiB keep the heuristic's first choice).
   */
  private ltPlan(key: string, M: number, N: number, K: number, transA: boolean, transB: boolean, bType: number, cType: number, aligns: number[], operands: { a: number; b: number }): LtPlan {
    const hit = this.ltPlans.get(key);
    if (hit) return hit;
    const lt = this.drv.lt!, h = this.ltHandle();
    const p = ltProblem({ M, N, K }, transA, transB);
    const box = new BigUint64Array(1);
    const compute = bType === CUDA_R_32F && this.opts.gemm === 'tf32' ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    this.ltCheck('cublasLtMatmulDescCreate', lt.cublasLtMatmulDescCreate!(box, compute, CUDA_R_32F));
    const desc = Number(box[0]);
    this.ltCheck('cublasLtMatmulDescSetAttribute(TRANSA)', lt.cublasLtMatmulDescSetAttribute!(desc, 3, Int32Array.of(p.opA), 4));
    this.ltCheck('cublasLtMatmulDescSetAttribute(TRANSB)', lt.cublasLtMatmulDescSetAttribute!(desc, 4, Int32Array.of(p.opB), 4));
    const layout = (type: number, [r, c, ld]: [number, number, number]) => {
      this.ltCheck('cublasLtMatrixLayoutCreate', lt.cublasLtMatrixLayoutCreate!(box, type, r, c, ld));
      return Number(box[0]);
    };
    // library operand A = our B, B = our A (both f32 or both bf16), C = D = our C (f32 or bf16)
    const la = layout(bType, p.a), lb = layout(bType, p.b), lc = layout(cType, p.c);
    this.ltCheck('cublasLtMatmulPreferenceCreate', lt.cublasLtMatmulPreferenceCreate!(box));
    const pref = Number(box[0]);
    this.ltCheck('cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)', lt.cublasLtMatmulPreferenceSetAttribute!(pref, 1, BigUint64Array.of(BigInt(LT_WORKSPACE)), 8));
    // MIN_ALIGNMENT_{A,B,C,D}_BYTES = 5..8
    aligns.forEach((a, i) => this.ltCheck('cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)', lt.cublasLtMatmulPreferenceSetAttribute!(pref, 5 + i, Uint32Array.of(a), 4)));
    const HR = 96, want = 8;  // sizeof(cublasLtMatmulHeuristicResult_t): algo[64], workspaceSize, state, waves, reserved[4]
    const res = Buffer.alloc(HR * want);
    const count = new Int32Array(1);
    this.ltCheck('cublasLtMatmulAlgoGetHeuristic', lt.cublasLtMatmulAlgoGetHeuristic!(h, desc, la, lb, lc, lc, pref, want, res, count));
    if (count[0]! < 1) throw new CudaError(`cuBLASLt found no algorithm for ${M}×${N}×${K} (${key})`);
    const cands = Array.from({ length: count[0]! }, (_, i) => ({ algo: Buffer.from(res.subarray(i * HR, i * HR + 64)), ws: Number(res.readBigUInt64LE(i * HR + 64)) }))
      .filter((c) => c.ws <= LT_WORKSPACE);
    let best = cands[0] ?? { algo: Buffer.from(res.subarray(0, 64)), ws: Number(res.readBigUInt64LE(64)) };
    const cBytes = M * N * (cType === CUDA_R_16BF ? 2 : 4);
    if (cands.length > 1 && !this.graphInputs && cBytes <= 512 << 20) {
      const scratch = this.mem.allocRaw(cBytes);
      const alpha = Float32Array.of(1), beta = Float32Array.of(0);
      let bestMs = Infinity;
      for (const c of cands) {
        const run = () => this.ltCheck('cublasLtMatmul', lt.cublasLtMatmul!(h, desc, alpha, operands.b, la, operands.a, lb, beta, scratch.ptr, lc, scratch.ptr, lc, c.algo, this.ltWs, LT_WORKSPACE, this.drv.stream));
        try {
          const t = this.timeMs(run, 3, 1);
          if (t.median < bestMs) { bestMs = t.median; best = c; }
        } catch { /* an algorithm that fails on these operands is skipped */ }
      }
      this.mem.release(scratch.ptr, scratch.bytes);
    }
    const plan: LtPlan = { desc, a: la, b: lb, c: lc, algo: best.algo, ws: best.ws };
    this.ltPlans.set(key, plan);
    return plan;
  }

  /**
   * Operands f32 or bf16: when either is bf16 both are used as bf16 (the f32 one rounded into a
   * scratch copy) with fp32 accumulation; C is f32 or bf16.
   */
  matmul(c: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions = {}): void {
    const C = dev(c, 'matmul C'), A = dev(a, 'matmul A'), Bt = dev(b, 'matmul B');
    if (this.gemv(C, A, Bt, opts) || matmulWithPrologue(this, C, A, Bt, opts)) return;
    const ta = !!opts.transA, tb = !!opts.transB;
    const { M, N, K } = gemmShape(dims2(C), dims2(A), dims2(Bt), ta, tb, `matmul: C ${shp(C)} = ${ta ? 'Aᵀ' : 'A'} ${shp(A)} · ${tb ? 'Bᵀ' : 'B'} ${shp(Bt)}`);
    if (M === 0 || N === 0) return;
    if (K === 0) { if (!opts.accumulate) this.fill(C, 0); return; }
    const lowp = A.dtype === 'bf16' || Bt.dtype === 'bf16';
    if (!lowp && C.dtype === 'bf16') {
      // f32 operands into a bf16 C: through an f32 copy of C
      const c32 = this.empty(C.shape, 'f32');
      if (opts.accumulate) this.copy(c32, C);
      this.matmul(c32, A, Bt, opts);
      this.copy(C, c32);
      this.free(c32);
      return;
    }
    const tmps: { ptr: number; bytes: number }[] = [];
    const asBF16 = (t: CudaTensor) => {
      if (!lowp || t.dtype === 'bf16') return t.ptr;
      const tmp = this.mem.allocRaw(t.size * 2);
      this.launch('cvt_f32_bf16', this.ew(Math.ceil(t.size / 8)), 'ppl', [tmp.ptr, t.ptr, t.size]);
      tmps.push(tmp);
      return tmp.ptr;
    };
    const aPtr = asBF16(A), bPtr = asBF16(Bt);
    const abType = lowp ? CUDA_R_16BF : CUDA_R_32F, cType = C.dtype === 'bf16' ? CUDA_R_16BF : CUDA_R_32F;
    const aligns = [alignmentOf(bPtr), alignmentOf(aPtr), alignmentOf(C.ptr), alignmentOf(C.ptr)];
    const key = `${M},${N},${K},${+ta},${+tb},${abType},${cType},${aligns.join('/')}`;
    const plan = this.ltPlan(key, M, N, K, ta, tb, abType, cType, aligns, { a: aPtr, b: bPtr });
    const lt = this.drv.lt!;
    const alpha = Float32Array.of(1), beta = Float32Array.of(opts.accumulate ? 1 : 0);
    this.drv.span(`gemm ${M}×${N}×${K}${ta ? ' Aᵀ' : ''}${tb ? ' Bᵀ' : ''}${lowp ? ' bf16' : ' f32'}→${C.dtype}`, () =>
      this.ltCheck('cublasLtMatmul', lt.cublasLtMatmul!(this.lt!, plan.desc, alpha, bPtr, plan.a, aPtr, plan.b, beta, C.ptr, plan.c, C.ptr, plan.c, plan.algo, this.ltWs, LT_WORKSPACE, this.drv.stream)));
    for (const t of tmps) this.mem.release(t.ptr, t.bytes);
  }
  /** Forces the GEMV's K split (benchmarks); null: plan.ts's gemvSplit. */
  gemvSplitOverride: number | null = null;
  /**
   * A few rows (M ≤ 8: decode) against bf16 weights [N, K] used transposed: a GEMV that reads the
   * weights once at full width, with the A prologue (normA, gluA, normGate) fused into it. False when
   * the shapes do not fit it (the caller takes the general path).
   */
  private gemv(C: CudaTensor, A: CudaTensor, W: CudaTensor, opts: MatmulOptions): boolean {
    if (W.dtype !== 'bf16' || !opts.transB || opts.transA) return false;
    const [M, ac] = dims2(A), [N, K] = dims2(W);
    const mode = GEMV_MODE[prologueOf(opts)];
    if (M < 1 || M > 8 || ac !== (mode === 2 ? 2 * K : K) || C.size !== M * N || K % 8 || W.ptr % 16) return false;
    const U = opts.normGate ? dev(opts.normGate.qkvu, 'matmul normGate qkvu') : null;
    if (U && U.size !== M * 4 * K) throw new ShapeError(`matmul normGate: qkvu ${shp(U)} must be [${M}, ${4 * K}]`);
    const S = this.gemvSplitOverride ?? gemvSplit(N, K, this.drv.smCount);
    const eps = opts.normA ?? opts.normGate?.eps ?? 0;
    if (M <= 2 && A.ptr % 16 === 0 && (!U || U.ptr % 16 === 0)) {
      // one or two rows: A formed in registers (no staging barrier)
      const pf = opts.prefetch && this.prefetchHints ? dev(opts.prefetch, 'matmul prefetch') : null;
      this.launch(`gemv_reg_m${M}`, { grid: [Math.ceil(N / (32 / S)), 1, 1], block: [256, 1, 1], smem: 0 }, 'ppppiiiiifipli',
        [C.ptr, A.ptr, W.ptr, U ? U.ptr : 0, M, N, K, opts.accumulate ? 1 : 0, mode, eps, S, pf ? pf.ptr : 0, pf ? pf.bytes : 0, bfBits(C, A, U ?? A)], 'kernels.cu', true);
      return true;
    }
    if (mode === 3 || M * K * 4 > this.drv.smemOptin - 4096) return false;
    this.launch(`gemv_bf16_m${M === 1 ? 1 : M === 2 ? 2 : M <= 4 ? 4 : 8}`, { grid: [Math.ceil(N / (32 / S)), 1, 1], block: [256, 1, 1], smem: M * K * 4 }, 'pppiiiiifii',
      [C.ptr, A.ptr, W.ptr, M, N, K, opts.accumulate ? 1 : 0, mode, opts.normA ?? 0, S, bfBits(C, A)], 'kernels.cu', true);
    return true;
  }

  addInPlace(y: Tensor, x: Tensor): void {
    const Y = devF32(y, 'addInPlace'), X = devF32(x, 'addInPlace');
    need(Y.size === X.size, `addInPlace: sizes differ, y ${shp(Y)} vs x ${shp(X)}`);
    this.launch('add_inplace', this.ew(Y.size), 'ppl', [Y.ptr, X.ptr, Y.size]);
  }
  scaleInPlace(x: Tensor, s: number): void {
    const X = devF32(x, 'scaleInPlace');
    this.launch('scale_inplace', this.ew(X.size), 'pfl', [X.ptr, s, X.size]);
  }
  sumSquares(x: Tensor | readonly Tensor[]): number {
    // every tensor's block partials into one buffer, read back once (a gradient norm: one sync, not one a tensor)
    const xs = (Array.isArray(x) ? x : [x]).map((t: Tensor) => dev(t, 'sumSquares')).filter((t) => t.size > 0);
    const blocks = xs.map((t) => reductionBlocks(t.size)), total = blocks.reduce((a, b) => a + b, 0);
    if (!total) return 0;
    const part = this.mem.allocRaw(total * 8);
    let at = 0;
    xs.forEach((t, i) => {
      const name = t.dtype === 'f32' ? 'sum_squares_f32' : 'sum_squares_bf16';
      this.drv.launch(name, this.fn('kernels.cu', name), [blocks[i]!, 1, 1], [256, 1, 1], 0, 'plp', [t.ptr, t.size, part.ptr + 8 * at]);
      at += blocks[i]!;
    });
    const h = new Float64Array(total);
    this.drv.dtoh(h, part.ptr);
    this.mem.release(part.ptr, part.bytes);
    let s = 0;
    for (const v of h) s += v;
    return s;
  }

  // ---- embedding ------------------------------------------------------------------------------------------
  embedding(out: Tensor, table: Tensor, ids: Int32Array, scale: number): void {
    const O = devF32(out, 'embedding'), E = dev(table, 'embedding');
    const [V, D] = dims2(E);
    need(O.size === ids.length * D, `embedding: output ${shp(O)} must be [${ids.length}, ${D}]`);
    for (const id of ids) need(id >= 0 && id < V, `embedding: token id ${id} outside the vocabulary [0, ${V})`);
    if (!ids.length) return;
    // never an early (PDL) launch: in a decode loop the ids, and the positions that later kernels read
    // before their wait, were written by the kernel before (sample_tokens)
    this.launch(E.dtype === 'f32' ? 'embedding_f32' : 'embedding_bf16', this.ew(O.size), 'pppiif', [O.ptr, E.ptr, this.ints(ids), ids.length, D, scale]);
  }
  embeddingBackward(dTable: Tensor, dOut: Tensor, ids: Int32Array, scale: number, paddingIdx: number): void {
    const G = devF32(dTable, 'embeddingBackward'), dO = devF32(dOut, 'embeddingBackward');
    const [V, D] = dims2(G);
    need(dO.size === ids.length * D, `embeddingBackward: dOut ${shp(dO)} must be [${ids.length}, ${D}]`);
    for (const id of ids) need(id >= 0 && id < V, `embeddingBackward: token id ${id} outside the vocabulary [0, ${V})`);
    if (!ids.length) return;
    this.launch('embedding_bwd', this.ew(dO.size), 'pppiifi', [G.ptr, dO.ptr, this.ints(ids), ids.length, D, scale, paddingIdx]);
  }

  // ---- SimpleRMSNorm ------------------------------------------------------------------------------------------
  srmsnorm(y: Tensor, rstd: Tensor, x: Tensor, eps: number): void {
    const Y = dev(y, 'srmsnorm'), R = devF32(rstd, 'srmsnorm'), X = dev(x, 'srmsnorm');
    const [rows, D] = dims2(X);
    need(Y.size === X.size && R.size === rows, `srmsnorm: y ${shp(Y)}, rstd ${shp(R)} for x ${shp(X)}`);
    if (!rows) return;
    this.launch('srmsnorm_fwd', rowLaunch(rows, D, 8), 'pppiifi', [Y.ptr, R.ptr, X.ptr, rows, D, eps, bfBits(Y, X)]);
  }
  srmsnormBackward(dx: Tensor, dy: Tensor, y: Tensor, rstd: Tensor, accumulate: boolean): void {
    const DX = dev(dx, 'srmsnormBackward'), DY = dev(dy, 'srmsnormBackward'), Y = dev(y, 'srmsnormBackward'), R = devF32(rstd, 'srmsnormBackward');
    const [rows, D] = dims2(Y);
    need(DX.size === Y.size && DY.size === Y.size && R.size === rows, `srmsnormBackward: dx ${shp(DX)}, dy ${shp(DY)}, rstd ${shp(R)} for y ${shp(Y)}`);
    if (!rows) return;
    this.launch('srmsnorm_bwd', rowLaunch(rows, D, 8), 'ppppiiii', [DX.ptr, DY.ptr, Y.ptr, R.ptr, rows, D, accumulate ? 1 : 0, bfBits(DX, DY, Y)]);
  }

  // ---- gated linear attention pieces ------------------------------------------------------------------------------
  private qkvDims(what: string, q: Tensor, k: Tensor, v: Tensor, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null) {
    const [T, C4] = dims2(qkvu);
    need(C4 % 4 === 0 && (C4 / 4) % heads === 0, `${what}: qkvu ${shp(qkvu)} is not [T, 4·heads·dh]`);
    const H = C4 / 4, dh = H / heads, dk = theta ? 2 * dh : dh;
    need(q.size === T * heads * dk && k.size === q.size && v.size === T * H, `${what}: q ${shp(q)}, k ${shp(k)}, v ${shp(v)} do not fit qkvu ${shp(qkvu)} with ${heads} heads${theta ? ' and LRPE' : ''}`);
    need(!theta || (theta.size === heads * dh && positions !== null && positions.length === T), `${what}: theta needs nh·dh values and positions for every token`);
    need(!vMask || vMask.length === T, `${what}: vMask has ${vMask?.length} entries for ${T} tokens`);
    return { T, H, dh };
  }
  glaQKV(q: Tensor, k: Tensor, v: Tensor, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null): void {
    const Q = dev(q, 'glaQKV'), K = dev(k, 'glaQKV'), V = dev(v, 'glaQKV'), X = dev(qkvu, 'glaQKV');
    const th = theta ? devF32(theta, 'glaQKV theta') : null;
    const { T, H, dh } = this.qkvDims('glaQKV', Q, K, V, X, heads, th, positions, vMask);
    if (!T) return;
    this.launch('gla_qkv', this.ew(T * H / 8), 'ppppiiipppi', [Q.ptr, K.ptr, V.ptr, X.ptr, T, heads, dh, th ? th.ptr : 0, th ? this.ints(positions) : 0, this.ints(vMask), bfBits(Q, K, V, X)]);
  }
  glaQKVBackward(dqkvu: Tensor, dTheta: Tensor | null, dq: Tensor, dk: Tensor, dv: Tensor, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null): void {
    const G = dev(dqkvu, 'glaQKVBackward'), DQ = dev(dq, 'glaQKVBackward'), DK = dev(dk, 'glaQKVBackward'), DV = dev(dv, 'glaQKVBackward'), X = dev(qkvu, 'glaQKVBackward');
    const th = theta ? devF32(theta, 'glaQKVBackward theta') : null;
    const { T, H, dh } = this.qkvDims('glaQKVBackward', DQ, DK, DV, X, heads, th, positions, vMask);
    need(G.size === X.size, `glaQKVBackward: dqkvu ${shp(G)} must match qkvu ${shp(X)}`);
    if (!T) return;
    const pos = th ? this.ints(positions) : 0;
    const mask = this.ints(vMask);
    this.launch('gla_qkv_bwd', this.ew(T * H / 8), 'pppppiiipppi', [G.ptr, DQ.ptr, DK.ptr, DV.ptr, X.ptr, T, heads, dh, th ? th.ptr : 0, pos, mask, bfBits(G, DQ, DK, DV, X)]);
    if (th && dTheta) {
      const dTh = devF32(dTheta, 'glaQKVBackward dTheta');
      need(dTh.size === heads * dh, `glaQKVBackward: dTheta ${shp(dTh)} must hold ${heads * dh} values`);
      const slices = Math.max(1, Math.min(1024, Math.ceil(T / 64)));
      const per = Math.ceil(T / slices);
      this.drv.launch('gla_dtheta', this.fn('kernels.cu', 'gla_dtheta'), [Math.ceil(H / 32), Math.ceil(T / per), 1], [32, 8, 1], 0, 'ppppppiiiii', [dTh.ptr, DQ.ptr, DK.ptr, X.ptr, th.ptr, pos, T, heads, dh, per, bfBits(DQ, DK, X)]);
    }
    this.releaseTemps();
  }

  private logDecayTensor(decay: Float64Array): CudaTensor {
    const key = Array.from(decay).join(',');
    let t = this.decayCache.get(key);
    if (!t) { t = this.upload(logDecay(decay), [decay.length]); this.decayCache.set(key, t); }
    return t;
  }

  /**
   * One Lightning pass: o = L(q, k, v) with query/key width DK and value width DV per head, optionally
   * in reverse time, carrying `state` (rows `slots`). Inputs f32 or bf16 (all the same dtype).
   */
  lightningPass(o: CudaTensor, q: CudaTensor, k: CudaTensor, v: CudaTensor, B: number, N: number, nh: number, DK: number, DV: number,
                logLam: CudaTensor, state: CudaTensor | null, slots: number, reverse: boolean, tensorCores: boolean): void {
    if (!B || !N) return;
    if (N === 1 && !reverse) {
      // the recurrent step: one small kernel, no chunk machinery
      this.drv.launch('lightning_decode', this.fn('kernels.cu', 'lightning_decode'), [Math.ceil(DV / 32), nh, B], [32, 8, 1], 2 * DK * 4, 'ppppiiipppi',
        [o.ptr, q.ptr, k.ptr, v.ptr, nh, DK, DV, logLam.ptr, state ? state.ptr : 0, slots, bfBits(o, q, k, v)]);
      return;
    }
    const bf16In = q.dtype === 'bf16';
    const aligned = [o, q, k, v].every((t) => t.ptr % 16 === 0);
    const plan = lightningPlan({ B, N, nh, DK, DV, smemLimit: this.drv.smemOptin, tensorCores: tensorCores && bf16In && aligned, bf16In, smCount: this.drv.smCount, hopper: this.drv.cc[0] === 9 && this.drv.cc[1] === 0, tuning: this.lightningTuning });
    if (plan.kernel !== 'lightning_f32' && plan.kernel !== 'lightning_bf16in') {
      const name = `${plan.kernel}_${o.dtype === 'bf16' ? 'bf16' : 'f32'}`;
      let ws = 0, cnt = 0;
      if (plan.G > 1) {
        ws = this.lightningScratch('ws', plan.wsBytes);
        cnt = this.lightningScratch('cnt', plan.counters * 4);
        this.drv.memsetD32(cnt, 0, plan.counters);
      }
      this.drv.launch(name, this.fn('lightning.cu', name, plan.smem), plan.grid, plan.block, plan.smem, 'ppppiiiipppiiiippi',
        [o.ptr, q.ptr, k.ptr, v.ptr, B, N, nh, DV, logLam.ptr, state ? state.ptr : 0, slots, reverse ? 1 : 0, plan.G, plan.L, plan.LG, ws, cnt, this.lightningTuning.hint === false ? 0 : 1]);
    } else {
      const name = o.dtype === 'bf16' ? `${plan.kernel}_bf16out` : plan.kernel;
      this.drv.launch(name, this.fn('lightning.cu', name, plan.smem), plan.grid, plan.block, plan.smem, 'ppppiiiiipppiii',
        [o.ptr, q.ptr, k.ptr, v.ptr, B, N, nh, DK, DV, logLam.ptr, state ? state.ptr : 0, slots, reverse ? 1 : 0, plan.C, plan.DVT]);
    }
  }
  /** Knobs of the tensor-core Lightning kernel's sequence-parallel form (plan.ts: LightningTuning). */
  lightningTuning: LightningTuning = process.env.TNL_CUDA_WGMMA === '0' ? { wgmma: false } : {};
  private readonly ltScratch = new Map<string, { ptr: number; bytes: number }>();
  /** A kept device buffer of at least `bytes` for the sequence-parallel Lightning kernel (stream-ordered reuse). */
  private lightningScratch(key: string, bytes: number): number {
    let b = this.ltScratch.get(key);
    if (!b || b.bytes < bytes) {
      if (b) this.mem.release(b.ptr, b.bytes);
      b = this.mem.allocRaw(bytes);
      this.ltScratch.set(key, b);
    }
    return b.ptr;
  }

  /** q, k, v in one dtype for a pass: as given when they share one, else bf16 copies (freed by the caller). */
  private passInputs(ts: CudaTensor[], tensorCores: boolean): { ins: CudaTensor[]; scratch: CudaTensor[] } {
    const want: DType = tensorCores || ts.some((t) => t.dtype === 'bf16') ? 'bf16' : 'f32';
    const scratch: CudaTensor[] = [];
    const ins = ts.map((t) => {
      if (t.dtype === want) return t;
      const c = this.empty(t.shape, want);
      this.copy(c, t);
      scratch.push(c);
      return c;
    });
    return { ins, scratch };
  }
  /**
   * How the tensor-core kernels take these heads: null when they cannot (then the exact kernel
   * runs), else the parts P each head's key width splits into (P > 1 for DK = P·128, e.g. LRPE's
   * 2·dh: the score is a sum over key columns, so a head is P heads of 128 with the same decay and
   * values whose outputs add up). Tensor cores when asked for (opts.lightning = 'tc') or when the
   * inputs already are bf16.
   */
  private tensorCoreSplit(inputs: CudaTensor[], B: number, N: number, nh: number, DK: number, DV: number): number | null {
    if (N <= 1 || !(this.opts.lightning === 'tc' || inputs.some((t) => t.dtype === 'bf16'))) return null;
    const P = DK > 128 && DK % 128 === 0 ? DK / 128 : 1, dk = DK / P;
    const fits = (a: number, b: number) => lightningPlan({ B, N, nh: nh * P, DK: a, DV: b, smemLimit: this.drv.smemOptin, tensorCores: true }).kernel.startsWith('lightning_tc');
    return fits(dk, DV) && fits(DV, dk) ? P : null;
  }
  /** Each head's rows repeated P times ([B, N, nh·D] → [B, N, nh·P·D]), or the P parts summed back. */
  private repHeads(t: CudaTensor, nh: number, P: number, dtype: DType): CudaTensor {
    const D = t.shape[t.shape.length - 1]! / nh, rows = t.size / (nh * D);
    const o = this.empty([...t.shape.slice(0, -1), nh * P * D], dtype);
    this.launch('rep_heads', this.ew(o.size), 'ppliiii', [o.ptr, t.ptr, rows, nh, D, P, bfBits(o, t)]);
    return o;
  }
  private sumHeads(o: CudaTensor, a: CudaTensor, nh: number, P: number): void {
    const D = o.shape[o.shape.length - 1]! / nh, rows = o.size / (nh * D);
    this.launch('sum_heads', this.ew(o.size), 'ppliiii', [o.ptr, a.ptr, rows, nh, D, P, bfBits(o, a)]);
  }
  private repDecay(decay: Float64Array, P: number): CudaTensor {
    return this.logDecayTensor(P === 1 ? decay : Float64Array.from({ length: decay.length * P }, (_, i) => decay[Math.floor(i / P)]!));
  }

  lightningForward(o: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array, state: Tensor | null, _blockSize: number, slots?: Int32Array | null): void {
    const O = dev(o, 'lightningForward'), Q = dev(q, 'lightningForward'), K = dev(k, 'lightningForward'), V = dev(v, 'lightningForward');
    const nh = decay.length;
    const { B, N, dk, dv } = attnDims(Q, V, nh);
    need(O.size === V.size && K.size === Q.size, `lightningForward: o ${shp(O)} / k ${shp(K)} do not match q ${shp(Q)}, v ${shp(V)}`);
    const S = state ? devF32(state, 'lightningForward state') : null;
    if (slots) {
      need(slots.length === B, `lightningForward: ${slots.length} slots for ${B} sequences`);
      const rows = S ? S.size / (nh * dk * dv) : 0;
      for (const s of slots) need(s >= 0 && s < rows, `lightningForward: slot ${s} outside the state pool of ${rows}`);
    } else need(!S || S.size === B * nh * dk * dv, `lightningForward: state ${S ? shp(S) : ''} must be [${B}, ${nh}, ${dk}, ${dv}]`);
    const P = this.tensorCoreSplit([Q, K, V], B, N, nh, dk, dv);
    const { ins: [qi, ki, vi], scratch } = this.passInputs([Q, K, V], P !== null);
    if (P === null || P === 1) {
      // slots are uploaded after the conversions (whose launches recycle temporary buffers)
      this.lightningPass(O, qi!, ki!, vi!, B, N, nh, dk, dv, this.logDecayTensor(decay), S, slots ? this.ints(slots) : 0, false, P !== null);
    } else {
      // the state [slots, nh, P·128, dv] is [slots, nh·P, 128, dv] as it lies
      const v2 = this.repHeads(vi!, nh, P, 'bf16'), o2 = this.empty([B, N, nh * P * dv], 'f32');
      this.lightningPass(o2, qi!, ki!, v2, B, N, nh * P, dk / P, dv, this.repDecay(decay, P), S, slots ? this.ints(slots) : 0, false, true);
      this.sumHeads(O, o2, nh, P);
      this.free(v2); this.free(o2);
    }
    for (const t of scratch) this.free(t);
    this.releaseTemps();
  }

  glaStep(o: Tensor, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null,
          decay: Float64Array, state: Tensor, slots?: Int32Array | null, prefetch?: Tensor | null): void {
    const a = this.stepArgs('glaStep', o, qkvu, heads, theta, positions, vMask, decay, state, slots, prefetch);
    if (!a.B) return;
    this.launch('gla_decode', { grid: [Math.ceil(a.dh / 32), heads, a.B], block: [32, 8, 1], smem: 2 * a.DK * 4 }, 'ppiipppppppli',
      [a.O.ptr, a.X.ptr, heads, a.dh, ...a.tail, bfBits(a.O, a.O, a.O, a.O, a.X)], 'kernels.cu', true);
  }
  /** Off with TNL_CUDA_FUSED_STEP=0 (benchmarks compare the two paths in one process). */
  fusedStep = process.env.TNL_CUDA_FUSED_STEP !== '0';
  /** gla_project_step's cluster size: 0 = chosen by occupancy (below), 8 or 16 forced (TNL_CUDA_STEP_CLUSTER). */
  stepCluster = Number(process.env.TNL_CUDA_STEP_CLUSTER ?? 0);
  private readonly stepKernels = new Map<string, { cs: number; fits: number | null } | null>();
  /**
   * gla_project_step's cluster size for `heads` heads: 8 blocks a head when every head's cluster fits
   * on the GPU at once (measured 4.5–4.6 µs a kernel against 4.7–4.8 for 16), else 16 (clusters that
   * wait for a second wave cost more than the fusion saves); null when neither fits. `fits`: how many
   * such clusters the GPU holds at once.
   */
  projectStepKernel(heads: number): { cs: number; fits: number | null } | null {
    const forced = this.stepCluster, key = `${heads}:${forced}`;
    let k = this.stepKernels.get(key);
    if (k !== undefined) return k;
    k = null;
    for (const cs of [8, 16]) {
      if (forced && cs !== forced) continue;
      const fn = this.fn('kernels.cu', `gla_project_step${cs}`);
      if (cs > 8) this.drv.allowLargeClusters(fn);
      const fits = this.drv.maxActiveClusters(fn, [cs * heads, 1, 1], [4096 / cs, 1, 1], 0, cs);
      if (forced || fits === null || fits >= heads) { k = { cs, fits }; break; }
    }
    this.stepKernels.set(key, k);
    return k;
  }
  glaProjectStep(o: Tensor, qkvu: Tensor, x: Tensor, w: Tensor, eps: number, heads: number, theta: Tensor | null, positions: Int32Array | null,
                 vMask: Int32Array | null, decay: Float64Array, state: Tensor, slots?: Int32Array | null, prefetch?: Tensor | null): boolean {
    const A = dev(x, 'glaProjectStep x'), W = dev(w, 'glaProjectStep w'), X = dev(qkvu, 'glaProjectStep qkvu');
    const [M, D] = dims2(A), [N, K] = dims2(W), [B, C4] = dims2(X);
    // one sequence, heads of 128 (a cluster of blocks a head), bf16 weights, clusters (sm_90)
    if (!this.fusedStep || this.drv.cc[0] < 9 || M !== 1 || B !== 1 || W.dtype !== 'bf16' || N !== 4 * 128 * heads || C4 !== N || K !== D || D % 8 ||
        W.ptr % 16 || A.ptr % 16) return false;
    const k = this.projectStepKernel(heads);
    if (!k) return false;
    const a = this.stepArgs('glaProjectStep', o, qkvu, heads, theta, positions, vMask, decay, state, slots, prefetch);
    this.launch(`gla_project_step${k.cs}`, { grid: [k.cs * heads, 1, 1], block: [4096 / k.cs, 1, 1], smem: 0 }, 'ppppiifpppppppli',
      [a.X.ptr, a.O.ptr, A.ptr, W.ptr, heads, D, eps, ...a.tail, bfBits(a.X, A, a.O)], 'kernels.cu', true, k.cs);
    return true;
  }
  /** glaStep's checks, and the kernel arguments both decode-step kernels share (theta … prefetch bytes). */
  private stepArgs(what: string, o: Tensor, qkvu: Tensor, heads: number, theta: Tensor | null, positions: Int32Array | null, vMask: Int32Array | null,
                   decay: Float64Array, state: Tensor, slots?: Int32Array | null, prefetch?: Tensor | null) {
    const O = dev(o, what), X = dev(qkvu, what), S = devF32(state, `${what} state`);
    const pf = prefetch && this.prefetchHints ? dev(prefetch, `${what} prefetch`) : null;
    const th = theta ? devF32(theta, `${what} theta`) : null;
    const [B, C4] = dims2(X);
    need(C4 % (4 * heads) === 0 && decay.length === heads, `${what}: qkvu ${shp(X)} is not [B, 4·${heads}·dh] or ${decay.length} decays for ${heads} heads`);
    const H = C4 / 4, dh = H / heads, DK = th ? 2 * dh : dh;
    need(O.size === B * H, `${what}: o ${shp(O)} must hold [${B}, ${H}]`);
    need(!th || (th.size === H && positions !== null && positions.length === B), `${what}: theta needs nh·dh values and a position per sequence`);
    need(!vMask || vMask.length === B, `${what}: vMask has ${vMask?.length} entries for ${B} sequences`);
    const per = heads * DK * dh;
    if (slots) {
      need(slots.length === B, `${what}: ${slots.length} slots for ${B} sequences`);
      for (const s of slots) need(s >= 0 && s < S.size / per, `${what}: slot ${s} outside the state pool of ${S.size / per}`);
    } else need(S.size === B * per, `${what}: state ${shp(S)} must be [${B}, ${heads}, ${DK}, ${dh}]`);
    const tail = B ? [th ? th.ptr : 0, th ? this.ints(positions) : 0, this.ints(vMask), this.logDecayTensor(decay).ptr, S.ptr, slots ? this.ints(slots) : 0,
      pf ? pf.ptr : 0, pf ? pf.bytes : 0] : [];
    return { O, X, B, dh, DK, tail };
  }

  /**
   * dq_t = Σ_{j≤t} λ^{t−j}(dO_t·v_j) k_j             = L(dO, v, k)
   * dk_j = Σ_{t≥j} λ^{t−j}(v_j·dO_t) q_t             = L_reverse(v, dO, q)
   * dv_j = Σ_{t≥j} λ^{t−j}(k_j·q_t) dO_t             = L_reverse(k, q, dO)
   */
  lightningBackward(dq: Tensor, dk: Tensor, dv: Tensor, dO: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array, _blockSize: number): void {
    const DQ = dev(dq, 'lightningBackward'), DKt = dev(dk, 'lightningBackward'), DVt = dev(dv, 'lightningBackward'), G = dev(dO, 'lightningBackward');
    const Q = dev(q, 'lightningBackward'), K = dev(k, 'lightningBackward'), V = dev(v, 'lightningBackward');
    const nh = decay.length;
    const { B, N, dk: dK, dv: dV } = attnDims(Q, V, nh);
    need(DQ.size === Q.size && DKt.size === Q.size && K.size === Q.size && DVt.size === V.size && G.size === V.size,
      `lightningBackward: shapes dq ${shp(DQ)} dk ${shp(DKt)} dv ${shp(DVt)} dO ${shp(G)} for q ${shp(Q)} v ${shp(V)}`);
    const P = this.tensorCoreSplit([G, Q, K, V], B, N, nh, dK, dV);
    const { ins: [gi, qi, ki, vi], scratch } = this.passInputs([G, Q, K, V], P !== null);
    if (P === null || P === 1) this.lightningBackwardRaw(DQ, DKt, DVt, gi!, qi!, ki!, vi!, B, N, nh, dK, dV, this.logDecayTensor(decay), P !== null);
    else {
      const g2 = this.repHeads(gi!, nh, P, 'bf16'), v2 = this.repHeads(vi!, nh, P, 'bf16'), dv2 = this.empty([B, N, nh * P * dV], 'f32');
      this.lightningBackwardRaw(DQ, DKt, dv2, g2, qi!, ki!, v2, B, N, nh * P, dK / P, dV, this.repDecay(decay, P), true);
      this.sumHeads(DVt, dv2, nh, P);
      for (const t of [g2, v2, dv2]) this.free(t);
    }
    for (const t of scratch) this.free(t);
  }
  lightningBackwardRaw(dq: CudaTensor, dk: CudaTensor, dv: CudaTensor, dO: CudaTensor, q: CudaTensor, k: CudaTensor, v: CudaTensor,
                       B: number, N: number, nh: number, DK: number, DV: number, ll: CudaTensor, tensorCores: boolean): void {
    this.lightningPass(dq, dO, v, k, B, N, nh, DV, DK, ll, null, 0, false, tensorCores);
    this.lightningPass(dk, v, dO, q, B, N, nh, DV, DK, ll, null, 0, true, tensorCores);
    this.lightningPass(dv, k, q, dO, B, N, nh, DK, DV, ll, null, 0, true, tensorCores);
  }

  /** bf16 Lightning forward on bf16 tensors [B, N, nh·d] (tensor cores; the benchmark's kernel). */
  lightningForwardBF16(o: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array): void {
    const O = dev(o, 'lightningForwardBF16'), Q = dev(q, 'lightningForwardBF16'), K = dev(k, 'lightningForwardBF16'), V = dev(v, 'lightningForwardBF16');
    need(Q.dtype === 'bf16' && K.dtype === 'bf16' && V.dtype === 'bf16', 'lightningForwardBF16: q, k, v must be bf16');
    const nh = decay.length;
    const { B, N, dk, dv } = attnDims(Q, V, nh);
    this.lightningPass(O, Q, K, V, B, N, nh, dk, dv, this.logDecayTensor(decay), null, 0, false, true);
  }
  lightningBackwardBF16(dq: Tensor, dk: Tensor, dv: Tensor, dO: Tensor, q: Tensor, k: Tensor, v: Tensor, decay: Float64Array): void {
    const Q = dev(q, 'lightningBackwardBF16'), V = dev(v, 'lightningBackwardBF16');
    const nh = decay.length;
    const { B, N, dk: dK, dv: dV } = attnDims(Q, V, nh);
    this.lightningBackwardRaw(dev(dq, 'dq'), dev(dk, 'dk'), dev(dv, 'dv'), dev(dO, 'dO'), Q, dev(k, 'k'), V, B, N, nh, dK, dV, this.logDecayTensor(decay), true);
  }

  normGate(a: Tensor, rstd: Tensor, o: Tensor, qkvu: Tensor, eps: number): void {
    const A = dev(a, 'normGate'), R = devF32(rstd, 'normGate'), O = dev(o, 'normGate'), X = dev(qkvu, 'normGate');
    const [T, H] = dims2(O);
    need(A.size === O.size && R.size === T && X.size === T * 4 * H, `normGate: a ${shp(A)}, rstd ${shp(R)}, qkvu ${shp(X)} for o ${shp(O)}`);
    if (!T) return;
    this.launch('norm_gate_fwd', rowLaunch(T, H, 8), 'ppppiifi', [A.ptr, R.ptr, O.ptr, X.ptr, T, H, eps, bfBits(A, O, X)], 'kernels.cu', true);
  }
  normGateBackward(dO: Tensor, dqkvu: Tensor, dA: Tensor, o: Tensor, rstd: Tensor, qkvu: Tensor): void {
    const DO = dev(dO, 'normGateBackward'), G = dev(dqkvu, 'normGateBackward'), DA = dev(dA, 'normGateBackward');
    const O = dev(o, 'normGateBackward'), R = devF32(rstd, 'normGateBackward'), X = dev(qkvu, 'normGateBackward');
    const [T, H] = dims2(O);
    need(DO.size === O.size && DA.size === O.size && R.size === T && X.size === T * 4 * H && G.size === X.size, `normGateBackward: shapes do not match o ${shp(O)}`);
    if (!T) return;
    this.launch('norm_gate_bwd', rowLaunch(T, H, 8), 'ppppppiii', [DO.ptr, G.ptr, DA.ptr, O.ptr, R.ptr, X.ptr, T, H, bfBits(DO, G, DA, O, X)]);
  }

  // ---- SGLU -------------------------------------------------------------------------------------------------------------
  sgluGate(m: Tensor, h: Tensor): void {
    const M = dev(m, 'sgluGate'), Hh = dev(h, 'sgluGate');
    const [T, G2] = dims2(Hh);
    need(G2 % 2 === 0 && M.size === T * (G2 / 2), `sgluGate: output ${shp(M)} must be [${T}, ${G2 / 2}]`);
    if (!M.size) return;
    this.launch('sglu_fwd', this.ew(M.size / 8), 'ppiii', [M.ptr, Hh.ptr, T, G2 / 2, bfBits(M, Hh)]);
  }
  sgluGateBackward(dh: Tensor, dm: Tensor, h: Tensor): void {
    const DH = dev(dh, 'sgluGateBackward'), DM = dev(dm, 'sgluGateBackward'), Hh = dev(h, 'sgluGateBackward');
    const [T, G2] = dims2(Hh);
    need(DH.size === Hh.size && DM.size === T * (G2 / 2), `sgluGateBackward: dh ${shp(DH)}, dm ${shp(DM)} for h ${shp(Hh)}`);
    if (!DM.size) return;
    this.launch('sglu_bwd', this.ew(DM.size / 8), 'pppiii', [DH.ptr, DM.ptr, Hh.ptr, T, G2 / 2, bfBits(DH, DM, Hh)]);
  }

  // ---- loss -----------------------------------------------------------------------------------------------------------------
  crossEntropy(logits: Tensor, targets: Int32Array, dLogits: Tensor | null, gradScale: number): { loss: number; count: number } {
    const L = dev(logits, 'crossEntropy'), D = dLogits ? dev(dLogits, 'crossEntropy dLogits') : null;
    const [T, V] = dims2(L);
    need(targets.length === T, `crossEntropy: ${targets.length} targets for ${T} rows`);
    need(!D || D.size === L.size, `crossEntropy: dLogits ${D ? shp(D) : ''} must match logits ${shp(L)}`);
    let count = 0;
    for (const y of targets) {
      if (y === -100) continue;
      need(y >= 0 && y < V, `crossEntropy: target ${y} outside [0, ${V})`);
      count++;
    }
    if (!T) return { loss: 0, count: 0 };
    const rl = this.mem.allocRaw(T * 4);
    this.launch('cross_entropy', rowLaunch(T, V, 8), 'ppppiifi', [L.ptr, this.ints(targets), D ? D.ptr : 0, rl.ptr, T, V, gradScale, bfBits(L, D ?? L)]);
    const h = new Float32Array(T);
    this.drv.dtoh(h, rl.ptr);
    this.mem.release(rl.ptr, rl.bytes);
    let loss = 0;
    for (const x of h) loss += x;
    return { loss, count };
  }

  // ---- optimiser -----------------------------------------------------------------------------------------------------------
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
    const P = devF32(param, 'adamw'), G = devF32(grad, 'adamw'), M = devF32(m, 'adamw'), Vv = devF32(v, 'adamw');
    need(G.size === P.size && M.size === P.size && Vv.size === P.size, `adamw: grad ${shp(G)}, m ${shp(M)}, v ${shp(Vv)} for param ${shp(P)}`);
    if (!P.size) return;
    const bc1 = 1 - o.beta1 ** o.step, bc2 = 1 - o.beta2 ** o.step;
    this.launch('adamw', this.ew(Math.ceil(P.size / 4)), 'pppplffffffff', [P.ptr, G.ptr, M.ptr, Vv.ptr, P.size, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, bc1, bc2, o.gradScale]);
  }
}

/** A CUDA backend, or null with the reason (no driver, no GPU, no NVRTC). */
export function tryCudaBackend(opts: CudaBackendOptions = {}): { backend: CudaBackend } | { error: string } {
  try { return { backend: new CudaBackend(opts) }; } catch (e) { return { error: (e as Error).message }; }
}
