// The body of one in-process rank (a worker thread started by runRanks in comm.ts): registers the
// TypeScript loader (worker threads do not inherit it on Node 20), builds the rank's world
// communicator on the shared memory, runs the rank module's `rankMain(comm, args)`, and reports
// { ok, value } or { ok: false, error } to the parent. A failure is recorded in shared memory first,
// so that every other rank leaves its collective with the failing rank's message.
import { parentPort, workerData } from 'node:worker_threads';

const { init, rank, url, args } = workerData;
let comm = null;
try {
  const { register } = await import('tsx/esm/api');
  register();
  const { InProcessCommunicator } = await import('./comm.ts');
  comm = InProcessCommunicator.world(init, rank);
  const mod = await import(url);
  if (typeof mod.rankMain !== 'function') throw new Error(`${url} does not export rankMain(comm, args)`);
  const value = await mod.rankMain(comm, args);
  comm.finish(null);
  parentPort.postMessage({ ok: true, value });
} catch (e) {
  try { comm?.finish(e); } catch { /* reporting below is what matters */ }
  parentPort.postMessage({ ok: false, error: e instanceof Error ? e.message : String(e), stack: e instanceof Error ? e.stack : undefined });
}
