// The backends a test runs on: always the reference; the native cpu backend when it is built.
import type { Backend } from '../../src/backends/backend.ts';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';

let cpu: Backend | null | undefined;
export async function cpuBackend(): Promise<Backend | null> {
  if (cpu !== undefined) return cpu;
  try {
    const mod = await import('../../src/backends/cpu/index.ts');
    cpu = mod.loadNative() ? new mod.CpuBackend() : null;
  } catch {
    cpu = null;
  }
  return cpu;
}
/** The CUDA backend where a GPU and its libraries are present (never in CI). */
export async function cudaBackend(): Promise<Backend | null> {
  try {
    const mod = await import('../../src/backends/cuda/index.ts');
    return mod.cudaAvailable().ok ? new mod.CudaBackend() : null;
  } catch {
    return null;
  }
}
export async function backendsUnderTest(): Promise<Backend[]> {
  const out: Backend[] = [new ReferenceBackend()];
  for (const b of [await cpuBackend(), await cudaBackend()]) if (b) out.push(b);
  return out;
}

/** A seeded uniform/normal generator for test inputs. */
export function rng(seed: number): { uniform: () => number; normal: () => number; array: (n: number, scale?: number) => Float32Array } {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(uniform(), 1e-12))) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal, array: (n, scale = 1) => Float32Array.from({ length: n }, () => normal() * scale) };
}
