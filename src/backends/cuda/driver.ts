// The CUDA driver API, NVRTC and cuBLASLt through koffi: no compile step at npm install. The three
// libraries are opened by soname (libcuda.so.1, libnvrtc.so.13, libcublasLt.so.13; TNL_NVRTC and
// TNL_CUBLASLT override the last two). Every call is checked; a failure becomes a CudaError naming
// the call and CUDA's own error name and string. Handles and device pointers are plain numbers
// (device addresses stay far below 2^53).
import { createRequire } from 'node:module';
import { TnlError } from '../../errors.ts';

/** A CUDA, NVRTC or cuBLASLt call failed, or the libraries are missing. */
export class CudaError extends TnlError {}

// koffi is loaded lazily so that importing this file never fails where koffi or CUDA are absent.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Koffi = any;

export interface CudaLibs {
  koffi: Koffi;
  cu: Record<string, Fn>;
  nvrtc: Record<string, Fn>;
  lt: Record<string, Fn> | null;
  ltError: string | null;
}

let libs: CudaLibs | null = null;
let loadError: string | null = null;

// Signatures: handles and device pointers are uint64_t; host buffers are void * (typed arrays or
// koffi-allocated pointers); out-parameters are passed as typed arrays of one element.
const CU_FUNCS: [string, string, string[], boolean?][] = [
  ['cuInit', 'int', ['uint32_t']],
  ['cuDriverGetVersion', 'int', ['void *']],
  ['cuDeviceGetCount', 'int', ['void *']],
  ['cuDeviceGet', 'int', ['void *', 'int']],
  ['cuDeviceGetName', 'int', ['void *', 'int', 'int']],
  ['cuDeviceGetAttribute', 'int', ['void *', 'int', 'int']],
  ['cuDevicePrimaryCtxRetain', 'int', ['void *', 'int']],
  ['cuCtxSetCurrent', 'int', ['uint64_t']],
  ['cuCtxSynchronize', 'int', []],
  ['cuMemGetInfo_v2', 'int', ['void *', 'void *']],
  ['cuMemAlloc_v2', 'int', ['void *', 'size_t']],
  ['cuMemFree_v2', 'int', ['uint64_t']],
  ['cuMemHostAlloc', 'int', ['_Out_ void **', 'size_t', 'uint32_t'], true],
  ['cuMemFreeHost', 'int', ['void *'], true],
  ['cuMemHostGetDevicePointer_v2', 'int', ['void *', 'void *', 'uint32_t'], true],
  ['cuMemcpyHtoDAsync_v2', 'int', ['uint64_t', 'void *', 'size_t', 'uint64_t']],
  ['cuMemcpyDtoHAsync_v2', 'int', ['void *', 'uint64_t', 'size_t', 'uint64_t']],
  ['cuMemcpyDtoDAsync_v2', 'int', ['uint64_t', 'uint64_t', 'size_t', 'uint64_t']],
  ['cuMemsetD32Async', 'int', ['uint64_t', 'uint32_t', 'size_t', 'uint64_t']],
  ['cuMemsetD16Async', 'int', ['uint64_t', 'uint16_t', 'size_t', 'uint64_t']],
  ['cuModuleLoadData', 'int', ['void *', 'void *']],
  ['cuModuleGetFunction', 'int', ['void *', 'uint64_t', 'const char *']],
  ['cuFuncSetAttribute', 'int', ['uint64_t', 'int', 'int']],
  ['cuFuncGetAttribute', 'int', ['void *', 'int', 'uint64_t']],
  ['cuLaunchKernel', 'int', ['uint64_t', 'uint32_t', 'uint32_t', 'uint32_t', 'uint32_t', 'uint32_t', 'uint32_t', 'uint32_t', 'uint64_t', 'void *', 'void *']],
  ['cuLaunchKernelEx', 'int', ['void *', 'uint64_t', 'void *', 'void *'], true],
  ['cuOccupancyMaxActiveClusters', 'int', ['_Out_ int *', 'uint64_t', 'void *'], true],
  ['cuStreamCreate', 'int', ['void *', 'uint32_t']],
  ['cuStreamSynchronize', 'int', ['uint64_t']],
  ['cuEventCreate', 'int', ['void *', 'uint32_t']],
  ['cuEventRecord', 'int', ['uint64_t', 'uint64_t']],
  ['cuEventSynchronize', 'int', ['uint64_t']],
  ['cuEventDestroy_v2', 'int', ['uint64_t']],
  ['cuGetErrorName', 'int', ['int', 'void *']],
  ['cuGetErrorString', 'int', ['int', 'void *']],
  // CUDA graphs (decode): capture a stream, instantiate, replay.
  ['cuStreamBeginCapture_v2', 'int', ['uint64_t', 'int'], true],
  ['cuStreamEndCapture', 'int', ['uint64_t', 'void *'], true],
  ['cuGraphInstantiateWithFlags', 'int', ['void *', 'uint64_t', 'uint64_t'], true],
  ['cuGraphLaunch', 'int', ['uint64_t', 'uint64_t'], true],
  ['cuGraphExecDestroy', 'int', ['uint64_t'], true],
  ['cuGraphDestroy', 'int', ['uint64_t'], true],
];
const NVRTC_FUNCS: [string, string, string[]][] = [
  ['nvrtcVersion', 'int', ['void *', 'void *']],
  ['nvrtcCreateProgram', 'int', ['void *', 'const char *', 'const char *', 'int', 'void *', 'void *']],
  ['nvrtcCompileProgram', 'int', ['uint64_t', 'int', 'void *']],
  ['nvrtcGetCUBINSize', 'int', ['uint64_t', 'void *']],
  ['nvrtcGetCUBIN', 'int', ['uint64_t', 'void *']],
  ['nvrtcGetProgramLogSize', 'int', ['uint64_t', 'void *']],
  ['nvrtcGetProgramLog', 'int', ['uint64_t', 'void *']],
  ['nvrtcDestroyProgram', 'int', ['void *']],
  ['nvrtcGetErrorString', 'const char *', ['int']],
];
const LT_FUNCS: [string, string, string[]][] = [
  ['cublasLtCreate', 'int', ['void *']],
  ['cublasLtGetVersion', 'size_t', []],
  ['cublasLtMatmulDescCreate', 'int', ['void *', 'int', 'int']],
  ['cublasLtMatmulDescSetAttribute', 'int', ['uint64_t', 'int', 'void *', 'size_t']],
  ['cublasLtMatrixLayoutCreate', 'int', ['void *', 'int', 'uint64_t', 'uint64_t', 'int64_t']],
  ['cublasLtMatmulPreferenceCreate', 'int', ['void *']],
  ['cublasLtMatmulPreferenceSetAttribute', 'int', ['uint64_t', 'int', 'void *', 'size_t']],
  ['cublasLtMatmulAlgoGetHeuristic', 'int', ['uint64_t', 'uint64_t', 'uint64_t', 'uint64_t', 'uint64_t', 'uint64_t', 'uint64_t', 'int', 'void *', 'void *']],
  ['cublasLtMatmul', 'int', ['uint64_t', 'uint64_t', 'void *', 'uint64_t', 'uint64_t', 'uint64_t', 'uint64_t', 'void *', 'uint64_t', 'uint64_t', 'uint64_t', 'uint64_t', 'void *', 'uint64_t', 'size_t', 'uint64_t']],
];

