// Converting model folders between the Hugging Face layout of the released checkpoints
// (pytorch_model.bin, possibly sharded, tied head stored twice on one storage) and this project's
// folder (model.safetensors, possibly sharded), losslessly: the same names and bits (dtype kept
// unless asked), config.json and every non-weight file (tokenizer, generation config, code)
// copied byte for byte.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../config/index.ts';
import { FormatError, UsageError } from '../errors.ts';
import { replaceDirAtomic, writeFileAtomic } from './atomic.ts';
import { openCheckpoint, readJson, writeModelFolder } from './checkpoint.ts';
import type { DType } from './dtype.ts';
import { writeTorchCheckpoint } from './torch-writer.ts';
import type { TensorData } from './safetensors.ts';

export interface ConvertOptions {
  /** 'safetensors' (this project's folder, default) or 'bin' (the released checkpoints' layout). */
  format?: 'safetensors' | 'bin';
  /** Keep each tensor's dtype (default) or convert floats to f32 / bf16 / f16. */
  dtype?: 'keep' | 'f32' | 'bf16' | 'f16';
  /** Shard safetensors output above this many bytes. */
  shardBytes?: number;
}

const WEIGHT_FILE = /^(model.*\.safetensors|pytorch_model.*\.bin)(\.index\.json)?$/;

export async function convertModelFolder(from: string, to: string, o: ConvertOptions = {}): Promise<{ tensors: number; format: string }> {
  if (!statSync(from, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`${from}: not a model folder`);
  const configPath = join(from, 'config.json');
  const raw = readJson(configPath, 'the model config') as Record<string, unknown>;
  const config = parseConfig(raw, configPath);
  const extra: Record<string, Uint8Array> = {};
  for (const f of readdirSync(from)) {
    if (f === 'config.json' || WEIGHT_FILE.test(f) || !statSync(join(from, f)).isFile()) continue;
    extra[f] = readFileSync(join(from, f));
  }
  const reader = await openCheckpoint(from);
  try {
    const target = o.dtype && o.dtype !== 'keep' ? ({ f32: 'F32', bf16: 'BF16', f16: 'F16' } as const)[o.dtype] : null;
    const isFloat = (d: DType) => d === 'F32' || d === 'F16' || d === 'BF16' || d === 'F64';
    const tied = config.tie_word_embeddings;
    const names = reader.names();
    const lazy = (n: string) => {
      const info = reader.info(n);
      const dtype: DType = target && isFloat(info.dtype) ? target : info.dtype;
      const data = (): TensorData => {
        if (dtype === info.dtype) return reader.read(n).data as TensorData;
        const t = reader.readAs(n, dtype === 'F32' ? 'f32' : dtype === 'BF16' ? 'bf16' : 'f16');
        return t.data;
      };
      return { name: n, dtype, shape: info.shape, data };
    };
    if ((o.format ?? 'safetensors') === 'safetensors') {
      // a tied head is one tensor: written once, as save_pretrained does for safetensors
      const list = names.filter((n) => !(tied && n === 'lm_head.weight')).map(lazy);
      writeModelFolder(to, { config: raw, tensors: list, tokenizerFiles: extra, shardBytes: o.shardBytes });
      writeFileAtomic(join(to, 'config.json'), readFileSync(configPath)); // byte for byte
      return { tensors: list.length, format: 'safetensors' };
    }
    const list = names.map(lazy);
    if (tied && !names.includes('lm_head.weight')) {
      const emb = list.find((t) => t.name === 'model.embed_tokens.weight');
      if (!emb) throw new FormatError(`${from}: no model.embed_tokens.weight`);
      list.push({ ...emb, name: 'lm_head.weight' });
    }
    replaceDirAtomic(to, (tmp) => {
      writeFileAtomic(join(tmp, 'config.json'), readFileSync(configPath));
      writeTorchCheckpoint(join(tmp, 'pytorch_model.bin'), list.map((t) => ({ ...t, storageOf: tied && t.name === 'lm_head.weight' ? 'model.embed_tokens.weight' : t.name })));
      for (const [f, data] of Object.entries(extra)) writeFileAtomic(join(tmp, f), data);
    });
    return { tensors: list.length, format: 'bin' };
  } finally {
    reader.close();
  }
}
