// ModelConfig: the reference's Hugging Face config.json (its own field names), validated, plus
// named presets and the sizes that follow from a config (parameters, memory).
import { readFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.ts';

/** The reference's config.json fields, as it spells them. */
export interface ModelConfig {
  vocab_size: number;
  decoder_embed_dim: number;
  decoder_layers: number;
  decoder_attention_heads: number;
  hidden_dim: number;
  /** −1 means decoder_embed_dim. */
  glu_dim: number;
  linear_use_lrpe_list: number[];
  linear_act_fun: 'silu' | 'swish';
  norm_type: 'simplermsnorm';
  no_scale_embedding: boolean;
  bias: false;
  init_std: number;
  pad_token_id: number;
  bos_token_id: number;
  eos_token_id: number;
  /** Absent in the released configs, which means tied (spec §9). */
  tie_word_embeddings: boolean;
  model_type: 'transnormer';
  architectures: string[];
  /** Whatever else the file carried that does not change the math (torch_dtype, use_cache, …). */
  extra: Record<string, unknown>;
}

/** Fields that are known and carry no meaning for the computation (kept, round-tripped). */
const PASSIVE_FIELDS = new Set([
  'torch_dtype', 'transformers_version', 'use_cache', 'auto_map', 'add_bos_token', 'model_max_length',
  'decoder_ffn_embed_dim', 'decoder_normalize_before', 'adaptive_input', 'dropout', 'attention_dropout',
  'activation_dropout', '_name_or_path', 'glu_act', 'max_position_embeddings', 'is_decoder',
]);

const DEFAULTS = {
  vocab_size: 64000, decoder_embed_dim: 1024, decoder_layers: 24, decoder_attention_heads: 8,
  hidden_dim: 1024, glu_dim: 2816, linear_act_fun: 'silu', norm_type: 'simplermsnorm',
  no_scale_embedding: false, bias: false, init_std: 0.02, pad_token_id: 0, bos_token_id: 1, eos_token_id: 2,
} as const;

/** Validate a parsed config.json; `source` names the file in every error. */
export function parseConfig(raw: unknown, source = 'config.json'): ModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${source}: expected a JSON object`);
  const r = raw as Record<string, unknown>;
  const errors: string[] = [];
  const int = (k: string, min: number, def?: number): number => {
    const v = r[k] ?? def;
    if (v === undefined) { errors.push(`${k}: missing`); return 0; }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) { errors.push(`${k}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`); return 0; }
    return v;
  };
  const bool = (k: string, def: boolean): boolean => {
    const v = r[k] ?? def;
    if (typeof v !== 'boolean') { errors.push(`${k}: expected true or false, got ${JSON.stringify(v)}`); return def; }
    return v;
  };
  const modelType = r.model_type ?? 'transnormer';
  if (modelType !== 'transnormer') errors.push(`model_type: expected "transnormer", got ${JSON.stringify(modelType)}`);
  const D = int('decoder_embed_dim', 1, DEFAULTS.decoder_embed_dim);
  const L = int('decoder_layers', 1, DEFAULTS.decoder_layers);
  const nh = int('decoder_attention_heads', 1, DEFAULTS.decoder_attention_heads);
  const H = int('hidden_dim', 1, DEFAULTS.hidden_dim);
  const V = int('vocab_size', 1, DEFAULTS.vocab_size);
  const gluRaw = r.glu_dim ?? DEFAULTS.glu_dim;
  let glu = -1;
  if (gluRaw !== -1) glu = int('glu_dim', 1, DEFAULTS.glu_dim);
  if (L === 1) errors.push('decoder_layers: 1 is not supported (the reference divides by decoder_layers − 1 for the decay rates)');
  if (H && nh && H % nh !== 0) errors.push(`hidden_dim: ${H} is not divisible by decoder_attention_heads ${nh}`);
  const act = r.linear_act_fun ?? DEFAULTS.linear_act_fun;
  if (act !== 'silu' && act !== 'swish') errors.push(`linear_act_fun: only "silu"/"swish" (as in every released TNL) is supported, got ${JSON.stringify(act)}`);
  const norm = r.norm_type ?? DEFAULTS.norm_type;
  if (norm !== 'simplermsnorm') errors.push(`norm_type: only "simplermsnorm" is supported, got ${JSON.stringify(norm)}`);
  if ((r.bias ?? false) !== false) errors.push(`bias: only false is supported (no released TNL has biases), got ${JSON.stringify(r.bias)}`);
  let lrpe: number[] = [];
  const lr = r.linear_use_lrpe_list ?? [];
  if (!Array.isArray(lr) || lr.some((x) => x !== 0 && x !== 1 && x !== true && x !== false)) {
    errors.push(`linear_use_lrpe_list: expected a list of 0/1, got ${JSON.stringify(lr)}`);
  } else if (lr.length === 0) {
    lrpe = new Array(L).fill(r.linear_use_lrpe ? 1 : 0);
  } else if (lr.length !== L) {
    errors.push(`linear_use_lrpe_list: has ${lr.length} entries for ${L} decoder_layers`);
  } else lrpe = lr.map((x) => (x === true || x === 1 ? 1 : 0));
  if (lrpe.includes(1) && H !== D) errors.push(`hidden_dim: LRPE layers need hidden_dim == decoder_embed_dim (θ has D/nh values per head), got ${H} vs ${D}`);
  const initStd = r.init_std ?? DEFAULTS.init_std;
  if (typeof initStd !== 'number' || !(initStd > 0)) errors.push(`init_std: expected a positive number, got ${JSON.stringify(initStd)}`);
  const pad = int('pad_token_id', 0, DEFAULTS.pad_token_id), bos = int('bos_token_id', 0, DEFAULTS.bos_token_id), eos = int('eos_token_id', 0, DEFAULTS.eos_token_id);
  for (const [k, v] of [['pad_token_id', pad], ['bos_token_id', bos], ['eos_token_id', eos]] as const)
    if (V && v >= V) errors.push(`${k}: ${v} is outside the vocabulary of ${V}`);
  const arch = r.architectures ?? ['TransnormerForCausalLM'];
  if (!Array.isArray(arch) || arch.some((a) => typeof a !== 'string')) errors.push(`architectures: expected a list of strings`);
  const known = new Set([...Object.keys(DEFAULTS), 'linear_use_lrpe_list', 'linear_use_lrpe', 'tie_word_embeddings', 'model_type', 'architectures']);
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) {
    if (known.has(k)) continue;
    if (PASSIVE_FIELDS.has(k)) extra[k] = v;
    else errors.push(`${k}: unknown field (not part of the TransNormerLLM config)`);
  }
  if (errors.length) throw new ConfigError(`${source}: ${errors.length === 1 ? errors[0] : '\n  ' + errors.join('\n  ')}`);
  return {
    vocab_size: V, decoder_embed_dim: D, decoder_layers: L, decoder_attention_heads: nh, hidden_dim: H,
    glu_dim: glu, linear_use_lrpe_list: lrpe, linear_act_fun: act as 'silu', norm_type: 'simplermsnorm',
    no_scale_embedding: bool('no_scale_embedding', false), bias: false, init_std: initStd as number,
    pad_token_id: pad, bos_token_id: bos, eos_token_id: eos, tie_word_embeddings: bool('tie_word_embeddings', true),
    model_type: 'transnormer', architectures: arch as string[], extra,
  };
}

/** The config.json object to write for a config (reference field names). */
export function configToJson(c: ModelConfig): Record<string, unknown> {
  const { extra, ...fields } = c;
  return { ...fields, ...extra };
}

export function loadConfig(dir: string): ModelConfig {
  const path = statSync(dir, { throwIfNoEntry: false })?.isDirectory() ? join(dir, 'config.json') : dir;
  if (!existsSync(path)) throw new ConfigError(`${path}: no config.json (is this a model folder?)`);
  let raw: unknown;
  try { raw = JSON.parse(readFileSync(path, 'utf8')); } catch (e) { throw new ConfigError(`${path}: not valid JSON (${(e as Error).message})`); }
  return parseConfig(raw, path);
}

// ---- derived quantities ---------------------------------------------------------------------

export interface Dims { V: number; D: number; L: number; nh: number; H: number; dh: number; G: number }
export function dims(c: ModelConfig): Dims {
  const H = c.hidden_dim, nh = c.decoder_attention_heads;
  return { V: c.vocab_size, D: c.decoder_embed_dim, L: c.decoder_layers, nh, H, dh: H / nh, G: c.glu_dim === -1 ? c.decoder_embed_dim : c.glu_dim };
}

/** ALiBi-style base slopes as the reference builds them (not sorted for non-powers of two). */
export function baseSlopes(n: number): number[] {
  const pow2 = (m: number) => {
    const start = 2 ** -(2 ** -(Math.log2(m) - 3));
    return Array.from({ length: m }, (_, i) => start * start ** i);
  };
  if (Number.isInteger(Math.log2(n))) return pow2(n);
  const p = 2 ** Math.floor(Math.log2(n));
  return [...pow2(p), ...baseSlopes(2 * p).filter((_, i) => i % 2 === 0).slice(0, n - p)];
}

/** λ_h = exp(−s_h·scale) for nh heads: layer 0's decay at scale 1, the last layer's at 1e-5 (benchmarks and checks). */
export function slopeDecay(nh: number, scale = 1): Float64Array {
  return Float64Array.from(baseSlopes(nh), (s) => Math.exp(-s * scale));
}

/** Per-layer decay λ_{l,h} = exp(−s_h·(1 − l/(L−1) + 1e-5)), with the reference's float32 rounding. */
export function layerDecay(c: ModelConfig, layer: number): Float64Array {
  const L = c.decoder_layers;
  const f = Math.fround(1 - layer / (L - 1) + 1e-5);
  return Float64Array.from(baseSlopes(c.decoder_attention_heads), (s) => Math.exp(-Math.fround(Math.fround(s) * f)));
}

export function embedScale(c: ModelConfig): number {
  return c.no_scale_embedding ? 1 : Math.sqrt(c.decoder_embed_dim);
}

export interface ParamCounts { embedding: number; head: number; perLayer: number; nonEmbedding: number; total: number }
export function paramCounts(c: ModelConfig): ParamCounts {
  const { V, D, L, H, nh, G } = dims(c);
  const lrpeLayers = c.linear_use_lrpe_list.filter((x) => x).length;
  const perLayer = 4 * H * D + D * H + 3 * D * G;
  const nonEmbedding = perLayer * L + lrpeLayers * nh * (D / nh);
  const embedding = V * D, head = c.tie_word_embeddings ? 0 : V * D;
  return { embedding, head, perLayer, nonEmbedding, total: nonEmbedding + embedding + head };
}

/** Bytes of the recurrent state of one sequence (f32): Σ over layers of nh·dk·dv. */
export function stateBytesPerSequence(c: ModelConfig): number {
  const { nh, dh } = dims(c);
  return c.linear_use_lrpe_list.reduce((s, lr) => s + nh * (lr ? 2 * dh : dh) * dh * 4, 0);
}

export interface MemoryEstimate {
  weightsBytes: { f32: number; bf16: number };
  /** AdamW training, fp32: weights + gradients + two moments. */
  trainingStateBytes: number;
  /** Activations kept for the backward per token (fp32), without and with layer checkpointing. */
  activationBytesPerToken: { full: number; checkpointed: number };
  decodeStateBytesPerSequence: number;
}
export function memoryEstimate(c: ModelConfig): MemoryEstimate {
  const p = paramCounts(c);
  const { D, H, G, V, L, nh, dh } = dims(c);
  const lrpeLayers = c.linear_use_lrpe_list.filter((x) => x).length;
  // per layer per token, as the model saves them: norm outputs (2D), rstd (3), qkvu (4H), q,k (2·nh·dk), v (H),
  // o (H), a (H), h12 (2G), m (G)
  const dkSum = (L - lrpeLayers) * nh * dh + lrpeLayers * nh * 2 * dh;
  const perToken = 4 * (L * (2 * D + 3 + 4 * H + H + 3 * H + 3 * G) + 2 * dkSum);
  return {
    weightsBytes: { f32: p.total * 4, bf16: p.total * 2 },
    trainingStateBytes: p.total * 16,
    activationBytesPerToken: { full: perToken + 4 * (D + V) * 2, checkpointed: 4 * (L * D + D + V * 2) + perToken / L },
    decodeStateBytesPerSequence: stateBytesPerSequence(c),
  };
}

// ---- presets --------------------------------------------------------------------------------

function preset(d: { V?: number; D: number; L: number; nh: number; G: number; scale: boolean; lrpeAll?: boolean; tied?: boolean }): ModelConfig {
  return parseConfig({
    vocab_size: d.V ?? 64000, decoder_embed_dim: d.D, decoder_layers: d.L, decoder_attention_heads: d.nh,
    hidden_dim: d.D, glu_dim: d.G, linear_use_lrpe_list: Array.from({ length: d.L }, (_, i) => (i === 0 || d.lrpeAll ? 1 : 0)),
    no_scale_embedding: !d.scale, tie_word_embeddings: d.tied ?? true,
  }, 'preset');
}

export interface PresetInfo { name: string; note: string; config: () => ModelConfig }
export const PRESETS: PresetInfo[] = [
  { name: 'tiny', note: 'tests and smoke runs (vocab 512)', config: () => preset({ V: 512, D: 64, L: 2, nh: 4, G: 128, scale: true, tied: false }) },
  { name: 'small', note: 'the README demo model (CPU training in minutes)', config: () => preset({ V: 4096, D: 256, L: 4, nh: 4, G: 704, scale: true, tied: true }) },
  { name: 'bench-29m', note: 'the CPU benchmark model of the issues (6×512, 8 heads, vocab 8192, untied)', config: () => preset({ V: 8192, D: 512, L: 6, nh: 8, G: 1408, scale: true, tied: false }) },
  { name: 'tnl-385m', note: 'TransNormerLLM-385M (config defaults; spec §11 †)', config: () => preset({ D: 1024, L: 24, nh: 8, G: 2816, scale: true }) },
  { name: 'tnl-1b', note: 'TransNormerLLM-1B (released config)', config: () => preset({ D: 2048, L: 16, nh: 16, G: 5632, scale: true }) },
  { name: 'tnl-7b', note: 'TransNormerLLM-7B (released config)', config: () => preset({ D: 4096, L: 30, nh: 32, G: 11008, scale: false }) },
  { name: 'tnl2-1b', note: 'TransNormerLLM2-1B-300B (glu assumed 5632)', config: () => preset({ D: 2048, L: 16, nh: 16, G: 5632, scale: false }) },
  { name: 'tnl2-3b', note: 'TransNormerLLM2-3B-300B (20 heads: non-power-of-two slopes)', config: () => preset({ D: 2560, L: 32, nh: 20, G: 6912, scale: false }) },
  { name: 'tnl-13b', note: 'paper size (36×5120, 40 heads; glu by the 8/3 rule, unverified)', config: () => preset({ D: 5120, L: 36, nh: 40, G: 13824, scale: false }) },
  { name: 'tnl-65b', note: 'paper size (72×8192, 64 heads; glu by the 8/3 rule, unverified)', config: () => preset({ D: 8192, L: 72, nh: 64, G: 22016, scale: false }) },
  { name: 'tnl-175b', note: 'paper size (88×12288, 96 heads; glu by the 8/3 rule, unverified)', config: () => preset({ D: 12288, L: 88, nh: 96, G: 32768, scale: false }) },
];

export function presetConfig(name: string): ModelConfig {
  const p = PRESETS.find((x) => x.name === name);
  if (!p) throw new ConfigError(`unknown preset "${name}" (known: ${PRESETS.map((x) => x.name).join(', ')})`);
  return p.config();
}
