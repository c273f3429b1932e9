// Model folders in the Hugging Face layout: config.json (the reference's fields) plus weights
// (safetensors or PyTorch .bin, single or sharded), read tensor by tensor into a backend.
import type { Backend, DType } from '../backends/backend.ts';
import { configToJson, loadConfig, type ModelConfig } from '../config/index.ts';
import { openCheckpoint } from '../io/checkpoint.ts';
import { writeModelFolder } from '../io/checkpoint.ts';
import { allocParams, exportParams, loadParams } from './params.ts';
import { TnlModel, type ModelOptions } from './transnormer.ts';

export interface LoadOptions extends ModelOptions {
  /** Weight dtype on the backend (f32 default; bf16 halves memory and decode bandwidth). */
  dtype?: DType;
}

export async function loadModel(dir: string, be: Backend, opts: LoadOptions = {}): Promise<TnlModel> {
  const config = loadConfig(dir);
  return loadWeights(dir, config, be, opts);
}

export async function loadWeights(dir: string, config: ModelConfig, be: Backend, opts: LoadOptions = {}): Promise<TnlModel> {
  const reader = await openCheckpoint(dir);
  try {
    const p = allocParams(be, config, opts.dtype ?? 'f32');
    loadParams(be, p, config, reader, reader.path);
    return new TnlModel(config, be, p, opts);
  } finally {
    reader.close();
  }
}

/** Write config.json + model.safetensors (+ extra files such as the tokenizer's), atomically. */
export function saveModel(model: TnlModel, dir: string, extraFiles: Record<string, Uint8Array | string> = {}): void {
  const tensors = exportParams(model.be, model.params, model.config).map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape, data: t.data }));
  writeModelFolder(dir, { config: configToJson(model.config), tensors, tokenizerFiles: extraFiles });
}
