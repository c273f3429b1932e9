import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, ShapeError } from '../../src/errors.ts';
import { SafetensorsFile, writeSafetensors } from '../../src/io/safetensors.ts';
import { bytesOf, rawSafetensors, tempDir } from './helpers.ts';

const FIX = '/work/shared/fixtures/tnl-ref-small';

test('expected.safetensors: header, int64 input_ids, metadata, unaligned f32 tensors', () => {
  const f = SafetensorsFile.open(join(FIX, 'expected.safetensors'));
  try {
    assert.equal(f.metadata.prompt_len, '280');
    assert.deepEqual(f.info('input_ids'), { dtype: 'I64', shape: [2, 300] });
    const ids = f.read('input_ids');
    assert.equal(ids.dtype, 'I64');
    assert.ok(ids.data instanceof BigInt64Array);
    assert.equal(ids.data.length, 600);
    // compare against the raw file bytes, decoded by hand here
    const raw = readFileSync(join(FIX, 'expected.safetensors'));
    const n = Number(raw.readBigUInt64LE(0));
    const hdr = JSON.parse(raw.subarray(8, 8 + n).toString('utf8'));
    const base = 8 + n;
    for (let i = 0; i < 600; i++) assert.equal((ids.data as BigInt64Array)[i], raw.readBigInt64LE(base + hdr.input_ids.data_offsets[0] + 8 * i));
    for (const v of ids.data as BigInt64Array) assert.ok(v >= 0n && v < 512n);
    // grad.* tensors start at offsets that are not 8-aligned in the file; values must still be right
    for (const name of ['loss', 'grad.model.embed_tokens.weight', 'grad.model.layers.0.token_mixer.lrpe.theta']) {
      const t = f.read(name);
      assert.ok(t.data instanceof Float32Array);
      assert.equal(t.data.byteOffset, 0, 'views the read buffer');
      assert.equal(t.data.buffer.byteLength, t.data.byteLength, 'no spare copy');
      const off = base + hdr[name].data_offsets[0];
      for (let i = 0; i < t.data.length; i += 97) assert.equal((t.data as Float32Array)[i], raw.readFloatLE(off + 4 * i));
    }
    const loss = f.read('loss').data as Float32Array;
    assert.ok(loss[0]! > 5 && loss[0]! < 7, `loss ≈ ln 512 = 6.24, got ${loss[0]}`);
    assert.throws(() => f.readAs('input_ids', 'f32'), ShapeError);
    assert.throws(() => f.read('nope'), (e: unknown) => e instanceof FormatError && /nope/.test((e as Error).message));
  } finally {
    f.close();
  }
});

