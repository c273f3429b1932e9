// Host-side planning for the CUDA backend: NVRTC options and cache keys, launch geometry, the
// allocator's size buckets, the cuBLASLt operand mapping and the Lightning kernel choice. Pure
// functions (no GPU needed): unit-tested in CI.
import { createHash } from 'node:crypto';
import { ShapeError } from '../../errors.ts';

/** NVRTC's --gpu-architecture for a compute capability (sm_90a on Hopper: wgmma, setmaxnreg). */
export function gpuArch(cc: readonly [number, number]): string {
  const [maj, min] = cc;
  if (!Number.isInteger(maj) || !Number.isInteger(min) || maj < 5) throw new ShapeError(`unsupported compute capability ${maj}.${min} (need 5.0 or newer)`);
  return maj === 9 && min === 0 ? 'sm_90a' : `sm_${maj}${min}`;
}

/** The NVRTC options every kernel source is compiled with (fast math stays off: exact kernels). */
export function nvrtcOptions(cc: readonly [number, number], extra: readonly string[] = []): string[] {
  const arch = gpuArch(cc);
  // TNL_SM90A: the arch-specific (wgmma) kernels are compiled in (NVRTC need not define __CUDA_ARCH_FEAT_SM90_ALL)
  return [`--gpu-architecture=${arch}`, '-std=c++17', '-default-device', '--extra-device-vectorization', ...(arch === 'sm_90a' ? ['-DTNL_SM90A'] : []), ...extra];
}

/** Disk-cache key of one compiled module: the source, the options and the compiler version. */
export function cacheKey(source: string, options: readonly string[], nvrtcVersion: readonly [number, number]): string {
  const h = createHash('sha256');
  h.update(`nvrtc ${nvrtcVersion[0]}.${nvrtcVersion[1]}\0`);
  h.update(options.join('\0') + '\0\0');
  h.update(source);
  return h.digest('hex').slice(0, 32);
}

/** Where compiled modules are cached: $TNL_CACHE/cuda, else $XDG_CACHE_HOME/tnl/cuda, else ~/.cache/tnl/cuda. */
export function cacheDir(env: NodeJS.ProcessEnv, home: string): string {
  if (env.TNL_CACHE) return `${env.TNL_CACHE}/cuda`;
  if (env.XDG_CACHE_HOME) return `${env.XDG_CACHE_HOME}/tnl/cuda`;
  return `${home}/.cache/tnl/cuda`;
}

// ---- launch geometry --------------------------------------------------------------------------------
export type Dim3 = [number, number, number];
export interface Launch { grid: Dim3; block: Dim3; smem: number }

/** A grid-stride elementwise launch over n items: 256 threads, at most 32 blocks per SM. */
export function elementwiseLaunch(n: number, smCount: number): Launch {
  if (!Number.isFinite(n) || n < 0) throw new ShapeError(`elementwise launch over ${n} items`);
  const blocks = Math.max(1, Math.min(Math.ceil(n / 256), Math.max(1, smCount) * 32));
  return { grid: [blocks, 1, 1], block: [256, 1, 1], smem: 0 };
}

/**
 * Warps sharing one GEMV column group (each takes 1/S of K): the fewest (1, 2, 4, 8) that give about
 * one block of 8 warps per multiprocessor, while each warp keeps two 32-lane strides of K (measured
 * on the H100 at 385M's shapes: 4096 and 5632 columns best unsplit, 1024 columns best at S = 4).
 */
export function gemvSplit(N: number, K: number, smCount: number): number {
  let S = 1;
  while (S < 8 && Math.ceil(N / (32 / S)) < 0.75 * smCount && (K / 8) >= 64 * S) S *= 2;
  return S;
}

/**
 * One block per row: threads a power of two in [32, 1024], about 4 columns a thread, or for the
 * kernels that take `width` columns at a time, about one such access a thread.
 */
export function rowLaunch(rows: number, cols: number, width = 1): Launch {
  const per = width > 1 ? width : 4;
  let t = 32;
  while (t < 1024 && t * per < cols) t *= 2;
  if (rows > 2 ** 31 - 1) throw new ShapeError(`row launch: ${rows} rows exceed the grid limit`);
  return { grid: [Math.max(1, rows), 1, 1], block: [t, 1, 1], smem: 0 };
}

/** Blocks for a grid-stride reduction (each writes one partial sum). */
export function reductionBlocks(n: number): number {
  return Math.max(1, Math.min(1024, Math.ceil(n / 1024)));
}

// ---- allocator buckets --------------------------------------------------------------------------------
/**
 * The size class a request is served from: multiples of 512 bytes up to 1 MiB, then the next of
 * 2^k·{1, 1.25, 1.5, 1.75} (at most 25% waste), so freed blocks are found again by size.
 */
export function bucketBytes(bytes: number): number {
  if (!Number.isFinite(bytes) || bytes < 0) throw new ShapeError(`allocation of ${bytes} bytes`);
  const b = Math.max(512, bytes);
  if (b <= 1 << 20) return Math.ceil(b / 512) * 512;
  const p = 2 ** Math.floor(Math.log2(b));
  for (const f of [1, 1.25, 1.5, 1.75, 2]) if (p * f >= b) return p * f;
  return 2 * p;
}

