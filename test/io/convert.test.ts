// tnl convert: released layout (pytorch_model.bin) → safetensors → back to .bin, losslessly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURE } from '../helpers/fixture.ts';
import { convertModelFolder } from '../../src/io/convert.ts';
import { openCheckpoint } from '../../src/io/checkpoint.ts';
import { PytorchCheckpoint } from '../../src/io/pytorch.ts';
import { SafetensorsFile } from '../../src/io/safetensors.ts';
import { writeTorchCheckpoint } from '../../src/io/torch-writer.ts';
import type { Tensor as IoTensor, TensorReader } from '../../src/io/reader.ts';

const skip = FIXTURE ? false : 'fixtures not found';

test('bin → safetensors → bin keeps every name, dtype and bit, and the extra files', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-convert-'));
  try {
    const hf = join(dir, 'hf');
    // the released layout: config.json + pytorch_model.bin + a tokenizer file
    mkdirSync(hf);
    copyFileSync(join(FIXTURE!, 'config.json'), join(hf, 'config.json'));
    copyFileSync(join(FIXTURE!, 'pytorch_model.bin'), join(hf, 'pytorch_model.bin'));
    writeFileSync(join(hf, 'tokenizer_config.json'), '{"add_bos_token": false}');
    await convertModelFolder(hf, join(dir, 'st'));
    await convertModelFolder(join(dir, 'st'), join(dir, 'back'), { format: 'bin' });
    const a = await openCheckpoint(hf), b = await openCheckpoint(join(dir, 'st')), c = await openCheckpoint(join(dir, 'back'));
    assert.ok(b instanceof SafetensorsFile && c instanceof PytorchCheckpoint);
    assert.deepEqual(b.names().sort(), a.names().sort());
    assert.deepEqual(c.names().sort(), a.names().sort());
    for (const n of a.names()) {
      const [x, y, z] = [a, b, c].map((r: TensorReader): IoTensor => r.read(n)) as [IoTensor, IoTensor, IoTensor];
      assert.equal(y.dtype, x.dtype); assert.equal(z.dtype, x.dtype);
      assert.deepEqual(y.shape, x.shape); assert.deepEqual(z.shape, x.shape);
      assert.deepEqual(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength), Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength), n);
      assert.deepEqual(Buffer.from(z.data.buffer, z.data.byteOffset, z.data.byteLength), Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength), n);
    }
    for (const f of ['config.json', 'tokenizer_config.json']) {
      assert.deepEqual(readFileSync(join(dir, 'st', f)), readFileSync(join(hf, f)));
      assert.deepEqual(readFileSync(join(dir, 'back', f)), readFileSync(join(hf, f)));
    }
    a.close(); b.close(); c.close();
    // --dtype bf16 rounds floats to bfloat16
    await convertModelFolder(hf, join(dir, 'bf16'), { dtype: 'bf16' });
    const d = await openCheckpoint(join(dir, 'bf16'));
    assert.equal(d.info('model.embed_tokens.weight').dtype, 'BF16');
    d.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a tied head written to .bin shares the embedding storage, as the released pickles do', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-torchw-'));
  try {
    const emb = Float32Array.from({ length: 12 }, (_, i) => i / 7);
    const p = join(dir, 'm.bin');
    writeTorchCheckpoint(p, [
      { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [3, 4], data: emb },
      { name: 'lm_head.weight', dtype: 'F32', shape: [3, 4], data: emb, storageOf: 'model.embed_tokens.weight' },
      { name: 'ids', dtype: 'I64', shape: [2], data: BigInt64Array.of(5n, 2n ** 40n) },
    ]);
    const r = await PytorchCheckpoint.open(p);
    assert.equal(r.storageKey('lm_head.weight'), r.storageKey('model.embed_tokens.weight'));
    assert.deepEqual(Array.from(r.read('lm_head.weight').data as Float32Array), Array.from(emb));
    assert.deepEqual(Array.from(r.read('ids').data as BigInt64Array), [5n, 2n ** 40n]);
    r.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
