// The reference backend with bf16 activations (mixed-precision compute): every activation tensor
// of a kernel may be f32 or bf16, independently. Inputs are random values already rounded to
// bf16, so an f32 run and a bf16 run see identical numbers; the arithmetic is the same, so every
// bf16 output must be bit-identical to the f32 run's output rounded to bf16 (nearest even), and
// every f32 output (rstd, theta grads, state, or an activation left f32) identical to the f32 run.
// Outputs start from random values too, so accumulating outputs compare to round(old + new) and
// partially written ones (columns of dqkvu) must keep their other columns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor } from '../../src/backends/backend.ts';
import { createBackend } from '../../src/backends/index.ts';
import type { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { host, toBF16, fromBF16 } from '../../src/backends/host.ts';
import { ShapeError } from '../../src/errors.ts';
import { rng } from '../helpers/backends.ts';

const be = createBackend('reference') as ReferenceBackend;
const R = rng(20240611);
/** n values, exactly representable in bf16. */
const bfRandom = (n: number, scale = 1) => fromBF16(toBF16(R.array(n, scale)));

type Tensors = Record<string, Tensor>;
interface Case {
  /** Shape of every tensor; all get random bf16-representable initial values. */
  shapes: Record<string, number[]>;
  /** The tensors that may be bf16 (the others stay f32). */
  flex: string[];
  /** The tensors the kernel writes. */
  outputs: string[];
  /** Initial values where random normals do not fit (e.g. a positive rstd). */
  init?: Record<string, Float32Array>;
  /** Runs the kernel; a returned value must be the same for every dtype combination. */
  call: (t: Tensors) => unknown;
}

/** Runs the case with the tensors in `bf16` stored as bf16; returns the outputs' storage and the result. */
function run(c: Case, values: Record<string, Float32Array>, bf16: readonly string[]) {
  const t: Tensors = {};
  for (const [name, shape] of Object.entries(c.shapes)) t[name] = be.upload(values[name]!, shape, bf16.includes(name) ? 'bf16' : 'f32');
  const result = c.call(t);
  return { result, out: Object.fromEntries(c.outputs.map((n) => [n, host(t[n]!)])) };
}

function firstDiff(got: ArrayLike<number>, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length);
  for (let i = 0; i < got.length; i++) if (!Object.is(got[i], want[i])) return i;
  return -1;
}

/** The f32 run against all-bf16, and against extra combinations (default: alternating halves). */
function check(what: string, c: Case, extra?: string[][]): void {
  const values: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(c.shapes))
    values[name] = c.init?.[name] ?? bfRandom(shape.reduce((a, b) => a * b, 1));
  const want = run(c, values, []);
  const combos = [c.flex, ...(extra ?? [c.flex.filter((_, i) => i % 2 === 0), c.flex.filter((_, i) => i % 2 === 1)])];
  for (const bf16 of combos) {
    const got = run(c, values, bf16);
    const label = `${what} with bf16 {${bf16.join(', ')}}`;
    assert.deepEqual(got.result, want.result, `${label}: result`);
    for (const name of c.outputs) {
      const g = got.out[name]!, w = want.out[name]!.data as Float32Array;
      const expected = g.dtype === 'bf16' ? toBF16(w) : w;
      const i = firstDiff(g.data, expected);
      assert.equal(i, -1, `${label}: ${name} (${g.dtype})[${i}] = ${g.data[i]}, want ${expected[i]}`);
    }
  }
}

const T = 6, heads = 2, dh = 4, H = heads * dh;
const positions = Int32Array.from({ length: T }, (_, i) => (i * 5) % 7);
const vMask = Int32Array.from({ length: T }, (_, i) => (i === 2 ? 0 : 1));
const decay = Float64Array.from([0.9, 0.75]);

test('activationDTypes lists f32 and bf16', () => {
  assert.deepEqual([...be.activationDTypes], ['f32', 'bf16']);
});

test('matmul: A, B, C each f32 or bf16, every transpose, with and without accumulate', () => {
  const M = 5, K = 7, N = 3;
  for (const transA of [false, true])
    for (const transB of [false, true])
      for (const accumulate of [false, true])
        check(`matmul transA=${transA} transB=${transB} accumulate=${accumulate}`, {
          shapes: { c: [M, N], a: transA ? [K, M] : [M, K], b: transB ? [N, K] : [K, N] },
          flex: ['a', 'b', 'c'],
          outputs: ['c'],
          call: (t) => be.matmul(t.c!, t.a!, t.b!, { transA, transB, accumulate }),
        }, [['a'], ['b'], ['c'], ['a', 'b'], ['b', 'c'], ['a', 'c']]);
});

