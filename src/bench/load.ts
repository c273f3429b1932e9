// Load test of `tnl serve`, on loopback only, bounded in requests and wall-clock time.
//
// It starts the server as its own process (so its memory is the server's alone; or uses --url),
// with a preset's random weights and a byte-level BPE trained on the Brown Corpus to the preset's
// vocabulary, then runs three phases with streaming clients (fetch + SSE):
//  A. throughput: N concurrent clients (default 32), each one completion with a long prompt
//     (default ~1024 tokens of Brown text, all distinct) and max_tokens generated tokens;
//  B. the same kind of requests one at a time (default 8 of them): the baseline;
//  C. conversations: N concurrent chat conversations whose context grows through 1K, 2K, 4K, 8K,
//     16K tokens (each turn appends the reply and a long user message), all clients moving from one
//     size to the next together; the server's RSS is sampled throughout (from /metrics).
// Reported: aggregate generated tokens/s, p50/p99 time to first token and inter-token latency
// (client side: gaps between streamed chunks), RSS per context size, and the ratios against the
// targets (A ≥ 4× B; RSS flat within ±10% from 1K to 16K). Prints tables and writes JSON.
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { setMaxListeners } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { presetConfig } from '../config/index.ts';
import { brownDocuments } from '../data/brown.ts';
import { trainBpe } from '../tokenizer/index.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { UsageError } from '../errors.ts';
import { parsePrometheus } from '../serve/metrics.ts';

export interface LoadOptions {
  /** Preset with random weights (default "bench-29m", the CPU benchmark model). */
  preset?: string;
  /** Target an already running server instead of starting one (its tokenizer must match the preset's vocabulary). */
  url?: string;
  /** Concurrent clients (default 32). */
  clients?: number;
  /** Prompt lengths of phases A and B, tokens: each runs its own A/B comparison (default 128 and 1024). */
  promptTokens?: number[];
  /** Generated tokens per request in A and B (default 256). */
  maxTokens?: number;
  /** Requests of the one-at-a-time baseline (default 8). */
  sequentialRequests?: number;
  /** Context sizes the conversations grow through (default 1024, 2048, 4096, 8192, 16384). */
  contexts?: number[];
  /** Generated tokens per conversation turn (default 16). */
  turnTokens?: number;
  /** Phases to run (default all: "throughput", "sequential", "conversations"). */
  phases?: string[];
  /** Alternations of the concurrent and one-at-a-time phases (default 2). */
  repeat?: number;
  /** Compute threads of the server (tnl serve --threads; default: its own default, one per core). */
  threads?: number;
  /** Wall-clock bound for the whole run, seconds (default 900): past it, clients stop and the run reports what it has. */
  timeLimitS?: number;
  /** Extra arguments for `tnl serve`. */
  serverArgs?: string[];
  /** JSON results file (default bench-results/load.json). */
  out?: string;
  log?: (line: string) => void;
}

interface RequestResult { ttft: number; gaps: number[]; completionTokens: number; promptTokens: number; cachedTokens: number; ok: boolean; error?: string; text: string }

export interface PhaseResult {
  name: string;
  requests: number;
  failed: number;
  promptTokens: number;
  cachedPromptTokens: number;
  generatedTokens: number;
  wallSeconds: number;
  generatedTokensPerSecond: number;
  totalTokensPerSecond: number;
  ttftP50: number; ttftP99: number;
  itlP50: number; itlP99: number;
}

export interface StageResult {
  context: number; promptTokensMean: number; rssMaxBytes: number; rssMeanBytes: number; rssEndBytes: number;
  heapUsedMaxBytes: number; heapTotalMaxBytes: number; arrayBuffersMaxBytes: number; ttftP50: number; itlP50: number; seconds: number;
}

export interface Comparison { promptTokens: number; speedup: number | null; perRepeat: number[] }

export interface LoadResult {
  preset: string;
  server: string;
  clients: number;
  phases: PhaseResult[];
  threads: number | null;
  maxTokens: number;
  /** Per prompt length: concurrent vs one-at-a-time generated tokens/s. */
  comparisons: Comparison[];
  conversation: StageResult[];
  rssSpread: number | null;
  stateBytes: number | null;
  timedOut: boolean;
  machine: { cpus: number; node: string };
}

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i]!;
}

