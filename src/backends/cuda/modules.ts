// Kernel sources (native/cuda/*.cu, each after common.cuh) compiled at first use with NVRTC for the
// GPU in hand, the cubin cached on disk under a hash of source, options and compiler version
// (plan.ts: cacheKey, cacheDir).
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CudaError, type Driver } from './driver.ts';
import { cacheDir, cacheKey, nvrtcOptions } from './plan.ts';

/** Folders searched for the .cu sources: $TNL_CUDA_SRC, then native/cuda beside this package, then ./native/cuda. */
export function sourceDirs(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const c = [process.env.TNL_CUDA_SRC, resolve(here, '../../../native/cuda'), resolve(here, 'native/cuda'), resolve('native/cuda')];
  return c.filter((x): x is string => !!x);
}

export function readSource(file: string): string {
  for (const d of sourceDirs()) {
    const p = join(d, file);
    if (existsSync(p)) return readFileSync(p, 'utf8');
  }
  throw new CudaError(`CUDA kernel source ${file} not found (looked in ${sourceDirs().join(', ')}; set TNL_CUDA_SRC)`);
}

export interface CompiledModule {
  module: number;
  functions: Map<string, number>;
  /** Where the cubin came from and how long it took. */
  origin: 'cache' | 'nvrtc';
  ms: number;
  log: string;
}

/** A kernel file as NVRTC compiles it: common.cuh (the shared definitions), then the file, its lines numbered as its own. */
export function moduleSource(file: string): string {
  return `${readSource('common.cuh')}\n#line 1 "${file}"\n${readSource(file)}`;
}

export function loadModule(drv: Driver, file: string): CompiledModule {
  const t0 = performance.now();
  const src = moduleSource(file);
  const opts = nvrtcOptions(drv.cc);
  const key = cacheKey(src, opts, drv.nvrtcVersion());
  const dir = cacheDir(process.env, homedir());
  const path = join(dir, `${file.replace(/\W/g, '_')}-${key}.cubin`);
  let cubin: Uint8Array | null = null, origin: 'cache' | 'nvrtc' = 'cache', log = '';
  if (process.env.TNL_CUDA_NOCACHE !== '1' && existsSync(path)) {
    try { cubin = new Uint8Array(readFileSync(path)); } catch { cubin = null; }
  }
  if (!cubin) {
    origin = 'nvrtc';
    const r = drv.compile(src, file, opts);
    cubin = r.cubin; log = r.log;
    try {
      mkdirSync(dir, { recursive: true });
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, cubin);
      renameSync(tmp, path);
    } catch { /* an unwritable cache only costs a recompile */ }
  }
  const module = drv.loadModule(cubin);
  return { module, functions: new Map(), origin, ms: performance.now() - t0, log };
}

export function getFunction(drv: Driver, m: CompiledModule, name: string): number {
  let f = m.functions.get(name);
  if (f === undefined) { f = drv.getFunction(m.module, name); m.functions.set(name, f); }
  return f;
}
