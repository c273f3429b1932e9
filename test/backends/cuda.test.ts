// The CUDA backend. Host-side logic (NVRTC options and cache keys, launch geometry, allocator buckets,
// the cuBLASLt operand mapping, shape checks, the error when libcuda is missing) runs everywhere;
// the GPU parts skip with a message where no GPU is present (as in CI). The full GPU check is
// scripts/gpu-check.ts on the device machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { ShapeError } from '../../src/errors.ts';
import {
  alignmentOf, bucketBytes, cacheDir, cacheKey, chunkSmem, elementwiseLaunch, gemmShape, gpuArch, lightningPlan, logDecay,
  ltProblem, nvrtcOptions, reductionBlocks, rowLaunch, tcSmem, wsSmem, lastSegment, gemvSplit,
} from '../../src/backends/cuda/plan.ts';
import { cuErrorMessage, librarySonames } from '../../src/backends/cuda/driver.ts';
import { moduleSource } from '../../src/backends/cuda/modules.ts';
import { CachingAllocator, CudaBackend, cudaAvailable, tryCudaBackend } from '../../src/backends/cuda/index.ts';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { rng } from '../helpers/backends.ts';

test('cuda plan: NVRTC architecture, options and cache keys', () => {
  assert.equal(gpuArch([9, 0]), 'sm_90a');
  assert.equal(gpuArch([8, 6]), 'sm_86');
  assert.equal(gpuArch([10, 0]), 'sm_100');
  assert.throws(() => gpuArch([3, 5]), ShapeError);
  const o = nvrtcOptions([9, 0]);
  assert.ok(o.includes('--gpu-architecture=sm_90a') && o.includes('-std=c++17'));
  assert.ok(!o.some((x) => x.includes('fast-math') || x.includes('fast_math')), 'exact kernels: no fast math');
  const k = cacheKey('src', o, [13, 0]);
  assert.match(k, /^[0-9a-f]{32}$/);
  assert.equal(k, cacheKey('src', [...o], [13, 0]));
  assert.notEqual(k, cacheKey('src ', o, [13, 0]));
  assert.notEqual(k, cacheKey('src', nvrtcOptions([8, 0]), [13, 0]));
  assert.notEqual(k, cacheKey('src', o, [13, 1]));
  assert.equal(cacheDir({ TNL_CACHE: '/c' }, '/h'), '/c/cuda');
  assert.equal(cacheDir({ XDG_CACHE_HOME: '/x' }, '/h'), '/x/tnl/cuda');
  assert.equal(cacheDir({}, '/h'), '/h/.cache/tnl/cuda');
});

test('cuda plan: launch geometry', () => {
  assert.deepEqual(elementwiseLaunch(1, 132), { grid: [1, 1, 1], block: [256, 1, 1], smem: 0 });
  assert.deepEqual(elementwiseLaunch(0, 132).grid, [1, 1, 1]);
  assert.equal(elementwiseLaunch(1e9, 132).grid[0], 132 * 32);
  assert.equal(elementwiseLaunch(1000, 132).grid[0], 4);
  assert.equal(rowLaunch(10, 1).block[0], 32);
  assert.equal(rowLaunch(10, 128).block[0], 32);
  assert.equal(rowLaunch(10, 512).block[0], 128);
  assert.equal(rowLaunch(10, 1024, 8).block[0], 128);
  assert.equal(rowLaunch(10, 1e6).block[0], 1024);
  assert.equal(rowLaunch(0, 5).grid[0], 1);
  assert.equal(reductionBlocks(1), 1);
  assert.equal(reductionBlocks(1e9), 1024);
});

test('cuda plan: allocator buckets waste at most 25% and are stable', () => {
  const r = rng(3);
  for (let i = 0; i < 2000; i++) {
    const n = Math.floor(2 ** (r.uniform() * 34));
    const b = bucketBytes(n);
    assert.ok(b >= n && b >= 512, `${n} → ${b}`);
    if (n > 1 << 20) assert.ok(b <= 1.25 * n + 1, `${n} → ${b} wastes more than 25%`);
    assert.equal(bucketBytes(b), b, 'a bucket size is its own bucket');
  }
  assert.equal(bucketBytes(0), 512);
  assert.equal(bucketBytes(513), 1024);
  assert.throws(() => bucketBytes(-1), ShapeError);
});

