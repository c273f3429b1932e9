// Loading weights into a model: every mismatch between config.json and the tensors is named.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURE } from '../helpers/fixture.ts';
import { loadModel, saveModel } from '../../src/model/pretrained.ts';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { SafetensorsFile, writeSafetensors } from '../../src/io/safetensors.ts';
import { FormatError, ShapeError } from '../../src/errors.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { presetConfig } from '../../src/config/index.ts';

const be = new ReferenceBackend();

function folderWith(dir: string, edit: (t: { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[]) => void): string {
  const f = SafetensorsFile.open(join(FIXTURE!, 'model.safetensors'));
  const ts = f.names().map((n) => ({ name: n, dtype: 'F32' as const, shape: f.info(n).shape, data: f.readAs(n, 'f32').data }));
  f.close();
  edit(ts);
  copyFileSync(join(FIXTURE!, 'config.json'), join(dir, 'config.json'));
  writeSafetensors(join(dir, 'model.safetensors'), ts);
  return dir;
}

test('missing, unexpected and misshapen tensors are refused by name', { skip: FIXTURE ? false : 'fixtures not found' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-load-'));
  try {
    folderWith(dir, (ts) => ts.splice(ts.findIndex((t) => t.name === 'model.layers.1.channel_mixer.l2.weight'), 1));
    await assert.rejects(loadModel(dir, be), (e: Error) => e instanceof FormatError && /model.safetensors: missing tensor model.layers.1.channel_mixer.l2.weight/.test(e.message));
    folderWith(dir, (ts) => ts.push({ name: 'model.layers.9.extra', dtype: 'F32', shape: [1], data: new Float32Array(1) }));
    await assert.rejects(loadModel(dir, be), (e: Error) => e instanceof FormatError && /unexpected tensor model.layers.9.extra/.test(e.message));
    folderWith(dir, (ts) => { const t = ts.find((x) => x.name === 'model.layers.0.token_mixer.out_proj.weight')!; t.shape = [64, 256]; });
    await assert.rejects(loadModel(dir, be), (e: Error) => e instanceof ShapeError && /out_proj.weight has shape \[64, 256\], config.json implies \[128, 128\]/.test(e.message));
    // the config decides: untying a tied checkpoint is refused (lm_head missing)
    folderWith(dir, (ts) => ts.splice(ts.findIndex((t) => t.name === 'lm_head.weight'), 1));
    await assert.rejects(loadModel(dir, be), /missing tensor lm_head.weight/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(FIXTURE!, 'config.json'), 'utf8')), tie_word_embeddings: true }));
    const tied = await loadModel(dir, be);
    assert.equal(tied.params.head, null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('save → load gives the same model (tied head written once)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-save-'));
  try {
    const m = TnlModel.random(be, presetConfig('tiny'), 7);
    saveModel(m, dir);
    const back = await loadModel(dir, be);
    const ids = Int32Array.from([1, 5, 9, 33, 2]);
    assert.deepEqual(be.download(back.forward(ids, 1, 5)), be.download(m.forward(ids, 1, 5)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