test('round trip f32 / bf16 / f16 / ints: exact values and the written bytes checked by hand', () => {
  const t = tempDir('st');
  try {
    const nanBits = new Uint32Array([0x7fc00001, 0x3f800000, 0x80000000, 0x00000001, 0x7f800000]);
    const f32 = new Float32Array(nanBits.buffer); // NaN with payload, 1, -0, smallest subnormal, Inf
    const bf16bits = Uint16Array.of(0x3f80, 0x3eab, 0x7fc0, 0xff80, 0x0001, 0x8000);
    const f16bits = Uint16Array.of(0x3c00, 0x3555, 0x0001, 0x7bff, 0xfc00, 0x7e00);
    const i64 = BigInt64Array.of(-1n, 0n, 2n ** 62n, -(2n ** 63n));
    const i32 = Int32Array.of(-2147483648, 7, 2147483647);
    const u8 = Uint8Array.of(0, 255, 17);
    const bool = Uint8Array.of(1, 0, 1, 1);
    const f64 = Float64Array.of(Math.PI, -1e-300, 1e300);
    const i16 = Int16Array.of(-32768, 5);
    const i8 = Int8Array.of(-128, 127);
    const path = t.file('rt.safetensors');
    const input = [
      { name: 'a.f32', dtype: 'F32' as const, shape: [5], data: f32 },
      { name: 'b.bf16', dtype: 'BF16' as const, shape: [2, 3], data: bf16bits },
      { name: 'c.f16', dtype: 'F16' as const, shape: [3, 2], data: f16bits },
      { name: 'd.i64', dtype: 'I64' as const, shape: [2, 2], data: i64 },
      { name: 'e.i32', dtype: 'I32' as const, shape: [3], data: i32 },
      { name: 'f.u8', dtype: 'U8' as const, shape: [3], data: u8 },
      { name: 'g.bool', dtype: 'BOOL' as const, shape: [4], data: bool },
      { name: 'h.f64', dtype: 'F64' as const, shape: [3], data: f64 },
      { name: 'i.scalar', dtype: 'F32' as const, shape: [], data: Float32Array.of(2.5) },
      { name: 'j.empty', dtype: 'F32' as const, shape: [0, 3], data: new Float32Array(0) },
      { name: 'k.i16', dtype: 'I16' as const, shape: [2], data: i16 },
      { name: 'l.i8', dtype: 'I8' as const, shape: [2], data: i8 },
    ];
    writeSafetensors(path, input, { prompt_len: '7', note: 'x' });
    assert.deepEqual(readdirSync(t.dir), ['rt.safetensors'], 'no temp file left');

    // independent check of the bytes on disk
    const raw = readFileSync(path);
    const n = Number(raw.readBigUInt64LE(0));
    assert.equal((8 + n) % 8, 0, 'header padded to 8 bytes');
    const hdr = JSON.parse(raw.subarray(8, 8 + n).toString('utf8'));
    assert.deepEqual(hdr.__metadata__, { prompt_len: '7', note: 'x' });
    let expectOff = 0;
    for (const x of input) {
      const h = hdr[x.name];
      assert.deepEqual(h.dtype, x.dtype);
      assert.deepEqual(h.shape, x.shape);
      const bytes = bytesOf(x.data);
      assert.deepEqual(h.data_offsets, [expectOff, expectOff + bytes.length]);
      assert.deepEqual(new Uint8Array(raw.subarray(8 + n + expectOff, 8 + n + expectOff + bytes.length)), bytes, x.name);
      expectOff += bytes.length;
    }
    assert.equal(raw.length, 8 + n + expectOff);

    const f = SafetensorsFile.open(path);
    try {
      assert.deepEqual(f.names(), input.map((x) => x.name));
      assert.deepEqual(f.metadata, { prompt_len: '7', note: 'x' });
      for (const x of input) {
        const r = f.read(x.name);
        assert.equal(r.dtype, x.dtype);
        assert.deepEqual(r.shape, x.shape);
        assert.equal(r.data.constructor, x.data.constructor, x.name);
        assert.deepEqual(bytesOf(r.data), bytesOf(x.data), x.name);
      }
      // readAs: hand-computed conversions
      assert.deepEqual([...new Uint32Array(f.readAs('b.bf16', 'f32').data.buffer)], [0x3f800000, 0x3eab0000, 0x7fc00000, 0xff800000, 0x00010000, 0x80000000]);
      assert.deepEqual([...f.readAs('c.f16', 'f32').data.slice(0, 5)], [1, 0.333251953125, 2 ** -24, 65504, -Infinity]);
      const asBf = f.readAs('a.f32', 'bf16').data;
      assert.deepEqual([...asBf.slice(1)], [0x3f80, 0x8000, 0x0000, 0x7f80]);
      assert.ok((asBf[0]! & 0x7f80) === 0x7f80 && (asBf[0]! & 0x7f) !== 0, 'NaN stays NaN');
      assert.deepEqual([...f.readAs('h.f64', 'f32').data], [Math.fround(Math.PI), -0, Infinity]);
      assert.deepEqual([...f.readAs('c.f16', 'bf16').data.slice(0, 2)], [0x3f80, 0x3eab]); // 0.333251953125 = 0x3EAAA000 → 0x3EAB
      assert.equal(f.readAs('a.f32', 'f32').data.length, 5);
      assert.throws(() => f.readAs('d.i64', 'bf16'), ShapeError);
    } finally {
      f.close();
    }
  } finally {
    t.cleanup();
  }
});