test('cuda plan: matmul shapes and the column-major cuBLASLt mapping', () => {
  assert.deepEqual(gemmShape([4, 5], [4, 3], [3, 5], false, false), { M: 4, N: 5, K: 3 });
  assert.deepEqual(gemmShape([4, 5], [3, 4], [5, 3], true, true), { M: 4, N: 5, K: 3 });
  assert.throws(() => gemmShape([4, 5], [4, 3], [4, 5], false, false), /inner dimensions/);
  assert.throws(() => gemmShape([4, 6], [4, 3], [3, 5], false, false), /op\(B\) has 5 columns, C has 6/);
  assert.throws(() => gemmShape([5, 5], [4, 3], [3, 5], false, false), ShapeError);
  // Check the mapping by evaluating it: a column-major product of the stored buffers must equal
  // the row-major product, for every transpose combination.
  const r = rng(7);
  for (const ta of [false, true]) for (const tb of [false, true]) {
    const M = 3, N = 4, K = 5;
    const A = Array.from({ length: M * K }, r.normal), B = Array.from({ length: K * N }, r.normal);
    const a = (m: number, k: number) => (ta ? A[k * M + m]! : A[m * K + k]!);
    const b = (k: number, n: number) => (tb ? B[n * K + k]! : B[k * N + n]!);
    const p = ltProblem({ M, N, K }, ta, tb);
    // column-major element (i, j) of a stored matrix with leading dimension ld: buf[i + j·ld]
    const colA = (i: number, j: number) => (p.opA ? B[j + i * p.a[2]]! : B[i + j * p.a[2]]!);  // op(lib A)[i, j], lib A = our B
    const colB = (i: number, j: number) => (p.opB ? A[j + i * p.b[2]]! : A[i + j * p.b[2]]!);  // op(lib B)[i, j], lib B = our A
    assert.deepEqual(p.c, [N, M, N]);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
      let want = 0, got = 0;
      for (let k = 0; k < K; k++) { want += a(m, k) * b(k, n); got += colA(n, k) * colB(k, m); }
      assert.ok(Math.abs(want - got) < 1e-12, `trans ${ta}/${tb}: C[${m},${n}]`);
    }
    // stored layouts: rows × cols with ld = rows (column-major)
    assert.equal(p.a[2], p.a[0]); assert.equal(p.b[2], p.b[0]);
  }
  assert.equal(alignmentOf(0x7f0000000000), 256);
  assert.equal(alignmentOf(0x7f0000000010), 16);
  assert.equal(alignmentOf(0x7f0000000004), 4);
});

