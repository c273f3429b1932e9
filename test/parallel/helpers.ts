// Shared by the parallel tests and their rank modules: tiny configurations, token batches, and
// the comparison metric (max |a − b| / max |b|, per tensor).
import { parseConfig, type ModelConfig } from '../../src/config/index.ts';

export type CfgName = 'h6-untied' | 'h8-tied' | 'h4-untied';

/** vocab 64, D 32, 2 layers with LRPE on layer 0: 6 heads (non-power-of-two slopes), 8 heads tied, 4 heads. */
export function tinyConfig(name: CfgName): ModelConfig {
  const nh = name === 'h6-untied' ? 6 : name === 'h8-tied' ? 8 : 4;
  return parseConfig({
    vocab_size: 64, decoder_embed_dim: nh === 6 ? 36 : 32, hidden_dim: nh === 6 ? 36 : 32, decoder_layers: 2,
    decoder_attention_heads: nh, glu_dim: 48, linear_use_lrpe_list: [1, 0], init_std: 0.2,
    tie_word_embeddings: name === 'h8-tied', pad_token_id: 0,
  }, `tiny ${name}`);
}

/** B sequences of N token ids (some padding ids 0, so the padding row's gradient rule is exercised). */
export function batch(B: number, N: number, seed: number, V = 64): Int32Array {
  let a = seed * 2654435761 >>> 0;
  return Int32Array.from({ length: B * N }, () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return (a >>> 8) % V;
  });
}

/** max |a − b| / max |b|. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i]! - b[i]!)); m = Math.max(m, Math.abs(b[i]!)); }
  return m === 0 ? d : d / m;
}

export const ADAMW = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