test('writer converts Float32Array data to BF16/F16 with RNE', () => {
  const t = tempDir('st-conv');
  try {
    const p = t.file('c.safetensors');
    const vals = Float32Array.of(1, 1 / 3, -2, 65520);
    writeSafetensors(p, { w: { dtype: 'BF16', shape: [4], data: vals }, h: { dtype: 'F16', shape: [2, 2], data: vals } });
    const f = SafetensorsFile.open(p);
    assert.deepEqual([...(f.read('w').data as Uint16Array)], [0x3f80, 0x3eab, 0xc000, 0x4780]); // 65520 = 0x477FE000: low half 0xE000 rounds up
    assert.deepEqual([...(f.read('h').data as Uint16Array)], [0x3c00, 0x3555, 0xc000, 0x7c00]);
    f.close();
  } finally {
    t.cleanup();
  }
});

test('writer refuses bad input without leaving files', () => {
  const t = tempDir('st-bad');
  try {
    const p = t.file('bad.safetensors');
    assert.throws(() => writeSafetensors(p, [{ name: 'x', dtype: 'F32', shape: [3], data: new Float32Array(2) }]), ShapeError);
    assert.throws(() => writeSafetensors(p, [{ name: 'x', dtype: 'F32', shape: [2], data: new Float64Array(2) }]), ShapeError);
    assert.throws(() => writeSafetensors(p, [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }, { name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]), ShapeError);
    assert.throws(() => writeSafetensors(p, [{ name: 'x', dtype: 'Q4' as never, shape: [1], data: new Float32Array(1) }]), ShapeError);
    // lazily produced data: checked when its turn comes; a bad one aborts the write and leaves nothing
    assert.throws(() => writeSafetensors(p, [{ name: 'ok', dtype: 'F32', shape: [1], data: () => Float32Array.of(1) }, { name: 'x', dtype: 'F32', shape: [2], data: () => new Float32Array(3) }]),
      (e: unknown) => e instanceof ShapeError && /'x'.*2 elements, data has 3/.test((e as Error).message));
    assert.deepEqual(readdirSync(t.dir), []);
    let produced = 0;
    writeSafetensors(p, [{ name: 'a', dtype: 'BF16', shape: [2], data: () => (produced++, Float32Array.of(1, -0.5)) }, { name: 'b', dtype: 'I32', shape: [1], data: () => (produced++, Int32Array.of(-7)) }]);
    assert.equal(produced, 2);
    const f = SafetensorsFile.open(p);
    assert.deepEqual([...(f.read('a').data as Uint16Array)], [0x3f80, 0xbf00]);
    assert.deepEqual([...(f.read('b').data as Int32Array)], [-7]);
    f.close();
    writeSafetensors(p, [{ name: '__proto__', dtype: 'F32', shape: [1], data: Float32Array.of(3) }, { name: 'constructor', dtype: 'F32', shape: [1], data: Float32Array.of(4) }]);
    const g = SafetensorsFile.open(p);
    assert.deepEqual(g.names(), ['__proto__', 'constructor']);
    assert.deepEqual([...(g.read('__proto__').data as Float32Array)], [3]);
    g.close();
  } finally {
    t.cleanup();
  }
});

