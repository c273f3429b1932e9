import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import { FormatError } from '../../src/errors.ts';
import { PytorchCheckpoint } from '../../src/io/pytorch.ts';
import { SafetensorsFile } from '../../src/io/safetensors.ts';
import { bytesOf, orderedDict, parameter, pickle, storage, tempDir, tensorV2, torchZip, type P } from './helpers.ts';

const FIX = '/work/shared/fixtures/tnl-ref-small';

const rebuildHooks = (): P => ({ call: { g: 'collections.OrderedDict' }, args: [] });
const stateDict = (items: [P, P][]): P => ({
  build: orderedDict(items),
  state: { dict: [['_metadata', orderedDict([['', { dict: [['version', 1]] }]])]] },
});

test('fixture pytorch_model.bin holds the same names, shapes and float32 values as model.safetensors', async () => {
  const st = SafetensorsFile.open(join(FIX, 'model.safetensors'));
  const pt = await PytorchCheckpoint.open(join(FIX, 'pytorch_model.bin'));
  try {
    assert.deepEqual(pt.names(), st.names());
    assert.equal(pt.names().length, 18);
    assert.ok(pt.names().includes('model.layers.0.token_mixer.lrpe.theta'));
    assert.ok(pt.names().includes('lm_head.weight'));
    for (const name of st.names()) {
      const a = st.read(name);
      const b = pt.read(name);
      assert.deepEqual(pt.info(name), st.info(name), name);
      assert.equal(b.dtype, 'F32');
      assert.deepEqual(b.shape, a.shape, name);
      // bit-for-bit identical float32 values
      assert.deepEqual(new Uint32Array((b.data as Float32Array).buffer), new Uint32Array((a.data as Float32Array).buffer), name);
    }
    assert.deepEqual(pt.info('model.layers.0.token_mixer.lrpe.theta').shape, [4, 1, 32]);
    const bf = pt.readAs('model.embed_tokens.weight', 'bf16');
    assert.equal(bf.data.length, 512 * 128);
  } finally {
    st.close();
    pt.close();
  }
});

test('tied head: two names sharing one storage record (stored and deflated zips, any prefix)', async () => {
  const t = tempDir('pt-tied');
  try {
    const E = Float32Array.from({ length: 6 * 4 }, (_, i) => i * 0.5 - 3);
    const L = Float32Array.of(9, 8, 7, 6);
    const s0 = storage('FloatStorage', '0', 24);
    const pkl = pickle(stateDict([
      ['model.embed_tokens.weight', tensorV2(s0, 0, [6, 4], [4, 1])],
      ['model.layers.0.w', parameter(tensorV2(storage('FloatStorage', '1', 4), 0, [2, 2], [2, 1]))],
      ['lm_head.weight', tensorV2(s0, 0, [6, 4], [4, 1])],
    ]));
    for (const [deflate, prefix] of [[false, 'archive'], [true, 'pytorch_model'], [false, 'some-other_name']] as const) {
      const p = t.file(`tied-${prefix}.bin`, torchZip(pkl, { '0': bytesOf(E), '1': bytesOf(L) }, { deflate, prefix }));
      const ck = await PytorchCheckpoint.open(p);
      try {
        assert.deepEqual(ck.names(), ['model.embed_tokens.weight', 'model.layers.0.w', 'lm_head.weight']);
        assert.equal(ck.storageKey('lm_head.weight'), ck.storageKey('model.embed_tokens.weight'));
        for (const n of ['model.embed_tokens.weight', 'lm_head.weight']) {
          const r = ck.read(n);
          assert.deepEqual(r.shape, [6, 4]);
          assert.deepEqual([...(r.data as Float32Array)], [...E]);
        }
        // each read is its own memory (no aliasing between names)
        assert.notEqual(ck.read('lm_head.weight').data.buffer, ck.read('model.embed_tokens.weight').data.buffer);
        assert.deepEqual([...ck.readAs('model.layers.0.w', 'f32').data], [9, 8, 7, 6]);
      } finally {
        ck.close();
      }
    }
  } finally {
    t.cleanup();
  }
});

