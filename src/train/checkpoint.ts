// Training checkpoints: model weights, AdamW moments, the data loader's position, RNG seed, the
// config and the run's settings, in one folder per step. Each folder is written under a temporary
// name and renamed into place, so a kill during a save never damages the last good checkpoint.
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backends/backend.ts';
import { configToJson, parseConfig, type ModelConfig } from '../config/index.ts';
import { FormatError } from '../errors.ts';
import { syncDir, writeFileAtomic } from '../io/atomic.ts';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors.ts';
import { exportParams, loadParams, type Params } from '../model/params.ts';
import type { AdamW } from './optimizer.ts';

export interface TrainerState {
  step: number;
  tokensSeen: number;
  loader: unknown;
  seed: number;
  skippedSteps: number;
  /** Best validation loss so far and where. */
  bestVal: { step: number; loss: number } | null;
}

const DIR = /^step-(\d{8})$/;

export function checkpointDirs(root: string): { step: number; path: string }[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((n) => DIR.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && existsSync(join(root, m[0], 'trainer.json')))
    .map((m) => ({ step: Number(m[1]), path: join(root, m[0]) }))
    .sort((a, b) => a.step - b.step);
}

export function latestCheckpoint(root: string): string | null {
  const all = checkpointDirs(root);
  return all.length ? all[all.length - 1]!.path : null;
}

/** Save a checkpoint for `state.step` under root/step-XXXXXXXX and keep only the newest `keep`. */
export function saveCheckpoint(root: string, be: Backend, config: ModelConfig, params: Params, opt: AdamW, state: TrainerState, extra: { settings: unknown; files?: Record<string, string | Uint8Array> }, keep: number): string {
  mkdirSync(root, { recursive: true });
  const final = join(root, `step-${String(state.step).padStart(8, '0')}`);
  const tmp = `${final}.tmp-${process.pid}`;
  // half-written folders of a killed run are never checkpoints: remove them
  for (const n of readdirSync(root)) if (/^step-\d{8}\.tmp-/.test(n)) rmSync(join(root, n), { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  writeFileAtomic(join(tmp, 'config.json'), JSON.stringify(configToJson(config), null, 2) + '\n');
  writeSafetensors(join(tmp, 'model.safetensors'), exportParams(be, params, config).map((t) => ({ ...t, dtype: 'F32' as const })), { format: 'pt' });
  const moments = opt.m.flatMap((m, i) => [
    { name: `m.${i}`, dtype: 'F32' as const, shape: [...m.shape], data: be.download(m) },
    { name: `v.${i}`, dtype: 'F32' as const, shape: [...opt.v[i]!.shape], data: be.download(opt.v[i]!) },
  ]);
  writeSafetensors(join(tmp, 'optimizer.safetensors'), moments, { step: String(opt.step) });
  for (const [name, data] of Object.entries(extra.files ?? {})) writeFileAtomic(join(tmp, name), data);
  // trainer.json last: a folder without it is not a checkpoint
  writeFileAtomic(join(tmp, 'trainer.json'), JSON.stringify({ ...state, settings: extra.settings }, null, 2) + '\n');
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  syncDir(root);
  const all = checkpointDirs(root);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(old.path, { recursive: true, force: true });
  return final;
}

export interface LoadedCheckpoint { config: ModelConfig; state: TrainerState & { settings: unknown } }

/** Restore weights and AdamW moments from a checkpoint folder into existing tensors. */
export function loadCheckpoint(dir: string, be: Backend, params: Params, opt: AdamW): LoadedCheckpoint {
  const read = (f: string) => {
    try { return JSON.parse(readFileSync(join(dir, f), 'utf8')); } catch (e) { throw new FormatError(`${join(dir, f)}: unreadable checkpoint file (${(e as Error).message})`); }
  };
  const config = parseConfig(read('config.json'), join(dir, 'config.json'));
  const state = read('trainer.json');
  const w = SafetensorsFile.open(join(dir, 'model.safetensors'));
  try { loadParams(be, params, config, w, w.path); } finally { w.close(); }
  const o = SafetensorsFile.open(join(dir, 'optimizer.safetensors'));
  try {
    opt.m.forEach((m, i) => {
      be.copy(m, be.upload(o.readAs(`m.${i}`, 'f32').data, m.shape));
      be.copy(opt.v[i]!, be.upload(o.readAs(`v.${i}`, 'f32').data, m.shape));
    });
    opt.step = Number(o.metadata.step);
  } finally { o.close(); }
  return { config, state };
}

