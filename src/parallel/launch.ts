// One process per GPU: the launcher behind `tnl train --gpus N` (or any SPMD entry point).
//
// Parent: launchRanks(n, entry, args) forks n copies of `entry` (a .ts or .js module, run with this
// process's exec arguments, so the TypeScript loader carries over) with TNL_RANK, TNL_WORLD_SIZE
// and TNL_LOCAL_RANK set, relays the bootstrap bytes rank 0 publishes (the NCCL unique id) to
// every other rank, and watches them: the first rank that fails (reports an error, exits non-zero
// or is killed) ends all others (SIGTERM, then SIGKILL after a grace period) — a rank stuck inside
// a collective never hangs the job — and the result names that rank and its message.
// Child: rankFromEnv() tells the rank; bootstrapBytes(make) returns the same bytes on every rank
// (rank 0 makes them); runAsRank(main) runs the rank body and reports its failure to the parent.
//
//   // in the child (e.g. the trainer, when TNL_WORLD_SIZE is set):
//   const { rank, size, localRank } = rankFromEnv()!;
//   const id = await bootstrapBytes(() => NcclCommunicator.uniqueId());
//   const world = NcclCommunicator.init(rank, size, id, cudaBackend.ncclDevice(localRank));
//   const grid = makeGrid(world, T);  …  ShardedTnl.fromSource(be, grid, config, source)
import { fork, type ChildProcess } from 'node:child_process';
import { TnlError } from '../errors.ts';
import { errorMessage } from './comm.ts';

export class LaunchError extends TnlError {
  constructor(readonly rank: number, readonly original: string) {
    super(`rank ${rank}: ${original}`);
  }
}

type ToParent = { type: 'bootstrap'; bytes: string } | { type: 'error'; message: string; stack?: string } | { type: 'result'; value: unknown };
type ToChild = { type: 'bootstrap'; bytes: string };

export interface LaunchOptions {
  /** Extra environment for every rank (NCCL_* settings …). */
  env?: Record<string, string>;
  /** After the first failure, ranks still running this long later are killed (default 10 s). */
  graceMs?: number;
  /** Where each rank's stdout/stderr go (default: inherited). */
  stdio?: 'inherit' | 'pipe' | 'ignore';
  /** Ranks on this host start at this global rank (multi-node launches run one launcher per node). */
  rankOffset?: number;
  worldSize?: number;
}

export interface LaunchResult {
  /** What each rank passed to reportResult (undefined if nothing). */
  results: unknown[];
}

/**
 * Start n ranks of `entry` with `args`. Resolves when every rank exits 0; rejects with a LaunchError
 * naming the first rank that failed and its message once every rank has ended.
 */
