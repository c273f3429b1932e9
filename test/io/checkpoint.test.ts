import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, ShapeError } from '../../src/errors.ts';
import { openCheckpoint, readJson, writeModelFolder } from '../../src/io/checkpoint.ts';
import { PytorchCheckpoint } from '../../src/io/pytorch.ts';
import { SafetensorsFile } from '../../src/io/safetensors.ts';
import { bytesOf, orderedDict, pickle, storage, tempDir, tensorV2, torchZip } from './helpers.ts';

const FIX = '/work/shared/fixtures/tnl-ref-small';

const isFormatError = (re: RegExp, ...mustInclude: string[]) => (e: unknown) => {
  assert.ok(e instanceof FormatError, `expected FormatError, got ${String(e)}`);
  for (const s of mustInclude) assert.ok(e.message.includes(s), `message names ${s}: ${e.message}`);
  assert.match(e.message, re);
  return true;
};

test('openCheckpoint: fixture folder (safetensors preferred), a .bin-only folder, a file path', async () => {
  const t = tempDir('ck-fix');
  try {
    const a = await openCheckpoint(FIX);
    assert.ok(a instanceof SafetensorsFile);
    mkdirSync(join(t.dir, 'bin'));
    copyFileSync(join(FIX, 'pytorch_model.bin'), join(t.dir, 'bin', 'pytorch_model.bin'));
    const b = await openCheckpoint(join(t.dir, 'bin'));
    assert.ok(b instanceof PytorchCheckpoint);
    assert.deepEqual(b.names(), a.names());
    const name = 'model.layers.1.channel_mixer.l3.weight';
    assert.deepEqual(bytesOf(b.read(name).data), bytesOf(a.read(name).data));
    const c = await openCheckpoint(join(FIX, 'pytorch_model.bin'));
    assert.ok(c instanceof PytorchCheckpoint);
    for (const r of [a, b, c]) r.close();
  } finally {
    t.cleanup();
  }
});

test('openCheckpoint: no weights → a clear error listing what the folder holds', async () => {
  const t = tempDir('ck-none');
  try {
    t.file('README.md', 'hi');
    t.file('config.json', '{}');
    await assert.rejects(openCheckpoint(t.dir), isFormatError(/no model weights found: expected one of model\.safetensors.*the folder holds: README\.md, config\.json/, t.dir));
    await assert.rejects(openCheckpoint(join(t.dir, 'nope')), isFormatError(/no such model folder/));
  } finally {
    t.cleanup();
  }
});

test('writeModelFolder: sharded safetensors with an index, read back exactly; replaces the folder whole', async () => {
  const t = tempDir('ck-write');
  try {
    const dir = join(t.dir, 'model');
    mkdirSync(dir);
    writeFileSync(join(dir, 'stale.txt'), 'old');
    const tensors = [
      { name: 'model.embed_tokens.weight', dtype: 'F32' as const, shape: [8, 4], data: Float32Array.from({ length: 32 }, (_, i) => i / 8) },
      { name: 'model.layers.0.w', dtype: 'BF16' as const, shape: [4, 4], data: Uint16Array.from({ length: 16 }, (_, i) => 0x3f80 + i) },
      { name: 'model.layers.1.w', dtype: 'F32' as const, shape: [4, 4], data: Float32Array.from({ length: 16 }, (_, i) => -i) },
      { name: 'lm_head.weight', dtype: 'F32' as const, shape: [8, 4], data: Float32Array.from({ length: 32 }, (_, i) => 100 + i) },
    ];
    const config = { model_type: 'transnormer', decoder_embed_dim: 4 };
    writeModelFolder(dir, { config, tensors, tokenizerFiles: { 'tokenizer.model': Uint8Array.of(1, 2, 3), 'tokenizer_config.json': '{"add_bos_token": false}' }, shardBytes: 160 });
    // 128 + 32 + 64 + 128 bytes with a 160-byte limit → [embed, l0] [l1] [lm_head]
    const files = readdirSync(dir).sort();
    assert.deepEqual(files, ['config.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json', 'tokenizer.model', 'tokenizer_config.json']);
    assert.deepEqual(readdirSync(t.dir), ['model'], 'no temp or old folders left beside it');
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), config);
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    assert.deepEqual(index, {
      metadata: { total_size: 352 },
      weight_map: {
        'model.embed_tokens.weight': 'model-00001-of-00003.safetensors',
        'model.layers.0.w': 'model-00001-of-00003.safetensors',
        'model.layers.1.w': 'model-00002-of-00003.safetensors',
        'lm_head.weight': 'model-00003-of-00003.safetensors',
      },
    });
    assert.deepEqual([...readFileSync(join(dir, 'tokenizer.model'))], [1, 2, 3]);
    const r = await openCheckpoint(dir);
    try {
      assert.deepEqual(r.names(), tensors.map((x) => x.name));
      for (const x of tensors) {
        const got = r.read(x.name);
        assert.equal(got.dtype, x.dtype);
        assert.deepEqual(got.shape, x.shape);
        assert.deepEqual(bytesOf(got.data), bytesOf(x.data), x.name);
      }
      assert.deepEqual([...r.readAs('model.layers.0.w', 'f32').data.slice(0, 3)], [1, 1.0078125, 1.015625]);
    } finally {
      r.close();
    }

    // rewrite unsharded: the old shards disappear with the old folder
    writeModelFolder(dir, { config, tensors: { 'a.w': { dtype: 'F32', shape: [2], data: Float32Array.of(1, 2) } } });
    assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors']);
    const s = SafetensorsFile.open(join(dir, 'model.safetensors'));
    assert.deepEqual(s.metadata, { format: 'pt' });
    s.close();

    // a failure while writing leaves the previous folder as it was, and no temp folder
    assert.throws(() => writeModelFolder(dir, { config, tensors: [{ name: 'x', dtype: 'F32', shape: [3], data: new Float32Array(2) }] }), ShapeError);
    assert.throws(() => writeModelFolder(dir, { config, tensors: [], tokenizerFiles: { '../evil': 'x' } }), ShapeError);
    assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors']);
    assert.deepEqual(readdirSync(t.dir), ['model']);
  } finally {
    t.cleanup();
  }
});

