// Parameters of a TNL model on a backend, and their mapping to the reference's state-dict names.
// Internally l1 and l2 of SGLU live in one fused matrix w12 = [l1; l2] (one GEMM, one pass), and
// q/k/v/u are already fused in the reference (qkvu_proj).
import type { Backend, DType, Tensor } from '../backends/backend.ts';
import type { ModelConfig } from '../config/index.ts';
import { dims } from '../config/index.ts';
import { FormatError, ShapeError } from '../errors.ts';
import type { TensorReader } from '../io/reader.ts';

export interface LayerParams {
  qkvu: Tensor;          // [4H, D]
  out: Tensor;           // [D, H]
  theta: Tensor | null;  // [nh, dh] (reference shape (nh, 1, dh)), f32 always
  w12: Tensor;           // [2G, D]: rows [0,G) = l1, [G,2G) = l2
  w3: Tensor;            // [D, G]
}
export interface Params {
  embed: Tensor;         // [V, D]
  head: Tensor | null;   // [V, D]; null when tied to embed
  layers: LayerParams[];
}

/** One reference tensor: where it lives inside our parameters. */
export interface ParamEntry {
  name: string;
  shape: number[];       // the reference's shape
  get: (p: Params) => Tensor;
  /** Rows of the internal tensor that hold this reference tensor (for fused tensors). */
  rowStart: number;
  rows: number;
  /** Matrices may be stored in bf16; θ stays f32. */
  matrix: boolean;
}

export function paramEntries(c: ModelConfig): ParamEntry[] {
  const { V, D, L, nh, H, dh, G } = dims(c);
  const e: ParamEntry[] = [{ name: 'model.embed_tokens.weight', shape: [V, D], get: (p) => p.embed, rowStart: 0, rows: V, matrix: true }];
  for (let l = 0; l < L; l++) {
    const pre = `model.layers.${l}.`;
    e.push({ name: pre + 'token_mixer.qkvu_proj.weight', shape: [4 * H, D], get: (p) => p.layers[l]!.qkvu, rowStart: 0, rows: 4 * H, matrix: true });
    e.push({ name: pre + 'token_mixer.out_proj.weight', shape: [D, H], get: (p) => p.layers[l]!.out, rowStart: 0, rows: D, matrix: true });
    if (c.linear_use_lrpe_list[l]) e.push({ name: pre + 'token_mixer.lrpe.theta', shape: [nh, 1, dh], get: (p) => p.layers[l]!.theta!, rowStart: 0, rows: nh, matrix: false });
    e.push({ name: pre + 'channel_mixer.l1.weight', shape: [G, D], get: (p) => p.layers[l]!.w12, rowStart: 0, rows: G, matrix: true });
    e.push({ name: pre + 'channel_mixer.l2.weight', shape: [G, D], get: (p) => p.layers[l]!.w12, rowStart: G, rows: G, matrix: true });
    e.push({ name: pre + 'channel_mixer.l3.weight', shape: [D, G], get: (p) => p.layers[l]!.w3, rowStart: 0, rows: D, matrix: true });
  }
  if (!c.tie_word_embeddings) e.push({ name: 'lm_head.weight', shape: [V, D], get: (p) => p.head!, rowStart: 0, rows: V, matrix: true });
  return e;
}

/** Allocate zeroed parameters (matrices in `dtype`, θ in f32). */
export function allocParams(be: Backend, c: ModelConfig, dtype: DType = 'f32'): Params {
  const { V, D, L, nh, H, dh, G } = dims(c);
  const layers: LayerParams[] = [];
  for (let l = 0; l < L; l++)
    layers.push({
      qkvu: be.zeros([4 * H, D], dtype), out: be.zeros([D, H], dtype),
      theta: c.linear_use_lrpe_list[l] ? be.zeros([nh, dh], 'f32') : null,
      w12: be.zeros([2 * G, D], dtype), w3: be.zeros([D, G], dtype),
    });
  return { embed: be.zeros([V, D], dtype), head: c.tie_word_embeddings ? null : be.zeros([V, D], dtype), layers };
}