// ---- matmul ------------------------------------------------------------------------------------------
export interface GemmShape { M: number; N: number; K: number }

/** Checks C[M,N] = op(A)[M,K]·op(B)[K,N] for row-major 2-D views; returns M, N, K. */
export function gemmShape(c: readonly [number, number], a: readonly [number, number], b: readonly [number, number], transA: boolean, transB: boolean, what = 'matmul'): GemmShape {
  const [M, N] = c, [ar, ac] = a, [br, bc] = b;
  const K = transA ? ar : ac;
  const am = transA ? ac : ar, bk = transB ? bc : br, bn = transB ? br : bc;
  if (am !== M) throw new ShapeError(`${what}: op(A) has ${am} rows, C has ${M}`);
  if (bk !== K) throw new ShapeError(`${what}: inner dimensions differ, op(A) has ${K} columns, op(B) has ${bk} rows`);
  if (bn !== N) throw new ShapeError(`${what}: op(B) has ${bn} columns, C has ${N}`);
  return { M, N, K };
}

/**
 * The column-major cuBLASLt problem for a row-major product: Cᵀ[N,M] = op(B)ᵀ·op(A)ᵀ, so the library's
 * first operand is B and its second is A. Layouts describe the stored matrices (rows, cols, ld).
 */
export function ltProblem(s: GemmShape, transA: boolean, transB: boolean): {
  opA: 0 | 1; opB: 0 | 1; a: [number, number, number]; b: [number, number, number]; c: [number, number, number];
} {
  const { M, N, K } = s;
  return {
    opA: transB ? 1 : 0,
    a: transB ? [K, N, K] : [N, K, N],
    opB: transA ? 1 : 0,
    b: transA ? [M, K, M] : [K, M, K],
    c: [N, M, N],
  };
}

/** Largest power of two (≤ 256) dividing a device address: the alignment cuBLASLt may assume. */
export function alignmentOf(addr: number): number {
  let a = 256;
  while (a > 1 && addr % a !== 0) a /= 2;
  return a;
}

// ---- Lightning Attention ---------------------------------------------------------------------------------
export type TcKernel = 'lightning_ws_k128_v128' | 'lightning_tc_k128_v128' | 'lightning_tc_k128_v64' | 'lightning_tc_k64_v128' | 'lightning_tc_k64_v64';
export interface LightningPlan extends Launch {
  kernel: 'lightning_f32' | 'lightning_bf16in' | TcKernel;
  /** Chunk length and value-column tile (DVT: 64 or 128 for the tensor-core kernel). */
  C: number;
  DVT: number;
  /**
   * Tensor-core kernel only: blocks per (sequence, head, column tile) and segment length. G = 1: one
   * block runs the whole sequence; G > 1: the sequence-parallel form (segments of L tokens in rounds
   * of G, chunk states exchanged through `wsBytes` of workspace and `counters` zeroed counters).
   */
  G: number;
  L: number;
  /** The segment of each round's last block (it runs no state-only pass; lightning.cu: Jobs). */
  LG: number;
  wsBytes: number;
  counters: number;
}

/** Knobs of the sequence-parallel choice (benchmarks and checks set them; defaults otherwise). */
export interface LightningTuning {
  /** Segment length of the sequence-parallel form (a multiple of 64; default 2048: fewer rounds beat L2 reuse of k, v). */
  seg?: number;
  /** Segment of each round's last block, tokens (a multiple of 64; default: lastSegment(seg, 1.25, N, G)). */
  lastSeg?: number;
  /** Upper bound on blocks per (sequence, head, tile) (1: never sequence-parallel). */
  maxG?: number;
  /** L2 evict-first hints on streamed loads (default on). */
  hint?: boolean;
  /** The wgmma kernel where the GPU has it (Hopper, DK = 128, DV a multiple of 128; default on). */
  wgmma?: boolean;
}

/** Dynamic shared memory of the exact chunked kernel, bytes. */
export function chunkSmem(DK: number, C: number, DVT: number): number {
  return 4 * (2 * C * (DK + 1) + C * (DVT + 1) + DK * DVT + C * (C + 1) + C + 1);
}
/** Dynamic shared memory of the tensor-core kernel, bytes: 3 stages of q, k, v chunks, 2 bf16 states, λ powers. */
export function tcSmem(DK: number, DVT = 128): number {
  return 3 * 64 * (2 * DK + DVT) * 2 + 2 * DK * DVT * 2 + 129 * 4;
}

/** Dynamic shared memory of the Hopper (wgmma) kernel: as tcSmem(128, 128), plus 1 KiB to align the tiles to 1024 bytes and its ten mbarriers. */
export function wsSmem(): number {
  return tcSmem(128, 128) + 1024 + 128;
}

