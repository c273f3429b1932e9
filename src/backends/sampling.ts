// Token selection inside a decode step (Backend.sampleTokens): the host backends' implementation, and
// the noise of the CUDA kernels (sample_tokens in kernels.cu): the same uniform draws bit for bit,
// their Gumbel transform in f32 there and f64 here (picks differ only at near-ties).
//   temperature 0: the first largest logit;  T > 0: argmax_i (x_i / T + G_i), G_i = −log(−log u_i),
//   which draws i with probability softmax(x / T)_i (the Gumbel-max rule: one pass, no sort).
// u_i comes from a counter-based hash of (seed, row, position, column), so a step's draw depends
// only on those: reproducible, and the same on every replay of a recorded step.
import type { TokenPick, TokenRing } from './backend.ts';
import { ShapeError } from '../errors.ts';

function lowbias32(x: number): number {
  x ^= x >>> 16; x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15; x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The hash key of one row's draw at one position. */
export function noiseKey(seed: number, row: number, position: number): number {
  return lowbias32(lowbias32((seed ^ Math.imul(row, 0x9e3779b9)) >>> 0) ^ position);
}

/** u ∈ (0, 1) for column `col` of a draw (24 random bits, centred in their interval). */
export function noiseUniform(key: number, col: number): number {
  return ((lowbias32((key ^ Math.imul(col, 0x85ebca6b)) >>> 0) >>> 8) + 0.5) / 16777216;
}

/** A ring of `slots` steps × `rows` picks in host memory. */
export class HostTokenRing implements TokenRing {
  readonly ids: Int32Array;
  readonly logprobs: Float32Array;
  /** Steps written so far (the next one goes to slot written % slots). */
  written = 0;
  constructor(readonly rows: number, readonly slots: number) {
    this.ids = new Int32Array(rows * slots);
    this.logprobs = new Float32Array(rows * slots);
  }
  free(): void { /* garbage-collected */ }
}

/**
 * sampleTokens on host logits [B·V]: row b's pick goes to ids[b] and the ring, positions[b] advances.
 * The log-probability is at temperature 1 (log-softmax of the row as given).
 */
export function sampleRowsHost(x: Float32Array, V: number, { ids, positions, ring, temperature, seed }: TokenPick): void {
  const B = ids.length;
  if (x.length !== B * V || positions.length !== B || ring.rows !== B || !(ring instanceof HostTokenRing))
    throw new ShapeError(`sampleTokens: logits of ${x.length} values, ${B} ids, ${positions.length} positions and a ring of ${ring.rows} rows do not agree`);
  if (!(temperature >= 0)) throw new ShapeError(`sampleTokens: temperature must be ≥ 0, got ${temperature}`);
  const slot = ring.written++ % ring.slots;
  for (let b = 0; b < B; b++) {
    const row = x.subarray(b * V, (b + 1) * V);
    const key = noiseKey(seed >>> 0, b, positions[b]!);
    let best = -Infinity, id = 0, mx = -Infinity;
    for (let i = 0; i < V; i++) {
      const v = row[i]!;
      if (v > mx) mx = v;
      const s = temperature > 0 ? Math.fround(v / temperature) - Math.log(-Math.log(noiseUniform(key, i))) : v;
      if (s > best) { best = s; id = i; }
    }
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(row[i]! - mx);
    ids[b] = id;
    positions[b]!++;
    ring.ids[slot * B + b] = id;
    ring.logprobs[slot * B + b] = row[id]! - mx - Math.log(sum);
  }
}
