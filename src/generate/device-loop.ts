// A decode loop that picks its tokens inside the step (Backend.sampleTokens) and so runs ahead of the
// host. Each step reads the ids and positions that the previous step wrote, where it wrote them (on
// CUDA: bound device arrays), so the host only queues steps — one recorded graph, replayed — and
// reads the picks from a ring a few steps behind. No logits cross to the host and the GPU never
// waits for JavaScript. Greedy and temperature sampling only: top-k / top-p, penalties, logit biases
// and top logprobs need the whole row on the host (generateTokens then uses Decoder and Sampler).
import type { Backend, CapturedGraph, TokenRing } from '../backends/backend.ts';
import type { ModelState, TnlModel } from '../model/transnormer.ts';
import { UsageError } from '../errors.ts';
import type { SamplingOptions } from './sampling.ts';

export interface DeviceLoopOptions {
  /** 0 = greedy (default 1). */
  temperature?: number;
  /** Seed of the draws (default: random). The same seed, prompt and backend give the same tokens. */
  seed?: number;
  /** Steps queued ahead of the one being read (default 4). */
  depth?: number;
  /** Replay a recorded step where the backend can (default: yes, unless TNL_CUDA_GRAPHS=0). */
  graphs?: boolean;
}

/**
 * Whether generation should pick tokens inside the step: on a device backend (host backends have
 * the logits at hand anyway), for options it can honour, unless TNL_DEVICE_SAMPLING=0.
 */
export function deviceSamplingApplies(be: Backend, o: SamplingOptions & { topLogprobs?: number }): boolean {
  return typeof be.sampleTokens === 'function' && typeof be.bindInts === 'function' && process.env.TNL_DEVICE_SAMPLING !== '0'
    && !o.topK && (o.topP ?? 1) === 1 && (o.repetitionPenalty ?? 1) === 1 && !o.presencePenalty && !o.frequencyPenalty
    && !o.logitBias?.size && !o.topLogprobs;
}

/** One step's picks: the token of each row and its log-probability at temperature 1. */
export interface StepPicks { ids: Int32Array; logprobs: Float32Array }

export class DeviceLoop {
  private readonly ids: Int32Array;
  private readonly positions: Int32Array;
  private readonly ring: TokenRing;
  private readonly temperature: number;
  private readonly seed: number;
  private readonly depth: number;
  private graphs: boolean;
  private graph: CapturedGraph<void> | null = null;
  /** Steps queued since the ring was made (step s writes slot s % slots). */
  private queued = 0;
  private running = false;

  constructor(readonly model: TnlModel, readonly state: ModelState, opts: DeviceLoopOptions = {}) {
    const be = model.be;
    if (!be.sampleTokens || !be.tokenRing) throw new UsageError(`the ${be.name} backend cannot pick tokens inside the step`);
    this.temperature = opts.temperature ?? 1;
    if (!(this.temperature >= 0 && Number.isFinite(this.temperature))) throw new UsageError(`temperature must be ≥ 0, got ${this.temperature}`);
    this.seed = (opts.seed ?? Math.random() * 2 ** 32) >>> 0;
    this.depth = opts.depth ?? 4;
    if (!(Number.isInteger(this.depth) && this.depth >= 1)) throw new UsageError(`depth must be an integer ≥ 1, got ${this.depth}`);
    this.graphs = (opts.graphs ?? process.env.TNL_CUDA_GRAPHS !== '0') && typeof be.capture === 'function';
    const B = state.batch;
    this.ids = new Int32Array(B);
    this.positions = new Int32Array(B);
    // a step's slot is rewritten `slots` steps later: after the host has read it
    this.ring = be.tokenRing(B, this.depth + 1);
  }

  /**
   * Decode `count` steps from tokens `first` (one per sequence of the state): yields each step's
   * picks, which are also the next step's input. Stopping early (break, return) is fine: the steps
   * already queued run to the end, and state.positions counts every step that ran.
   */
  *run(first: Int32Array, count: number): Generator<StepPicks, void> {
    const { model, state, ring } = this, be = model.be, B = state.batch;
    if (this.running) throw new UsageError('this decode loop is already running');
    model.checkStateStep(first, B, 1, state, null);
    if (!(Number.isInteger(count) && count >= 0)) throw new UsageError(`step count must be an integer ≥ 0, got ${count}`);
    this.running = true;
    this.ids.set(first);
    this.positions.set(state.positions);
    be.bindInts?.(this.ids);
    be.bindInts?.(this.positions);
    const pending: { step: number; wait: () => void }[] = [];
    let launched = 0;
    try {
      for (let done = 0; done < count; done++) {
        while (launched < count && pending.length < this.depth) {
          this.launch();
          launched++;
          pending.push({ step: this.queued - 1, wait: be.mark?.() ?? (() => {}) });
        }
        const p = pending.shift()!;
        p.wait();
        const at = (p.step % ring.slots) * B;
        yield { ids: ring.ids.slice(at, at + B), logprobs: ring.logprobs.slice(at, at + B) };
      }
    } finally {
      for (const p of pending) p.wait();
      for (let b = 0; b < B; b++) state.positions[b]! += launched;
      this.running = false;
    }
  }

  /**
   * Queue one step: eagerly the first time (kernels compiled, caches filled), then as a recorded graph
   * replayed. (Graphs of several steps measured no faster: 2 steps 0.501 against 0.496 ms a step.)
   */
  private launch(): void {
    const { model, state } = this, be = model.be;
    const step = () => {
      const logits = model.stateStep(this.ids, state.batch, 1, this.positions, state, null, null, false);
      be.sampleTokens!(logits, { ids: this.ids, positions: this.positions, ring: this.ring, temperature: this.temperature, seed: this.seed });
      be.free(logits);
    };
    if (this.graphs && this.queued > 0 && !this.graph) {
      try {
        this.graph = be.capture!(step);
      } catch {
        this.graphs = false;  // nothing ran during the capture: step eagerly from here on
      }
    }
    if (this.graph) this.graph.replay();
    else step();
    this.queued++;
  }

  /** Releases the recorded graph, the ring and the bound arrays. */
  dispose(): void {
    this.graph?.destroy();
    this.graph = null;
    this.ring.free();
    this.model.be.unbindInts?.(this.ids);
    this.model.be.unbindInts?.(this.positions);
  }
}