/** Every distinct internal tensor once (for optimisers, norms, zeroing). */
export function paramTensors(p: Params): Tensor[] {
  const out: Tensor[] = [p.embed];
  for (const l of p.layers) { out.push(l.qkvu, l.out); if (l.theta) out.push(l.theta); out.push(l.w12, l.w3); }
  if (p.head) out.push(p.head);
  return out;
}

/** A source of named reference tensors (a checkpoint reader, a fixture file). */
export type NamedTensorSource = Pick<TensorReader, 'names' | 'readAs'>;

/**
 * Fill parameters from reference-named tensors. Checks that every expected tensor is present with
 * the right shape and that nothing unexpected is left over (a tied head's `lm_head.weight` copy is
 * allowed and ignored, spec §9).
 */
export function loadParams(be: Backend, p: Params, c: ModelConfig, src: NamedTensorSource, what: string): void {
  const entries = paramEntries(c);
  const have = new Set(src.names());
  const missing = entries.filter((e) => !have.has(e.name)).map((e) => e.name);
  if (missing.length) throw new FormatError(`${what}: missing tensor${missing.length > 1 ? 's' : ''} ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}`);
  const expected = new Set(entries.map((e) => e.name));
  if (c.tie_word_embeddings) expected.add('lm_head.weight');
  const unexpected = [...have].filter((n) => !expected.has(n));
  if (unexpected.length) throw new FormatError(`${what}: unexpected tensor${unexpected.length > 1 ? 's' : ''} ${unexpected.slice(0, 5).join(', ')} (does config.json match these weights?)`);
  for (const e of entries) {
    const dst = e.get(p);
    const t = src.readAs(e.name, dst.dtype);
    const ok = t.shape.length === e.shape.length && t.shape.every((d, i) => d === e.shape[i]);
    if (!ok) throw new ShapeError(`${what}: tensor ${e.name} has shape [${t.shape.join(', ')}], config.json implies [${e.shape.join(', ')}]`);
    const cols = dst.shape[dst.shape.length - 1]!;
    const view = e.rows === dst.size / cols ? dst : be.rows(dst, e.rowStart, e.rows);
    be.copy(view, t.dtype === 'bf16' ? be.uploadBF16(t.data as Uint16Array, view.shape) : be.upload(t.data as Float32Array, view.shape, 'f32'));
  }
}

/** Reference-named float32 copies of the parameters (or of gradients laid out like them). */
export function exportParams(be: Backend, p: Params, c: ModelConfig): { name: string; shape: number[]; data: Float32Array }[] {
  return paramEntries(c).map((e) => {
    const t = e.get(p);
    const cols = t.shape[t.shape.length - 1]!;
    const view = e.rows === t.size / cols ? t : be.rows(t, e.rowStart, e.rows);
    return { name: e.name, shape: e.shape, data: be.download(view) };
  });
}

/** Deterministic normal(0, std) init as the reference's _init_weights, θ as the Lrpe module. */
export function initParams(be: Backend, p: Params, c: ModelConfig, rng: () => number): void {
  const std = c.init_std;
  const normal = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const u1 = Math.max(rng(), 1e-12), u2 = rng();
      const r = Math.sqrt(-2 * Math.log(u1)) * std;
      a[i] = r * Math.cos(2 * Math.PI * u2);
      if (i + 1 < n) a[i + 1] = r * Math.sin(2 * Math.PI * u2);
    }
    return a;
  };
  for (const t of paramTensors(p)) {
    const isTheta = p.layers.some((l) => l.theta === t);
    if (isTheta) continue;
    const data = normal(t.size);
    if (t === p.embed) data.fill(0, c.pad_token_id * t.shape[1]!, (c.pad_token_id + 1) * t.shape[1]!);
    be.copy(t, be.upload(data, t.shape, 'f32'));
  }
  for (const l of p.layers) if (l.theta) be.copy(l.theta, be.upload(lrpeThetaInit(l.theta.size), l.theta.shape, 'f32'));
}

/** θ.flatten() = 10000^(−2i/(nh·dh)), one sequence across heads (spec §4). */
export function lrpeThetaInit(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => 10000 ** ((-2 / n) * i));
}
