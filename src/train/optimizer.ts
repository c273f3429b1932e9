// AdamW over the model's parameter tensors (decoupled weight decay, applied to weight matrices
// but not to LRPE θ by default), with global-norm gradient clipping.
import type { Backend, Tensor } from '../backends/backend.ts';
import type { Params } from '../model/params.ts';
import { paramTensors } from '../model/params.ts';

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Decay θ too (default false). */
  decayTheta?: boolean;
}

export class AdamW {
  readonly m: Tensor[];
  readonly v: Tensor[];
  step = 0;
  private readonly params: Tensor[];
  private readonly decays: boolean[];

  constructor(private readonly be: Backend, params: Params, private readonly cfg: AdamWConfig) {
    this.params = paramTensors(params);
    const thetas = new Set(params.layers.map((l) => l.theta).filter((t) => t !== null));
    this.decays = this.params.map((t) => cfg.decayTheta || !thetas.has(t));
    this.m = this.params.map((t) => be.zeros(t.shape));
    this.v = this.params.map((t) => be.zeros(t.shape));
  }

  /** Releases the moments now (device memory is otherwise returned when they are collected). */
  free(): void {
    for (const t of [...this.m, ...this.v]) this.be.free(t);
  }

  /** √(Σ g²) over every gradient tensor. */
  static gradNorm(be: Backend, grads: Params): number {
    return Math.sqrt(be.sumSquares(paramTensors(grads)));
  }

  /** One update at learning rate `lr`; gradients are multiplied by `gradScale` first (clipping). */
  update(grads: Params, lr: number, gradScale = 1): void {
    this.step++;
    const g = paramTensors(grads);
    this.params.forEach((p, i) => {
      this.be.adamw(p, g[i]!, this.m[i]!, this.v[i]!, {
        lr, beta1: this.cfg.beta1, beta2: this.cfg.beta2, eps: this.cfg.eps,
        weightDecay: this.decays[i] ? this.cfg.weightDecay : 0, step: this.step, gradScale,
      });
    });
  }
}

/** Linear warmup to `lr`, then cosine decay to `minLr` at `total` steps (step counted from 0). */
export function learningRate(step: number, o: { lr: number; minLr: number; warmup: number; total: number }): number {
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  if (step >= o.total) return o.minLr;
  const t = (step - o.warmup) / Math.max(1, o.total - o.warmup);
  return o.minLr + 0.5 * (o.lr - o.minLr) * (1 + Math.cos(Math.PI * t));
}
