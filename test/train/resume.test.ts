// A training run killed with SIGKILL resumes from its last checkpoint and continues with exactly
// the losses of an uninterrupted run (deterministic kernels, saved loader position and moments).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const tnl = join(process.cwd(), 'bin', 'tnl.mjs');
const losses = (out: string) => new Map(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.loss !== undefined).map((m) => [m.step, m.loss]));

test('kill -9 during training, rerun: identical later losses', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-resume-'));
  try {
    const corpus = join(dir, 'corpus.txt');
    const words = 'the of and to a in that is was he for it with as his on be at by had not are but from or have an they which one you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people mr how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three'.split(' ');
    let text = '';
    for (let i = 0; i < 6000; i++) text += words[(i * 7919 + (i >> 3) * 31) % words.length] + (i % 13 === 12 ? '.\n\n' : ' ');
    writeFileSync(corpus, text);
    const args = (out: string) => [tnl, 'train', '--data', corpus, '--out', out, '--model', 'tiny', '--vocab-size', '300', '--seq-len', '32', '--batch-size', '4', '--steps', '24', '--save-every', '4', '--eval-every', '12', '--eval-batches', '2', '--warmup', '4', '--sample-tokens', '4'];
    // the uninterrupted run
    const full = join(dir, 'full');
    const r = spawnSync(process.execPath, args(full), { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    // the same run, killed once a checkpoint past step 8 exists, then started again
    const cut = join(dir, 'cut');
    const child = spawn(process.execPath, args(cut), { stdio: 'ignore' });
    const killedAt = await new Promise<number>((resolve, reject) => {
      const iv = setInterval(() => {
        for (const s of [12, 8]) if (existsSync(join(cut, 'checkpoints', `step-${String(s).padStart(8, '0')}`, 'trainer.json'))) { clearInterval(iv); child.kill('SIGKILL'); resolve(s); return; }
      }, 20);
      child.on('exit', () => { clearInterval(iv); reject(new Error('training finished before it could be killed')); });
    });
    await new Promise((r) => child.once('exit', r));
    const again = spawnSync(process.execPath, args(cut), { encoding: 'utf8' });
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, /resuming from .*step-/);
    const a = losses(full), b = losses(cut);
    assert.equal(b.size, 24);
    for (let s = 1; s <= 24; s++) assert.equal(b.get(s), a.get(s), `step ${s} (killed after the checkpoint of step ≥ ${killedAt})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('mixed precision on a backend without bf16 activations is refused up front, naming the fix', async () => {
  const { train, DEFAULT_SETTINGS } = await import('../../src/train/trainer.ts');
  const { ReferenceBackend } = await import('../../src/backends/reference/index.ts');
  const f32Only = Object.assign(Object.create(new ReferenceBackend()), { name: 'cpu', activationDTypes: ['f32'] as const });
  const dir = mkdtempSync(join(tmpdir(), 'tnl-prec-'));
  try {
    await assert.rejects(train({ ...DEFAULT_SETTINGS, out: dir, precision: 'bf16' }, f32Only), /--precision bf16 needs a backend that keeps activations in bf16 \(cuda\); the cpu backend computes in f32/);
    assert.ok(!existsSync(join(dir, 'data')), 'nothing prepared before the refusal');
    await assert.rejects(train({ ...DEFAULT_SETTINGS, out: dir, precision: 'f16' as 'bf16' }, f32Only), /precision must be "f32" or "bf16"/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
