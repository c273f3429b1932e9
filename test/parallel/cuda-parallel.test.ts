// The parallel model on the CUDA backend (where a GPU is present; skipped elsewhere): a world of
// one rank over NCCL with the CUDA backend's stream and tensors, the sharded model's logits, loss
// and gradients against the single-device model on the reference backend, and the collectives on
// CUDA tensor views (offset pointers). The host-side TP helpers take their download/upload path here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { exportParams } from '../../src/model/params.ts';
import { makeGrid, selfComm, type Communicator } from '../../src/parallel/comm.ts';
import { assembleShards, ShardedTnl } from '../../src/parallel/fsdp.ts';
import { ncclAvailable, NcclCommunicator } from '../../src/parallel/nccl.ts';
import type { Backend } from '../../src/backends/backend.ts';
import { batch, relErr, tinyConfig } from './helpers.ts';

let be: Backend | null = null, why = '';
try {
  const m = await import('../../src/backends/cuda/index.ts');
  const r = m.tryCudaBackend();
  if ('backend' in r) be = r.backend; else why = r.error;
} catch (e) { why = (e as Error).message; }

test('CUDA backend: sharded model (world of 1 over NCCL) = single-device reference model; collectives on CUDA views', { skip: be ? false : `no CUDA here: ${why}` }, async () => {
  const cuda = be!;
  let world: Communicator = selfComm();
  const nccl = ncclAvailable();
  if (nccl.ok) {
    const { ncclDeviceFor } = await import('../../src/parallel/cuda-nccl.ts');
    const c = NcclCommunicator.init(0, 1, NcclCommunicator.uniqueId(), ncclDeviceFor(cuda as never));
    const x = Float32Array.from({ length: 12 }, (_, i) => i - 3.5);
    const t = cuda.upload(x, [4, 3]);
    const view = cuda.rows(t, 1, 2), out = cuda.empty([2, 3]);
    c.allReduce(view); c.allGather(out, view);
    assert.deepEqual(cuda.download(out), x.subarray(3, 9));
    const h = Float64Array.of(2.5); c.allReduceHost(h); assert.equal(h[0], 2.5);
    world = c;
  }
  const grid = makeGrid(world, 1);
  for (const cfg of ['h6-untied', 'h8-tied'] as const) {
    const config = tinyConfig(cfg), ref = new ReferenceBackend();
    const N = 12, ids = batch(2, N, 3);
    const single = TnlModel.random(ref, config, 11);
    const want = ref.download(single.forward(ids, 2, N));
    const g = single.allocGrads();
    const l = single.lossAndGrads(ids, 2, N, g);
    const s = ShardedTnl.fromModel(cuda, grid, TnlModel.random(cuda, config, 11));
    const e1 = relErr(s.logits(ids, 2, N), want);
    const r = s.lossAndGrads(ids, 2, N);
    const src = assembleShards(config, 1, 1, [s.exportShards('grad')]);
    let eg = 0;
    for (const e of exportParams(ref, g, config)) eg = Math.max(eg, relErr(src.full(e.name), e.data));
    console.log(`# ${cfg} on ${cuda.describe()}: logits ${e1.toExponential(2)}, loss ${(Math.abs(r.loss - l.loss) / l.loss).toExponential(2)}, grads ${eg.toExponential(2)}`);
    assert.ok(e1 < 1e-5 && Math.abs(r.loss - l.loss) / l.loss < 1e-5 && eg < 1e-5);
  }
});
