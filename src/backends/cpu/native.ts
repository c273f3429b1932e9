// Loads the native addon (build/Release/tnl_cpu.node, built by scripts/build-native.mjs at install)
// and types its functions. Every array is passed zero-copy; the addon checks types and lengths.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

type F32 = Float32Array;
type U16 = Uint16Array;
type I32 = Int32Array;

export interface NativeAddon {
  // gemm.h
  sgemm(transA: boolean, transB: boolean, M: number, N: number, K: number, A: F32, lda: number,
        B: F32, ldb: number, C: F32, ldc: number, accumulate: boolean): void;
  gemmBf16(transA: boolean, transB: boolean, M: number, N: number, K: number, A: F32, lda: number,
           B: U16, ldb: number, C: F32, ldc: number, accumulate: boolean): void;
  gemmIsa(): string;
  // threadpool.h
  numThreads(): number;
  /** 0 = one per available core (TNL_THREADS overrides); returns the count now in use. */
  setNumThreads(n: number): number;
  /**
   * Mean ns of one parallel_for over num_threads chunks that each busy-wait workNs, and the
   * fraction of chunks the workers ran: (mean − workNs) is the dispatch overhead.
   */
  benchDispatch(iters: number, workNs?: number): [number, number];
  // kernels.h
  embeddingF32(out: F32, table: F32, ids: I32, T: number, D: number, scale: number): void;
  embeddingBf16(out: F32, table: U16, ids: I32, T: number, D: number, scale: number): void;
  embeddingBackward(dTable: F32, dOut: F32, ids: I32, T: number, D: number, scale: number, paddingIdx: number): void;
  srmsnorm(y: F32, rstd: F32, x: F32, rows: number, D: number, eps: number): void;
  srmsnormBackward(dx: F32, dy: F32, y: F32, rstd: F32, rows: number, D: number, accumulate: boolean): void;
  glaQkv(q: F32, k: F32, v: F32, qkvu: F32, T: number, heads: number, dh: number,
         theta: F32 | null, positions: I32 | null, vMask: I32 | null): void;
  glaQkvBackward(dqkvu: F32, dTheta: F32 | null, dq: F32, dk: F32, dv: F32, qkvu: F32, T: number,
                 heads: number, dh: number, theta: F32 | null, positions: I32 | null, vMask: I32 | null): void;
  normGate(a: F32, rstd: F32, o: F32, qkvu: F32, T: number, H: number, eps: number): void;
  normGateBackward(dO: F32, dqkvu: F32, dA: F32, o: F32, rstd: F32, qkvu: F32, T: number, H: number): void;
  sgluGate(m: F32, h: F32, T: number, G: number): void;
  sgluGateBackward(dh: F32, dm: F32, h: F32, T: number, G: number): void;
  /** Returns [summed loss, counted rows]. */
  crossEntropy(dLogits: F32 | null, logits: F32, targets: I32, T: number, V: number, gradScale: number): [number, number];
  adamw(p: F32, g: F32, m: F32, v: F32, n: number, lr: number, beta1: number, beta2: number, eps: number,
        weightDecay: number, step: number, gradScale: number): void;
  sumSquaresF32(x: F32, n: number): number;
  sumSquaresBf16(x: U16, n: number): number;
  addInplace(y: F32, x: F32, n: number): void;
  scaleInplace(x: F32, n: number, s: number): void;
  // attention.h
  lightningForward(o: F32, q: F32, k: F32, v: F32, decay: Float64Array, state: F32 | null, slots: I32 | null,
                   B: number, N: number, nh: number, dk: number, dv: number, block: number): void;
  lightningBackward(dq: F32, dk: F32, dv: F32, dO: F32, q: F32, k: F32, v: F32, decay: Float64Array,
                    B: number, N: number, nh: number, dk_: number, dv_: number, block: number): void;
  // benchmarks only: OpenBLAS dlopen'ed at run time (not a dependency)
  /** Loads libopenblas (default soname libopenblas.so.0); returns its core name or throws. */
  openblasLoad(path?: string): string;
  openblasSetThreads(n: number): void;
  openblasSgemm(transA: boolean, transB: boolean, M: number, N: number, K: number, A: F32, lda: number,
                B: F32, ldb: number, C: F32, ldc: number, accumulate: boolean): void;
}

export const ADDON_PATH = fileURLToPath(new URL('../../../build/Release/tnl_cpu.node', import.meta.url));

let cached: NativeAddon | null | undefined;
let reason: string | null = null;

/** The native addon, or null when it is not built or cannot load (see nativeLoadError()). */
export function loadNative(): NativeAddon | null {
  if (cached !== undefined) return cached;
  const off = process.env.TNL_NATIVE;
  if (off === '0' || off === 'off' || off === 'false') {
    reason = 'disabled by TNL_NATIVE';
    return (cached = null);
  }
  if (!existsSync(ADDON_PATH)) {
    reason = 'not built: run npm run build:native';
    return (cached = null);
  }
  try {
    cached = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  } catch (e) {
    reason = `cannot load ${ADDON_PATH}: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`;
    cached = null;
  }
  return cached;
}

/** Why loadNative() returned null (null when it loaded or was not tried). */
export function nativeLoadError(): string | null {
  return reason;
}
