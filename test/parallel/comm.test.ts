// The in-process communicator: every collective against values computed here from the inputs'
// formula, chunking (slots far smaller than the data), sub-groups of a 2×2 grid, and failure
// handling (a throwing rank, a rank that leaves early, a stalled rank) ending every rank.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runRanks, RankError } from '../../src/parallel/comm.ts';
import { val, type CommArgs } from './ranks/comm-ranks.ts';

const MOD = new URL('./ranks/comm-ranks.ts', import.meta.url);
const f = Math.fround;

test('in-process collectives: sums, max, reduce-scatter, all-gather (f32 and 16-bit), broadcast, host f64, grid sub-groups', async () => {
  const P = 4, n = 301;
  // 256-byte slots: every collective runs in many chunks
  const out = await runRanks<CommArgs, any>(P, MOD, { mode: 'collectives', n }, { slotBytes: 256 });
  for (let r = 0; r < P; r++) {
    const o = out[r];
    for (let i = 0; i < n; i++) {
      let s = 0, m = -Infinity;
      for (let k = 0; k < P; k++) { s += f(val(k, i)); m = Math.max(m, f(val(k, i))); }
      assert.equal(o.sum[i], f(s), `sum ${r} ${i}`);
      assert.equal(o.max[i], m);
      let rs = 0;
      for (let k = 0; k < P; k++) rs += f(val(k, r * n + i));
      assert.equal(o.rs[i], f(rs), `reduce-scatter ${r} ${i}`);
      for (let k = 0; k < P; k++) {
        assert.equal(o.ag[k * n + i], f(val(k, i)));
        assert.equal(o.ag16[k * n + i], (k * 977 + i) & 0xffff);
      }
      assert.equal(o.bc[i], f(val(2, i)));
      // grid: world rank = d·2 + t; tp groups {0,1}, {2,3}; dp groups {0,2}, {1,3}
      const tpPeers = [r - (r % 2), r - (r % 2) + 1], dpPeers = [r % 2, (r % 2) + 2];
      assert.equal(o.tpSum[i], f(f(val(tpPeers[0]!, i)) + f(val(tpPeers[1]!, i))));
      assert.equal(o.dpSum[i], f(f(val(dpPeers[0]!, i)) + f(val(dpPeers[1]!, i))));
    }
    assert.deepEqual(Array.from(o.h), [0.25 + 1.25 + 2.25 + 3.25, -6]);
    assert.deepEqual(o.tp, [r % 2, 2]);
    assert.deepEqual(o.dp, [Math.floor(r / 2), 2]);
  }
});

test('a rank that throws ends every rank with its error message', async () => {
  const t0 = Date.now();
  const e = await runRanks(4, MOD, { mode: 'throw', n: 10 }).then(() => null, (x) => x);
  assert.ok(e instanceof RankError, `expected a RankError, got ${e}`);
  assert.equal(e.rank, 2);
  assert.match(e.message, /^rank 2: boom on purpose at step 1$/);
  assert.equal(e.outcomes.length, 4);
  e.outcomes.forEach((o, r) => {
    assert.equal(o.ok, false, `rank ${r} should have failed`);
    if (!o.ok) assert.match(o.error, r === 2 ? /^boom on purpose/ : /^rank 2 failed: boom on purpose at step 1$/);
  });
  assert.ok(Date.now() - t0 < 20_000, 'ended promptly');
});

test('a rank that leaves while others wait for it, and a stalled rank, end every rank (no hang)', async () => {
  const e1 = await runRanks(3, MOD, { mode: 'leave', n: 4 }).then(() => null, (x) => x);
  assert.ok(e1 instanceof RankError);
  assert.match(e1.message, /rank 1 ended while rank \d waits for it/);
  const e2 = await runRanks(2, MOD, { mode: 'stall', n: 4 }, { timeoutMs: 300 }).then(() => null, (x) => x);
  assert.ok(e2 instanceof RankError);
  assert.match(e2.message, /timed out after 300 ms/);
  assert.ok(e2.outcomes.every((o) => !o.ok));
});
