// Rank bodies for the model-parallel tests: each rank builds the same single-device model from a
// seed, shards it for its place in the T × D grid, and runs the jobs it is given on its DP slice of
// the global batch. What comes back (logits, losses, gradient/weight shards, memory reports) is
// compared in the test with the single-device model, never with itself.
import { makeGrid, type InProcessCommunicator } from '../../../src/parallel/comm.ts';
import { ShardedTnl } from '../../../src/parallel/fsdp.ts';
import { TrackingBackend, type MemReport } from '../../../src/parallel/memory.ts';
import { ReferenceBackend } from '../../../src/backends/reference/index.ts';
import { TnlModel } from '../../../src/model/transnormer.ts';
import { ADAMW, tinyConfig, type CfgName } from '../helpers.ts';

export type Job =
  | { kind: 'eval'; cfg: CfgName; seed: number; B: number; N: number; ids: Int32Array; checkpoint?: boolean }
  | { kind: 'train'; cfg: CfgName; seed: number; B: number; N: number; batches: Int32Array[]; clip: number; save?: string }
  | { kind: 'load'; dir: string; B: number; N: number; ids: Int32Array }
  | { kind: 'memory'; cfg: CfgName; seed: number; B: number; N: number; ids: Int32Array; checkpoint: boolean }
  | { kind: 'throw'; afterLayers: number };

export interface ModelArgs { T: number; jobs: Job[] }

export type JobResult =
  | { kind: 'eval'; logits: Float32Array; loss: number; count: number; grads: Record<string, Float32Array> }
  | { kind: 'train'; losses: number[]; params: Record<string, Float32Array>; m: Record<string, Float32Array>; v: Record<string, Float32Array> }
  | { kind: 'load'; logits: Float32Array; step: number }
  | { kind: 'memory'; afterInit: MemReport; step: MemReport; loss: number };

/** This DP rank's sequences of a global batch of B sequences. */
function slice(ids: Int32Array, B: number, N: number, d: number, D: number): { ids: Int32Array; B: number } {
  const Bl = B / D;
  if (!Number.isInteger(Bl)) throw new Error(`global batch ${B} not divisible by D = ${D}`);
  return { ids: ids.subarray(d * Bl * N, (d + 1) * Bl * N), B: Bl };
}

export function rankMain(comm: InProcessCommunicator, args: ModelArgs): JobResult[] {
  const grid = makeGrid(comm, args.T);
  const d = grid.dp.rank, D = grid.D;
  const out: JobResult[] = [];
  for (const job of args.jobs) {
    if (job.kind === 'eval') {
      const be = new ReferenceBackend();
      const full = TnlModel.random(be, tinyConfig(job.cfg), job.seed);
      const s = ShardedTnl.fromModel(be, grid, full);
      const mb = slice(job.ids, job.B, job.N, d, D);
      const logits = s.logits(mb.ids, mb.B, job.N);
      const r = s.lossAndGrads(mb.ids, mb.B, job.N, null, { checkpoint: job.checkpoint });
      out.push({ kind: 'eval', logits, loss: r.loss, count: r.count, grads: s.exportShards('grad') });
    } else if (job.kind === 'train') {
      const be = new ReferenceBackend();
      const full = TnlModel.random(be, tinyConfig(job.cfg), job.seed);
      const s = ShardedTnl.fromModel(be, grid, full);
      const losses: number[] = [];
      for (const ids of job.batches) {
        const mb = slice(ids, job.B, job.N, d, D);
        s.zeroGrads();
        losses.push(s.lossAndGrads(mb.ids, mb.B, job.N).loss);
        const norm = s.gradNorm();
        s.update(ADAMW, ADAMW.lr, norm > job.clip ? job.clip / norm : 1);
      }
      if (job.save) s.saveSharded(job.save, { note: 'test' });
      out.push({ kind: 'train', losses, params: s.exportShards('param'), m: s.exportShards('m'), v: s.exportShards('v') });
    } else if (job.kind === 'load') {
      const be = new ReferenceBackend();
      const s = ShardedTnl.load(job.dir, be, grid);
      const mb = slice(job.ids, job.B, job.N, d, D);
      out.push({ kind: 'load', logits: s.logits(mb.ids, mb.B, job.N), step: s.step });
    } else if (job.kind === 'memory') {
      const ref = new ReferenceBackend();
      const full = TnlModel.random(ref, tinyConfig(job.cfg), job.seed);
      const be = new TrackingBackend(ref);
      const s = ShardedTnl.fromModel(be, grid, full);
      const afterInit = be.report();
      be.resetPeaks();
      const mb = slice(job.ids, job.B, job.N, d, D);
      const r = s.lossAndGrads(mb.ids, mb.B, job.N, null, { checkpoint: job.checkpoint });
      out.push({ kind: 'memory', afterInit, step: be.report(), loss: r.loss });
    } else {
      // a failure in the middle of the forward of one rank, while the others wait in a collective
      if (comm.rank === comm.size - 1) throw new Error(`injected failure on rank ${comm.rank}`);
      const be = new ReferenceBackend();
      const full = TnlModel.random(be, tinyConfig('h8-tied'), 1);
      const s = ShardedTnl.fromModel(be, grid, full);
      s.logits(new Int32Array(8).fill(3), 1, 8);
    }
  }
  return out;
}
