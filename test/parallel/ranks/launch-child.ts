// A rank started by launchRanks (launch.test.ts): takes the bootstrap bytes rank 0 publishes, and
// either reports them or fails on rank 1 while the others hang (as inside a collective).
import { bootstrapBytes, rankFromEnv, reportResult, runAsRank } from '../../../src/parallel/launch.ts';

await runAsRank(async () => {
  const me = rankFromEnv()!;
  const mode = process.argv[2];
  const id = await bootstrapBytes(() => Uint8Array.from({ length: 128 }, (_, i) => (i * 37 + 11) & 255));
  if (mode === 'fail') {
    if (me.rank === 1) throw new Error('rank 1 cannot open its GPU');
    await new Promise(() => setInterval(() => { /* stuck */ }, 1000));
  }
  if (mode === 'crash' && me.rank === 2) process.exit(3);
  reportResult({ rank: me.rank, size: me.size, local: me.localRank, id: Buffer.from(id).toString('hex'), env: process.env.EXTRA });
});