test('cuda plan: the Lightning kernel choice', () => {
  const base = { B: 4, N: 32768, nh: 32, smemLimit: 227 * 1024 };
  const tc = lightningPlan({ ...base, DK: 128, DV: 128, tensorCores: true, smCount: 132 });
  assert.equal(tc.kernel, 'lightning_tc_k128_v128');
  assert.deepEqual(tc.grid, [1, 32, 4], 'one block per (sequence, head): all 128 columns, q and k read once');
  assert.equal(tc.G, 1, '128 blocks already fill 132 SMs');
  assert.equal(tc.smem, tcSmem(128, 128));
  assert.ok(tc.smem <= 227 * 1024);
  assert.equal(lightningPlan({ ...base, DK: 64, DV: 128, tensorCores: true }).kernel, 'lightning_tc_k64_v128');
  const t64 = lightningPlan({ ...base, DK: 128, DV: 192, tensorCores: true });
  assert.equal(t64.kernel, 'lightning_tc_k128_v64');
  assert.deepEqual(t64.grid, [3, 32, 4]);
  // few sequences × heads: the sequence-parallel form, G blocks each, all resident
  const sp = lightningPlan({ ...base, B: 1, N: 131072, DK: 128, DV: 128, tensorCores: true, smCount: 132 });
  assert.equal(sp.G, 4);
  assert.equal(sp.L, 2048);
  // the round's last block (no state-only pass) takes about 1.25·L, stretched so that 15 whole rounds
  // cover the sequence (1.25·L would leave a 16th round of 512 tokens)
  assert.equal(sp.LG, 2624);
  assert.ok(15 * (3 * 2048 + sp.LG) >= 131072 && 15 * (3 * 2048 + 2560) < 131072);
  assert.equal(lightningPlan({ ...base, B: 1, N: 131072, DK: 128, DV: 128, tensorCores: true, smCount: 132, tuning: { seg: 512 } }).LG, 704);
  assert.equal(lightningPlan({ ...base, B: 1, N: 131072, DK: 128, DV: 128, tensorCores: true, smCount: 132, tuning: { lastSeg: 2560 } }).LG, 2560);
  assert.equal(lastSegment(2048), 2560);
  assert.equal(lastSegment(2048, 1.25, 4 * 8192, 4), 2048, 'never shorter than L');
  assert.equal(lastSegment(2048, 1.25, 3 * 2048 + 4100, 4), 4096, 'never longer than 2·L');
  assert.throws(() => lightningPlan({ ...base, B: 1, N: 131072, DK: 128, DV: 128, tensorCores: true, tuning: { lastSeg: 100 } }), /last segment length 100/);
  assert.equal(tc.LG, 0);
  assert.deepEqual(sp.grid, [4, 32, 1]);
  assert.equal(sp.wsBytes, 32 * (2 * 4 + 2) * 128 * 128 * 4);
  assert.equal(sp.counters, 64);
  assert.equal(lightningPlan({ ...base, B: 1, N: 3000, DK: 128, DV: 128, tensorCores: true, smCount: 132 }).G, 2, 'no more blocks than segments');
  assert.equal(lightningPlan({ ...base, B: 1, N: 131072, DK: 128, DV: 128, tensorCores: true, smCount: 132, tuning: { maxG: 1 } }).G, 1);
  const s2 = lightningPlan({ ...base, B: 1, nh: 2, N: 1000, DK: 128, DV: 256, tensorCores: true, smCount: 132, tuning: { seg: 128, maxG: 3 } });
  assert.deepEqual([s2.G, s2.L, ...s2.grid], [3, 128, 6, 2, 1]);
  assert.throws(() => lightningPlan({ ...base, DK: 128, DV: 128, tensorCores: true, tuning: { seg: 100 } }), /multiple of 64/);
  // Hopper: the warp-specialised wgmma kernel (384 threads) for DK = 128, DV a multiple of 128 (unless
  // turned off); mma.sync otherwise
  const hw = lightningPlan({ ...base, DK: 128, DV: 256, tensorCores: true, smCount: 132, hopper: true });
  assert.equal(hw.kernel, 'lightning_ws_k128_v128');
  assert.equal(hw.smem, wsSmem());
  assert.ok(hw.smem <= 227 * 1024);
  assert.deepEqual(hw.grid, [2, 32, 4]);
  assert.deepEqual(hw.block, [384, 1, 1]);
  assert.equal(lightningPlan({ ...base, DK: 128, DV: 128, tensorCores: true, hopper: true, tuning: { wgmma: false } }).kernel, 'lightning_tc_k128_v128');
  assert.equal(lightningPlan({ ...base, DK: 64, DV: 128, tensorCores: true, hopper: true }).kernel, 'lightning_tc_k64_v128');
  assert.equal(lightningPlan({ ...base, DK: 128, DV: 192, tensorCores: true, hopper: true }).kernel, 'lightning_tc_k128_v64');
  // widths the tensor-core kernel does not take, or fp32 asked for: the exact kernel
  for (const [DK, DV, t] of [[128, 96, true], [256, 128, true], [32, 64, true], [128, 128, false]] as const) {
    const p = lightningPlan({ ...base, DK, DV, tensorCores: t });
    assert.equal(p.kernel, 'lightning_f32');
    assert.ok(p.smem <= base.smemLimit && p.smem === chunkSmem(DK, p.C, p.DVT));
  }
  assert.equal(lightningPlan({ ...base, DK: 256, DV: 128, tensorCores: false }).C, 64);
  assert.equal(lightningPlan({ ...base, smemLimit: 160 * 1024, DK: 256, DV: 128, tensorCores: false }).C, 32, 'less shared memory halves the chunk');
  assert.equal(lightningPlan({ ...base, DK: 10, DV: 6, tensorCores: false, bf16In: true }).kernel, 'lightning_bf16in');
  assert.deepEqual(lightningPlan({ ...base, DK: 10, DV: 6, tensorCores: false }).grid, [1, 32, 4]);
  assert.throws(() => lightningPlan({ ...base, DK: 8192, DV: 64, tensorCores: false }), /does not fit/);
  assert.throws(() => lightningPlan({ ...base, N: 0, DK: 8, DV: 8, tensorCores: false }), /N = 0/);
  assert.deepEqual(Array.from(logDecay(Float64Array.of(1, Math.exp(-0.5)))), [0, -0.5]);
  assert.throws(() => logDecay(Float64Array.of(1.5)), /decay of head 0/);
});

