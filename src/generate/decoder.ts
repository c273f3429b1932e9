// Decode steps over one recurrent state, replayed as CUDA graphs where the backend can record them.
// A decode step is a few small kernels per layer (five on CUDA) whose launches, one by one from
// JavaScript, cost more than the kernels; recorded once per batch size and replayed, a step is one
// graph launch plus the copies of ids, positions and slots. The first step of each batch size runs eagerly (it compiles
// kernels and fills caches), the second is recorded, every later one is replayed.
import type { CapturedGraph, Tensor } from '../backends/backend.ts';
import type { ModelState, TnlModel } from '../model/transnormer.ts';

interface Recorded { graph: CapturedGraph<Tensor>; ids: Int32Array; positions: Int32Array; slots: Int32Array | null }

export interface DecoderOptions {
  /** Record and replay graphs when the backend can (default: yes, unless TNL_CUDA_GRAPHS=0). */
  graphs?: boolean;
}

export class Decoder {
  graphs: boolean;
  /** Why recording failed, when it did (the decoder then runs eagerly). */
  graphError: string | null = null;
  private readonly recorded = new Map<string, Recorded>();
  private readonly seen = new Set<string>();
  private eager: Tensor | null = null;

  constructor(readonly model: TnlModel, readonly state: ModelState, opts: DecoderOptions = {}) {
    this.graphs = (opts.graphs ?? process.env.TNL_CUDA_GRAPHS !== '0') && typeof model.be.capture === 'function';
  }

  /**
   * Logits [B, V] (f32) for the next token of each sequence; sequence b continues state row
   * slots[b] (row b without slots). The tensor belongs to the decoder: read it before the next step.
   */
  step(ids: Int32Array, slots: Int32Array | null = null): Tensor {
    return this.run(ids, slots).tensor;
  }

  /**
   * The same step's logits on the host, [B·V] f32. Replayed graphs copy them out inside the graph
   * (page-locked memory): a view valid until the next step.
   */
  stepToHost(ids: Int32Array, slots: Int32Array | null = null): Float32Array {
    const r = this.run(ids, slots);
    return r.graph?.hostResult ? r.graph.hostResult() : this.model.be.download(r.tensor);
  }

  private run(ids: Int32Array, slots: Int32Array | null): { tensor: Tensor; graph?: CapturedGraph<Tensor> } {
    const { model, state } = this;
    const B = ids.length;
    if (this.eager) { model.be.free(this.eager); this.eager = null; }
    const key = `${B}:${slots ? 's' : '-'}`;
    if (!this.graphs || !this.seen.has(key)) {
      this.eager = model.decode(ids, state, slots);
      this.seen.add(key);  // after a step that ran: kernels compiled, caches filled
      return { tensor: this.eager };
    }
    // a replay checks nothing itself
    model.checkStateStep(ids, B, 1, state, slots);
    let r = this.recorded.get(key);
    if (!r) {
      const buf: Omit<Recorded, 'graph'> = { ids: new Int32Array(B), positions: new Int32Array(B), slots: slots ? new Int32Array(B) : null };
      let graph: CapturedGraph<Tensor>;
      try {
        graph = model.be.capture!(() => model.stateStep(buf.ids, B, 1, buf.positions, state, null, buf.slots, false), { hostCopy: true });
      } catch (e) {
        // nothing ran during the capture: decode eagerly from here on
        this.graphError = (e as Error).message;
        this.graphs = false;
        this.eager = model.decode(ids, state, slots);
        return { tensor: this.eager };
      }
      r = { graph, ...buf };
      this.recorded.set(key, r);
    }
    r.ids.set(ids);
    if (slots) r.slots!.set(slots);
    for (let b = 0; b < B; b++) r.positions[b] = state.positions[slots ? slots[b]! : b]!;
    r.graph.replay();
    for (let b = 0; b < B; b++) state.positions[slots ? slots[b]! : b]!++;
    return { tensor: r.graph.result, graph: r.graph };
  }

  /** Releases the recorded graphs (and their buffers). */
  dispose(): void {
    for (const r of this.recorded.values()) r.graph.destroy();
    this.recorded.clear();
    if (this.eager) { this.model.be.free(this.eager); this.eager = null; }
  }
}
