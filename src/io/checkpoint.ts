// Hugging Face model folders: weights as model.safetensors, sharded safetensors with
// model.safetensors.index.json, pytorch_model.bin, or sharded .bin with pytorch_model.bin.index.json.
// openCheckpoint() gives one TensorReader over whichever is there; writeModelFolder() writes a
// folder (config, weights, tokenizer files) into a temp folder and swaps it into place whole.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { FormatError, ShapeError } from '../errors.ts';
import { replaceDirAtomic, writeFileAtomic } from './atomic.ts';
import { PytorchCheckpoint } from './pytorch.ts';
import { unknownTensor, type FloatTarget, type FloatTensor, type Tensor, type TensorInfo, type TensorReader } from './reader.ts';
import { normalizeTensors, SafetensorsFile, writeSafetensors, writtenBytes, checkTensorToWrite, type TensorToWrite, type TensorsToWrite } from './safetensors.ts';

export const WEIGHT_FILES = ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json'] as const;

/** Read and parse a JSON file; a missing file or bad JSON is a FormatError naming the file and `what` it is. */
export function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FormatError(`${path}: cannot read ${what}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${path}: ${what} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Open a single weight file by its kind (by name: .safetensors, .index.json, else a torch zip). */
export async function openWeightFile(path: string): Promise<TensorReader> {
  if (path.endsWith('.index.json')) return openSharded(path);
  if (path.endsWith('.safetensors')) return SafetensorsFile.open(path);
  return PytorchCheckpoint.open(path);
}

/** Open the weights of a model folder (or a weight file directly). */
export async function openCheckpoint(path: string): Promise<TensorReader> {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new FormatError(`${path}: no such model folder or weight file`);
  }
  if (st.isFile()) return openWeightFile(path);
  for (const f of WEIGHT_FILES) {
    const p = join(path, f);
    if (existsSync(p)) return openWeightFile(p);
  }
  const found = readdirSync(path).sort();
  throw new FormatError(
    `${path}: no model weights found: expected one of ${WEIGHT_FILES.join(', ')}; ` +
      (found.length ? `the folder holds: ${found.slice(0, 20).join(', ')}${found.length > 20 ? `, … (${found.length} entries)` : ''}` : 'the folder is empty'),
  );
}

/** A reader over several shard files, routed by an index's weight_map. */
export class ShardedReader implements TensorReader {
  readonly path: string;
  private readonly route: Map<string, TensorReader>;
  private readonly order: string[];
  private readonly shards: TensorReader[];

  constructor(path: string, route: Map<string, TensorReader>, order: string[], shards: TensorReader[]) {
    this.path = path;
    this.route = route;
    this.order = order;
    this.shards = shards;
  }
  names(): string[] {
    return this.order.slice();
  }
  has(name: string): boolean {
    return this.route.has(name);
  }
  info(name: string): TensorInfo {
    return this.shard(name).info(name);
  }
  read(name: string): Tensor {
    return this.shard(name).read(name);
  }
  readAs<T extends FloatTarget>(name: string, target: T): FloatTensor<T> {
    return this.shard(name).readAs(name, target);
  }
  /** The shard file holding a tensor. */
  shardOf(name: string): string {
    return this.shard(name).path;
  }
  close(): void {
    for (const s of this.shards) s.close();
  }
  private shard(name: string): TensorReader {
    const r = this.route.get(name);
    if (!r) throw unknownTensor(this.path, name, this.order);
    return r;
  }
}

/** Open a sharded checkpoint from its index file, validating the index against the shards. */
export async function openSharded(indexPath: string): Promise<ShardedReader> {
  const json = readJson(indexPath, 'shard index');
  const dir = join(indexPath, '..');
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(`${indexPath}: shard index must be a JSON object`);
  const wm = (json as Record<string, unknown>).weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new FormatError(`${indexPath}: shard index has no "weight_map" object`);
  const map = wm as Record<string, unknown>;
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string') throw new FormatError(`${indexPath}: weight_map['${name}'] must be a file name, got ${typeof shard}`);
    if (shard === '' || shard === '.' || shard === '..' || /[\\/]/.test(shard) || shard !== basename(shard))
      throw new FormatError(`${indexPath}: weight_map['${name}'] = '${shard}' is not a plain file name in the folder`);
    let l = byShard.get(shard);
    if (!l) byShard.set(shard, (l = []));
    l.push(name);
  }
  if (byShard.size === 0) throw new FormatError(`${indexPath}: weight_map is empty`);
  for (const [shard, names] of byShard) {
    const p = join(dir, shard);
    if (!existsSync(p) || !statSync(p).isFile())
      throw new FormatError(`${indexPath}: shard '${shard}' (holding '${names[0]}'${names.length > 1 ? ` and ${names.length - 1} more` : ''}) does not exist in ${dir}`);
  }
  const opened: TensorReader[] = [];
  try {
    const route = new Map<string, TensorReader>();
    const owner = new Map<string, string>();
    for (const [shard, names] of byShard) {
      const p = join(dir, shard);
      const r = shard.endsWith('.safetensors') ? SafetensorsFile.open(p) : await PytorchCheckpoint.open(p);
      opened.push(r);
      for (const n of r.names()) {
        const prev = owner.get(n);
        if (prev !== undefined) throw new FormatError(`${indexPath}: tensor '${n}' is stored in two shards, '${prev}' and '${shard}'`);
        owner.set(n, shard);
      }
      for (const n of names) {
        if (!r.has(n)) throw new FormatError(`${indexPath}: weight_map puts '${n}' in '${shard}', but that shard has no such tensor`);
        route.set(n, r);
      }
    }
    return new ShardedReader(indexPath, route, Object.keys(map), opened);
  } catch (e) {
    for (const r of opened) r.close();
    throw e;
  }
}

export interface ModelFolderContent {
  /** config.json content (written as pretty JSON). */
  config: object;
  tensors: TensorsToWrite;
  /** Extra files by plain name (tokenizer.model, tokenizer_config.json, …). */
  tokenizerFiles?: Record<string, Uint8Array | string>;
  /** Shard the weights when they exceed this many bytes (default: never shard). */
  shardBytes?: number;
  /** safetensors __metadata__ of every weight file (default {format: 'pt'}, as transformers writes). */
  metadata?: Record<string, string>;
}

/** Write a model folder: config.json, model.safetensors (or shards + model.safetensors.index.json),
 *  extra files. Everything goes into a temp folder first, which then replaces `dir` as a whole. */
export function writeModelFolder(dir: string, content: ModelFolderContent): void {
  const tensors = normalizeTensors(content.tensors);
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new ShapeError(`${dir}: tensor '${t.name}' given twice`);
    seen.add(t.name);
    checkTensorToWrite(t, `${dir}: tensor '${t.name}'`);
  }
  const extra = content.tokenizerFiles ?? {};
  for (const name of Object.keys(extra)) {
    if (name !== basename(name) || name === '.' || name === '..' || name === '' || /[\\/]/.test(name))
      throw new ShapeError(`${dir}: extra file name '${name}' must be a plain file name`);
    if (name === 'config.json' || /^model.*\.safetensors(\.index\.json)?$/.test(name))
      throw new ShapeError(`${dir}: extra file '${name}' would overwrite a file the model folder writes itself`);
  }
  const metadata = content.metadata ?? { format: 'pt' };
  const shards = planShards(tensors, content.shardBytes);
  replaceDirAtomic(dir, (tmp) => {
    writeFileAtomic(join(tmp, 'config.json'), JSON.stringify(content.config, null, 2) + '\n');
    if (shards.length === 1) {
      writeSafetensors(join(tmp, 'model.safetensors'), shards[0]!, metadata);
    } else {
      const weightMap: Record<string, string> = Object.create(null);
      let total = 0;
      const k = String(shards.length).padStart(5, '0');
      shards.forEach((list, i) => {
        const file = `model-${String(i + 1).padStart(5, '0')}-of-${k}.safetensors`;
        writeSafetensors(join(tmp, file), list, metadata);
        for (const t of list) {
          weightMap[t.name] = file;
          total += writtenBytes(t);
        }
      });
      writeFileAtomic(join(tmp, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
    }
    for (const [name, data] of Object.entries(extra)) writeFileAtomic(join(tmp, name), data);
  });
}

/** Greedy split in order: a shard closes when the next tensor would take it past `shardBytes`. */
function planShards(tensors: TensorToWrite[], shardBytes?: number): TensorToWrite[][] {
  if (shardBytes === undefined) return [tensors];
  if (!(shardBytes > 0)) throw new ShapeError(`shardBytes must be positive, got ${shardBytes}`);
  const out: TensorToWrite[][] = [];
  let cur: TensorToWrite[] = [];
  let size = 0;
  for (const t of tensors) {
    const n = writtenBytes(t);
    if (cur.length && size + n > shardBytes) {
      out.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(t);
    size += n;
  }
  if (cur.length || out.length === 0) out.push(cur);
  return out;
}
