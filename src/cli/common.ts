// What several commands share: choosing a backend, resolving --model (a folder or a preset),
// reading token-id inputs, and the global error handling.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { Option } from 'commander';
import type { Backend, DType } from '../backends/backend.ts';
import { createBackend } from '../backends/index.ts';
import { presetConfig, PRESETS } from '../config/index.ts';
import { TnlError, UsageError } from '../errors.ts';
import { SafetensorsFile } from '../io/safetensors.ts';
import { loadModel } from '../model/pretrained.ts';
import { TnlModel } from '../model/transnormer.ts';

export const backendOption = () => new Option('--backend <name>', 'compute backend').choices(['cpu', 'reference', 'cuda']).default('cpu');
export const dtypeOption = () => new Option('--dtype <dtype>', 'weight dtype: bf16 stores weights in bfloat16 and computes with fp32 accumulation').choices(['f32', 'bf16']).default('f32');
export const blockOption = () => new Option('--block-size <n>', 'Lightning Attention block length').default('64');

export function int(name: string, v: string, min = 0): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${name} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}
export function num(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`${name} must be a number, got "${v}"`);
  return n;
}

export function backendFor(name: string): Backend {
  return createBackend(name as 'cpu' | 'reference' | 'cuda');
}

export function isModelDir(spec: string): boolean {
  return existsSync(spec) && statSync(spec).isDirectory();
}

/** --model: a model folder, or a preset name (random weights, said on stderr). */
export async function resolveModel(spec: string, be: Backend, dtype: DType, blockSize: number): Promise<TnlModel> {
  if (isModelDir(spec)) return loadModel(spec, be, { dtype, blockSize });
  if (PRESETS.some((p) => p.name === spec)) {
    process.stderr.write(`tnl: "${spec}" is a preset, not a folder: using random weights (seed 0)\n`);
    return TnlModel.random(be, presetConfig(spec), 0, dtype, { blockSize });
  }
  throw new UsageError(`--model ${spec}: no such model folder, and not a preset (${PRESETS.map((p) => p.name).join(', ')})`);
}

/** Token ids from a safetensors file (integer tensor input_ids [batch, n]) or a JSON array of arrays. */
export function readIdsInput(path: string): { ids: Int32Array; batch: number; n: number } {
  if (!existsSync(path)) throw new UsageError(`--input ${path}: no such file`);
  let rows: number[][];
  if (path.endsWith('.safetensors')) {
    const f = SafetensorsFile.open(path);
    try {
      if (!f.has('input_ids')) throw new UsageError(`${path}: no tensor named input_ids`);
      const t = f.read('input_ids');
      if (t.shape.length !== 2) throw new UsageError(`${path}: input_ids must be [batch, n], got [${t.shape.join(', ')}]`);
      if (!['I64', 'I32', 'I16', 'U8', 'I8'].includes(t.dtype)) throw new UsageError(`${path}: input_ids must be an integer tensor, got ${t.dtype}`);
      const flat = Array.from(t.data as ArrayLike<number | bigint>, (x) => Number(x));
      return { ids: Int32Array.from(flat), batch: t.shape[0]!, n: t.shape[1]! };
    } finally { f.close(); }
  }
  try { rows = JSON.parse(readFileSync(path, 'utf8')); } catch (e) { throw new UsageError(`${path}: not valid JSON (${(e as Error).message})`); }
  if (!Array.isArray(rows) || rows.length === 0) throw new UsageError(`${path}: expected a JSON array of arrays of token ids`);
  if (typeof rows[0] === 'number') rows = [rows as unknown as number[]];
  const n = rows[0]!.length;
  if (rows.some((r) => !Array.isArray(r) || r.length !== n || r.some((x) => !Number.isInteger(x))))
    throw new UsageError(`${path}: every row must be an array of ${n} integer token ids`);
  return { ids: Int32Array.from(rows.flat()), batch: rows.length, n };
}

/** Run a command body: user mistakes print one line and exit 1; bugs keep their stack. */
export function run<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      if (e instanceof TnlError) {
        process.stderr.write(`tnl: ${e.message}\n`);
        process.exit(1);
      }
      throw e;
    }
  };
}
