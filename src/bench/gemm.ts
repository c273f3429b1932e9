// GEMM benchmark on the model's shapes: the native kernels (fp32 and bf16 weights) beside OpenBLAS
// cblas_sgemm measured in the same run (dlopen'ed by the addon when libopenblas.so.0 is on the
// machine; it is not a dependency). Also the decode path (M = 1): GB/s of weight bytes streamed.
import { writeFileSync } from 'node:fs';
import { loadNative, nativeLoadError, type NativeAddon } from '../backends/cpu/native.ts';
import { toBF16 } from '../backends/host.ts';

export interface GemmBenchOptions {
  /** Threads for both our kernels and OpenBLAS (default: the addon's, one per core). */
  threads?: number;
  /** (N, K) weight shapes; M = `tokens`. Default: the model's projections. */
  shapes?: readonly (readonly [number, number])[];
  /** Rows of activations (tokens) for the large products (default 1024). */
  tokens?: number;
  /** Timed repetitions per measurement (median reported; default 7, quick 3). */
  reps?: number;
  /** Fewer shapes and repetitions. */
  quick?: boolean;
  /** Also write the rows as JSON to this path. */
  json?: string;
  /** Skip OpenBLAS even when it is present. */
  noOpenblas?: boolean;
}

export interface GemmRow {
  /** The product: fwd y=x·Wᵀ, dX=dY·W, dW=dYᵀ·X, or decode (M=1). */
  op: string;
  /** M×N×K. */
  shape: string;
  /** Dtype of the weight operand. */
  dtype: 'f32' | 'bf16';
  /** Median milliseconds per call. */
  ms: number;
  /** GFLOP/s (large products) or GB/s of weights (decode rows). */
  rate: number;
  unit: 'GFLOP/s' | 'GB/s';
  /** OpenBLAS cblas_sgemm on the same shape and threads, same unit; '-' when not run. */
  openblas: number | string;
  /** rate / openblas. */
  ratio: number | string;
}

export const MODEL_SHAPES: readonly (readonly [number, number])[] = [[2048, 512], [512, 512], [2816, 512], [512, 1408], [8192, 512]];

function randn(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296 - 0.5) * 2;
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/** Times fns interleaved (one call of each per round, after a warm-up) and returns median ms per fn. */
function timeInterleaved(fns: (() => void)[], reps: number): number[] {
  for (const f of fns) f();
  const ts = fns.map(() => [] as number[]);
  for (let r = 0; r < reps; r++)
    fns.forEach((f, i) => {
      const t0 = process.hrtime.bigint();
      f();
      ts[i]!.push(Number(process.hrtime.bigint() - t0) / 1e6);
    });
  return ts.map(median);
}

/** Loads OpenBLAS for `threads` threads, with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset while it initialises. */
function openblas(n: NativeAddon, threads: number): string | null {
  const saved = { ct: process.env.OPENBLAS_CORETYPE, l2: process.env.OPENBLAS_L2_SIZE, nt: process.env.OPENBLAS_NUM_THREADS };
  try {
    delete process.env.OPENBLAS_CORETYPE;
    delete process.env.OPENBLAS_L2_SIZE;
    process.env.OPENBLAS_NUM_THREADS = String(threads);
    const core = n.openblasLoad();
    n.openblasSetThreads(threads);
    return core;
  } catch {
    return null;
  } finally {
    const restore = (k: string, v: string | undefined) => { if (v === undefined) delete process.env[k]; else process.env[k] = v; };
    restore('OPENBLAS_CORETYPE', saved.ct);
    restore('OPENBLAS_L2_SIZE', saved.l2);
    restore('OPENBLAS_NUM_THREADS', saved.nt);
  }
}

const r1 = (x: number) => Math.round(x * 10) / 10;