test('storage offsets, non-contiguous strides, expanded (zero-stride) views, 2- and 8-byte dtypes', async () => {
  const t = tempDir('pt-strides');
  try {
    const S = Float32Array.from({ length: 24 }, (_, i) => i); // 0..23
    const D = Float64Array.from({ length: 24 }, (_, i) => -i - 0.25);
    const B = Uint16Array.from({ length: 24 }, (_, i) => 0x3f80 + i); // bf16 bit patterns
    const I = BigInt64Array.from({ length: 24 }, (_, i) => BigInt(i) * 10n ** 12n);
    const sf = storage('FloatStorage', 'f', 24);
    const sd = storage('DoubleStorage', 'd', 24);
    const sb = storage('BFloat16Storage', 'b', 24);
    const si = storage('LongStorage', 'i', 24);
    const pkl = pickle(stateDict([
      ['transpose', tensorV2(sf, 0, [4, 3], [1, 4])], // the [3,4] block 0..11, transposed
      ['offset', tensorV2(sf, 5, [2, 2], [4, 1])], // rows of a 4-wide matrix starting at element 5
      ['expand', tensorV2(sf, 2, [3, 2], [0, 1])],
      ['permute3', tensorV2(sd, 1, [2, 3, 2], [1, 8, 2])],
      ['bf16.t', tensorV2(sb, 0, [2, 3], [1, 2])],
      ['bf16.rows', tensorV2(sb, 2, [2, 3], [3, 1])],
      ['f16', tensorV2(storage('HalfStorage', 'h', 4), 0, [4], [1])],
      ['i64.cols', tensorV2(si, 3, [3], [5])],
      ['scalar', tensorV2(sf, 7, [], [])],
      ['empty', tensorV2(sf, 0, [0, 4], [4, 1])],
    ]));
    const p = t.file('strides.bin', torchZip(pkl, { f: bytesOf(S), d: bytesOf(D), b: bytesOf(B), i: bytesOf(I), h: bytesOf(Uint16Array.of(0x3c00, 0x3555, 0x8001, 0x7bff)) }));
    const ck = await PytorchCheckpoint.open(p);
    try {
      const get = (n: string) => ck.read(n);
      assert.deepEqual(get('transpose').shape, [4, 3]);
      assert.deepEqual([...(get('transpose').data as Float32Array)], [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
      assert.deepEqual([...(get('offset').data as Float32Array)], [5, 6, 9, 10]);
      assert.deepEqual([...(get('expand').data as Float32Array)], [2, 3, 2, 3, 2, 3]);
      // permute3[a][b][c] = D[1 + a + 8b + 2c]
      const want: number[] = [];
      for (let a = 0; a < 2; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 2; c++) want.push(-(1 + a + 8 * b + 2 * c) - 0.25);
      assert.equal(get('permute3').dtype, 'F64');
      assert.deepEqual([...(get('permute3').data as Float64Array)], want);
      assert.deepEqual([...(get('bf16.t').data as Uint16Array)], [0x3f80, 0x3f82, 0x3f84, 0x3f81, 0x3f83, 0x3f85]);
      assert.deepEqual([...ck.readAs('bf16.t', 'f32').data], [1, 1.015625, 1.03125, 1.0078125, 1.0234375, 1.0390625]);
      assert.deepEqual([...ck.readAs('bf16.rows', 'f32').data], [1.015625, 1.0234375, 1.03125, 1.0390625, 1.046875, 1.0546875]);
      assert.deepEqual([...ck.readAs('f16', 'f32').data], [1, 0.333251953125, -(2 ** -24), 65504]);
      assert.deepEqual([...ck.readAs('f16', 'bf16').data], [0x3f80, 0x3eab, 0xb380, 0x4780]); // 65504 = 0x477FE000 rounds up
      assert.deepEqual([...(get('i64.cols').data as BigInt64Array)], [3n * 10n ** 12n, 8n * 10n ** 12n, 13n * 10n ** 12n]);
      assert.deepEqual(get('scalar').shape, []);
      assert.deepEqual([...(get('scalar').data as Float32Array)], [7]);
      assert.deepEqual(get('empty').shape, [0, 4]);
      assert.equal(get('empty').data.length, 0);
    } finally {
      ck.close();
    }
  } finally {
    t.cleanup();
  }
});

test('one tensor object memoised under two names (BINGET) and a tensor named __proto__', async () => {
  const t = tempDir('pt-memo');
  try {
    const E = Float32Array.of(1, 2, 3, 4);
    const pkl = pickle(orderedDict([
      ['model.embed_tokens.weight', { put: tensorV2(storage('FloatStorage', '0', 4), 0, [2, 2], [2, 1]), memo: 200 }],
      ['lm_head.weight', { get: 200 }],
      ['__proto__', { get: 200 }],
    ]));
    const ck = await PytorchCheckpoint.open(t.file('memo.bin', torchZip(pkl, { '0': bytesOf(E) })));
    assert.deepEqual(ck.names(), ['model.embed_tokens.weight', 'lm_head.weight', '__proto__']);
    for (const n of ck.names()) assert.deepEqual([...(ck.read(n).data as Float32Array)], [1, 2, 3, 4]);
    ck.close();
  } finally {
    t.cleanup();
  }
});

test('big-endian storages are byte-swapped; _rebuild_from_type_v2 and STACK_GLOBAL are understood', async () => {
  const t = tempDir('pt-be');
  try {
    const be = Buffer.alloc(8);
    be.writeFloatBE(1.5, 0);
    be.writeFloatBE(-2, 4);
    const rebuild: P = {
      call: { sg: 'torch._tensor._rebuild_from_type_v2' },
      args: [{ sg: 'torch._utils._rebuild_tensor_v2' }, { g: 'torch.nn.parameter.Parameter' },
        { tuple: [storage('FloatStorage', '0', 2), 0, { tuple: [2] }, { tuple: [1] }, false, rebuildHooks()] }, { dict: [] }],
    };
    const p = t.file('be.bin', torchZip(pickle(stateDict([['w', rebuild]]), 4), { '0': be }, { byteorder: 'big' }));
    const ck = await PytorchCheckpoint.open(p);
    assert.deepEqual([...(ck.read('w').data as Float32Array)], [1.5, -2]);
    ck.close();
  } finally {
    t.cleanup();
  }
});

test('hostile and corrupt .bin files are refused with a FormatError naming the file and the culprit', async () => {
  const t = tempDir('pt-hostile');
  const canary = join(t.dir, 'canary');
  try {
    const F = new Uint8Array(16);
    const st = storage('FloatStorage', '0', 4);
    const okTensor = tensorV2(st, 0, [4], [1]);
    const zip = (p: P, storages: Record<string, Uint8Array> = { '0': F }) => torchZip(pickle(p), storages);
    const sysCall = (g: P): P => ({ call: g, args: [`touch ${canary}`] });
    const cases: [string, Uint8Array, RegExp][] = [
      ['os-system-global', zip(stateDict([['w', sysCall({ g: 'os.system' })]])), /refusing global 'os\.system'/],
      ['posix-system', zip(sysCall({ g: 'posix.system' })), /refusing global 'posix\.system'/],
      ['eval-stack-global', zip(stateDict([['w', { call: { sg: 'builtins.eval' }, args: ['__import__("os")'] }]])), /refusing global 'builtins\.eval'/],
      ['popen', zip({ call: { g: 'subprocess.Popen' }, args: [{ list: ['sh', '-c', `touch ${canary}`] }] }), /refusing global 'subprocess\.Popen'/],
      ['reduce-storage-class', zip(stateDict([['w', { call: { g: 'torch.FloatStorage' }, args: [4] }]])), /refusing to call 'torch\.FloatStorage'/],
      ['reduce-string', zip({ call: 'os.system', args: [] }), /REDUCE calls a string/],
      ['getattr', zip({ call: { g: 'builtins.getattr' }, args: [{ g: 'collections.OrderedDict' }, '__init__'] }), /refusing global 'builtins\.getattr'/],
      ['inst-opcode', zip({ raw: [0x28, ...Buffer.from('iposix\nsystem\n')] }), /opcode INST \(0x69\) is not allowed/],
      ['newobj-other', zip({ raw: [0x63, ...Buffer.from('torch\nTensor\n'), 0x29, 0x81] }), /refusing NEWOBJ of 'torch\.Tensor'/],
      ['build-on-tensor', zip(stateDict([['w', { build: okTensor, state: { dict: [] } }]])), /refusing BUILD on a tensor/],
      ['unknown-opcode', zip({ raw: [0xff] }), /unknown opcode 0xff/],
      ['ext-opcode', zip({ raw: [0x82, 1] }), /opcode EXT1/],
      ['truncated-pickle', torchZip(pickle(stateDict([['w', okTensor]])).subarray(0, 60), { '0': F }), /truncated/],
      ['no-stop', torchZip(pickle(stateDict([['w', okTensor]])).slice(0, -1), { '0': F }), /truncated: no STOP/],
      ['memo-missing', zip({ raw: [0x68, 9] }), /memo key 9 missing/],
      ['not-a-dict', zip({ list: [1, 2] }), /is a list, not a state dict/],
      ['dict-cycle', zip({ raw: [0x7d, 0x71, 0, 0x8c, 1, 0x78, 0x7d, 0x71, 1, 0x8c, 1, 0x79, 0x68, 0, 0x73, 0x73] }), /holds no tensors/],
      ['self-dict', zip({ raw: [0x7d, 0x71, 0, 0x8c, 1, 0x61, 0x68, 0, 0x73] }), /holds no tensors/],
      ['huge-long4', zip({ raw: [0x8b, 0x00, 0x00, 0x10, 0x00, ...new Array(16).fill(0)] }), /LONG4 of 1048576 bytes/],
      ['no-tensors', zip(stateDict([['epoch', 3]])), /holds no tensors/],
      ['bad-persid', zip(stateDict([['w', tensorV2({ pid: { tuple: ['module', { g: 'torch.FloatStorage' }, '0', 'cpu', 4] } }, 0, [4], [1])]])), /persistent id must be \('storage'/],
      ['bad-storage-key', zip(stateDict([['w', tensorV2(storage('FloatStorage', '../../etc/passwd', 4), 0, [4], [1])]])), /bad storage key/],
      ['missing-storage', zip(stateDict([['w', okTensor]]), {}), /storage '0' is missing from the zip/],
      ['storage-short', zip(stateDict([['w', tensorV2(storage('FloatStorage', '0', 8), 0, [8], [1])]])), /declares 8 elements = 32 bytes but its zip entry holds 16: storage too short/],
      ['tensor-beyond-storage', zip(stateDict([['w', tensorV2(st, 2, [2, 2], [2, 1])]])), /reaches element 6 of storage '0', which has 4: storage too short for the tensor/],
      ['size-stride-mismatch', zip(stateDict([['w', tensorV2(st, 0, [2, 2], [2])]])), /size has 2 dims but stride has 1/],
      ['not-a-zip', Buffer.from('this is not a zip file at all, just text'), /not a zip file/],
      ['legacy-format', Uint8Array.of(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19), /legacy \(non-zip, torch < 1\.6\)/],
      ['no-data-pkl', zipSync({ 'archive/data/0': [F, { level: 0 }], 'archive/version': [Buffer.from('3'), { level: 0 }] }), /no <archive>\/data\.pkl entry \(found 2 entries/],
      ['bad-byteorder', torchZip(pickle(stateDict([['w', okTensor]])), { '0': F }, { byteorder: 'middle' }), /byteorder entry says 'middle'/],
    ];
    // a zip whose central directory is fine but whose tail is cut off
    const whole = zip(stateDict([['w', okTensor]]));
    cases.push(['truncated-zip', whole.subarray(0, whole.length - 30), /zip/i]);
    for (const [name, bytes, re] of cases) {
      const p = t.file(`${name}.bin`, bytes);
      await assert.rejects(
        async () => (await PytorchCheckpoint.open(p)).close(),
        (e: unknown) => {
          assert.ok(e instanceof FormatError, `${name}: expected FormatError, got ${String(e)}`);
          assert.ok(e.message.includes(p), `${name}: message names the file: ${e.message}`);
          assert.match(e.message, re, name);
          return true;
        },
      );
    }
    assert.ok(!existsSync(canary), 'nothing was executed');
  } finally {
    t.cleanup();
  }
});
