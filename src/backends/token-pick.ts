// Token selection inside a decode step (Backend.sampleTokens): the host backends' implementation, and
// the noise of the CUDA kernels (sample_tokens in kernels.cu): the same uniform draws bit for bit,
// their Gumbel transform in f32 there and f64 here (picks differ only at near-ties).
//   temperature 0: the first largest logit;  T > 0: argmax_i (x_i / T + G_i), G_i = −log(−log u_i),
//   which draws i with probability softmax(x / T)_i (the Gumbel-max rule: one pass, no sort).
// u_i comes from a counter-based hash of (the row's seed, position, column), so a step's draw depends
// only on those: reproducible, and the same on every replay of a recorded step.
import type { TokenPick, TokenRing } from './backend.ts';
import { ShapeError } from '../errors.ts';

function lowbias32(x: number): number {
  x ^= x >>> 16; x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15; x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Row b's seed: seeds[b], or the call's seed mixed with the row index. */
export function rowSeed(seed: number, row: number, seeds?: Int32Array): number {
  return seeds ? seeds[row]! >>> 0 : (seed ^ Math.imul(row, 0x9e3779b9)) >>> 0;
}

/** The hash key of one row's draw at one position. */
export function noiseKey(rowSeed: number, position: number): number {
  return lowbias32(lowbias32(rowSeed) ^ position);
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

/** The checks every sampleTokens makes: B rows of ld logits (of `size` values), the arrays' lengths, the rule. */
export function checkPick({ ids, positions, ring, temperature, temperatures, seeds, columns }: TokenPick, B: number, ld: number, size: number): void {
  const bad = (what: string) => { throw new ShapeError(`sampleTokens: ${what}`); };
  if (size !== B * ld || ids.length !== B || positions.length !== B || ring.rows !== B)
    bad(`logits of ${size} values (${ld} a row), ${ids.length} ids, ${positions.length} positions and a ring of ${ring.rows} rows do not agree`);
  if ((temperatures && temperatures.length !== B) || (seeds && seeds.length !== B)) bad(`${temperatures?.length ?? seeds?.length} per-row values for ${B} rows`);
  for (const t of temperatures ?? [temperature]) if (!(t >= 0 && Number.isFinite(t))) bad(`temperature must be ≥ 0, got ${t}`);
  if (columns !== undefined && !(Number.isInteger(columns) && columns >= 1 && columns <= ld)) bad(`columns must be an integer in [1, ${ld}], got ${columns}`);
}

/**
 * sampleTokens on host logits [B, ld]: row b's pick goes to ids[b] and the ring, positions[b] advances.
 * The log-probability is at temperature 1 (log-softmax of the row's candidate columns).
 */
export function sampleRowsHost(x: Float32Array, ld: number, pick: TokenPick): void {
  const { ids, positions, ring, temperatures, seeds } = pick, B = ids.length, V = pick.columns ?? ld;
  checkPick(pick, B, ld, x.length);
  if (!(ring instanceof HostTokenRing)) throw new ShapeError('sampleTokens: the ring was not made by this backend (tokenRing)');
  const slot = ring.written++ % ring.slots;
  for (let b = 0; b < B; b++) {
    const row = x.subarray(b * ld, b * ld + V);
    const temperature = temperatures ? temperatures[b]! : pick.temperature;
    const key = noiseKey(rowSeed(pick.seed, b, seeds), positions[b]!);
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
