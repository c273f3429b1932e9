// Shared by the server tests: a tiny random model (vocab 512) with a byte-level BPE trained here
// to exactly 512 ids, a server on 127.0.0.1:0, and an independent greedy reference.
import { createBackend } from '../../src/backends/index.ts';
import type { Backend } from '../../src/backends/backend.ts';
import { presetConfig } from '../../src/config/index.ts';
import { TnlModel } from '../../src/model/transnormer.ts';
import { trainBpe } from '../../src/tokenizer/index.ts';
import type { Tokenizer } from '../../src/tokenizer/types.ts';
import { generateTokens } from '../../src/generate/generate.ts';
import { createServer, type ServerOptions, type TnlServer } from '../../src/serve/server.ts';

export const TEXT = `The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election
produced no evidence that any irregularities took place. The jury further said in term-end presentments
that the City Executive Committee, which had over-all charge of the election, deserves the praise and
thanks of the City of Atlanta for the manner in which the election was conducted. The September-October
term jury had been charged by Fulton Superior Court Judge Durwood Pye to investigate reports of possible
irregularities in the hard-fought primary which was won by Mayor-nominate Ivan Allen Jr.
Only a relative handful of such reports was received, the jury said, considering the widespread interest
in the election, the number of voters and the size of this city. The jury said it did find that many of
Georgia's registration and election laws are outmoded or inadequate and often ambiguous. It recommended
that Fulton legislators act to have these laws studied and revised to the end of modernizing and improving them.
The grand jury commented on a number of other topics, among them the Atlanta and Fulton County purchasing
departments which it said are well operated and follow generally accepted practices which inure to the
best interest of both governments. Merger proposed. However, the jury said it believes these two offices
should be combined to achieve greater efficiency and reduce the cost of administration.
A quick brown fox jumps over the lazy dog; sphinx of black quartz, judge my vow! 0123456789 #$%&*()[]{}
Über naïve café façade — “quoted” ‘text’ … ½ ¼ € ✓ 日本語 テキスト 中文 한국어 emoji 🙂🚀`;

let tokCache: Tokenizer | null = null;
export function testTokenizer(): Tokenizer {
  tokCache ??= trainBpe([TEXT, TEXT.toLowerCase(), TEXT.toUpperCase()], { vocabSize: 512, minFrequency: 1 });
  if (tokCache.vocabSize !== 512) throw new Error(`test tokenizer has ${tokCache.vocabSize} ids, expected 512`);
  return tokCache;
}

export function tinyModel(be: Backend = createBackend('cpu')): TnlModel {
  return TnlModel.random(be, presetConfig('tiny'), 0);
}

export interface Started { server: TnlServer; url: string; model: TnlModel; tok: Tokenizer }

export async function start(opts: Partial<ServerOptions> = {}): Promise<Started> {
  const model = opts.model ?? tinyModel();
  const tok = opts.tokenizer ?? testTokenizer();
  const server = createServer({ model, tokenizer: tok, modelName: 'tiny', log: () => {}, ...opts });
  const url = await server.listen({ host: '127.0.0.1', port: 0 });
  return { server, url, model, tok };
}

/** Greedy continuation by generate.ts's own loop (one sequence, its own state): the reference. */
export async function greedyIds(model: TnlModel, prompt: number[], maxTokens: number): Promise<number[]> {
  const out: number[] = [];
  for await (const t of generateTokens(model, prompt, { temperature: 0, maxTokens, stopIds: [] })) out.push(t.id);
  return out;
}

export async function waitFor(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Parse an SSE body into its data payloads (JSON objects, or the string "[DONE]"). */
export function sseEvents(body: string): unknown[] {
  return body.split('\n\n').filter((b) => b.trim()).map((b) => {
    const line = b.split('\n').find((l) => l.startsWith('data: '));
    if (!line) throw new Error(`SSE block without data: ${JSON.stringify(b)}`);
    const d = line.slice(6);
    return d === '[DONE]' ? d : JSON.parse(d);
  });
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; json: any; text: string }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await r.text();
  let json: unknown = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, json, text };
}