const repoRoot = () => resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Start `tnl serve` on 127.0.0.1 with a free port; resolves to its URL. */
async function startServer(args: string[], log: (l: string) => void): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot(), 'src/cli/serve.ts'), '--host', '127.0.0.1', '--port', '0', ...args], { cwd: repoRoot(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stderr!.on('data', (d) => { err += d; });
  const url = await new Promise<string>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`tnl serve did not start in 120 s: ${err}`)), 120_000);
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) { clearTimeout(t); res(m[1]!); }
    });
    child.on('exit', (code) => { clearTimeout(t); rej(new Error(`tnl serve exited (${code}): ${err}`)); });
  });
  for (const line of err.trim().split('\n')) if (line) log(`  ${line}`);
  return { url, child };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const HAS_TEXT = /"(?:text|content)":"[^"]/;

/**
 * One streaming request (node:http, light on the client's CPU, which shares the machine with the
 * server); measures time to first token and the gaps between streamed chunks. JSON is parsed only
 * for the usage chunk, errors, and (with keepText) the text.
 */
function streamRequest(url: string, path: string, body: Record<string, unknown>, signal: AbortSignal, keepText = false): Promise<RequestResult> {
  const r: RequestResult = { ttft: NaN, gaps: [], completionTokens: 0, promptTokens: 0, cachedTokens: 0, ok: false, text: '' };
  const payload = JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } });
  return new Promise((resolveReq) => {
    const t0 = performance.now();
    let last = NaN, buf = '';
    const done = () => resolveReq(r);
    const req = http.request(url + path, { method: 'POST', agent, signal, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let e = '';
        res.on('data', (d: string) => { e += d; });
        res.on('end', () => { r.error = `HTTP ${res.statusCode}: ${e.slice(0, 200)}`; done(); });
        return;
      }
      res.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(6, i); // after "data: "
          buf = buf.slice(i + 2);
          if (ev === '[DONE]') { r.ok = true; continue; }
          if (ev.startsWith('{"error"')) { r.error = JSON.parse(ev).error.message; continue; }
          if (ev.includes('"choices":[]')) {
            const u = JSON.parse(ev).usage;
            if (u) { r.completionTokens = u.completion_tokens; r.promptTokens = u.prompt_tokens; r.cachedTokens = u.prompt_tokens_details?.cached_tokens ?? 0; }
            continue;
          }
          if (!HAS_TEXT.test(ev)) continue;
          const now = performance.now();
          if (Number.isNaN(r.ttft)) r.ttft = (now - t0) / 1000;
          else r.gaps.push((now - last) / 1000);
          last = now;
          if (keepText) { const c = JSON.parse(ev).choices[0]; r.text += c.text ?? c.delta?.content ?? ''; }
        }
      });
      res.on('end', done);
      res.on('error', (e) => { r.error = e.message; done(); });
    });
    req.on('error', (e) => { r.error = e.message; done(); });
    req.end(payload);
  });
}

function summarize(name: string, rs: RequestResult[], wall: number): PhaseResult {
  const ok = rs.filter((r) => r.ok && !r.error);
  const gen = ok.reduce((a, r) => a + r.completionTokens, 0), prompt = ok.reduce((a, r) => a + r.promptTokens, 0);
  const gaps = ok.flatMap((r) => r.gaps), ttfts = ok.map((r) => r.ttft).filter((x) => !Number.isNaN(x));
  return {
    name, requests: rs.length, failed: rs.length - ok.length, promptTokens: prompt, cachedPromptTokens: ok.reduce((a, r) => a + r.cachedTokens, 0),
    generatedTokens: gen, wallSeconds: wall, generatedTokensPerSecond: gen / wall, totalTokensPerSecond: (gen + prompt) / wall,
    ttftP50: quantile(ttfts, 0.5), ttftP99: quantile(ttfts, 0.99), itlP50: quantile(gaps, 0.5), itlP99: quantile(gaps, 0.99),
  };
}

/** Brown text in token-exact pieces (by the server's tokenizer), handed out without repeats. */
class TextSource {
  private ids: number[] = [];
  private pos = 0;
  private readonly docs: Generator<string>;
  constructor(private readonly tok: Tokenizer) { this.docs = brownDocuments(); }
  take(n: number): string {
    while (this.ids.length - this.pos < n) {
      const d = this.docs.next();
      if (d.done) { this.pos = 0; if (this.ids.length < n) throw new Error('not enough Brown text'); break; }
      this.ids.push(...this.tok.encode(d.value + '\n\n'));
    }
    const piece = this.ids.slice(this.pos, this.pos + n);
    this.pos += n;
    return this.tok.decode(piece);
  }
}

