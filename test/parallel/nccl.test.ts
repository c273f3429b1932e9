// The NCCL binding. Everywhere: without libnccl.so.2 it says so clearly (no failure at import).
// Where NCCL and a GPU exist: every call on a communicator of one rank (ids, init, each
// collective's arguments and results, f64 host staging, bf16, split, error reporting, destroy),
// and the unique id carried from rank 0 to the ranks by the process launcher.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ncclAvailable, NcclCommunicator, NcclError } from '../../src/parallel/nccl.ts';
import { launchRanks } from '../../src/parallel/launch.ts';
import { makeGrid } from '../../src/parallel/comm.ts';

const nccl = ncclAvailable();
let gpu: string | null = null;
let cuda: typeof import('./ranks/cuda-mini.ts') | null = null;
if (nccl.ok) {
  try { cuda = await import('./ranks/cuda-mini.ts'); cuda.cudaDevice(0); } catch (e) { gpu = (e as Error).message; cuda = null; }
}
const skip = !nccl.ok ? `no NCCL here: ${nccl.reason}` : !cuda ? `no GPU here: ${gpu}` : false;

test('without NCCL: ncclAvailable names libnccl.so.2, and using it throws NcclError with that reason', { skip: nccl.ok ? 'NCCL is present' : false }, () => {
  if (nccl.ok) return;
  assert.match(nccl.reason, /libnccl\.so\.2/);
  assert.match(nccl.reason, /TNL_NCCL/);
  assert.throws(() => NcclCommunicator.uniqueId(), (e: unknown) => e instanceof NcclError && /NCCL unavailable: cannot load libnccl\.so\.2/.test((e as Error).message));
});

test('NCCL on one GPU: unique id, init, all-reduce (sum, max), reduce-scatter, all-gather (f32, bf16), broadcast, host f64, split, grid, errors', { skip }, () => {
  const dev = cuda!.cudaDevice(0);
  const id = NcclCommunicator.uniqueId();
  assert.equal(id.length, 128);
  assert.ok(id.some((b) => b !== 0));
  const c = NcclCommunicator.init(0, 1, id, dev);
  console.log(`# NCCL ${nccl.ok ? nccl.version : ''} from ${nccl.ok ? nccl.path : ''}`);
  assert.equal(c.rank, 0); assert.equal(c.size, 1);
  const x = Float32Array.of(1.5, -2, 3.25, 0, 7);
  const t = dev.tensor(x);
  c.allReduce(t); assert.deepEqual(dev.read(t), x);
  c.allReduce(t, 'max'); assert.deepEqual(dev.read(t), x);
  const out = dev.tensor(new Float32Array(5));
  c.reduceScatter(out, t); assert.deepEqual(dev.read(out), x);
  const g = dev.tensor(new Float32Array(5));
  c.allGather(g, t); assert.deepEqual(dev.read(g), x);
  const bits = Uint16Array.of(0x3f80, 0xc000, 0x4049);
  const b16 = dev.tensor(bits), g16 = dev.tensor(new Uint16Array(3));
  c.allGather(g16, b16); assert.deepEqual(dev.read(g16), bits);
  c.broadcast(t, 0); assert.deepEqual(dev.read(t), x);
  const h = Float64Array.of(0.1, -1e300, 3);
  c.allReduceHost(h); assert.deepEqual(Array.from(h), [0.1, -1e300, 3]);
  c.barrier();
  assert.throws(() => c.broadcast(t, 3), (e: unknown) => e instanceof NcclError && /ncclBroadcast failed: ncclInvalidArgument/.test((e as Error).message));
  assert.throws(() => c.allGather(out, g16), /dtypes differ|elements/);
  const grid = makeGrid(c, 1);
  assert.equal(grid.tp.size, 1);
  if (nccl.ok && nccl.version >= 21800) {
    const s = c.split(0, 0, 'sub');
    assert.equal(s.rank, 0); assert.equal(s.size, 1);
    s.allReduce(t); assert.deepEqual(dev.read(t), x);
    s.destroy();
  }
  assert.equal(c.asyncError(), null);
  c.destroy();
  assert.throws(() => c.allReduce(t), /after destroy/);
});

test('NCCL through the launcher: rank 0\'s unique id reaches the rank, which builds its communicator and all-reduces', { skip }, async () => {
  const r = await launchRanks(1, fileURLToPath(new URL('./ranks/nccl-child.ts', import.meta.url)));
  assert.deepEqual(r.results, [{ rank: 0, sum: [1, 2, 3] }]);
});
