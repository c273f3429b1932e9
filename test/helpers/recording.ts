// A host backend that behaves like CUDA graph capture, for testing the decode loops' graph logic in CI:
// while capturing, allocation runs, free is deferred and compute is recorded; replay reruns the
// recorded calls, reading the host arrays' current contents. With `device`, it also keeps bound
// integer arrays (bindInts) apart from the host ones, as a GPU does: kernels read and write the
// bound copy, and the host array changes only when it is unbound.
import type { Backend, CapturedGraph, TokenPick } from '../../src/backends/backend.ts';

const IMMEDIATE = new Set(['name', 'activationDTypes', 'describe', 'empty', 'rows', 'reshape', 'tokenRing']);

export type RecordingBackend = Backend & { replays: number };

export function recordingBackend(inner: Backend, opts: { device?: boolean } = {}): RecordingBackend {
  let calls: [string, unknown[]][] | null = null;
  const bound = new Map<Int32Array, Int32Array>();
  const self = {
    replays: 0,
    capture<T>(body: () => T): CapturedGraph<T> {
      calls = [];
      const rec = calls;
      let result: T;
      try { result = body(); } finally { calls = null; }
      return { result, replay: () => { self.replays++; for (const [m, a] of rec) (inner as unknown as Record<string, (...x: unknown[]) => void>)[m]!(...a); }, destroy: () => {} };
    },
    bindInts(a: Int32Array): void { bound.set(a, Int32Array.from(a)); },
    unbindInts(a: Int32Array): void { const d = bound.get(a); if (d) { a.set(d); bound.delete(a); } },
    mark: () => () => {},
  };
  return new Proxy(inner, {
    get(target, prop, recv) {
      if (prop === 'capture' || prop === 'replays') return self[prop];
      if (opts.device && (prop === 'bindInts' || prop === 'unbindInts' || prop === 'mark')) return self[prop];
      const v = Reflect.get(target, prop, recv);
      if (typeof v !== 'function') return v;
      return (...given: unknown[]) => {
        const dev = (a: unknown) => (a instanceof Int32Array ? bound.get(a) ?? a : a);
        // integer arrays, also inside a TokenPick, are replaced by their bound copies
        const args = given.map((a) => (a && typeof a === 'object' && 'ring' in a ? { ...a, ids: dev((a as TokenPick).ids), positions: dev((a as TokenPick).positions) } : dev(a)));
        if (!calls || IMMEDIATE.has(String(prop))) return v.apply(target, args);
        if (prop === 'free') return undefined;
        if (prop === 'zeros') { const t = target.empty(args[0] as number[], args[1] as 'f32'); calls.push(['fill', [t, 0]]); return t; }
        if (prop === 'download' || prop === 'sumSquares' || prop === 'crossEntropy') throw new Error(`${String(prop)} cannot be recorded`);
        calls.push([String(prop), args]);
        return undefined;
      };
    },
  }) as RecordingBackend;
}
