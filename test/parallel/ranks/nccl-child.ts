// One rank started by launchRanks on a GPU machine: the NCCL unique id made by rank 0 travels
// through the launcher, the communicator is built from it, and an all-reduce runs (nccl.test.ts).
import { NcclCommunicator } from '../../../src/parallel/nccl.ts';
import { bootstrapBytes, rankFromEnv, reportResult, runAsRank } from '../../../src/parallel/launch.ts';
import { cudaDevice } from './cuda-mini.ts';

await runAsRank(async () => {
  const me = rankFromEnv()!;
  const id = await bootstrapBytes(() => NcclCommunicator.uniqueId());
  const dev = cudaDevice(me.localRank);
  const comm = NcclCommunicator.init(me.rank, me.size, id, dev);
  const t = dev.tensor(Float32Array.of(me.rank + 1, 2, 3));
  comm.allReduce(t);
  reportResult({ rank: me.rank, sum: Array.from(dev.read(t)) });
  comm.destroy();
});
