// Loading a checkpoint of the 1B preset's shapes (2.04 GB of bf16 safetensors) into the cpu
// backend, as bf16 and as f32 weights: seconds and peak RSS, each in a fresh process (VmHWM).
// Run: node --import tsx src/bench/load-model.ts [workdir]   (or `tnl bench --suite load`)
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { synthesize1BCheckpoint } from '../io/bench-load.ts';

export interface ModelLoadRow { dtype: 'bf16' | 'f32'; seconds: number; peakRssMiB: number; fileBytes: number }

export function benchModelLoad(workdir = tmpdir()): ModelLoadRow[] {
  const dir = mkdtempSync(join(workdir, 'tnl-1b-'));
  try {
    const { bytes } = synthesize1BCheckpoint(dir);
    return (['bf16', 'f32'] as const).map((dtype) => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', dir, dtype], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`loading as ${dtype} failed: ${r.stderr}`);
      return { ...JSON.parse(r.stdout.trim().split('\n').at(-1)!), fileBytes: bytes } as ModelLoadRow;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') {
  const [dir, dtype] = [process.argv[3]!, process.argv[4] as 'bf16' | 'f32'];
  const { createBackend } = await import('../backends/index.ts');
  const { loadModel } = await import('../model/pretrained.ts');
  const t0 = performance.now();
  await loadModel(dir, createBackend('cpu'), { dtype });
  const seconds = (performance.now() - t0) / 1000;
  const hwm = Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN);
  console.log(JSON.stringify({ dtype, seconds: +seconds.toFixed(2), peakRssMiB: Math.round(hwm / 1024) }));
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(JSON.stringify(benchModelLoad(process.argv[2]), null, 2));
}
