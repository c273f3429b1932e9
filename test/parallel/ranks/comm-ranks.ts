// Rank bodies for comm.test.ts (run by runRanks in worker threads).
import { makeGrid, type InProcessCommunicator } from '../../../src/parallel/comm.ts';
import { HostTensor } from '../../../src/backends/host.ts';

export interface CommArgs { mode: 'collectives' | 'throw' | 'leave' | 'stall'; n: number }

/** Rank-dependent data: value i of rank r. */
export const val = (r: number, i: number) => ((r + 1) * 1000 + i * 7) % 113 - 56 + r / 8;

const t = (data: Float32Array | Uint16Array, dtype: 'f32' | 'bf16' = 'f32') => new HostTensor([data.length], dtype, data);

export function rankMain(comm: InProcessCommunicator, a: CommArgs): unknown {
  const r = comm.rank, P = comm.size, n = a.n;
  if (a.mode === 'collectives') {
    const x = Float32Array.from({ length: n }, (_, i) => val(r, i));
    const sum = x.slice(); comm.allReduce(t(sum));
    const max = x.slice(); comm.allReduce(t(max), 'max');
    const big = Float32Array.from({ length: P * n }, (_, i) => val(r, i));
    const rs = new Float32Array(n); comm.reduceScatter(t(rs), t(big));
    const ag = new Float32Array(P * n); comm.allGather(t(ag), t(x));
    const bits = Uint16Array.from({ length: n }, (_, i) => (r * 977 + i) & 0xffff);
    const ag16 = new Uint16Array(P * n); comm.allGather(t(ag16, 'bf16'), t(bits, 'bf16'));
    const bc = r === 2 ? x.slice() : new Float32Array(n); comm.broadcast(t(bc), 2);
    const h = Float64Array.of(r + 0.25, -r); comm.allReduceHost(h);
    const g = makeGrid(comm, 2);
    const tpSum = x.slice(); g.tp.allReduce(t(tpSum));
    const dpSum = x.slice(); g.dp.allReduce(t(dpSum));
    comm.barrier();
    return { sum, max, rs, ag, ag16, bc, h, tp: [g.tp.rank, g.tp.size], dp: [g.dp.rank, g.dp.size], tpSum, dpSum };
  }
  const x = new Float32Array(n).fill(r);
  comm.allReduce(t(x));
  if (a.mode === 'throw') {
    if (r === 2) throw new Error('boom on purpose at step 1');
    for (let i = 0; i < 3; i++) comm.allReduce(t(x));
    return 'unreachable';
  }
  if (a.mode === 'leave') {
    if (r === 1) return 'left early';
    comm.allReduce(t(x));
    return 'unreachable';
  }
  // stall: rank 0 computes for longer than the collective timeout while the others wait
  if (r === 0) { const t0 = Date.now(); while (Date.now() - t0 < 1500) { /* busy */ } }
  comm.allReduce(t(x));
  return 'unreachable';
}
