// The commands as a user runs them: real processes, real files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURE, loadExpected, maxAbsDiff, relErr } from '../helpers/fixture.ts';
import { SafetensorsFile } from '../../src/io/safetensors.ts';

const tnl = (...args: string[]) => spawnSync(process.execPath, [join(process.cwd(), 'bin', 'tnl.mjs'), ...args], { encoding: 'utf8' });
const skip = FIXTURE ? false : 'fixtures not found';

test('tnl logits: pytorch_model.bin and model.safetensors give the fixture\'s logits, parallel and prefill+decode', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-cli-'));
  try {
    const ex = loadExpected();
    const bin = join(dir, 'bin'), st = join(dir, 'st');
    mkdirSync(bin); mkdirSync(st);
    for (const d of [bin, st]) copyFileSync(join(FIXTURE!, 'config.json'), join(d, 'config.json'));
    copyFileSync(join(FIXTURE!, 'pytorch_model.bin'), join(bin, 'pytorch_model.bin'));
    copyFileSync(join(FIXTURE!, 'model.safetensors'), join(st, 'model.safetensors'));
    const outs: Float32Array[] = [];
    for (const m of [bin, st]) {
      const out = join(dir, `${outs.length}.safetensors`);
      const r = tnl('logits', '--model', m, '--input', join(FIXTURE!, 'expected.safetensors'), '--out', out);
      assert.equal(r.status, 0, r.stderr);
      const f = SafetensorsFile.open(out);
      assert.deepEqual(f.info('logits').shape, [2, 300, 512]);
      outs.push(f.readAs('logits', 'f32').data);
      f.close();
    }
    assert.deepEqual(outs[0], outs[1]);
    assert.ok(maxAbsDiff(outs[0]!, ex.get('logits_parallel')) <= 1e-4);
    const out = join(dir, 'p.safetensors');
    const r = tnl('logits', '--model', st, '--input', join(FIXTURE!, 'expected.safetensors'), '--out', out, '--prefill', '280');
    assert.equal(r.status, 0, r.stderr);
    const f = SafetensorsFile.open(out);
    const l = f.readAs('logits', 'f32').data;
    f.close();
    const dec = ex.get('logits_decode'), pre = ex.get('logits_prefill');
    for (let b = 0; b < 2; b++) {
      assert.ok(maxAbsDiff(l.subarray(b * 300 * 512, (b * 300 + 280) * 512), pre.subarray(b * 280 * 512, (b + 1) * 280 * 512)) <= 1e-4);
      assert.ok(maxAbsDiff(l.subarray((b * 300 + 280) * 512, (b + 1) * 300 * 512), dec.subarray(b * 20 * 512, (b + 1) * 20 * 512)) <= 1e-4);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tnl grads writes the fixture\'s loss and every grad.<name>', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-cli-'));
  try {
    const ex = loadExpected();
    const out = join(dir, 'g.safetensors');
    const r = tnl('grads', '--model', FIXTURE!, '--input', join(FIXTURE!, 'expected.safetensors'), '--out', out);
    assert.equal(r.status, 0, r.stderr);
    const f = SafetensorsFile.open(out);
    assert.ok(Math.abs(f.readAs('loss', 'f32').data[0]! - ex.get('loss')[0]!) < 1e-5);
    const want = ex.names().filter((n) => n.startsWith('grad.'));
    assert.deepEqual(f.names().filter((n) => n.startsWith('grad.')).sort(), want.sort());
    for (const n of want) assert.ok(relErr(f.readAs(n, 'f32').data, ex.get(n)) <= 1e-4, n);
    f.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('user mistakes get one clear line and exit 1, no stack trace', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-cli-'));
  try {
    const cases: [string[], RegExp][] = [
      [['generate', '--model', join(dir, 'nope'), '--ids', '[1]'], /no such model folder, and not a preset/],
      [['info', 'tnl-9000b'], /unknown preset "tnl-9000b"/],
      [['generate', '--model', 'tiny', '--ids', '[1,2]', '--temperature', '-1'], /temperature must be ≥ 0/],
      [['generate', '--model', 'tiny', '--ids', '[1,99999]'], /token id 99999 is outside the vocabulary/],
    ];
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ decoder_layers: 'three' }));
    cases.push([['logits', '--model', dir, '--input', join(dir, 'config.json'), '--out', join(dir, 'o.safetensors')], /config.json: decoder_layers: expected an integer/]);
    for (const [args, re] of cases) {
      const r = tnl(...args);
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tnl info and tnl generate --ids run on presets', () => {
  const r = tnl('info', 'tnl-7b', '--json');
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  assert.equal(info.shape.layers, 30);
  assert.equal(info.memory_bytes.decode_state_per_sequence, (31 * 32 * 128 * 128) * 4);
  const g = tnl('generate', '--model', 'tiny', '--ids', '[5,6,7]', '--max-tokens', '5', '--temperature', '0');
  assert.equal(g.status, 0, g.stderr);
  const ids = JSON.parse(g.stdout);
  assert.equal(ids.length, 5);
});