test('srmsnorm and srmsnormBackward (overwrite and accumulate)', () => {
  const D = 12;
  check('srmsnorm', {
    shapes: { y: [T, D], rstd: [T], x: [T, D] }, flex: ['y', 'x'], outputs: ['y', 'rstd'],
    call: (t) => be.srmsnorm(t.y!, t.rstd!, t.x!, 1e-6),
  });
  for (const accumulate of [false, true])
    check(`srmsnormBackward accumulate=${accumulate}`, {
      shapes: { dx: [T, D], dy: [T, D], y: [T, D], rstd: [T] }, flex: ['dx', 'dy', 'y'], outputs: ['dx'],
      init: { rstd: fromBF16(toBF16(Float32Array.from({ length: T }, () => 0.5 + R.uniform()))) },
      call: (t) => be.srmsnormBackward(t.dx!, t.dy!, t.y!, t.rstd!, accumulate),
    });
});

test('glaQKV and glaQKVBackward, with and without theta and vMask', () => {
  for (const withTheta of [false, true])
    for (const mask of [null, vMask]) {
      const dk = withTheta ? 2 * dh : dh;
      const th: Record<string, number[]> = withTheta ? { theta: [heads * dh] } : {};
      const thGrad: Record<string, number[]> = withTheta ? { ...th, dTheta: [heads * dh] } : {};
      const what = `theta=${withTheta} vMask=${mask !== null}`;
      check(`glaQKV ${what}`, {
        shapes: { q: [T, heads * dk], k: [T, heads * dk], v: [T, H], qkvu: [T, 4 * H], ...th },
        flex: ['q', 'k', 'v', 'qkvu'], outputs: ['q', 'k', 'v'],
        call: (t) => be.glaQKV(t.q!, t.k!, t.v!, t.qkvu!, heads, t.theta ?? null, withTheta ? positions : null, mask),
      });
      check(`glaQKVBackward ${what}`, {
        shapes: { dqkvu: [T, 4 * H], dq: [T, heads * dk], dk: [T, heads * dk], dv: [T, H], qkvu: [T, 4 * H], ...thGrad },
        flex: ['dqkvu', 'dq', 'dk', 'dv', 'qkvu'], outputs: withTheta ? ['dqkvu', 'dTheta'] : ['dqkvu'],
        call: (t) => be.glaQKVBackward(t.dqkvu!, t.dTheta ?? null, t.dq!, t.dk!, t.dv!, t.qkvu!, heads,
          t.theta ?? null, withTheta ? positions : null, mask),
      });
    }
});

test('lightningForward (no state, carried state, decode with a state pool) and lightningBackward', () => {
  const B = 2, N = 3, dk = 4, dv = 3, nh = decay.length;
  const qkv = { q: [B, N, nh * dk], k: [B, N, nh * dk], v: [B, N, nh * dv] };
  check('lightningForward without state', {
    shapes: { o: [B, N, nh * dv], ...qkv }, flex: ['o', 'q', 'k', 'v'], outputs: ['o'],
    call: (t) => be.lightningForward(t.o!, t.q!, t.k!, t.v!, decay, null, 2),
  });
  check('lightningForward with state', {
    shapes: { o: [B, N, nh * dv], ...qkv, state: [B, nh, dk, dv] }, flex: ['o', 'q', 'k', 'v'], outputs: ['o', 'state'],
    call: (t) => be.lightningForward(t.o!, t.q!, t.k!, t.v!, decay, t.state!, 2),
  });
  const slots = Int32Array.from([3, 1]);
  check('lightningForward decode step with slots', {
    shapes: { o: [B, 1, nh * dv], q: [B, 1, nh * dk], k: [B, 1, nh * dk], v: [B, 1, nh * dv], state: [4, nh, dk, dv] },
    flex: ['o', 'q', 'k', 'v'], outputs: ['o', 'state'],
    call: (t) => be.lightningForward(t.o!, t.q!, t.k!, t.v!, decay, t.state!, 1, slots),
  });
  check('lightningBackward', {
    shapes: { dq: qkv.q, dk: qkv.k, dv: qkv.v, dO: qkv.v, ...qkv },
    flex: ['dq', 'dk', 'dv', 'dO', 'q', 'k', 'v'], outputs: ['dq', 'dk', 'dv'],
    call: (t) => be.lightningBackward(t.dq!, t.dk!, t.dv!, t.dO!, t.q!, t.k!, t.v!, decay, 2),
  });
});

