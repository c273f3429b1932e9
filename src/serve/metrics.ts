// Prometheus text exposition (format 0.0.4), written by hand: counters, gauges and histograms
// with fixed buckets, optionally with labels. A registry renders them all for GET /metrics.

type Labels = Record<string, string>;

function labelKey(l: Labels | undefined): string {
  if (!l) return '';
  const keys = Object.keys(l).sort();
  if (keys.length === 0) return '';
  return '{' + keys.map((k) => `${k}="${escapeLabel(l[k]!)}"`).join(',') + '}';
}
function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}
function fmt(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}
function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

interface Metric {
  readonly name: string;
  render(): string;
}

export class Counter implements Metric {
  private readonly values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  inc(by = 1, labels?: Labels): void {
    if (!(by >= 0)) return;
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  get(labels?: Labels): number { return this.values.get(labelKey(labels)) ?? 0; }
  render(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} counter`];
    if (this.values.size === 0) lines.push(`${this.name} 0`);
    for (const [k, v] of this.values) lines.push(`${this.name}${k} ${fmt(v)}`);
    return lines.join('\n');
  }
}

export class Gauge implements Metric {
  private readonly values = new Map<string, number>();
  /** When given, the value is read at render time. */
  constructor(readonly name: string, readonly help: string, private readonly read?: () => number) {}
  set(v: number, labels?: Labels): void { this.values.set(labelKey(labels), v); }
  get(labels?: Labels): number { return this.read ? this.read() : this.values.get(labelKey(labels)) ?? 0; }
  render(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} gauge`];
    if (this.read) lines.push(`${this.name} ${fmt(this.read())}`);
    else if (this.values.size === 0) lines.push(`${this.name} 0`);
    else for (const [k, v] of this.values) lines.push(`${this.name}${k} ${fmt(v)}`);
    return lines.join('\n');
  }
}

export class Histogram implements Metric {
  readonly buckets: readonly number[];
  private readonly counts: number[];
  private sum = 0;
  private n = 0;
  constructor(readonly name: string, readonly help: string, buckets: readonly number[]) {
    this.buckets = [...buckets].sort((a, b) => a - b);
    this.counts = new Array(this.buckets.length).fill(0);
  }
  observe(v: number): void {
    if (!Number.isFinite(v)) return;
    this.sum += v;
    this.n++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) { this.counts[i]!++; break; }
  }
  get count(): number { return this.n; }
  get total(): number { return this.sum; }
  render(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} histogram`];
    let cum = 0;
    this.buckets.forEach((b, i) => { cum += this.counts[i]!; lines.push(`${this.name}_bucket{le="${fmt(b)}"} ${cum}`); });
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.n}`, `${this.name}_sum ${fmt(this.sum)}`, `${this.name}_count ${this.n}`);
    return lines.join('\n');
  }
}

