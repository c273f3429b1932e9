// The generation loop, shared by the CLI and the server: prefill the prompt (in chunks, the state
// carried), then decode one token at a time with the recurrent state, whose size never grows.
import type { TnlModel, ModelState } from '../model/transnormer.ts';
import { UsageError } from '../errors.ts';
import { Sampler, type Sampled, type SamplingOptions } from './sampling.ts';
import { Decoder } from './decoder.ts';
import { DeviceLoop, deviceSamplingApplies, type StepPicks } from './device-loop.ts';

export interface GenerateOptions extends SamplingOptions {
  /** Most new tokens to produce (default 128). */
  maxTokens?: number;
  /** Token ids that end generation (default: the model's eos). They are not yielded. */
  stopIds?: number[];
  /** Longest prefill call, in tokens (bounds activation memory for long prompts; default 1024). */
  prefillChunk?: number;
  /** Also report this many most likely alternatives per token. */
  topLogprobs?: number;
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'abort';
export interface GeneratedToken extends Sampled { index: number }

/** Prefill `ids` into `state` in chunks; returns the last position's logits row. */
export function prefillChunked(model: TnlModel, ids: readonly number[], state: ModelState, chunk = 1024): Float32Array {
  if (ids.length === 0) throw new UsageError('the prompt is empty: give at least one token (or let the tokenizer add bos)');
  let logits: Float32Array | null = null;
  for (let s = 0; s < ids.length; s += chunk) {
    const part = Int32Array.from(ids.slice(s, s + chunk));
    const t = model.prefill(part, 1, part.length, state);
    logits = model.be.download(t);
    model.be.free(t);
  }
  return logits!;
}

/**
 * Yield new tokens for one prompt. The iterator's return value is the finish reason.
 * Between tokens it yields to the event loop so a server stays responsive.
 */
export async function* generateTokens(model: TnlModel, promptIds: readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken, FinishReason> {
  const maxTokens = opts.maxTokens ?? 128;
  if (!(Number.isInteger(maxTokens) && maxTokens >= 0)) throw new UsageError(`max tokens must be an integer ≥ 0, got ${maxTokens}`);
  const stop = new Set(opts.stopIds ?? [model.config.eos_token_id]);
  const sampler = new Sampler(opts);
  sampler.observe(promptIds);
  const state = model.newState(1);
  let logits = prefillChunked(model, promptIds, state, opts.prefillChunk);
  // The first token comes from the prompt's logits. The others are picked on the device where the
  // options allow it (DeviceLoop: steps queued ahead, no logits to the host), else sampled here from
  // each step's logits (Decoder).
  const loop = maxTokens > 1 && deviceSamplingApplies(model.be, opts)
    ? new DeviceLoop(model, state, { temperature: opts.temperature ?? 1, ...(opts.seed !== undefined ? { seed: opts.seed } : {}) }) : null;
  const decoder = loop ? null : new Decoder(model, state);
  let picks: Generator<StepPicks, void> | null = null;
  try {
    for (let i = 0; i < maxTokens; i++) {
      if (opts.signal?.aborted) return 'abort';
      let s: Sampled;
      if (picks) {
        const p = picks.next().value!;
        s = { id: p.ids[0]!, logprob: p.logprobs[0]! };
      } else s = sampler.sample(logits, opts.topLogprobs ?? 0);
      if (stop.has(s.id)) return 'stop';
      yield { ...s, index: i };
      if (i + 1 === maxTokens) break;
      await new Promise((r) => setImmediate(r));
      if (loop) picks ??= loop.run(Int32Array.of(s.id), maxTokens - 1);
      else logits = decoder!.stepToHost(Int32Array.of(s.id));
    }
    return 'length';
  } finally {
    picks?.return();  // the steps already queued finish; the state counts them
    loop?.dispose();
    decoder?.dispose();
  }
}

/**
 * Stop strings over streamed text: emits text as soon as it cannot be the start of a stop string,
 * and reports where a stop string completes.
 */
export class StopMatcher {
  private held = '';
  constructor(private readonly stops: string[]) {}
  /** Feed new text; returns the text safe to emit and whether a stop string was hit. */
  push(text: string): { text: string; stopped: boolean } {
    if (this.stops.length === 0) return { text, stopped: false };
    const all = this.held + text;
    let cut = -1;
    for (const s of this.stops) {
      const i = all.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) { this.held = ''; return { text: all.slice(0, cut), stopped: true }; }
    // keep back the longest suffix that is a prefix of some stop string
    let keep = 0;
    for (const s of this.stops)
      for (let k = Math.min(s.length - 1, all.length); k > keep; k--) if (all.endsWith(s.slice(0, k))) { keep = k; break; }
    this.held = all.slice(all.length - keep);
    return { text: all.slice(0, all.length - keep), stopped: false };
  }
  flush(): string { const t = this.held; this.held = ''; return t; }
}