export function launchRanks(n: number, entry: string, args: string[] = [], opts: LaunchOptions = {}): Promise<LaunchResult> {
  const offset = opts.rankOffset ?? 0, world = opts.worldSize ?? n, graceMs = opts.graceMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const kids: ChildProcess[] = [];
    const results: unknown[] = new Array(n);
    const ended: boolean[] = new Array(n).fill(false);
    let failure: { rank: number; message: string } | null = null;
    let bootstrap: string | null = null;
    let left = n, killTimer: NodeJS.Timeout | null = null;
    const fail = (local: number, message: string) => {
      if (failure) return;
      failure = { rank: offset + local, message };
      kids.forEach((k, i) => { if (i !== local && !ended[i]) k.kill('SIGTERM'); });
      killTimer = setTimeout(() => kids.forEach((k, i) => { if (!ended[i]) k.kill('SIGKILL'); }), graceMs);
      killTimer.unref();
    };
    for (let i = 0; i < n; i++) {
      const env = {
        ...process.env, ...opts.env,
        TNL_RANK: String(offset + i), TNL_WORLD_SIZE: String(world), TNL_LOCAL_RANK: String(i), TNL_LOCAL_WORLD_SIZE: String(n),
      };
      const execArgv = process.execArgv.filter((a) => !a.startsWith('--test'));
      const k = fork(entry, args, { env, execArgv, stdio: opts.stdio === 'pipe' ? 'pipe' : opts.stdio === 'ignore' ? 'ignore' : 'inherit', serialization: 'advanced' });
      kids.push(k);
      k.on('message', (m: ToParent) => {
        if (m.type === 'bootstrap' && bootstrap === null) {
          bootstrap = m.bytes;
          kids.forEach((c, j) => { if (j !== i && !ended[j] && c.connected) c.send({ type: 'bootstrap', bytes: m.bytes } satisfies ToChild); });
        } else if (m.type === 'error') fail(i, m.message);
        else if (m.type === 'result') results[i] = m.value;
      });
      k.on('error', (e) => fail(i, errorMessage(e)));
      k.on('exit', (code, signal) => {
        ended[i] = true;
        if (code !== 0) fail(i, signal ? `killed by ${signal}` : `exited with code ${code}`);
        if (--left === 0) {
          if (killTimer) clearTimeout(killTimer);
          const f = failure as { rank: number; message: string } | null;
          if (f) reject(new LaunchError(f.rank, f.message));
          else resolve({ results });
        }
      });
      // a rank started after rank 0 published its bytes gets them at once
      if (bootstrap !== null) k.send({ type: 'bootstrap', bytes: bootstrap } satisfies ToChild);
    }
  });
}

// ---- the child's side ---------------------------------------------------------------------------

export interface RankEnv { rank: number; size: number; localRank: number; localSize: number }

/** This process's place, when started by launchRanks (null otherwise). */
export function rankFromEnv(env: NodeJS.ProcessEnv = process.env): RankEnv | null {
  if (env.TNL_RANK === undefined || env.TNL_WORLD_SIZE === undefined) return null;
  const rank = Number(env.TNL_RANK), size = Number(env.TNL_WORLD_SIZE);
  return { rank, size, localRank: Number(env.TNL_LOCAL_RANK ?? rank), localSize: Number(env.TNL_LOCAL_WORLD_SIZE ?? size) };
}

/**
 * The same bytes on every rank: rank 0 calls make() (e.g. NcclCommunicator.uniqueId) and publishes
 * them through the launcher; the others wait for them.
 */
export function bootstrapBytes(make: () => Uint8Array, timeoutMs = 300_000): Promise<Uint8Array> {
  const me = rankFromEnv();
  if (!me) throw new TnlError('bootstrapBytes: not started by launchRanks (TNL_RANK is not set)');
  if (!process.send) throw new TnlError('bootstrapBytes: no channel to the launcher');
  if (me.rank === 0) {
    const b = make();
    process.send({ type: 'bootstrap', bytes: Buffer.from(b).toString('base64') } satisfies ToParent);
    return Promise.resolve(b);
  }
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new TnlError(`rank ${me.rank}: no bootstrap bytes from rank 0 after ${timeoutMs} ms`)), timeoutMs);
    const on = (m: ToChild) => {
      if (m?.type !== 'bootstrap') return;
      clearTimeout(t);
      process.off('message', on);
      resolve(new Uint8Array(Buffer.from(m.bytes, 'base64')));
    };
    process.on('message', on);
  });
}

/** Hand a value back to the launcher (launchRanks' results[rank]). */
export function reportResult(value: unknown): void {
  process.send?.({ type: 'result', value } satisfies ToParent);
}

/**
 * Run a rank's body: on failure the message goes to the launcher first (so every rank ends with
 * it), then the process exits 1; on success it exits 0 once the channel is flushed.
 */
export async function runAsRank(main: () => Promise<void> | void): Promise<void> {
  try {
    await main();
    if (process.connected) process.disconnect();
  } catch (e) {
    const msg = { type: 'error', message: errorMessage(e), stack: (e as Error)?.stack } satisfies ToParent;
    if (process.send) await new Promise<void>((r) => process.send!(msg, undefined, undefined, () => r()));
    else process.stderr.write(`${msg.message}\n`);
    process.exit(1);
  }
}