test('normGate and normGateBackward (dqkvu keeps its first 3H columns)', () => {
  check('normGate', {
    shapes: { a: [T, H], rstd: [T], o: [T, H], qkvu: [T, 4 * H] }, flex: ['a', 'o', 'qkvu'], outputs: ['a', 'rstd'],
    call: (t) => be.normGate(t.a!, t.rstd!, t.o!, t.qkvu!, 1e-5),
  });
  check('normGateBackward', {
    shapes: { dO: [T, H], dqkvu: [T, 4 * H], dA: [T, H], o: [T, H], rstd: [T], qkvu: [T, 4 * H] },
    flex: ['dO', 'dqkvu', 'dA', 'o', 'qkvu'], outputs: ['dO', 'dqkvu'],
    init: { rstd: fromBF16(toBF16(Float32Array.from({ length: T }, () => 0.5 + R.uniform()))) },
    call: (t) => be.normGateBackward(t.dO!, t.dqkvu!, t.dA!, t.o!, t.rstd!, t.qkvu!),
  });
});

test('sgluGate and sgluGateBackward', () => {
  const G = 5;
  check('sgluGate', {
    shapes: { m: [T, G], h: [T, 2 * G] }, flex: ['m', 'h'], outputs: ['m'],
    call: (t) => be.sgluGate(t.m!, t.h!),
  });
  check('sgluGateBackward', {
    shapes: { dh: [T, 2 * G], dm: [T, G], h: [T, 2 * G] }, flex: ['dh', 'dm', 'h'], outputs: ['dh'],
    call: (t) => be.sgluGateBackward(t.dh!, t.dm!, t.h!),
  });
});

test('crossEntropy: bf16 logits and dLogits, separate and aliased', () => {
  const V = 10;
  const targets = Int32Array.from([3, -100, 0, 9, 4, -100]);
  const shapes = { logits: [T, V], dLogits: [T, V] };
  check('crossEntropy (loss only)', {
    shapes: { logits: [T, V] }, flex: ['logits'], outputs: [], call: (t) => be.crossEntropy(t.logits!, targets, null, 1),
  }, []);
  check('crossEntropy', {
    shapes, flex: ['logits', 'dLogits'], outputs: ['dLogits'],
    init: { logits: bfRandom(T * V, 3) },
    call: (t) => be.crossEntropy(t.logits!, targets, t.dLogits!, 0.25),
  });
  check('crossEntropy in place (dLogits is logits)', {
    shapes: { logits: [T, V] }, flex: ['logits'], outputs: ['logits'],
    init: { logits: bfRandom(T * V, 3) },
    call: (t) => be.crossEntropy(t.logits!, targets, t.logits!, 0.25),
  }, []);
});

test('tensors that must stay f32 still refuse bf16, naming the method and the tensor', () => {
  const bf = (shape: number[]) => be.zeros(shape, 'bf16'), f = (shape: number[]) => be.zeros(shape);
  const throwsShape = (fn: () => void, re: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof ShapeError && re.test(e.message));
  throwsShape(() => be.srmsnorm(bf([T, 4]), bf([T]), bf([T, 4]), 1e-6), /srmsnorm: rstd: expected an f32 tensor, got bf16/);
  throwsShape(() => be.srmsnormBackward(f([T, 4]), f([T, 4]), f([T, 4]), bf([T]), false), /srmsnormBackward: rstd/);
  throwsShape(() => be.glaQKV(f([T, 4 * dh]), f([T, 4 * dh]), f([T, H]), f([T, 4 * H]), heads, bf([heads * dh]), positions, null), /glaQKV: theta/);
  throwsShape(() => be.lightningForward(bf([1, 2, 8]), bf([1, 2, 8]), bf([1, 2, 8]), bf([1, 2, 8]), decay, bf([1, 2, 4, 4]), 1),
    /lightningForward: state/);
  throwsShape(() => be.normGate(bf([T, H]), bf([T]), bf([T, H]), bf([T, 4 * H]), 1e-5), /normGate: rstd/);
  throwsShape(() => be.addInPlace(bf([4]), f([4])), /addInPlace: y/);
  throwsShape(() => be.embeddingBackward(f([3, 2]), bf([1, 2]), Int32Array.from([0]), 1, -1), /embeddingBackward: dOut/);
  throwsShape(() => be.adamw(f([2]), bf([2]), f([2]), f([2]),
    { lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 }), /adamw: grad/);
});