/** Events per second over a sliding window (default 10 s), in one-second bins. */
export class RateWindow {
  private readonly bins: number[];
  private readonly stamps: number[];
  constructor(private readonly seconds = 10, private readonly now: () => number = () => performance.now()) {
    this.bins = new Array(seconds).fill(0);
    this.stamps = new Array(seconds).fill(-1);
  }
  add(n: number): void {
    const s = Math.floor(this.now() / 1000), i = s % this.seconds;
    if (this.stamps[i] !== s) { this.stamps[i] = s; this.bins[i] = 0; }
    this.bins[i]! += n;
  }
  rate(): number {
    const nowS = this.now() / 1000, s = Math.floor(nowS);
    let total = 0;
    for (let i = 0; i < this.seconds; i++) if (this.stamps[i]! > s - this.seconds) total += this.bins[i]!;
    // the window covers the full bins before this one plus the elapsed part of the current one
    const span = this.seconds - 1 + (nowS - s);
    return span > 0 ? total / span : 0;
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];
  add<M extends Metric>(m: M): M {
    if (this.metrics.some((x) => x.name === m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.push(m);
    return m;
  }
  render(): string {
    return this.metrics.map((m) => m.render()).join('\n') + '\n';
  }
}

/** Latency buckets in seconds, 1 ms … 60 s. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60];

/** The server's metrics, shared by the engine (scheduler) and the HTTP layer. */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests: Counter;
  readonly promptTokens: Counter;
  readonly cachedPromptTokens: Counter;
  readonly generatedTokens: Counter;
  readonly rejected: Counter;
  readonly finished: Counter;
  readonly ttft: Histogram;
  readonly itl: Histogram;
  readonly e2e: Histogram;
  readonly step: Histogram;
  readonly tokenRate = new RateWindow(10);

  constructor(engine: { queueDepth(): number; running(): number; prefilling(): number; freeSlots(): number; slots(): number }) {
    const r = this.registry;
    r.add(new Gauge('tnl_queue_depth', 'Requests waiting for a free sequence slot', () => engine.queueDepth()));
    r.add(new Gauge('tnl_running_sequences', 'Sequences holding a slot (prefilling or decoding)', () => engine.running()));
    r.add(new Gauge('tnl_prefilling_requests', 'Requests whose prompt is still being prefilled', () => engine.prefilling()));
    r.add(new Gauge('tnl_free_slots', 'Free sequence slots in the state pool', () => engine.freeSlots()));
    r.add(new Gauge('tnl_slots', 'Sequence slots in the state pool (max concurrent sequences)', () => engine.slots()));
    r.add(new Gauge('tnl_generation_tokens_per_second', 'Generated tokens per second over the last 10 s', () => this.tokenRate.rate()));
    this.requests = r.add(new Counter('tnl_requests_total', 'HTTP requests by route and status'));
    this.rejected = r.add(new Counter('tnl_rejected_requests_total', 'Requests refused because the queue was full (429)'));
    this.finished = r.add(new Counter('tnl_sequences_finished_total', 'Sequences finished, by reason'));
    this.promptTokens = r.add(new Counter('tnl_prompt_tokens_total', 'Prompt tokens of admitted requests'));
    this.cachedPromptTokens = r.add(new Counter('tnl_prompt_tokens_cached_total', 'Prompt tokens served from the prefix state cache (not prefilled again)'));
    this.generatedTokens = r.add(new Counter('tnl_generation_tokens_total', 'Generated tokens'));
    this.ttft = r.add(new Histogram('tnl_time_to_first_token_seconds', 'From request arrival to its first generated token', LATENCY_BUCKETS));
    this.itl = r.add(new Histogram('tnl_inter_token_latency_seconds', 'Between consecutive tokens of one sequence', LATENCY_BUCKETS));
    this.e2e = r.add(new Histogram('tnl_request_duration_seconds', 'From request arrival to its last token', LATENCY_BUCKETS));
    this.step = r.add(new Histogram('tnl_engine_step_seconds', 'One engine iteration (a prefill chunk and a batched decode step)', LATENCY_BUCKETS));
    r.add(new Gauge('process_resident_memory_bytes', 'Resident memory size in bytes', () => process.memoryUsage.rss()));
    r.add(new Gauge('nodejs_heap_used_bytes', 'V8 heap in use, bytes', () => process.memoryUsage().heapUsed));
    r.add(new Gauge('nodejs_heap_total_bytes', 'V8 heap reserved (used + free, young generation included), bytes', () => process.memoryUsage().heapTotal));
    r.add(new Gauge('nodejs_external_memory_bytes', 'Memory of ArrayBuffers and other objects outside the V8 heap, bytes', () => process.memoryUsage().external));
    r.add(new Gauge('nodejs_array_buffers_bytes', 'Memory of ArrayBuffers (tensors, typed arrays), bytes', () => process.memoryUsage().arrayBuffers));
  }

  render(): string { return this.registry.render(); }
}

/** Parse Prometheus text into name{labels} → value (for tests and the load test). */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
    const v = m[2] === '+Inf' ? Infinity : m[2] === '-Inf' ? -Infinity : Number(m[2]);
    if (Number.isNaN(v) && m[2] !== 'NaN') throw new Error(`bad value in ${JSON.stringify(line)}`);
    out.set(m[1]!, v);
  }
  return out;
}
