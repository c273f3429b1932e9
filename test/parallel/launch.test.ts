// The multi-process launcher (what `tnl train --gpus N` uses for NCCL): the bootstrap bytes rank 0
// makes reach every rank; a failing rank ends every other rank (even ranks stuck forever) with
// its message; a rank that dies without a word is named with its exit code. NCCL itself is not
// needed: the bytes stand for its unique id.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { launchRanks, LaunchError } from '../../src/parallel/launch.ts';

const CHILD = fileURLToPath(new URL('./ranks/launch-child.ts', import.meta.url));

test('launchRanks: every rank gets rank 0\'s bootstrap bytes, its rank and the world size', async () => {
  const r = await launchRanks(3, CHILD, ['ok'], { env: { EXTRA: 'x' } });
  const want = Buffer.from(Uint8Array.from({ length: 128 }, (_, i) => (i * 37 + 11) & 255)).toString('hex');
  assert.deepEqual(r.results, [0, 1, 2].map((rank) => ({ rank, size: 3, local: rank, id: want, env: 'x' })));
});

test('launchRanks: a failing rank ends all ranks (the others stuck) with its message; a silent crash is named', async () => {
  const t0 = Date.now();
  const e = await launchRanks(3, CHILD, ['fail'], { graceMs: 2000, stdio: 'ignore' }).then(() => null, (x) => x);
  assert.ok(e instanceof LaunchError, String(e));
  assert.equal(e.message, 'rank 1: rank 1 cannot open its GPU');
  assert.ok(Date.now() - t0 < 15_000, 'no hang');
  const c = await launchRanks(3, CHILD, ['crash'], { stdio: 'ignore' }).then(() => null, (x) => x);
  assert.ok(c instanceof LaunchError);
  assert.equal(c.message, 'rank 2: exited with code 3');
});