/** The sonames tried for each library, in order (env overrides first). */
export function librarySonames(env: NodeJS.ProcessEnv = process.env): { cuda: string[]; nvrtc: string[]; cublasLt: string[] } {
  const pick = (v: string | undefined, d: string[]) => (v ? [v, ...d] : d);
  return {
    cuda: pick(env.TNL_LIBCUDA, ['libcuda.so.1']),
    nvrtc: pick(env.TNL_NVRTC, ['libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so']),
    cublasLt: pick(env.TNL_CUBLASLT, ['libcublasLt.so.13', 'libcublasLt.so.12', 'libcublasLt.so']),
  };
}

function importKoffi(): Koffi {
  const m = createRequire(import.meta.url)('koffi') as Koffi;
  return m.default ?? m;
}

function openFirst(koffi: Koffi, names: string[]): { lib: Koffi; name: string } {
  const errs: string[] = [];
  for (const n of names) {
    try { return { lib: koffi.load(n), name: n }; } catch (e) { errs.push(`${n}: ${(e as Error).message}`); }
  }
  throw new Error(errs.join('; '));
}

function bind(lib: Koffi, table: [string, string, string[], boolean?][], what: string): Record<string, Fn> {
  const out: Record<string, Fn> = {};
  for (const [name, ret, args, optional] of table) {
    try { out[name] = lib.func(name, ret, args); } catch (e) {
      if (!optional) throw new Error(`${what}: symbol ${name} missing (${(e as Error).message})`);
    }
  }
  return out;
}