/**
 * Chooses the Lightning kernel and its geometry. Tensor cores when asked for and the head widths fit
 * (DK ∈ {64, 128}, DV a multiple of 64: 128-column tiles where DV allows, so q and k are read once);
 * there, when the (sequence, head, tile) blocks fill less than half of the `smCount` multiprocessors,
 * the sequence-parallel form with G = ⌊smCount / blocks⌋ blocks each (all resident: one per SM).
 * `hopper` (compute capability 9.0, sm_90a) selects the wgmma form for DK = 128, DV a multiple of 128.
 * Otherwise the exact fp32 kernel with the longest chunk (64, 32, 16, …) whose tiles fit in `smemLimit`.
 */
export function lightningPlan(p: { B: number; N: number; nh: number; DK: number; DV: number; smemLimit: number; tensorCores: boolean; bf16In?: boolean; smCount?: number; hopper?: boolean; tuning?: LightningTuning }): LightningPlan {
  const { B, N, nh, DK, DV, smemLimit } = p;
  for (const [k, v] of Object.entries({ B, N, nh, DK, DV })) if (!Number.isInteger(v) || v < 1) throw new ShapeError(`lightning: ${k} = ${v} must be a positive integer`);
  if (B > 65535 || nh > 65535) throw new ShapeError(`lightning: ${B} sequences × ${nh} heads exceed the grid limits`);
  if (p.tensorCores && (DK === 64 || DK === 128) && DV % 64 === 0) {
    const DVT = DV % 128 === 0 ? 128 : 64;
    const t = p.tuning ?? {};
    const ws = !!p.hopper && t.wgmma !== false && DK === 128 && DVT === 128 && wsSmem() <= smemLimit;
    const smem = ws ? wsSmem() : tcSmem(DK, DVT);
    if (smem <= smemLimit) {
      const tiles = DV / DVT, units = B * nh * tiles;
      const L = t.seg ?? 2048;
      if (!(Number.isInteger(L) && L >= 64 && L % 64 === 0)) throw new ShapeError(`lightning: segment length ${L} must be a positive multiple of 64`);
      const sms = p.smCount ?? 0;
      let G = Math.min(Math.floor(sms / units), Math.ceil(N / L), t.maxG ?? Infinity);
      if (!(G >= 2)) G = 1;
      const LG = t.lastSeg ?? lastSegment(L, 1.25, N, G);
      if (!(Number.isInteger(LG) && LG >= 64 && LG % 64 === 0)) throw new ShapeError(`lightning: last segment length ${LG} must be a positive multiple of 64`);
      const wsBytes = G > 1 ? units * (2 * G + 2) * DK * DVT * 4 : 0;
      const kernel = (ws ? 'lightning_ws_k128_v128' : `lightning_tc_k${DK}_v${DVT}`) as TcKernel;
      return { kernel, C: 64, DVT, G, L: G > 1 ? L : 0, LG: G > 1 ? LG : 0, wsBytes, counters: G > 1 ? 2 * units : 0,
        grid: [tiles * G, nh, B], block: [ws ? 384 : 256, 1, 1], smem };
    }
  }
  const DVT = Math.min(64, DV);
  for (let C = 64; C >= 1; C /= 2) {
    const smem = chunkSmem(DK, C, DVT);
    if (smem <= smemLimit) return { kernel: p.bf16In ? 'lightning_bf16in' : 'lightning_f32', C, DVT, G: 1, L: 0, LG: 0, wsBytes: 0, counters: 0, grid: [Math.ceil(DV / DVT), nh, B], block: [256, 1, 1], smem };
  }
  throw new ShapeError(`lightning: head width ${DK} × ${DVT} does not fit in ${smemLimit} bytes of shared memory`);
}

/**
 * The last block's segment for segments of L tokens (whole chunks of 64): about f·L, since a round costs
 * the other blocks a state-only pass and a full pass over L, the last block a full pass only (f = 1.25
 * measured best: b=1, h=32, n=128K on an H100, 2.45 ms against 2.55 at L, 2.54 at 1.5·L, 2.90 at 2·L).
 * Given the sequence (N tokens, G blocks), it is then stretched or shrunk, within [L, 2·L], so that whole
 * rounds cover the sequence: a last round holding a few tokens still costs every block its passes'
 * latency (n=128K, L=2048: 2,624 tokens, 15 rounds, instead of 2,560 and a 16th round of 512 tokens).
 */
export function lastSegment(L: number, f = 1.25, N?: number, G?: number): number {
  const LG = Math.round(L * f / 64) * 64;
  if (N === undefined || G === undefined || G < 2) return LG;
  const R = Math.max(1, Math.round(N / ((G - 1) * L + LG)));
  return Math.min(2 * L, Math.max(L, Math.ceil((N / R - (G - 1) * L) / 64) * 64));
}

/** log λ per head, as the kernels take it (λ ∈ (0, 1]). */
export function logDecay(decay: Float64Array): Float32Array {
  const out = new Float32Array(decay.length);
  decay.forEach((l, i) => {
    if (!(l > 0 && l <= 1)) throw new ShapeError(`lightning: decay of head ${i} is ${l}, expected 0 < λ ≤ 1`);
    out[i] = Math.log(l);
  });
  return out;
}
