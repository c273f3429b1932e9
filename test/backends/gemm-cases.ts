// GEMM cases checked against the reference backend (float64 accumulation), shared by
// cpu-gemm.test.ts and the child processes it starts on the other ISA paths
// (`node --import tsx test/backends/gemm-cases.ts` prints a JSON summary).
//
// Error bound, per element of C: |C − ref| ≤ tol · (Σ_k |a_k·b_k| + |C₀| when accumulating), with
// tol = γ_K = K·2⁻²⁴ (+1e-6), the classical bound of fp32 recursive summation. For bf16 weights the
// oracle uses the bf16 values of B, and A rounded to bf16 when the kernels say they round it
// (gemm_isa ends in "+bf16"); against the unrounded A the bound adds 2⁻⁸ (A's rounding).
import type { NativeAddon } from '../../src/backends/cpu/native.ts';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { fromBF16, toBF16 } from '../../src/backends/host.ts';
import { rng } from '../helpers/backends.ts';

export interface GemmCase {
  M: number; N: number; K: number;
  transA?: boolean; transB?: boolean; accumulate?: boolean;
  bf16?: boolean;
  /** Extra elements per row of the stored A, B, C (leading dimension > width: a column block). */
  padA?: number; padB?: number; padC?: number;
  /** Offset (elements) of the operands inside larger buffers: subarray views. */
  offset?: number;
}

export interface GemmResult { worst: number; worstUnrounded: number; paddingIntact: boolean; tol: number }

const ref = new ReferenceBackend();

/** The dense [rows, cols] matrix stored at data[offset + r·ld + c]. */
function dense(data: Float32Array, offset: number, rows: number, cols: number, ld: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(data.subarray(offset + r * ld, offset + r * ld + cols), r * cols);
  return out;
}

export function runCase(n: NativeAddon, c: GemmCase, seed: number): GemmResult {
  const { M, N, K } = c;
  const ta = !!c.transA, tb = !!c.transB, acc = !!c.accumulate, off = c.offset ?? 0;
  const g = rng(seed);
  const [aRows, aCols] = ta ? [K, M] : [M, K];
  const [bRows, bCols] = tb ? [N, K] : [K, N];
  const lda = aCols + (c.padA ?? 0), ldb = bCols + (c.padB ?? 0), ldc = N + (c.padC ?? 0);
  const Abuf = g.array(off + Math.max(0, aRows * lda));
  const Bbuf32 = g.array(off + Math.max(0, bRows * ldb));
  const Bbuf16 = toBF16(Bbuf32);
  const Cbuf = g.array(off + M * ldc);
  const C0 = Float32Array.from(Cbuf);

  // Native, on subarray views (byteOffset ≠ 0 when offset > 0).
  const Av = Abuf.subarray(off), Cv = Cbuf.subarray(off);
  if (c.bf16) n.gemmBf16(ta, tb, M, N, K, Av, lda, Bbuf16.subarray(off), ldb, Cv, ldc, acc);
  else n.sgemm(ta, tb, M, N, K, Av, lda, Bbuf32.subarray(off), ldb, Cv, ldc, acc);

  // Oracle: the reference backend on dense copies.
  const Ad = dense(Abuf, off, aRows, aCols, lda);
  const Bd = dense(c.bf16 ? fromBF16(Bbuf16) : Bbuf32, off, bRows, bCols, ldb);
  const roundsA = !!c.bf16 && n.gemmIsa().endsWith('+bf16');
  const oracle = (a: Float32Array, b: Float32Array, c0: Float32Array | null) => {
    const C = ref.upload(c0 ?? new Float32Array(M * N), [M, N]);
    ref.matmul(C, ref.upload(a, [aRows, aCols]), ref.upload(b, [bRows, bCols]), { transA: ta, transB: tb, accumulate: c0 !== null });
    return ref.download(C);
  };
  const c0dense = acc ? dense(C0, off, M, N, ldc) : null;
  const want = oracle(roundsA ? fromBF16(toBF16(Ad)) : Ad, Bd, c0dense);
  const wantUnrounded = roundsA ? oracle(Ad, Bd, c0dense) : want;
  const mag = oracle(Ad.map(Math.abs), Bd.map(Math.abs), c0dense ? c0dense.map(Math.abs) : null);

  const tol = K * 2 ** -24 + 1e-6;
  let worst = 0, worstUnrounded = 0, paddingIntact = true;
  for (let m = 0; m < M; m++) {
    for (let j = 0; j < N; j++) {
      const got = Cbuf[off + m * ldc + j]!, b = mag[m * N + j]! + 1e-30;
      worst = Math.max(worst, Math.abs(got - want[m * N + j]!) / b);
      worstUnrounded = Math.max(worstUnrounded, Math.abs(got - wantUnrounded[m * N + j]!) / b);
      if (!Number.isFinite(got)) worst = Infinity;
    }
    for (let j = N; j < ldc; j++) if (Cbuf[off + m * ldc + j] !== C0[off + m * ldc + j]) paddingIntact = false;
  }
  for (let i = 0; i < off; i++) if (Cbuf[i] !== C0[i]) paddingIntact = false;
  return { worst, worstUnrounded, paddingIntact, tol };
}

export const describeCase = (c: GemmCase) =>
  `${c.bf16 ? 'bf16' : 'f32'} ${c.transA ? 'Aᵀ' : 'A'}·${c.transB ? 'Bᵀ' : 'B'} M=${c.M} N=${c.N} K=${c.K}` +
  `${c.accumulate ? ' +=' : ''}${c.padA || c.padB || c.padC ? ` ld+(${c.padA ?? 0},${c.padB ?? 0},${c.padC ?? 0})` : ''}${c.offset ? ` @${c.offset}` : ''}`;

/** Every transpose combination × {fp32, bf16} × {overwrite, accumulate} on the given sizes. */
export function allCombos(sizes: readonly [number, number, number][], extra: Partial<GemmCase> = {}): GemmCase[] {
  const out: GemmCase[] = [];
  let i = 0;
  for (const [M, N, K] of sizes)
    for (const transA of [false, true])
      for (const transB of [false, true])
        for (const bf16 of [false, true])
          out.push({ M, N, K, transA, transB, bf16, accumulate: (i++ & 1) === 1, ...extra });
  return out;
}

/** A smaller set for the other ISA paths (run in child processes). */
export const ISA_CASES: GemmCase[] = [
  ...allCombos([[1, 37, 33], [5, 19, 70], [8, 100, 17], [13, 33, 129], [40, 70, 390]]),
  { M: 9, N: 31, K: 5, padA: 3, padB: 2, padC: 5, offset: 7 },
  { M: 3, N: 17, K: 33, transB: true, bf16: true, padA: 1, padB: 4, padC: 2, offset: 3 },
  { M: 30, N: 200, K: 200, transB: true },
];

// As a script: run ISA_CASES here and print {isa, worst, ...} as JSON (for the child processes).
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const { loadNative } = await import('../../src/backends/cpu/native.ts');
  const n = loadNative();
  if (!n) {
    console.log(JSON.stringify({ skipped: true }));
  } else {
    const failures: string[] = [];
    ISA_CASES.forEach((c, i) => {
      const r = runCase(n, c, 1000 + i);
      if (!(r.worst <= r.tol) || !r.paddingIntact) failures.push(`${describeCase(c)}: rel err ${r.worst.toExponential(2)} (tol ${r.tol.toExponential(2)}), padding ${r.paddingIntact ? 'intact' : 'WRITTEN'}`);
    });
    console.log(JSON.stringify({ isa: n.gemmIsa(), cases: ISA_CASES.length, failures }));
  }
}