/**
 * Loads koffi and the CUDA libraries once. Returns null (and remembers why: cudaLoadError) when
 * koffi, libcuda.so.1 or NVRTC cannot be opened. cuBLASLt failing to load is reported by
 * `libs.ltError` and only disables matmul.
 */
export function loadCudaLibs(): CudaLibs | null {
  if (libs || loadError) return libs;
  if (process.env.TNL_CUDA === '0') { loadError = 'disabled by TNL_CUDA=0'; return null; }
  let koffi: Koffi;
  try { koffi = importKoffi(); } catch (e) { loadError = `koffi could not be loaded (${(e as Error).message})`; return null; }
  const so = librarySonames();
  let cu: Record<string, Fn>, nvrtc: Record<string, Fn>;
  try { cu = bind(openFirst(koffi, so.cuda).lib, CU_FUNCS, 'libcuda'); } catch (e) {
    loadError = `no CUDA driver: cannot load ${so.cuda.join(' or ')} (${(e as Error).message.split('\n')[0]})`;
    return null;
  }
  try { nvrtc = bind(openFirst(koffi, so.nvrtc).lib, NVRTC_FUNCS.map(([a, b, c]) => [a, b, c]), 'libnvrtc'); } catch (e) {
    loadError = `no NVRTC: cannot load ${so.nvrtc.join(' or ')} (${(e as Error).message.split('\n')[0]})`;
    return null;
  }
  let lt: Record<string, Fn> | null = null, ltError: string | null = null;
  try { lt = bind(openFirst(koffi, so.cublasLt).lib, LT_FUNCS.map(([a, b, c]) => [a, b, c]), 'libcublasLt'); } catch (e) {
    ltError = `cannot load ${so.cublasLt.join(' or ')} (${(e as Error).message.split('\n')[0]})`;
  }
  libs = { koffi, cu, nvrtc, lt, ltError };
  return libs;
}

/** Why loadCudaLibs returned null (or null when it has not failed). */
export function cudaLoadError(): string | null {
  return loadError;
}