test('cuda driver: sonames, error messages, and a clear answer where no GPU is present', () => {
  assert.deepEqual(librarySonames({}).cuda, ['libcuda.so.1']);
  assert.equal(librarySonames({}).nvrtc[0], 'libnvrtc.so.13');
  assert.equal(librarySonames({}).cublasLt[0], 'libcublasLt.so.13');
  assert.equal(librarySonames({ TNL_NVRTC: '/x/libnvrtc.so' }).nvrtc[0], '/x/libnvrtc.so');
  assert.equal(cuErrorMessage('cuMemAlloc', 2, 'CUDA_ERROR_OUT_OF_MEMORY', 'out of memory'),
    'CUDA call cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory');
  assert.match(cuErrorMessage('cuLaunchKernel(x)', 999, null, null), /cuLaunchKernel\(x\) failed: CUDA_ERROR_999/);
  const a = cudaAvailable();
  if (!a.ok) {
    assert.match(a.reason, /libcuda\.so\.1|koffi|NVRTC|GPU|TNL_CUDA/);
    const r = tryCudaBackend();
    assert.ok('error' in r && r.error.startsWith('CUDA backend unavailable: '), JSON.stringify(r));
    assert.throws(() => new CudaBackend(), /CUDA backend unavailable/);
  }
});