export async function benchGemm(opts: GemmBenchOptions = {}): Promise<GemmRow[]> {
  const n = loadNative();
  if (!n) {
    process.stderr.write(`tnl bench gemm: native CPU kernels unavailable (${nativeLoadError()})\n`);
    return [];
  }
  if (opts.threads !== undefined) n.setNumThreads(opts.threads);
  const threads = n.numThreads();
  const core = opts.noOpenblas ? null : openblas(n, threads);
  const M = opts.tokens ?? 1024;
  const reps = opts.reps ?? (opts.quick ? 3 : 7);
  const shapes = opts.shapes ?? (opts.quick ? MODEL_SHAPES.slice(0, 2) : MODEL_SHAPES);
  const rows: GemmRow[] = [];
  const push = (op: string, shape: string, dtype: 'f32' | 'bf16', ms: number, rate: number, unit: GemmRow['unit'], ob: number | null) =>
    rows.push({ op, shape, dtype, ms: Math.round(ms * 1000) / 1000, rate: r1(rate), unit, openblas: ob === null ? '-' : r1(ob), ratio: ob === null ? '-' : Math.round((rate / ob) * 100) / 100 });

  for (const [N, K] of shapes) {
    const W = randn(N * K, 1), W16 = toBF16(W), X = randn(M * K, 2), dY = randn(M * N, 3);
    const Y = new Float32Array(M * N), dX = new Float32Array(M * K), dW = new Float32Array(N * K);
    const gflop = (2 * M * N * K) / 1e9;
    const cases: { op: string; shape: string; f32: () => void; bf16: (() => void) | null; ob: () => void }[] = [
      { op: 'fwd y=x·Wᵀ', shape: `${M}×${N}×${K}`,
        f32: () => n.sgemm(false, true, M, N, K, X, K, W, K, Y, N, false),
        bf16: () => n.gemmBf16(false, true, M, N, K, X, K, W16, K, Y, N, false),
        ob: () => n.openblasSgemm(false, true, M, N, K, X, K, W, K, Y, N, false) },
      { op: 'dX=dY·W', shape: `${M}×${K}×${N}`,
        f32: () => n.sgemm(false, false, M, K, N, dY, N, W, K, dX, K, false),
        bf16: () => n.gemmBf16(false, false, M, K, N, dY, N, W16, K, dX, K, false),
        ob: () => n.openblasSgemm(false, false, M, K, N, dY, N, W, K, dX, K, false) },
      { op: 'dW+=dYᵀ·X', shape: `${N}×${K}×${M}`,
        f32: () => n.sgemm(true, false, N, K, M, dY, N, X, K, dW, K, true),
        bf16: null,
        ob: () => n.openblasSgemm(true, false, N, K, M, dY, N, X, K, dW, K, true) },
    ];
    for (const c of cases) {
      const fns = [c.f32, ...(c.bf16 ? [c.bf16] : []), ...(core ? [c.ob] : [])];
      const t = timeInterleaved(fns, reps);
      const tob = core ? t[t.length - 1]! : null;
      const obRate = tob === null ? null : gflop / (tob / 1e3);
      push(c.op, c.shape, 'f32', t[0]!, gflop / (t[0]! / 1e3), 'GFLOP/s', obRate);
      if (c.bf16) push(c.op, c.shape, 'bf16', t[1]!, gflop / (t[1]! / 1e3), 'GFLOP/s', obRate);
    }
  }

  // Decode: M = 1 against many distinct weight matrices (well past the L3 cache), as a token's
  // pass through all the layers reads every weight once.
  {
    const N = 2048, K = 512, bytesF32 = N * K * 4;
    const total = opts.quick ? 64 << 20 : 128 << 20;
    const count = Math.max(2, Math.round(total / bytesF32));
    const Ws = Array.from({ length: count }, (_, i) => randn(N * K, 10 + i));
    const W16s = Ws.map((w) => toBF16(w));
    const x = randn(K, 9), y = new Float32Array(N);
    const pass32 = () => { for (const w of Ws) n.sgemm(false, true, 1, N, K, x, K, w, K, y, N, false); };
    const pass16 = () => { for (const w of W16s) n.gemmBf16(false, true, 1, N, K, x, K, w, K, y, N, false); };
    const passOb = () => { for (const w of Ws) n.openblasSgemm(false, true, 1, N, K, x, K, w, K, y, N, false); };
    const t = timeInterleaved([pass32, pass16, ...(core ? [passOb] : [])], reps);
    const gb32 = (count * bytesF32) / 1e9, gb16 = gb32 / 2;
    const obRate = core ? gb32 / (t[2]! / 1e3) : null;
    push('decode x·Wᵀ', `1×${N}×${K} ×${count}`, 'f32', t[0]! / count, gb32 / (t[0]! / 1e3), 'GB/s', obRate);
    push('decode x·Wᵀ', `1×${N}×${K} ×${count}`, 'bf16', t[1]! / count, gb16 / (t[1]! / 1e3), 'GB/s', obRate);
  }

  if (opts.json) writeFileSync(opts.json, JSON.stringify({ date: new Date().toISOString(), isa: n.gemmIsa(), threads, openblas: core, rows }, null, 2) + '\n');
  return rows;
}

/**
 * The pool's dispatch overhead in µs: the mean time of a parallel_for whose chunks (one per
 * thread) each take 1 µs, less that 1 µs; and the share of chunks the workers took (½ for 2 threads
 * when they are awake and keeping up).
 */
export function benchDispatch(iters = 20000): { overheadUs: number; workerShare: number } | null {
  const n = loadNative();
  if (!n) return null;
  const [ns, share] = n.benchDispatch(iters, 1000);
  return { overheadUs: Math.round(ns - 1000) / 1000, workerShare: Math.round(share * 1000) / 1000 };
}

/** A one-line description of what was measured against what. */
export function gemmBenchHeader(): string {
  const n = loadNative();
  if (!n) return `native CPU kernels unavailable (${nativeLoadError()})`;
  return `native ${n.gemmIsa()}, ${n.numThreads()} threads`;
}

// `node --import tsx src/bench/gemm.ts [--quick] [--threads N] [--json PATH]`: the table alone.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const argv = process.argv.slice(2);
  const arg = (name: string) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  const rows = await benchGemm({ quick: argv.includes('--quick'), threads: arg('--threads') ? Number(arg('--threads')) : undefined, json: arg('--json'), reps: arg('--reps') ? Number(arg('--reps')) : undefined });
  const d = benchDispatch();
  console.log(gemmBenchHeader() + (d ? `; parallel_for dispatch overhead ${d.overheadUs} µs (workers ran ${d.workerShare} of the chunks)` : ''));
  const head = Object.keys(rows[0] ?? {});
  const cells = [head, ...rows.map((r) => Object.values(r).map(String))];
  const w = head.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)));
  for (const c of cells) console.log(c.map((x, i) => x.padStart(w[i]!)).join('  '));
}
