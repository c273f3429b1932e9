// bf16 / f16 conversions against bit patterns computed by hand (IEEE 754 layouts, RNE).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bf16ToF32Array, bf16ToNumber, f16ToF32Array, f16ToNumber, f32BitsToBf16, f32BitsToF16, f32ToBf16Array,
  f32ToF16Array, f64ToBf16Array, toBf16, toF16,
} from '../../src/io/dtype.ts';
import { f32bits, fromF32bits } from './helpers.ts';

test('f32 → bf16: exact values, rounding to nearest even, specials', () => {
  // [f32 bits, expected bf16 bits]
  const cases: [number, number, string][] = [
    [0x3f800000, 0x3f80, '1.0'],
    [0xbf800000, 0xbf80, '-1.0'],
    [0x3eaaaaab, 0x3eab, '1/3: low half 0xAAAB > 0x8000 rounds up'],
    [0x3f808000, 0x3f80, 'tie, even below: stays'],
    [0x3f818000, 0x3f82, 'tie, odd below: rounds up to even'],
    [0x3f807fff, 0x3f80, 'just below tie: down'],
    [0x3f808001, 0x3f81, 'just above tie: up'],
    [0x00000000, 0x0000, '+0'],
    [0x80000000, 0x8000, '-0'],
    [0x7f800000, 0x7f80, '+Inf'],
    [0xff800000, 0xff80, '-Inf'],
    [0x7f7fffff, 0x7f80, 'f32 max rounds to Inf'],
    [0x7f7f7fff, 0x7f7f, 'largest below the bf16 overflow tie'],
    [0x00010000, 0x0001, 'subnormal kept'],
    [0x00008000, 0x0000, 'subnormal tie to even (zero)'],
    [0x7fc00000, 0x7fc0, 'quiet NaN'],
    [0xffc00000, 0xffc0, 'negative quiet NaN'],
  ];
  for (const [bits, want, what] of cases) assert.equal(f32BitsToBf16(bits), want, what);
  // signalling NaN with payload only in the low half must not become Inf
  const s = f32BitsToBf16(0x7f800001);
  assert.ok((s & 0x7f80) === 0x7f80 && (s & 0x7f) !== 0, `sNaN stays NaN, got 0x${s.toString(16)}`);
  // array path agrees with the same hand values
  const src = new Float32Array(new Uint32Array(cases.map((c) => c[0])).buffer);
  assert.deepEqual([...f32ToBf16Array(src)], cases.map((c) => c[1]));
  assert.equal(toBf16(1 / 3), 0x3eab);
  assert.equal(toBf16(1.0), 0x3f80);
});

test('f64 → bf16 rounds once (no double rounding through f32)', () => {
  // 1 + 2^-8 + 2^-30: just above the bf16 tie 1 + 2^-8. Through f32 it would first round to the tie (1 + 2^-8,
  // the 2^-30 is below f32 precision) and then to even 0x3F80; rounded once it must go up to 0x3F81.
  const x = 1 + 2 ** -8 + 2 ** -30;
  assert.equal(toBf16(x), 0x3f81);
  assert.equal(f64ToBf16Array(Float64Array.of(x, 1 + 2 ** -8, -x))[0], 0x3f81);
  assert.deepEqual([...f64ToBf16Array(Float64Array.of(x, 1 + 2 ** -8, -x))], [0x3f81, 0x3f80, 0xbf81]);
  assert.equal(toBf16(1e300), 0x7f80);
  assert.equal(toBf16(-1e300), 0xff80);
});

test('bf16 → f32 is exact', () => {
  assert.equal(bf16ToNumber(0x3f80), 1);
  assert.equal(bf16ToNumber(0x3eab), 0.333984375); // 0x3EAB0000
  assert.equal(bf16ToNumber(0xc049), -3.140625);
  assert.equal(bf16ToNumber(0x7f80), Infinity);
  assert.ok(Number.isNaN(bf16ToNumber(0x7fc0)));
  assert.ok(Object.is(bf16ToNumber(0x8000), -0));
  const out = bf16ToF32Array(Uint16Array.of(0x3f80, 0x0001, 0xff80, 0x7fc1));
  const u = new Uint32Array(out.buffer);
  assert.deepEqual([...u], [0x3f800000, 0x00010000, 0xff800000, 0x7fc10000]); // NaN payload kept bit for bit
});

test('f16 → f32: normals, subnormals, specials', () => {
  const cases: [number, number][] = [
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0x0400, 2 ** -14],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x8001, -(2 ** -24)],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
    [0x0000, 0],
  ];
  for (const [h, v] of cases) assert.equal(f16ToNumber(h), v, `0x${h.toString(16)}`);
  const arr = f16ToF32Array(Uint16Array.from(cases.map((c) => c[0])));
  assert.deepEqual([...arr], cases.map((c) => c[1]));
  assert.ok(Object.is(f16ToF32Array(Uint16Array.of(0x8000))[0], -0));
  assert.ok(Number.isNaN(f16ToF32Array(Uint16Array.of(0x7e00))[0]));
  assert.ok(Number.isNaN(f16ToNumber(0x7c01)));
});

test('f32 → f16: rounding to nearest even, overflow, subnormals, NaN', () => {
  const cases: [number, number, string][] = [
    [1, 0x3c00, '1'],
    [-2, 0xc000, '-2'],
    [1 / 3, 0x3555, '1/3'],
    [65504, 0x7bff, 'max'],
    [65519, 0x7bff, 'below the overflow tie'],
    [65520, 0x7c00, 'overflow tie rounds to even = Inf'],
    [1e6, 0x7c00, 'overflow'],
    [-1e6, 0xfc00, '-overflow'],
    [2 ** -14, 0x0400, 'smallest normal'],
    [2 ** -24, 0x0001, 'smallest subnormal'],
    [2 ** -25, 0x0000, 'half the smallest subnormal: tie to even = 0'],
    [1.5 * 2 ** -24, 0x0002, '1.5 units: tie to even = 2 units'],
    [2.5 * 2 ** -24, 0x0002, '2.5 units: tie to even = 2 units'],
    [1.25 * 2 ** -24, 0x0001, '1.25 units: down'],
    [2 ** -26, 0x0000, 'underflow'],
    [1023 * 2 ** -24, 0x03ff, 'largest subnormal'],
    [1023.5 * 2 ** -24, 0x0400, 'tie above the largest subnormal rounds to the smallest normal'],
    [1 + 2 ** -11, 0x3c00, 'tie at 1: even'],
    [1 + 3 * 2 ** -11, 0x3c02, 'tie above odd: up'],
    [Infinity, 0x7c00, 'Inf'],
    [-Infinity, 0xfc00, '-Inf'],
    [-0, 0x8000, '-0'],
  ];
  for (const [x, want, what] of cases) {
    assert.equal(f32BitsToF16(f32bits(x)), want, what);
    assert.equal(toF16(x), want, what);
  }
  const src = Float32Array.from(cases.map((c) => c[0]));
  assert.deepEqual([...f32ToF16Array(src)], cases.map((c) => c[1]));
  const n = f32BitsToF16(0x7fc00000);
  assert.ok((n & 0x7c00) === 0x7c00 && (n & 0x3ff) !== 0, 'NaN stays NaN');
  assert.ok((f32BitsToF16(0x7f800001) & 0x3ff) !== 0, 'sNaN stays NaN');
  assert.equal(fromF32bits(0x3f800000), 1);
});