/** True when the CUDA libraries load and a device answers; otherwise false with the reason. */
export function cudaAvailable(): { ok: true; device: string } | { ok: false; reason: string } {
  const l = loadCudaLibs();
  if (!l) return { ok: false, reason: loadError ?? 'unknown' };
  try {
    const d = Driver.get(l);
    return { ok: true, device: d.deviceName };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

/** Turns a driver return code into a CudaError naming the call (and its CUDA error name). */
export function cuErrorMessage(call: string, code: number, name: string | null, text: string | null): string {
  return `CUDA call ${call} failed: ${name ?? 'CUDA_ERROR_' + code} (${code})${text ? ': ' + text : ''}`;
}

// Device attribute ids (CUdevice_attribute).
export const CU_ATTR = {
  MAX_THREADS_PER_BLOCK: 1,
  MAX_SHARED_MEMORY_PER_BLOCK: 8,
  MULTIPROCESSOR_COUNT: 16,
  L2_CACHE_SIZE: 38,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
} as const;
const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
const CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14;

/** One device, its primary context and a stream; the thin checked layer over the driver API. */
export class Driver {
  private static inst: Driver | null = null;
  readonly koffi: Koffi;
  readonly cu: Record<string, Fn>;
  readonly nvrtc: Record<string, Fn>;
  readonly lt: Record<string, Fn> | null;
  readonly ltError: string | null;
  readonly device: number;
  readonly deviceName: string;
  readonly cc: [number, number];
  readonly smCount: number;
  readonly smemOptin: number;
  readonly ctx: number;
  readonly stream: number;
  private readonly u64 = new BigUint64Array(1);
  private readonly i32 = new Int32Array(1);
  // Launch parameters live in memory koffi allocated (it never moves): 64 slots of 8 bytes and a
  // table of pointers to them.
  private readonly argBlock: unknown;
  private readonly argView: DataView;
  private readonly argPtrs: unknown;
  // cuLaunchKernelEx's CUlaunchConfig (56 bytes) and up to two CUlaunchAttributes (72 bytes each), koffi memory
  private readonly exConfig: unknown;
  private readonly exView: DataView;

  static get(l: CudaLibs): Driver {
    if (!Driver.inst) Driver.inst = new Driver(l);
    return Driver.inst;
  }

  private constructor(l: CudaLibs) {
    this.koffi = l.koffi; this.cu = l.cu; this.nvrtc = l.nvrtc; this.lt = l.lt; this.ltError = l.ltError;
    this.check('cuInit', this.cu.cuInit!(0));
    this.check('cuDeviceGetCount', this.cu.cuDeviceGetCount!(this.i32));
    if (this.i32[0]! < 1) throw new CudaError('CUDA driver loaded, but it reports no GPU');
    const ordinal = Number(process.env.TNL_CUDA_DEVICE ?? 0);
    this.check('cuDeviceGet', this.cu.cuDeviceGet!(this.i32, ordinal));
    this.device = this.i32[0]!;
    const name = Buffer.alloc(256);
    this.check('cuDeviceGetName', this.cu.cuDeviceGetName!(name, 256, this.device));
    this.deviceName = name.subarray(0, name.indexOf(0)).toString('utf8');
    this.cc = [this.attr(CU_ATTR.COMPUTE_CAPABILITY_MAJOR), this.attr(CU_ATTR.COMPUTE_CAPABILITY_MINOR)];
    this.smCount = this.attr(CU_ATTR.MULTIPROCESSOR_COUNT);
    this.smemOptin = this.attr(CU_ATTR.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    this.check('cuDevicePrimaryCtxRetain', this.cu.cuDevicePrimaryCtxRetain!(this.u64, this.device));
    this.ctx = Number(this.u64[0]);
    this.check('cuCtxSetCurrent', this.cu.cuCtxSetCurrent!(this.ctx));
    this.check('cuStreamCreate', this.cu.cuStreamCreate!(this.u64, 1 /* CU_STREAM_NON_BLOCKING */));
    this.stream = Number(this.u64[0]);
    this.argBlock = this.koffi.alloc('uint64_t', 64);
    this.argView = new DataView(this.koffi.view(this.argBlock, 512));
    this.argPtrs = this.koffi.alloc('uint64_t', 64);
    const base = BigInt(this.koffi.address(this.argBlock));
    const ptrs = new BigUint64Array(this.koffi.view(this.argPtrs, 512));
    for (let i = 0; i < 64; i++) ptrs[i] = base + BigInt(8 * i);
    this.exConfig = this.koffi.alloc('uint64_t', 25);
    this.exView = new DataView(this.koffi.view(this.exConfig, 200));
  }

  attr(id: number): number {
    this.check('cuDeviceGetAttribute', this.cu.cuDeviceGetAttribute!(this.i32, id, this.device));
    return this.i32[0]!;
  }

  errorText(code: number): { name: string | null; text: string | null } {
    const read = (fn: Fn | undefined) => {
      if (!fn) return null;
      const p = new BigUint64Array(1);
      if (fn(code, p) !== 0 || p[0] === 0n) return null;
      try { return this.koffi.decode(p, 'const char *') as string; } catch { return null; }
    };
    return { name: read(this.cu.cuGetErrorName), text: read(this.cu.cuGetErrorString) };
  }

  check(call: string, code: number): void {
    if (code === 0) return;
    const { name, text } = this.errorText(code);
    throw new CudaError(cuErrorMessage(call, code, name, text));
  }

  memGetInfo(): { free: number; total: number } {
    const f = new BigUint64Array(1), t = new BigUint64Array(1);
    this.check('cuMemGetInfo', this.cu.cuMemGetInfo_v2!(f, t));
    return { free: Number(f[0]), total: Number(t[0]) };
  }
  /** cuMemAlloc; returns 0 instead of throwing when the device is out of memory. */
  tryAlloc(bytes: number): number {
    const r = this.cu.cuMemAlloc_v2!(this.u64, bytes);
    if (r === 2 /* CUDA_ERROR_OUT_OF_MEMORY */) return 0;
    this.check(`cuMemAlloc(${bytes} bytes)`, r);
    return Number(this.u64[0]);
  }
  memFree(ptr: number): void {
    this.check('cuMemFree', this.cu.cuMemFree_v2!(ptr));
  }
  htod(dst: number, src: ArrayBufferView, bytes = src.byteLength): void {
    if (bytes) this.span('memcpy HtoD', () => this.check('cuMemcpyHtoDAsync', this.cu.cuMemcpyHtoDAsync_v2!(dst, src, bytes, this.stream)));
  }
  /**
   * Page-locked host memory: copies to and from it are true asynchronous copies and can be recorded
   * in graphs. `buf` views it; free() returns it (after the stream has drained).
   */
  hostAlloc(bytes: number): { ref: unknown; buf: ArrayBuffer; free: () => void } {
    if (!this.cu.cuMemHostAlloc || !this.cu.cuMemFreeHost) throw new CudaError('this libcuda lacks cuMemHostAlloc');
    const out: unknown[] = [null];
    this.check('cuMemHostAlloc', this.cu.cuMemHostAlloc(out, Math.max(bytes, 16), 0));
    const ref = out[0];
    return { ref, buf: this.koffi.view(ref, Math.max(bytes, 16)), free: () => { this.sync(); this.check('cuMemFreeHost', this.cu.cuMemFreeHost!(ref)); } };
  }
  /**
   * Page-locked host memory that kernels can also write (CU_MEMHOSTALLOC_DEVICEMAP): `dptr` is its
   * device address. What a kernel wrote there is visible on the host once that kernel has finished.
   */
  hostAllocMapped(bytes: number): { buf: ArrayBuffer; dptr: number; free: () => void } {
    if (!this.cu.cuMemHostAlloc || !this.cu.cuMemFreeHost || !this.cu.cuMemHostGetDevicePointer_v2) throw new CudaError('this libcuda lacks mapped host memory');
    const out: unknown[] = [null];
    this.check('cuMemHostAlloc', this.cu.cuMemHostAlloc(out, Math.max(bytes, 16), 2 /* DEVICEMAP */));
    const ref = out[0];
    const free = () => { this.sync(); this.check('cuMemFreeHost', this.cu.cuMemFreeHost!(ref)); };
    const r = this.cu.cuMemHostGetDevicePointer_v2(this.u64, ref, 0);
    if (r !== 0) { free(); this.check('cuMemHostGetDevicePointer', r); }
    return { buf: this.koffi.view(ref, Math.max(bytes, 16)), dptr: Number(this.u64[0]), free };
  }
  /** Page-locked host → device, on the stream (recordable). */
  htodPinned(dst: number, ref: unknown, bytes: number): void {
    if (bytes) this.check('cuMemcpyHtoDAsync', this.cu.cuMemcpyHtoDAsync_v2!(dst, ref, bytes, this.stream));
  }
  /** Device → page-locked host, on the stream (recordable); the data is there once the stream reaches it. */
  dtohPinned(ref: unknown, src: number, bytes: number): void {
    if (bytes) this.check('cuMemcpyDtoHAsync', this.cu.cuMemcpyDtoHAsync_v2!(ref, src, bytes, this.stream));
  }
  /** Device → host, then waits for the stream (the data is on the host when this returns). */
  dtoh(dst: ArrayBufferView, src: number, bytes = dst.byteLength): void {
    if (bytes) this.check('cuMemcpyDtoHAsync', this.cu.cuMemcpyDtoHAsync_v2!(dst, src, bytes, this.stream));
    this.sync();
  }
  dtod(dst: number, src: number, bytes: number): void {
    if (bytes) this.span('memcpy DtoD', () => this.check('cuMemcpyDtoDAsync', this.cu.cuMemcpyDtoDAsync_v2!(dst, src, bytes, this.stream)));
  }
  memsetD32(dst: number, bits: number, count: number): void {
    if (count) this.span('memset', () => this.check('cuMemsetD32Async', this.cu.cuMemsetD32Async!(dst, bits >>> 0, count, this.stream)));
  }
  memsetD16(dst: number, bits: number, count: number): void {
    if (count) this.span('memset', () => this.check('cuMemsetD16Async', this.cu.cuMemsetD16Async!(dst, bits & 0xffff, count, this.stream)));
  }
  sync(): void {
    this.check('cuStreamSynchronize', this.cu.cuStreamSynchronize!(this.stream));
  }

  loadModule(image: Uint8Array): number {
    this.check('cuModuleLoadData', this.cu.cuModuleLoadData!(this.u64, image));
    return Number(this.u64[0]);
  }
  getFunction(module: number, name: string): number {
    this.check(`cuModuleGetFunction(${name})`, this.cu.cuModuleGetFunction!(this.u64, module, name));
    return Number(this.u64[0]);
  }
  setMaxDynamicSmem(fn: number, bytes: number): void {
    this.check('cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)', this.cu.cuFuncSetAttribute!(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes));
  }
  funcAttr(fn: number, attr: number): number {
    this.check('cuFuncGetAttribute', this.cu.cuFuncGetAttribute!(this.i32, attr, fn));
    return this.i32[0]!;
  }

  /**
   * Launches `fn` with arguments described by `sig` (one letter each: p = device pointer / 64-bit,
   * i = int32, f = float32, l = int64, d = float64) on the stream. `early`: programmatic stream
   * serialization (below); `cluster`: blocks launched in clusters of that many along x (sm_90+).
   */
  launch(name: string, fn: number, grid: readonly [number, number, number], block: readonly [number, number, number], smem: number, sig: string, args: readonly number[], early = false, cluster = 0): void {
    if (sig.length !== args.length) throw new CudaError(`launch ${name}: ${args.length} arguments for signature "${sig}"`);
    const v = this.argView;
    for (let i = 0; i < sig.length; i++) {
      const a = args[i]!, o = 8 * i;
      switch (sig[i]) {
        case 'p': case 'l': v.setBigUint64(o, BigInt.asUintN(64, BigInt(Math.trunc(a))), true); break;
        case 'i': v.setInt32(o, a | 0, true); break;
        case 'f': v.setFloat32(o, a, true); break;
        case 'd': v.setFloat64(o, a, true); break;
        default: throw new CudaError(`launch ${name}: bad signature letter ${sig[i]}`);
      }
    }
    if (grid.some((g) => g < 1 || !Number.isInteger(g)) || block.some((b) => b < 1)) throw new CudaError(`launch ${name}: bad geometry grid ${grid} block ${block}`);
    if (cluster && (grid[0] % cluster || !this.cu.cuLaunchKernelEx)) throw new CudaError(`launch ${name}: clusters of ${cluster} need cuLaunchKernelEx and a grid width divisible by it (grid ${grid})`);
    const pdl = early && !!this.cu.cuLaunchKernelEx && !this.prof;
    if (pdl || cluster) this.span(name, () => this.check(`cuLaunchKernelEx(${name})`, this.cu.cuLaunchKernelEx!(this.exLaunchConfig(grid, block, smem, pdl, cluster), fn, this.argPtrs, null)));
    else this.span(name, () => this.check(`cuLaunchKernel(${name})`, this.cu.cuLaunchKernel!(fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], smem, this.stream, this.argPtrs, null)));
  }
  /**
   * A CUlaunchConfig with its attributes: programmatic stream serialization (`pdl`: the kernel may
   * start while the one before it on the stream finishes, and must itself wait, griddepcontrol.wait,
   * before reading what that one wrote) and a cluster shape. Layout: grid, block (6 × u32), shared
   * bytes (u32), pad, stream, attrs pointer, attr count; the attributes (id u32, pad, 64-byte value)
   * follow from byte 56.
   */
  private exLaunchConfig(grid: readonly [number, number, number], block: readonly [number, number, number], smem: number, pdl: boolean, cluster: number): unknown {
    const v = this.exView;
    [...grid, ...block, smem].forEach((x, i) => v.setUint32(4 * i, x, true));
    v.setBigUint64(32, BigInt(this.stream), true);
    v.setBigUint64(40, BigInt(this.koffi.address(this.exConfig)) + 56n, true);
    let n = 0;
    const attr = (id: number, values: number[]) => {
      const at = 56 + 72 * n++;
      v.setUint32(at, id, true);
      values.forEach((x, i) => v.setUint32(at + 8 + 4 * i, x, true));
    };
    if (pdl) attr(6 /* CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION */, [1]);
    if (cluster) attr(4 /* CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION */, [cluster, 1, 1]);
    v.setUint32(48, n, true);
    return this.exConfig;
  }
  /** How many clusters of `cluster` blocks of this shape the GPU holds at once (null: the driver cannot say). */
  maxActiveClusters(fn: number, grid: readonly [number, number, number], block: readonly [number, number, number], smem: number, cluster: number): number | null {
    if (!this.cu.cuOccupancyMaxActiveClusters) return null;
    this.check('cuOccupancyMaxActiveClusters', this.cu.cuOccupancyMaxActiveClusters(this.i32, fn, this.exLaunchConfig(grid, block, smem, false, cluster)));
    return this.i32[0]!;
  }
  /** Lets `fn` run in clusters larger than the portable 8 (16 on H100). */
  allowLargeClusters(fn: number): void {
    this.check('cuFuncSetAttribute(NON_PORTABLE_CLUSTER_SIZE_ALLOWED)', this.cu.cuFuncSetAttribute!(fn, CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1));
  }

  // ---- profiling: GPU time of every launch and span, by name ----------------------------------------
  private prof: { name: string; a: number; b: number }[] | null = null;
  private readonly evPool: number[] = [];
  /** Starts timing every launch (and span) with a pair of events; not while a graph is captured. */
  profileStart(): void { this.prof = []; }
  /** Ends timing: GPU milliseconds and calls per name, most time first. */
  profileStop(): { name: string; calls: number; ms: number }[] {
    const prof = this.prof ?? [];
    this.prof = null;
    const by = new Map<string, { name: string; calls: number; ms: number }>();
    for (const p of prof) {
      const ms = this.eventElapsed(p.a, p.b);
      const r = by.get(p.name) ?? { name: p.name, calls: 0, ms: 0 };
      r.calls++; r.ms += ms;
      by.set(p.name, r);
      this.evPool.push(p.a, p.b);
    }
    return [...by.values()].sort((x, y) => y.ms - x.ms);
  }
  /** Runs `fn` (which enqueues work); when profiling, its GPU time is counted under `name`. */
  span<T>(name: string, fn: () => T): T {
    if (!this.prof) return fn();
    const a = this.evPool.pop() ?? this.eventCreate(), b = this.evPool.pop() ?? this.eventCreate();
    this.eventRecord(a);
    const r = fn();
    this.eventRecord(b);
    this.prof.push({ name, a, b });
    return r;
  }

  // ---- events -------------------------------------------------------------------------------------
  eventCreate(): number {
    this.check('cuEventCreate', this.cu.cuEventCreate!(this.u64, 0));
    return Number(this.u64[0]);
  }
  eventRecord(e: number): void {
    this.check('cuEventRecord', this.cu.cuEventRecord!(e, this.stream));
  }
  /** Waits until the stream has reached event e. */
  eventSync(e: number): void {
    this.check('cuEventSynchronize', this.cu.cuEventSynchronize!(e));
  }
  /** Milliseconds between two recorded events (waits for the second). */
  eventElapsed(a: number, b: number): number {
    this.check('cuEventSynchronize', this.cu.cuEventSynchronize!(b));
    const f = this.elapsedFn();
    const ms = new Float32Array(1);
    this.check('cuEventElapsedTime', f(ms, a, b));
    return ms[0]!;
  }
  private elapsed: Fn | null = null;
  private elapsedFn(): Fn {
    if (this.elapsed) return this.elapsed;
    const lib = this.koffi.load(librarySonames().cuda[0]);
    for (const n of ['cuEventElapsedTime_v2', 'cuEventElapsedTime']) {
      try { this.elapsed = lib.func(n, 'int', ['void *', 'uint64_t', 'uint64_t']) as Fn; return this.elapsed; } catch { /* next */ }
    }
    throw new CudaError('libcuda has no cuEventElapsedTime');
  }
  eventDestroy(e: number): void {
    this.check('cuEventDestroy', this.cu.cuEventDestroy_v2!(e));
  }

  // ---- graphs ---------------------------------------------------------------------------------------
  /** Captures what `body` enqueues on the stream into an executable graph (cuStreamBeginCapture). */
  captureGraph(body: () => void): { launch: () => void; destroy: () => void } {
    const cu = this.cu;
    if (!cu.cuStreamBeginCapture_v2 || !cu.cuGraphInstantiateWithFlags) throw new CudaError('this libcuda lacks the graph API');
    this.check('cuStreamBeginCapture', cu.cuStreamBeginCapture_v2(this.stream, 2 /* RELAXED */));
    try { body(); } finally {
      this.check('cuStreamEndCapture', cu.cuStreamEndCapture!(this.stream, this.u64));
    }
    const graph = Number(this.u64[0]);
    this.check('cuGraphInstantiateWithFlags', cu.cuGraphInstantiateWithFlags(this.u64, graph, 0));
    const exec = Number(this.u64[0]);
    return {
      launch: () => this.check('cuGraphLaunch', cu.cuGraphLaunch!(exec, this.stream)),
      destroy: () => { this.check('cuGraphExecDestroy', cu.cuGraphExecDestroy!(exec)); this.check('cuGraphDestroy', cu.cuGraphDestroy!(graph)); },
    };
  }

  // ---- NVRTC ------------------------------------------------------------------------------------------
  nvrtcVersion(): [number, number] {
    const a = new Int32Array(1), b = new Int32Array(1);
    this.nvrtcCheck('nvrtcVersion', this.nvrtc.nvrtcVersion!(a, b));
    return [a[0]!, b[0]!];
  }
  nvrtcCheck(call: string, code: number, log?: string): void {
    if (code === 0) return;
    const s = this.nvrtc.nvrtcGetErrorString!(code) as string;
    throw new CudaError(`NVRTC call ${call} failed: ${s} (${code})${log ? '\n' + log : ''}`);
  }
  /** Compiles CUDA C++ to a cubin for this device. Throws with the compiler log on errors. */
  compile(source: string, name: string, options: readonly string[]): { cubin: Uint8Array; log: string } {
    const k = this.koffi;
    const progBox = new BigUint64Array(1);
    this.nvrtcCheck('nvrtcCreateProgram', this.nvrtc.nvrtcCreateProgram!(progBox, source, name, 0, null, null));
    const prog = progBox[0]!;
    // const char *options[]: the strings and the pointer table in koffi-allocated memory.
    const enc = options.map((o) => Buffer.from(o + '\0', 'utf8'));
    const total = enc.reduce((s, b) => s + b.length, 0) || 1;
    const strMem = k.alloc('uint8_t', total), ptrMem = k.alloc('uint64_t', Math.max(1, enc.length));
    try {
      const sv = new Uint8Array(k.view(strMem, total)), pv = new BigUint64Array(k.view(ptrMem, 8 * Math.max(1, enc.length)));
      const base = BigInt(k.address(strMem));
      let off = 0;
      enc.forEach((b, i) => { sv.set(b, off); pv[i] = base + BigInt(off); off += b.length; });
      const rc = this.nvrtc.nvrtcCompileProgram!(prog, enc.length, ptrMem) as number;
      const log = this.programLog(prog);
      this.nvrtcCheck(`nvrtcCompileProgram(${name})`, rc, log);
      const sz = new BigUint64Array(1);
      this.nvrtcCheck('nvrtcGetCUBINSize', this.nvrtc.nvrtcGetCUBINSize!(prog, sz));
      const cubin = new Uint8Array(Number(sz[0]));
      this.nvrtcCheck('nvrtcGetCUBIN', this.nvrtc.nvrtcGetCUBIN!(prog, cubin));
      return { cubin, log };
    } finally {
      k.free(strMem); k.free(ptrMem);
      this.nvrtc.nvrtcDestroyProgram!(progBox);
    }
  }
  private programLog(prog: bigint): string {
    const sz = new BigUint64Array(1);
    if (this.nvrtc.nvrtcGetProgramLogSize!(prog, sz) !== 0) return '';
    const buf = Buffer.alloc(Number(sz[0]) + 1);
    if (this.nvrtc.nvrtcGetProgramLog!(prog, buf) !== 0) return '';
    return buf.subarray(0, Math.max(0, buf.indexOf(0))).toString('utf8').trim();
  }
}
