// Choosing a backend by name. 'cpu' is the native addon; when it is missing (not built, failed to
// build, disabled by TNL_NATIVE=0) it falls back to the reference backend with one warning line.
import type { Backend } from './backend.ts';
import { ReferenceBackend } from './reference/index.ts';
import { CpuBackend, loadNative, nativeLoadError } from './cpu/index.ts';
import { CudaBackend, cudaAvailable } from './cuda/index.ts';
import { UsageError } from '../errors.ts';

export type BackendName = 'cpu' | 'reference' | 'cuda';
export const BACKEND_NAMES: readonly BackendName[] = ['cpu', 'reference', 'cuda'];

export interface CreateBackendOptions {
  /** cpu: threads including the caller (default: one per core, or TNL_THREADS). */
  threads?: number;
  /** Where the fallback warning goes (default: stderr). */
  warn?: (line: string) => void;
}

let warned = false;

export function createBackend(name: BackendName, opts: CreateBackendOptions = {}): Backend {
  switch (name) {
    case 'reference':
      return new ReferenceBackend();
    case 'cpu': {
      if (loadNative()) return new CpuBackend({ threads: opts.threads });
      const line = `tnl: native CPU kernels unavailable (${nativeLoadError()}): using the reference backend, much slower`;
      if (opts.warn) opts.warn(line);
      else if (!warned) process.stderr.write(line + '\n');
      warned = true;
      return new ReferenceBackend();
    }
    case 'cuda': {
      const a = cudaAvailable();
      if (!a.ok) throw new UsageError(`--backend cuda: ${a.reason}`);
      // tensor-core attention by default; TNL_CUDA_LIGHTNING=fp32 selects the exact fp32 kernel
      return new CudaBackend({ lightning: process.env.TNL_CUDA_LIGHTNING === 'fp32' ? 'fp32' : 'tc' });
    }
    default:
      throw new UsageError(`unknown backend "${String(name)}" (expected ${BACKEND_NAMES.join(' or ')})`);
  }
}