test('sharded pytorch_model.bin folder with an index', async () => {
  const t = tempDir('ck-binshard');
  try {
    const A = Float32Array.of(1, 2, 3, 4, 5, 6);
    const B = Float32Array.of(-1, -2);
    const pk = (name: string, key: string, n: number, shape: number[], stride: number[]) =>
      pickle(orderedDict([[name, tensorV2(storage('FloatStorage', key, n), 0, shape, stride)]]));
    t.file('pytorch_model-00001-of-00002.bin', torchZip(pk('a', '0', 6, [2, 3], [3, 1]), { '0': bytesOf(A) }));
    t.file('pytorch_model-00002-of-00002.bin', torchZip(pk('b', '0', 2, [2], [1]), { '0': bytesOf(B) }, { prefix: 'pytorch_model-00002-of-00002' }));
    t.file('pytorch_model.bin.index.json', JSON.stringify({ metadata: { total_size: 32 }, weight_map: { a: 'pytorch_model-00001-of-00002.bin', b: 'pytorch_model-00002-of-00002.bin' } }));
    const r = await openCheckpoint(t.dir);
    try {
      assert.deepEqual(r.names(), ['a', 'b']);
      assert.deepEqual(r.info('a'), { dtype: 'F32', shape: [2, 3] });
      assert.deepEqual([...r.readAs('a', 'f32').data], [...A]);
      assert.deepEqual([...(r.read('b').data as Float32Array)], [...B]);
      assert.throws(() => r.read('c'), FormatError);
    } finally {
      r.close();
    }
  } finally {
    t.cleanup();
  }
});

test('bad index files are refused with the index file and the problem named', async () => {
  const t = tempDir('ck-badindex');
  try {
    const shard = (name: string, tensors: Record<string, number[]>) => {
      const s: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
      for (const [k, v] of Object.entries(tensors)) s[k] = { dtype: 'F32', shape: [v.length], data: Float32Array.from(v) };
      return s;
    };
    const { writeSafetensors } = await import('../../src/io/safetensors.ts');
    writeSafetensors(join(t.dir, 's1.safetensors'), shard('s1', { a: [1], b: [2] }));
    writeSafetensors(join(t.dir, 's2.safetensors'), shard('s2', { b: [3], c: [4] }));
    const idx = join(t.dir, 'model.safetensors.index.json');
    const cases: [unknown, RegExp][] = [
      [{ weight_map: { a: 's1.safetensors', z: 'missing.safetensors' } }, /shard 'missing\.safetensors' \(holding 'z'\) does not exist/],
      [{ weight_map: { a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' } }, /tensor 'b' is stored in two shards, 's1\.safetensors' and 's2\.safetensors'/],
      [{ weight_map: { a: 's1.safetensors', q: 's1.safetensors' } }, /puts 'q' in 's1\.safetensors', but that shard has no such tensor/],
      [{ weight_map: { a: '../s1.safetensors' } }, /is not a plain file name/],
      [{ weight_map: { a: '/etc/passwd' } }, /is not a plain file name/],
      [{ weight_map: { a: 3 } }, /must be a file name/],
      [{ weight_map: {} }, /weight_map is empty/],
      [{ metadata: {} }, /no "weight_map" object/],
      [[1, 2], /must be a JSON object/],
    ];
    for (const [json, re] of cases) {
      writeFileSync(idx, JSON.stringify(json));
      await assert.rejects(openCheckpoint(t.dir), isFormatError(re, idx));
    }
    writeFileSync(idx, '{"weight_map": {"a": "s1.safetensors",');
    await assert.rejects(openCheckpoint(t.dir), isFormatError(/shard index is not valid JSON/, idx));
  } finally {
    t.cleanup();
  }
});

test('readJson names the file on bad or missing JSON', () => {
  const t = tempDir('ck-json');
  try {
    const p = t.file('config.json', '{"a": 1,}');
    assert.throws(() => readJson(p, 'model config'), isFormatError(/model config is not valid JSON/, p));
    assert.deepEqual(readJson(t.file('ok.json', '{"a": [1, 2]}'), 'x'), { a: [1, 2] });
    assert.throws(() => readJson(join(t.dir, 'none.json'), 'tokenizer config'), isFormatError(/cannot read tokenizer config: ENOENT/, 'none.json'));
  } finally {
    t.cleanup();
  }
});