test('corrupt and hostile safetensors files are refused with a FormatError naming file and problem', () => {
  const t = tempDir('st-corrupt');
  try {
    const good = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };
    const d16 = new Uint8Array(16);
    const cases: [string, Uint8Array, RegExp][] = [
      ['empty', new Uint8Array(0), /truncated.*less than the 8-byte header length/],
      ['short', Uint8Array.of(1, 2, 3), /truncated/],
      ['len-too-big', rawSafetensors(good, d16, { lengthOverride: 10_000n }), /header length 10000 is larger than the file/],
      ['len-huge', rawSafetensors(good, d16, { lengthOverride: 0xffffffffffffffffn }), /header length .* larger than the file/],
      ['truncated-header', rawSafetensors(good, new Uint8Array(0)).subarray(0, 30), /header length \d+ is larger than the file/],
      ['truncated-data', rawSafetensors(good, new Uint8Array(10)), /out of bounds: the data section has 10 bytes/],
      ['bad-json', rawSafetensors(null, d16, { rawHeader: '{"w": {"dtype": "F32",' }), /not valid JSON/],
      ['not-object', rawSafetensors([1, 2], d16), /must be a JSON object/],
      ['bad-utf8', rawSafetensors(null, d16, { rawHeader: '{"x": "ab"}' }).fill(0xff, 15, 16), /header is not valid UTF-8/],
      ['tiny-header', rawSafetensors(null, d16, { rawHeader: ' ' }), /header length 1 is too small/],
      ['unknown-dtype', rawSafetensors({ w: { dtype: 'F8_E4M3', shape: [16], data_offsets: [0, 16] } }, d16), /unknown or unsupported dtype "F8_E4M3"/],
      ['missing-dtype', rawSafetensors({ w: { shape: [4], data_offsets: [0, 16] } }, d16), /dtype/],
      ['oob', rawSafetensors({ w: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, d16), /'w'.*out of bounds/],
      ['begin-oob', rawSafetensors({ w: { dtype: 'F32', shape: [2], data_offsets: [100, 108] } }, d16), /out of bounds/],
      ['size-mismatch', rawSafetensors({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, d16), /hold 16 bytes but shape \[3\] × F32 needs 12/],
      ['end-before-begin', rawSafetensors({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, d16), /end before begin/],
      ['overlap', rawSafetensors({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, d16), /'a'.*'b'.*overlap/],
      ['overlap-contained', rawSafetensors({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, z: { dtype: 'F32', shape: [0], data_offsets: [4, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, d16), /overlap/],
      ['negative-shape', rawSafetensors({ w: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, d16), /shape must be an array of non-negative integers/],
      ['float-shape', rawSafetensors({ w: { dtype: 'F32', shape: [2.5], data_offsets: [0, 10] } }, d16), /shape/],
      ['bad-offsets', rawSafetensors({ w: { dtype: 'F32', shape: [4], data_offsets: [0] } }, d16), /data_offsets must be/],
      ['bad-metadata', rawSafetensors({ __metadata__: { n: 3 }, ...good }, d16), /__metadata__\['n'\] must be a string/],
      ['metadata-array', rawSafetensors({ __metadata__: ['x'], ...good }, d16), /__metadata__ must be an object/],
      ['entry-not-object', rawSafetensors({ w: 5 }, d16), /'w': entry must be an object/],
      ['huge-shape', rawSafetensors({ w: { dtype: 'F64', shape: [2 ** 30, 2 ** 30], data_offsets: [0, 16] } }, d16), /too large|needs/],
    ];
    for (const [name, bytes, re] of cases) {
      const p = t.file(`${name}.safetensors`, bytes);
      assert.throws(
        () => SafetensorsFile.open(p).close(),
        (e: unknown) => {
          assert.ok(e instanceof FormatError, `${name}: expected FormatError, got ${String(e)}`);
          assert.ok(e.message.includes(p), `${name}: message names the file: ${e.message}`);
          assert.match(e.message, re, name);
          return true;
        },
      );
    }
    assert.throws(() => SafetensorsFile.open(join(t.dir, 'missing.safetensors')), (e: unknown) => e instanceof FormatError && /missing\.safetensors.*cannot open/.test((e as Error).message));
    // a file truncated after a valid open: the read itself reports it
    const ok = t.file('ok.safetensors', rawSafetensors(good, Uint8Array.from({ length: 16 }, (_, i) => i)));
    const f = SafetensorsFile.open(ok);
    assert.deepEqual([...new Uint8Array((f.read('w').data as Float32Array).buffer)], Array.from({ length: 16 }, (_, i) => i));
    f.close();
    assert.throws(() => f.read('w'), FormatError);
  } finally {
    t.cleanup();
  }
});