test('cuda sources: every kernel the backend launches is defined, extern "C", without headers', () => {
  const src = (f: string) => readFileSync(new URL(`../../native/cuda/${f}`, import.meta.url), 'utf8');
  const kernels = src('kernels.cu'), lightning = src('lightning.cu');
  for (const s of [kernels, lightning]) assert.doesNotMatch(s, /#include/);
  const ts = readFileSync(new URL('../../src/backends/cuda/index.ts', import.meta.url), 'utf8');
  const names = new Set([...ts.matchAll(/launch\('([a-z_0-9]+)'/g)].map((m) => m[1]!));
  for (const n of ["gather_rows_b32", "gather_rows_b16", "cvt_f32_bf16", "cvt_bf16_f32", "fill_normal_f32", "fill_normal_bf16", "sum_squares_f32", "sum_squares_bf16", "gla_qkv_bwd", "gla_dtheta"]) names.add(n);
  for (const n of names) assert.match(kernels, new RegExp(`__global__ void (__launch_bounds__\\([^)]*\\) )?${n}\\(`), `kernel ${n} missing from kernels.cu`);
  for (const n of ['lightning_f32', 'lightning_bf16in'])
    assert.match(lightning, new RegExp(`__global__ void __launch_bounds__\\([^)]*\\) ${n}\\(`), `kernel ${n} missing from lightning.cu`);
  for (const t of ['bf16', 'f32']) assert.match(lightning, new RegExp(`__global__ void __launch_bounds__\\([^)]*\\) lightning_ws_k128_v128_${t}\\(`));
  for (const k of [128, 64]) for (const v of [128, 64]) for (const t of ['bf16', 'f32'])
    assert.match(lightning, new RegExp(`TC_KERNEL\\(${k}, ${v}, \\w+, ${t}\\)`), `kernel lightning_tc_k${k}_v${v}_${t} missing from lightning.cu`);
});

test('cuda sources: each file is compiled after common.cuh, with its own line numbers', () => {
  for (const f of ['kernels.cu', 'lightning.cu']) {
    const src = moduleSource(f);
    assert.ok(src.startsWith(readFileSync(new URL('../../native/cuda/common.cuh', import.meta.url), 'utf8')));
    assert.match(src, new RegExp(`\\n#line 1 "${f.replace('.', '\\.')}"\\n`));
    assert.doesNotMatch(src, /#include/);
    assert.equal(src.match(/__device__ __forceinline__ u16 f2bf/g)?.length, 1, `${f} defines nothing common.cuh does`);
  }
});

test('cuda sources: every launch passes as many arguments, of the kinds, as its kernel declares', () => {
  const cu = readFileSync(new URL('../../native/cuda/kernels.cu', import.meta.url), 'utf8');
  const ts = readFileSync(new URL('../../src/backends/cuda/index.ts', import.meta.url), 'utf8');
  const macros = new Map([...cu.matchAll(/#define (\w+_ARGS) (.*)/g)].map((m) => [m[1]!, m[2]!]));
  const kind = (param: string) => (param.includes('*') ? 'p' : /\b(i64|long long)\b/.test(param) ? 'l' : /\bfloat\b/.test(param) ? 'f' : /\bdouble\b/.test(param) ? 'd' : 'i');
  const declared = (name: string): string => {
    const m = cu.match(new RegExp(`__global__ void (?:__launch_bounds__\\([^)]*\\) )?${name}\\(([^)]*)\\)`));
    assert.ok(m, `kernel ${name} missing from kernels.cu`);
    const params = m[1]!.trim().replace(/^(\w+_ARGS)$/, (x) => macros.get(x) ?? x);
    return params.split(',').map(kind).join('');
  };
  const suffixes: Record<string, string[]> = { gemv_reg_m: ['1', '2'], gemv_bf16_m: ['1', '2', '4', '8'], gla_project_step: ['8', '16'] };
  let checked = 0;
  for (const m of ts.matchAll(/(?:this\.launch|this\.drv\.launch)\(((?:(?!this\.(?:drv\.)?launch\()[\s\S])*?)'([pilfd]+)',/g)) {
    const head = m[1]!, sig = m[2]!;
    const names = new Set([...head.matchAll(/'([a-z][a-z_0-9]+)'/g)].map((x) => x[1]!).filter((n) => n.includes('_')));
    for (const t of head.matchAll(/`([a-z_0-9]+)\$\{/g)) for (const sfx of suffixes[t[1]!] ?? []) names.add(t[1]! + sfx);
    for (const n of names) { assert.equal(sig, declared(n), `launch of ${n}: signature "${sig}" vs the kernel's "${declared(n)}"`); checked++; }
  }
  assert.ok(checked >= 30, `only ${checked} launches found`);
});

test('cuda plan: the GEMV splits K over warps only for narrow outputs', () => {
  const sm = 132;
  assert.equal(gemvSplit(4096, 1024, sm), 1);
  assert.equal(gemvSplit(5632, 1024, sm), 1);
  assert.equal(gemvSplit(64000, 1024, sm), 1);
  assert.equal(gemvSplit(1024, 1024, sm), 4);
  assert.equal(gemvSplit(1024, 2816, sm), 4);
  assert.equal(gemvSplit(1024, 512, sm), 2, 'each warp keeps two 32-lane strides of K');
  assert.equal(gemvSplit(1024, 256, sm), 1);
});

test('cuda allocator: blocks a captured graph touches stay out of the pool until the graph is destroyed', () => {
  let next = 0x1000;
  const fake = { tryAlloc: (n: number) => { const p = next; next += n; return p; }, memGetInfo: () => ({ free: 0, total: 0 }), sync: () => {}, memFree: () => {} };
  const mem = new CachingAllocator(fake as unknown as ConstructorParameters<typeof CachingAllocator>[0]);
  const a = mem.allocRaw(1000);
  mem.release(a.ptr, a.bytes);
  assert.equal(mem.allocRaw(1000).ptr, a.ptr, 'outside a capture a released block is reused');
  const before = mem.allocRaw(1000);
  mem.beginCapture();
  const tmp = mem.allocRaw(1000);                 // a temporary of the recorded step
  mem.release(tmp.ptr, tmp.bytes);
  mem.release(before.ptr, before.bytes);          // released during the capture: the graph may use it
  const kept = mem.allocRaw(1000);                // e.g. the logits the graph returns
  const blocks = mem.endCapture();
  assert.notEqual(kept.ptr, tmp.ptr);
  const other = mem.allocRaw(1000);
  assert.ok(![tmp.ptr, before.ptr, kept.ptr].includes(other.ptr), 'graph blocks are not handed out while the graph lives');
  mem.release(kept.ptr, kept.bytes);              // its owner lets go while the graph lives: still held
  assert.ok(![tmp.ptr, before.ptr, kept.ptr].includes(mem.allocRaw(1000).ptr));
  mem.releaseGraph(blocks);
  const after = new Set([mem.allocRaw(1000).ptr, mem.allocRaw(1000).ptr, mem.allocRaw(1000).ptr]);
  assert.deepEqual([...after].sort(), [tmp.ptr, before.ptr, kept.ptr].sort(), 'destroying the graph returns its released blocks');
});

// ---- on a GPU ----------------------------------------------------------------------------------------
const avail = cudaAvailable();
const gpuSkip = avail.ok ? false : `no GPU here (${avail.reason}); run scripts/gpu-check.ts on the GPU machine`;

test('cuda backend on the GPU: a few kernels against the reference backend', { skip: gpuSkip }, () => {
  const g = new CudaBackend(), ref = new ReferenceBackend(), r = rng(11);
  const A = r.array(17 * 33), B = r.array(33 * 9);
  const c1 = g.empty([17, 9]), c0 = ref.empty([17, 9]);
  g.matmul(c1, g.upload(A, [17, 33]), g.upload(B, [33, 9]));
  ref.matmul(c0, ref.upload(A, [17, 33]), ref.upload(B, [33, 9]));
  const x = g.download(c1), y = ref.download(c0);
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]! - y[i]!) < 1e-4);
  const q = r.array(2 * 70 * 16), v = r.array(2 * 70 * 8), decay = Float64Array.of(0.9, 0.5);
  const og = g.empty([1, 70, 8]), orf = ref.empty([1, 70, 8]);
  g.lightningForward(og, g.upload(q.subarray(0, 70 * 16), [1, 70, 16]), g.upload(q.subarray(70 * 16), [1, 70, 16]), g.upload(v.subarray(0, 560), [1, 70, 8]), decay, null, 64);
  ref.lightningForward(orf, ref.upload(q.subarray(0, 70 * 16), [1, 70, 16]), ref.upload(q.subarray(70 * 16), [1, 70, 16]), ref.upload(v.subarray(0, 560), [1, 70, 8]), decay, null, 64);
  const a = g.download(og), b = ref.download(orf);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-4);
  assert.throws(() => g.matmul(g.empty([3, 3]), g.empty([3, 2]), g.empty([3, 3])), ShapeError);
  assert.ok(existsSync(new URL('../../native/cuda/lightning.cu', import.meta.url)));
});
