// Decode steps over one recurrent state, replayed as CUDA graphs where the backend can record them.
// A decode step is a few small kernels per layer (five on CUDA) whose launches, one by one from
// JavaScript, cost more than the kernels; recorded once per batch size and replayed, a step is one
// graph launch plus the copies of ids, positions and slots. The first step of each batch size runs eagerly (it compiles
// kernels and fills caches), the second is recorded, every later one is replayed. stepPicks ends the
// step with each row's token picked on the device (Backend.sampleTokens): only B picks come back.
import type { CapturedGraph, Tensor, TokenPick } from '../backends/backend.ts';
import type { ModelState, TnlModel } from '../model/transnormer.ts';
import type { StepPicks } from './device-loop.ts';
import { UsageError } from '../errors.ts';

/** How stepPicks chooses: per-row temperatures (0 = greedy) and seeds, among the first `columns` logits. */
export interface PickRule { temperatures: Float32Array; seeds: Int32Array; columns?: number }

/** A step's pick arrays (refilled before each step: a recorded step reads them) and its ring. */
type PickBuffers = TokenPick & { temperatures: Float32Array; seeds: Int32Array };

interface Recorded { graph: CapturedGraph<Tensor>; ids: Int32Array; positions: Int32Array; slots: Int32Array | null; picks: PickBuffers | null }

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
  /** The rings of eager pick steps, by batch size (recorded steps own theirs). */
  private readonly eagerPicks = new Map<number, PickBuffers>();
  /** The last step's logits, and a count of steps (logitsRow checks that its step is the last). */
  private last: Tensor | null = null;
  private steps = 0;

  constructor(readonly model: TnlModel, readonly state: ModelState, opts: DecoderOptions = {}) {
    this.graphs = (opts.graphs ?? process.env.TNL_CUDA_GRAPHS !== '0') && typeof model.be.capture === 'function';
  }

  /**
   * Logits [B, V] (f32) for the next token of each sequence; sequence b continues state row
   * slots[b] (row b without slots). The tensor belongs to the decoder: read it before the next step.
   */
  step(ids: Int32Array, slots: Int32Array | null = null): Tensor {
    return this.run(ids, slots, null).tensor;
  }

  /**
   * The same step's logits on the host, [B·V] f32. Replayed graphs copy them out inside the graph
   * (page-locked memory): a view valid until the next step.
   */
  stepToHost(ids: Int32Array, slots: Int32Array | null = null): Float32Array {
    const r = this.run(ids, slots, null);
    return r.graph?.hostResult ? r.graph.hostResult() : this.model.be.download(r.tensor);
  }

  /**
   * The step's picks instead of its logits: each row's next token and its log-probability at
   * temperature 1, chosen inside the step (Backend.sampleTokens; the backend must have it) by the
   * rule's per-row temperature and seed, so only B tokens and B floats reach the host. A server's
   * batch: the host feeds the picks back as the next step's ids. logitsRow(b) fetches a row's logits.
   */
  stepPicks(ids: Int32Array, slots: Int32Array | null, rule: PickRule): StepPicks {
    const be = this.model.be, B = ids.length;
    if (!be.sampleTokens || !be.tokenRing) throw new UsageError(`the ${be.name} backend cannot pick tokens inside the step`);
    const r = this.run(ids, slots, rule);
    be.mark?.()();
    const ring = r.picks!.ring;
    return { ids: ring.ids.slice(0, B), logprobs: ring.logprobs.slice(0, B) };
  }

  /** Row b of the last step's logits, [V]; null when another step has run since `step` (steps counted from 1). */
  logitsRow(b: number, step = this.steps): Float32Array | null {
    if (step !== this.steps || !this.last) return null;
    return this.model.be.download(this.model.be.rows(this.last, b, 1));
  }
  /** Steps run so far (to tell, later, whether logitsRow still has a step's logits). */
  get stepCount(): number { return this.steps; }

  /** The pick arrays of a step of B rows, filled for this step (positions: the rows' positions before it). */
  private pickBuffers(B: number, rule: PickRule, slots: Int32Array | null, into?: PickBuffers): PickBuffers {
    const be = this.model.be;
    if (rule.temperatures.length !== B || rule.seeds.length !== B) throw new UsageError(`stepPicks: ${rule.temperatures.length} temperatures and ${rule.seeds.length} seeds for ${B} rows`);
    const p: PickBuffers = into ?? {
      ids: new Int32Array(B), positions: new Int32Array(B), ring: be.tokenRing!(B, 1), temperature: 0, seed: 0,
      temperatures: new Float32Array(B), seeds: new Int32Array(B), ...(rule.columns !== undefined ? { columns: rule.columns } : {}),
    };
    p.temperatures.set(rule.temperatures);
    p.seeds.set(rule.seeds);
    for (let b = 0; b < B; b++) p.positions[b] = this.state.positions[slots ? slots[b]! : b]!;
    return p;
  }

  private run(ids: Int32Array, slots: Int32Array | null, rule: PickRule | null): { tensor: Tensor; graph?: CapturedGraph<Tensor>; picks?: PickBuffers } {
    const { model, state } = this;
    const B = ids.length;
    if (this.eager) { model.be.free(this.eager); this.eager = null; }
    this.steps++;
    const key = `${B}:${slots ? 's' : '-'}:${rule ? `p${rule.columns ?? ''}` : '-'}`;
    if (!this.graphs || !this.seen.has(key)) {
      let picks: PickBuffers | undefined;
      if (rule) {
        model.checkStateStep(ids, B, 1, state, slots);
        const old = this.eagerPicks.get(B);
        picks = this.pickBuffers(B, rule, slots, old && old.columns === rule.columns ? old : undefined);
        if (picks !== old) { old?.ring.free(); this.eagerPicks.set(B, picks); }
      }
      this.eager = model.decode(ids, state, slots);
      if (picks) model.be.sampleTokens!(this.eager, picks);
      this.last = this.eager;
      this.seen.add(key);  // after a step that ran: kernels compiled, caches filled
      return { tensor: this.eager, ...(picks ? { picks } : {}) };
    }
    // a replay checks nothing itself
    model.checkStateStep(ids, B, 1, state, slots);
    let r = this.recorded.get(key);
    if (!r) {
      const buf: Omit<Recorded, 'graph'> = { ids: new Int32Array(B), positions: new Int32Array(B), slots: slots ? new Int32Array(B) : null,
        picks: rule ? this.pickBuffers(B, rule, slots) : null };
      let graph: CapturedGraph<Tensor>;
      try {
        graph = model.be.capture!(() => {
          const logits = model.stateStep(buf.ids, B, 1, buf.positions, state, null, buf.slots, false);
          if (buf.picks) model.be.sampleTokens!(logits, buf.picks);
          return logits;
        }, { hostCopy: !rule });
      } catch (e) {
        // nothing ran during the capture: decode eagerly from here on
        buf.picks?.ring.free();
        this.graphError = (e as Error).message;
        this.graphs = false;
        this.steps--;
        return this.run(ids, slots, rule);
      }
      r = { graph, ...buf };
      this.recorded.set(key, r);
    }
    r.ids.set(ids);
    if (slots) r.slots!.set(slots);
    for (let b = 0; b < B; b++) r.positions[b] = state.positions[slots ? slots[b]! : b]!;
    if (r.picks) this.pickBuffers(B, rule!, slots, r.picks);
    r.graph.replay();
    for (let b = 0; b < B; b++) state.positions[slots ? slots[b]! : b]!++;
    this.last = r.graph.result;
    return { tensor: r.graph.result, graph: r.graph, ...(r.picks ? { picks: r.picks } : {}) };
  }

  /** Releases the recorded graphs (and their buffers). */
  dispose(): void {
    for (const r of this.recorded.values()) { r.graph.destroy(); r.picks?.ring.free(); }
    this.recorded.clear();
    for (const p of this.eagerPicks.values()) p.ring.free();
    this.eagerPicks.clear();
    this.last = null;
    if (this.eager) { this.model.be.free(this.eager); this.eager = null; }
  }
}
