// The golden outputs of the reference implementation (../shared/fixtures/tnl-ref-small), found
// beside the checkout (CI clones with shared/ beside it).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SafetensorsFile } from '../../src/io/safetensors.ts';
import { loadConfig, type ModelConfig } from '../../src/config/index.ts';
import type { Backend } from '../../src/backends/backend.ts';
import { allocParams, loadParams } from '../../src/model/params.ts';
import { TnlModel } from '../../src/model/transnormer.ts';

export function sharedDir(): string | null {
  for (const c of [resolve('../shared'), resolve('shared'), resolve('../../shared')]) if (existsSync(join(c, 'fixtures'))) return c;
  return null;
}
export const FIXTURE = sharedDir() ? join(sharedDir()!, 'fixtures', 'tnl-ref-small') : null;
export const SPM_FIXTURE = sharedDir() ? join(sharedDir()!, 'fixtures', 'spm-bpe-bytefallback') : null;

export function loadFixtureModel(be: Backend, blockSize = 64): TnlModel {
  const config: ModelConfig = loadConfig(FIXTURE!);
  const p = allocParams(be, config);
  const f = SafetensorsFile.open(join(FIXTURE!, 'model.safetensors'));
  try { loadParams(be, p, config, f, f.path); } finally { f.close(); }
  return new TnlModel(config, be, p, { blockSize });
}

export interface Expected { get(name: string): Float32Array; ints(name: string): number[]; ids(): Int32Array; shape(name: string): number[]; names(): string[]; promptLen: number }
export function loadExpected(): Expected {
  const f = SafetensorsFile.open(join(FIXTURE!, 'expected.safetensors'));
  const ids = f.read('input_ids');
  const idData = Int32Array.from(ids.data as BigInt64Array, (x) => Number(x));
  return {
    get: (n) => f.readAs(n, 'f32').data,
    ints: (n) => Array.from(f.read(n).data as BigInt64Array, (x) => Number(x)),
    ids: () => idData,
    shape: (n) => f.info(n).shape,
    names: () => f.names(),
    promptLen: Number(f.metadata.prompt_len),
  };
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
/** ‖a − b‖ / ‖b‖. */
export function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-300));
}