const fmtMiB = (b: number) => (b / 1048576).toFixed(1);
const ms = (s: number) => (s * 1000).toFixed(s < 0.1 ? 1 : 0);

function table(log: (l: string) => void, head: string[], rows: (string | number)[][]): void {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  cells.forEach((r, i) => {
    log(r.map((c, j) => c.padStart(w[j]!)).join('  '));
    if (i === 0) log(w.map((x) => '-'.repeat(x)).join('  '));
  });
}

export async function runLoadTest(o: LoadOptions = {}): Promise<LoadResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  const preset = o.preset ?? 'bench-29m';
  const clients = o.clients ?? 32, promptLengths = o.promptTokens ?? [128, 1024], maxTokens = o.maxTokens ?? 256;
  const sequential = o.sequentialRequests ?? 8, turnTokens = o.turnTokens ?? 16, repeat = o.repeat ?? 2;
  const contexts = o.contexts ?? [1024, 2048, 4096, 8192, 16384];
  const phases = new Set(o.phases ?? ['throughput', 'sequential', 'conversations']);
  const deadline = performance.now() + (o.timeLimitS ?? 1200) * 1000;
  const stopAll = new AbortController();
  setMaxListeners(0, stopAll.signal); // every request listens on it
  const timer = setTimeout(() => stopAll.abort(), Math.max(0, deadline - performance.now()));
  timer.unref();
  const promptTokens = Math.max(...promptLengths);
  for (const [k, v] of [['clients', clients], ['promptTokens', promptTokens], ['maxTokens', maxTokens], ['turnTokens', turnTokens]] as const)
    if (!Number.isInteger(v) || v < 1) throw new UsageError(`${k} must be an integer ≥ 1, got ${v}`);
  const config = presetConfig(preset);
  const V = config.vocab_size;

  log(`load test: preset ${preset} (random weights, vocab ${V}), ${clients} clients; training a ${V}-id byte-level BPE on the Brown Corpus…`);
  const texts = [...brownDocuments()].slice(0, 120);
  const tok = trainBpe(texts, { vocabSize: V });
  const source = new TextSource(tok);

  let url = o.url ?? '';
  let child: ChildProcess | null = null;
  let tokDir: string | null = null;
  const maxCtx = Math.max(...contexts) + 4096;
  try {
    if (!url) {
      tokDir = mkdtempSync(join(tmpdir(), 'tnl-load-'));
      tok.save(tokDir);
      const args = ['--model', preset, '--tokenizer', tokDir, '--max-context', String(Math.max(maxCtx, promptTokens + maxTokens + 64)),
        '--max-tokens', String(Math.max(maxTokens, turnTokens)), ...(o.threads ? ['--threads', String(o.threads)] : []), '--max-seqs', String(Math.max(64, clients)), '--max-queue', String(Math.max(256, clients * 2)),
        ...(o.serverArgs ?? [])];
      log(`starting: tnl serve ${args.join(' ')}`);
      ({ url, child } = await startServer(args, log));
    }
    if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/.test(url)) throw new UsageError(`the load test only targets loopback servers, got ${url}`);
    const health = await (await fetch(`${url}/health`)).json() as { model: string };
    const modelName = health.model;
    const metrics = async () => parsePrometheus(await (await fetch(`${url}/metrics`)).text());
    log(`server ${url} (model "${modelName}")`);

    const results: PhaseResult[] = [];
    const completion = (prompt: string) => ({ model: modelName, prompt, max_tokens: maxTokens, ignore_eos: true, temperature: 1 });

    // warm up (JIT, allocator) so neither phase pays for it
    await streamRequest(url, '/v1/completions', { ...completion(source.take(64)), max_tokens: 8 }, stopAll.signal);

    // For each prompt length, A and B alternate `repeat` times, so a change in the machine's load hits both alike.
    const comparisons: Comparison[] = [];
    for (const plen of promptLengths) {
      const concRs: RequestResult[] = [], seqRs: RequestResult[] = [];
      let concWall = 0, seqWall = 0;
      const ratios: number[] = [];
      for (let rep = 0; rep < repeat && !stopAll.signal.aborted; rep++) {
        let a: PhaseResult | null = null, b: PhaseResult | null = null;
        const tag = `prompt ${plen}${repeat > 1 ? `, ${rep + 1}/${repeat}` : ''}`;
        if (phases.has('throughput')) {
          log(`\nA (${tag}). ${clients} concurrent streams, prompts of ~${plen} tokens, ${maxTokens} generated tokens each`);
          const prompts = Array.from({ length: clients }, () => source.take(plen));
          const t0 = performance.now();
          const rs = await Promise.all(prompts.map((p) => streamRequest(url, '/v1/completions', completion(p), stopAll.signal)));
          const wall = (performance.now() - t0) / 1000;
          concRs.push(...rs); concWall += wall;
          a = summarize(`${clients} concurrent`, rs, wall);
          const errs = rs.filter((r) => r.error).map((r) => r.error);
          if (errs.length) log(`  ${errs.length} failed: ${errs[0]}`);
          log(`  ${a.generatedTokensPerSecond.toFixed(1)} generated tokens/s, TTFT p50 ${ms(a.ttftP50)} ms, ITL p50 ${ms(a.itlP50)} ms`);
        }
        if (phases.has('sequential')) {
          log(`B (${tag}). one at a time: ${sequential} requests of the same shape`);
          const rs: RequestResult[] = [];
          const t0 = performance.now();
          for (let i = 0; i < sequential && !stopAll.signal.aborted; i++) rs.push(await streamRequest(url, '/v1/completions', completion(source.take(plen)), stopAll.signal));
          const wall = (performance.now() - t0) / 1000;
          seqRs.push(...rs); seqWall += wall;
          b = summarize('1 at a time', rs, wall);
          log(`  ${b.generatedTokensPerSecond.toFixed(1)} generated tokens/s, TTFT p50 ${ms(b.ttftP50)} ms, ITL p50 ${ms(b.itlP50)} ms`);
        }
        if (a && b) ratios.push(a.generatedTokensPerSecond / b.generatedTokensPerSecond);
      }
      const conc = concRs.length ? summarize(`${clients} concurrent, prompt ${plen}`, concRs, concWall) : null;
      const seq = seqRs.length ? summarize(`1 at a time, prompt ${plen}`, seqRs, seqWall) : null;
      if (conc) results.push(conc);
      if (seq) results.push(seq);
      comparisons.push({ promptTokens: plen, speedup: conc && seq ? conc.generatedTokensPerSecond / seq.generatedTokensPerSecond : null, perRepeat: ratios });
    }

    const stages: StageResult[] = [];
    if (phases.has('conversations') && !stopAll.signal.aborted) {
      log(`\nC. ${clients} concurrent conversations growing through ${contexts.map((c) => `${c / 1024}K`).join(' → ')} tokens (${turnTokens} generated per turn)`);
      const convs = Array.from({ length: clients }, () => ({ messages: [{ role: 'system', content: 'You are a helpful assistant.' }] as { role: string; content: string }[], context: 0 }));
      const convRs: RequestResult[] = [];
      const tC = performance.now();
      for (const target of contexts) {
        if (stopAll.signal.aborted) break;
        const samples: { rss: number; heap: number; heapTotal: number; ab: number }[] = [];
        const sampleOf = (m: Map<string, number>) => ({ rss: m.get('process_resident_memory_bytes')!, heap: m.get('nodejs_heap_used_bytes')!, heapTotal: m.get('nodejs_heap_total_bytes') ?? NaN, ab: m.get('nodejs_array_buffers_bytes') ?? NaN });
        let sampling = true;
        const sampler = (async () => {
          while (sampling) {
            try { samples.push(sampleOf(await metrics())); } catch { /* server busy */ }
            await new Promise((r) => setTimeout(r, 200));
          }
        })();
        const t0 = performance.now();
        const rs = await Promise.all(convs.map(async (c) => {
          // the user message brings the context to the target (the reply and template lines count too)
          const add = Math.max(16, target - c.context - turnTokens - 8);
          c.messages.push({ role: 'user', content: source.take(add) });
          const r = await streamRequest(url, '/v1/chat/completions', { model: modelName, messages: c.messages, max_tokens: turnTokens, ignore_eos: true, temperature: 1 }, stopAll.signal, true);
          c.messages.push({ role: 'assistant', content: r.text });
          c.context = r.promptTokens + r.completionTokens;
          return r;
        }));
        sampling = false;
        await sampler;
        const end = sampleOf(await metrics());
        samples.push(end);
        convRs.push(...rs);
        const ok = rs.filter((r) => r.ok && !r.error);
        if (ok.length < rs.length) log(`  ${rs.length - ok.length} failed: ${rs.find((r) => r.error)?.error}`);
        stages.push({
          context: target, promptTokensMean: ok.reduce((a, r) => a + r.promptTokens, 0) / Math.max(1, ok.length),
          rssMaxBytes: Math.max(...samples.map((s) => s.rss)), rssMeanBytes: samples.reduce((a, s) => a + s.rss, 0) / samples.length, rssEndBytes: end.rss,
          heapUsedMaxBytes: Math.max(...samples.map((s) => s.heap)), heapTotalMaxBytes: Math.max(...samples.map((s) => s.heapTotal)),
          arrayBuffersMaxBytes: Math.max(...samples.map((s) => s.ab)),
          ttftP50: quantile(ok.map((r) => r.ttft), 0.5), itlP50: quantile(ok.flatMap((r) => r.gaps), 0.5), seconds: (performance.now() - t0) / 1000,
        });
        const st = stages[stages.length - 1]!;
        log(`  ${String(target).padStart(6)} tokens: mean prompt ${st.promptTokensMean.toFixed(0)}, RSS max ${fmtMiB(st.rssMaxBytes)} MiB, TTFT p50 ${ms(st.ttftP50)} ms, ${st.seconds.toFixed(1)} s`);
      }
      results.push(summarize(`${clients} conversations`, convRs, (performance.now() - tC) / 1000));
    }

    const m = await metrics();
    const rss = stages.map((s) => s.rssMaxBytes);
    const rssSpread = rss.length > 1 ? (Math.max(...rss) - Math.min(...rss)) / Math.min(...rss) : null;

    log('');
    table(log, ['phase', 'requests', 'failed', 'prompt tok', 'cached', 'generated', 'wall s', 'gen tok/s', 'all tok/s', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL p50 ms', 'ITL p99 ms'],
      results.map((r) => [r.name, r.requests, r.failed, r.promptTokens, r.cachedPromptTokens, r.generatedTokens, r.wallSeconds.toFixed(1), r.generatedTokensPerSecond.toFixed(1), r.totalTokensPerSecond.toFixed(0), ms(r.ttftP50), ms(r.ttftP99), ms(r.itlP50), ms(r.itlP99)]));
    if (comparisons.some((c) => c.speedup !== null)) log('');
    for (const c of comparisons) if (c.speedup !== null)
      log(`aggregate generated tokens/s, ${clients} concurrent vs one at a time, prompts of ~${c.promptTokens} tokens: ${c.speedup.toFixed(2)}×${c.perRepeat.length > 1 ? ` (each repeat: ${c.perRepeat.map((x) => x.toFixed(2) + '×').join(', ')})` : ''} (target ≥ 4×)`);
    if (stages.length) {
      log('');
      table(log, ['context', 'mean prompt tok', 'server RSS max MiB', 'RSS mean MiB', 'RSS end MiB', 'JS heap used max', 'JS heap total max', 'ArrayBuffers max', 'TTFT p50 ms', 'ITL p50 ms'],
        stages.map((s) => [s.context, s.promptTokensMean.toFixed(0), fmtMiB(s.rssMaxBytes), fmtMiB(s.rssMeanBytes), fmtMiB(s.rssEndBytes), fmtMiB(s.heapUsedMaxBytes), fmtMiB(s.heapTotalMaxBytes), fmtMiB(s.arrayBuffersMaxBytes), ms(s.ttftP50), ms(s.itlP50)]));
      if (rssSpread !== null) log(`server RSS from ${contexts[0]} to ${contexts[stages.length - 1]} tokens: spread ${(rssSpread * 100).toFixed(1)}% of the smallest (target within ±10%)`);
    }
    const cached = m.get('tnl_prompt_tokens_cached_total') ?? 0, prompts = m.get('tnl_prompt_tokens_total') ?? 0;
    log(`prefix state cache: ${cached} of ${prompts} prompt tokens (${(100 * cached / Math.max(1, prompts)).toFixed(0)}%) resumed from saved states instead of prefilled`);
    if (stopAll.signal.aborted) log(`time limit (${o.timeLimitS ?? 1200} s) reached: the figures cover what ran before it`);

    const result: LoadResult = {
      preset, server: url, clients, threads: o.threads ?? null, maxTokens, phases: results, comparisons, conversation: stages, rssSpread, stateBytes: null,
      timedOut: stopAll.signal.aborted, machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
    };
    const out = o.out ?? join('bench-results', 'load.json');
    mkdirSync(dirname(resolve(out)), { recursive: true });
    writeFileAtomic(out, JSON.stringify(result, null, 2) + '\n');
    log(`\nwrote ${out}`);
    return result;
  } finally {
    clearTimeout(timer);
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.on('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    if (tokDir) rmSync(tokDir, { recursive: true, force: true });
  }
}
