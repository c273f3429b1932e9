// The native GEMM against the reference backend (float64): every transpose combination, fp32 and
// bf16 weights, accumulate, odd sizes and micro-tile / cache-block edges, leading dimensions wider
// than the matrix (column blocks), subarray views, the small-M (decode) path, several thread
// counts, and the AVX2 / generic / no-BF16 paths in child processes. Bounds: see gemm-cases.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadNative, nativeLoadError } from '../../src/backends/cpu/native.ts';
import { CpuBackend } from '../../src/backends/cpu/index.ts';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { ShapeError } from '../../src/errors.ts';
import { allCombos, describeCase, runCase, type GemmCase } from './gemm-cases.ts';
import { rng } from '../helpers/backends.ts';

const n = loadNative();
const skip = n ? false : `native addon not built (${nativeLoadError()}): run npm run build:native`;

function check(cases: GemmCase[], seed: number, unroundedToo = false): void {
  cases.forEach((c, i) => {
    const r = runCase(n!, c, seed + i);
    assert.ok(r.worst <= r.tol, `${describeCase(c)}: relative error ${r.worst.toExponential(2)} > ${r.tol.toExponential(2)}`);
    assert.ok(r.paddingIntact, `${describeCase(c)}: wrote outside C's columns`);
    if (unroundedToo && c.bf16)
      assert.ok(r.worstUnrounded <= r.tol + 2 ** -8, `${describeCase(c)}: vs unrounded A ${r.worstUnrounded.toExponential(2)}`);
  });
}

test('gemm: odd sizes 1, 3, 17, 33, 129, all transposes, fp32 and bf16, accumulate', { skip }, () => {
  const s = [1, 3, 17, 33, 129];
  const sizes: [number, number, number][] = [];
  for (const M of s) for (const N of s) for (const K of s) if (M * N * K <= 129 * 33 * 33 || (M === N && N === K)) sizes.push([M, N, K]);
  // a deterministic subset keeps the run short but covers each size in each role
  check(allCombos(sizes.filter((_, i) => i % 3 === 0)), 1, true);
});

test('gemm: micro-tile and cache-block edges (MR 12/6/4, NR 32/16, KC 384, MC 192)', { skip }, () => {
  check(allCombos([[11, 31, 385], [12, 32, 384], [13, 33, 383], [25, 65, 769], [193, 47, 40], [200, 30, 9]]), 100);
});

test('gemm: small-M path (M = 1…8) and just past it (M = 9), both B layouts and dtypes', { skip }, () => {
  const cases: GemmCase[] = [];
  for (let M = 1; M <= 9; M++)
    cases.push(...allCombos([[M, 37 + 16 * M, 31 + 50 * (M % 3)]]));
  cases.push(...allCombos([[1, 1, 1], [1, 16, 16], [2, 2048, 64], [8, 3, 1100]]));
  check(cases, 200, true);
});

test('gemm: medium-M path (16 < M ≤ 64, weights transposed: batched decode) and its neighbours', { skip }, () => {
  const cases: GemmCase[] = [];
  for (const M of [16, 17, 31, 32, 33, 48, 63, 64, 65])
    cases.push(...allCombos([[M, 13 + 24 * (M % 4) + (M % 7), 17 + 40 * (M % 3)]]).filter((c) => c.transB));
  cases.push(...allCombos([[40, 97, 130]], { padA: 5, padB: 11, padC: 3, offset: 13 }).filter((c) => c.transB));
  check(cases, 400, true);
});

test('gemm: leading dimensions wider than the matrix (column blocks) and subarray views', { skip }, () => {
  const cases: GemmCase[] = [];
  for (const [M, N, K] of [[1, 20, 24], [7, 40, 16], [33, 64, 64], [70, 17, 129]] as const)
    cases.push(...allCombos([[M, N, K]], { padA: 5, padB: 11, padC: 3, offset: 13 }));
  // one head of an attention-like layout: 64 columns of a 512-wide matrix
  cases.push({ M: 100, N: 64, K: 100, padB: 448, padC: 448, transB: false });
  cases.push({ M: 100, N: 100, K: 64, padA: 448, padB: 448, transB: true });
  check(cases, 300);
});

test('gemm: threaded splits (M across threads, N across threads) with 1, 2 and 3 threads', { skip }, () => {
  const before = n!.numThreads();
  try {
    for (const t of [1, 3, 2]) {
      n!.setNumThreads(t);
      assert.equal(n!.numThreads(), t);
      check([
        { M: 257, N: 130, K: 200 }, { M: 257, N: 130, K: 200, transA: true, transB: true, accumulate: true },
        { M: 20, N: 300, K: 300, bf16: true, transB: true }, { M: 24, N: 700, K: 150 },
        { M: 1, N: 4000, K: 300, bf16: true, transB: true }, { M: 5, N: 3000, K: 130 },
      ], 400 + t);
    }
  } finally {
    n!.setNumThreads(0);
    assert.equal(n!.numThreads(), before);
  }
});

