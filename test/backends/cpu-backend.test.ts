// The cpu backend's own layer: createBackend's choice and fallback, describe(), the addon loader,
// and the ShapeErrors it raises (naming the op and the shapes) before anything reaches native code.
// The kernels' numbers are checked in cpu-gemm.test.ts and cpu-kernels.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createBackend } from '../../src/backends/index.ts';
import { CpuBackend, loadNative, nativeLoadError } from '../../src/backends/cpu/index.ts';
import { ShapeError } from '../../src/errors.ts';

const skip = loadNative() ? false : `native addon not built (${nativeLoadError()}): run npm run build:native`;

test('createBackend: reference by name; cpu is native when built', () => {
  assert.equal(createBackend('reference').name, 'reference');
  const lines: string[] = [];
  const be = createBackend('cpu', { warn: (l) => lines.push(l) });
  if (loadNative()) {
    assert.equal(be.name, 'cpu');
    assert.deepEqual(lines, []);
  } else {
    assert.equal(be.name, 'reference');
    assert.match(lines[0]!, /native CPU kernels unavailable .*reference backend/);
  }
  assert.throws(() => createBackend('gpu' as 'cpu'), /unknown backend "gpu"/);
});

test('createBackend(cpu) falls back to the reference backend with one stderr line when the addon is off', () => {
  const code = "import { createBackend } from './src/backends/index.ts'; const b = createBackend('cpu'); createBackend('cpu'); console.log(b.name);";
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { env: { ...process.env, TNL_NATIVE: '0' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'reference');
  assert.equal(r.stderr.trim(), 'tnl: native CPU kernels unavailable (disabled by TNL_NATIVE): using the reference backend, much slower');
});

test('cpu backend: describe() names the ISA and threads; threads option', { skip }, () => {
  const be = new CpuBackend();
  assert.match(be.describe(), /^cpu: native \((avx512|avx2|generic)(\+bf16)?, \d+ threads?\)$/);
  const one = new CpuBackend({ threads: 1 });
  assert.match(one.describe(), /, 1 thread\)$/);
  new CpuBackend({ threads: 0 });
  assert.ok(be.threads >= 1);
  assert.throws(() => new CpuBackend({ threads: -1 }), RangeError);
});

test('cpu backend: wrong shapes throw ShapeErrors naming the op before native code runs', { skip }, () => {
  const be = new CpuBackend();
  const z = (...s: number[]) => be.zeros(s);
  const shapeErr = (re: RegExp) => (e: unknown) => e instanceof ShapeError && re.test(e.message);
  assert.throws(() => be.addInPlace(z(3), z(4)), shapeErr(/addInPlace: sizes differ, y \[3\] vs x \[4\]/));
  assert.throws(() => be.srmsnorm(z(2, 4), z(3), z(2, 4), 1e-6), shapeErr(/srmsnorm: x \[2, 4\]/));
  assert.throws(() => be.sgluGate(z(2, 3), z(2, 5)), shapeErr(/sgluGate/));
  assert.throws(() => be.normGate(z(2, 4), z(2), z(2, 4), z(2, 15), 1e-5), shapeErr(/normGate/));
  assert.throws(() => be.glaQKV(z(2, 8), z(2, 8), z(2, 8), z(2, 30), 2, null, null, null), shapeErr(/glaQKV: qkvu \[2, 30\]/));
  assert.throws(() => be.glaQKV(z(2, 16), z(2, 16), z(2, 8), z(2, 32), 2, z(8), null, null), shapeErr(/theta needs positions/));
  assert.throws(() => be.embedding(z(2, 4), z(10, 4), Int32Array.of(1, 10), 1), shapeErr(/token id 10 outside the vocabulary \[0, 10\)/));
  assert.throws(() => be.crossEntropy(z(2, 5), Int32Array.of(0, 5), null, 1), shapeErr(/target 5 outside \[0, 5\)/));
  assert.throws(() => be.adamw(z(4), z(3), z(4), z(4), { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 }), shapeErr(/adamw/));
  const q = z(1, 4, 8), v = z(1, 4, 8), d = Float64Array.of(0.9, 0.8);
  assert.throws(() => be.lightningForward(z(1, 4, 8), q, q, v, d, null, 0), shapeErr(/block size must be a positive integer/));
  assert.throws(() => be.lightningForward(z(1, 4, 8), q, q, z(1, 5, 8), d, null, 16), shapeErr(/attention: q and v/));
  assert.throws(() => be.lightningForward(z(1, 4, 8), q, q, v, d, z(2, 2, 4, 4), 16, Int32Array.of(2)), shapeErr(/slot 2 outside the state pool \[0, 2\)/));
  assert.throws(() => be.lightningBackward(z(1, 4, 8), z(1, 4, 8), z(1, 4, 4), z(1, 4, 8), q, q, v, d, 16), shapeErr(/lightningBackward/));
});

test('thread pool: resizing back and forth, and GEMMs from two JS threads at once', { skip }, async () => {
  const n = loadNative()!;
  for (let i = 0; i < 200; i++) {
    n.setNumThreads(1 + (i % 3));
    if (i % 50 === 0) n.benchDispatch(10, 0);
  }
  n.setNumThreads(0);
  const [ns, share] = n.benchDispatch(2000, 0);
  assert.ok(ns > 0 && share >= 0 && share <= 1);
  // Two worker threads share the one pool: the second runs inline while the first holds it.
  const { Worker } = await import('node:worker_threads');
  const src = `
    const { parentPort, workerData } = require('node:worker_threads');
    const a = require(workerData.path);
    const M = 150, N = 70, K = 90, A = new Float32Array(M * K), B = new Float32Array(K * N), C = new Float32Array(M * N);
    for (let i = 0; i < A.length; i++) A[i] = ((i * 7) % 13) - 6;
    for (let i = 0; i < B.length; i++) B[i] = ((i * 5) % 11) - 5;
    let bad = 0;
    for (let r = 0; r < 40; r++) {
      a.sgemm(false, false, M, N, K, A, K, B, N, C, N, false);
      for (const [m, j] of [[0, 0], [M - 1, N - 1], [77, 33]]) {
        let s = 0; for (let k = 0; k < K; k++) s += A[m * K + k] * B[k * N + j];
        if (C[m * N + j] !== s) bad++;
      }
    }
    parentPort.postMessage(bad);`;
  const { ADDON_PATH } = await import('../../src/backends/cpu/native.ts');
  const run = () => new Promise<number>((res, rej) => {
    const w = new Worker(src, { eval: true, workerData: { path: ADDON_PATH } });
    w.once('message', res);
    w.once('error', rej);
  });
  assert.deepEqual(await Promise.all([run(), run()]), [0, 0]);
});