test('gemm: K = 0 clears C (or leaves it when accumulating); M or N = 0 is a no-op', { skip }, () => {
  const C = new Float32Array([1, 2, 3, 4, 5, 6]);
  n!.sgemm(false, false, 2, 3, 0, new Float32Array(0), 0, new Float32Array(0), 3, C, 3, true);
  assert.deepEqual([...C], [1, 2, 3, 4, 5, 6]);
  n!.gemmBf16(false, true, 2, 3, 0, new Float32Array(0), 0, new Uint16Array(0), 0, C, 3, false);
  assert.deepEqual([...C], [0, 0, 0, 0, 0, 0]);
  n!.sgemm(false, false, 0, 3, 5, new Float32Array(0), 5, new Float32Array(15), 3, new Float32Array(0), 3, false);
});

test('gemm: the addon refuses arrays too short for the dimensions, and wrong element types', { skip }, () => {
  assert.throws(() => n!.sgemm(false, false, 4, 4, 4, new Float32Array(15), 4, new Float32Array(16), 4, new Float32Array(16), 4, false), /A has 15 elements, needs 16/);
  assert.throws(() => n!.sgemm(false, false, 4, 4, 4, new Float32Array(16), 4, new Float32Array(16), 4, new Float32Array(16), 3, false), /leading dimension/);
  assert.throws(() => n!.gemmBf16(false, false, 2, 2, 2, new Float32Array(4), 2, new Float32Array(4) as unknown as Uint16Array, 2, new Float32Array(4), 2, false), /Uint16Array/);
});

test('cpu backend matmul = reference matmul, with ShapeErrors naming the op and shapes', { skip }, () => {
  const cpu = new CpuBackend(), refb = new ReferenceBackend(), g = rng(7);
  for (const [M, N, K, ta, tb, dt] of [[50, 40, 30, false, true, 'bf16'], [3, 9, 70, true, false, 'f32'], [129, 1, 5, true, true, 'f32']] as const) {
    const a = g.array(M * K), b = g.array(N * K), c = g.array(M * N);
    const run = (be: CpuBackend | ReferenceBackend) => {
      const C = be.upload(c, [M, N]);
      be.matmul(C, be.upload(a, ta ? [K, M] : [M, K]), be.upload(b, tb ? [N, K] : [K, N], dt), { transA: ta, transB: tb, accumulate: true });
      return be.download(C);
    };
    const got = run(cpu), want = run(refb);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
    assert.ok(worst < (dt === 'bf16' ? 0.05 : 1e-4), `matmul ${M}×${N}×${K} ${dt}: ${worst}`);
  }
  const A = cpu.zeros([4, 5]), B = cpu.zeros([6, 7]), C = cpu.zeros([4, 7]);
  assert.throws(() => cpu.matmul(C, A, B), (e: unknown) => e instanceof ShapeError && /matmul: C \[4, 7\] = A \[4, 5\] · B \[6, 7\]: inner dims 5 vs 6/.test(e.message));
  assert.throws(() => cpu.matmul(C, A, cpu.zeros([5, 7], 'bf16'), { transA: true }), ShapeError);
  assert.throws(() => cpu.matmul(cpu.zeros([4, 7], 'bf16'), A, cpu.zeros([5, 7])), ShapeError);
  assert.match(cpu.describe(), /^cpu: native \((avx512|avx2|generic)(\+bf16)?, \d+ threads?\)$/);
});

// The slower ISA paths, each in a child process (the choice is made once per process).
for (const [label, env] of [['avx2', { TNL_ISA: 'avx2' }], ['generic', { TNL_ISA: 'generic' }], ['avx512 without vdpbf16ps', { TNL_GEMM_NO_BF16: '1' }]] as const) {
  test(`gemm on the ${label} path`, { skip }, () => {
    const script = fileURLToPath(new URL('./gemm-cases.ts', import.meta.url));
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { isa: string; cases: number; failures: string[] };
    // avx2 is forced only where the CPU has it; no-BF16 keeps the best fp32 kernels
    if (label === 'generic') assert.equal(out.isa, 'generic');
    else if (label === 'avx2') assert.match(out.isa, /^(avx2|generic)$/);
    else assert.doesNotMatch(out.isa, /\+bf16$/);
    assert.deepEqual(out.failures, [], `${out.isa}: ${out.failures.join('\n')}`);
  });
}
