// The HTTP server: an OpenAI-compatible API over the engine (fastify).
//
//   POST /v1/completions        text or token-id prompts; streaming (SSE) or not; n, logprobs, stop, …
//   POST /v1/chat/completions   messages through the chat template; streaming or not
//   GET  /v1/models, /v1/models/:id
//   GET  /health                200 {"status":"ok"} (503 while shutting down)
//   GET  /metrics               Prometheus text: queue, running sequences, tokens/s, TTFT and ITL histograms
//
// Every error — malformed JSON, wrong types, unknown model, over the limits, unknown route, a
// full queue (429 + Retry-After), shutdown (503), a failure inside the engine (500) — is answered
// with OpenAI's body {error: {message, type, param, code}}. A client that disconnects has its
// sequences cancelled and their slots freed at once. With `apiKey`, /v1/* needs
// "Authorization: Bearer <key>" (/health and /metrics stay open).
import { randomBytes, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { TnlModel } from '../model/transnormer.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { StreamDecoder } from '../tokenizer/stream.ts';
import { StopMatcher } from '../generate/generate.ts';
import { Engine, OverloadedError, ShuttingDownError, type EngineOptions, type EngineRequest, type FinishReason, type GeneratedToken, type Job } from './scheduler.ts';
import { ServerMetrics } from './metrics.ts';
import { DEFAULT_TEMPLATE, type ChatTemplate } from './chat-template.ts';
import {
  ApiError, DEFAULT_LIMITS, SSE_DONE, chatLogprobs, completionLogprobs, contextLengthError, invalid, parseChatRequest,
  parseCompletionRequest, sseData, usage, type CommonParams, type Limits, type TokenLogprob,
} from './openai.ts';

export interface ServerOptions {
  model: TnlModel;
  tokenizer: Tokenizer;
  /** The id clients put in "model" (GET /v1/models lists it). */
  modelName: string;
  chatTemplate?: ChatTemplate;
  limits?: Partial<Limits>;
  /** Require "Authorization: Bearer <apiKey>" on /v1/*. */
  apiKey?: string | null;
  engine?: EngineOptions;
  /** Largest request body in bytes (default 2 MiB); larger: 413. */
  bodyLimit?: number;
  /** Unexpected errors go here (default: stderr). */
  log?: (line: string) => void;
}

export interface TnlServer {
  app: FastifyInstance;
  engine: Engine;
  metrics: ServerMetrics;
  limits: Limits;
  /** Start listening (default 127.0.0.1:8000); resolves to the base URL, e.g. http://127.0.0.1:8000. */
  listen(opts?: { host?: string; port?: number }): Promise<string>;
  /**
   * Graceful shutdown: refuse new requests (503), let running ones finish for up to `deadlineMs`
   * (default 30 s), then cancel the rest (streams end with finish_reason "abort" and [DONE]), and
   * close the listener and connections.
   */
  close(opts?: { deadlineMs?: number }): Promise<void>;
}

interface Choice {
  index: number;
  dec: StreamDecoder;
  stop: StopMatcher;
  text: string;
  /** Characters emitted so far (text_offset of completions logprobs). */
  emitted: number;
  tokens: number;
  logprobs: TokenLogprob[];
  finish: FinishReason | null;
  stoppedByString: boolean;
  error?: Error;
}

const newId = (prefix: string) => `${prefix}-${randomBytes(12).toString('hex')}`;

export function createServer(opts: ServerOptions): TnlServer {
  const { model, tokenizer, modelName } = opts;
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const limits: Limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const template = opts.chatTemplate ?? DEFAULT_TEMPLATE;
  const V = model.config.vocab_size;
  const engine = new Engine(model, { log, sampleVocab: tokenizer.vocabSize, ...opts.engine });
  const metrics = engine.metrics;
  const created = Math.floor(Date.now() / 1000);
  const apiKey = opts.apiKey ? Buffer.from(opts.apiKey) : null;
  const eosIds = [...new Set([model.config.eos_token_id, tokenizer.eosId].filter((x): x is number => x !== null && x >= 0 && x < V))];
  const pieceCache = new Map<number, string>();
  const piece = (id: number) => {
    let s = pieceCache.get(id);
    if (s === undefined) { s = tokenizer.decode([id]); if (pieceCache.size < 1 << 17) pieceCache.set(id, s); }
    return s;
  };

  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimit ?? 2 * 1024 * 1024,
    return503OnClosing: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
  });

  // Bodies are JSON whatever the Content-Type says (curl -d sends form-urlencoded by default).
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('*', { parseAs: 'string' }, jsonParser);

  const sendError = (reply: FastifyReply, e: ApiError) => {
    for (const [k, v] of Object.entries(e.headers)) reply.header(k, v);
    return reply.code(e.status).type('application/json').send(e.body());
  };

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof ApiError) return sendError(reply, err);
    const status = err.statusCode ?? 500;
    if (status === 413) return sendError(reply, new ApiError(413, `The request body is too large (limit ${app.initialConfig.bodyLimit} bytes).`, 'invalid_request_error', null, 'request_too_large'));
    if (status === 415) return sendError(reply, new ApiError(415, err.message, 'invalid_request_error', null, 'unsupported_media_type'));
    if (status >= 400 && status < 500) {
      const json = /JSON|json|body|Unexpected|token/.test(err.message) || err.code?.startsWith('FST_ERR_CTP');
      const msg = json ? `We could not parse the JSON body of your request: ${err.message}. The API expects a JSON object.` : err.message;
      return sendError(reply, new ApiError(400, msg, 'invalid_request_error', null, json ? 'invalid_json' : null));
    }
    log(`tnl serve: internal error: ${err.stack ?? err.message}`);
    return sendError(reply, new ApiError(500, 'The server had an error while processing your request.', 'server_error', null, null));
  });

  app.setNotFoundHandler((req, reply) => sendError(reply, new ApiError(404, `Unknown request URL: ${req.method} ${req.url.split('?')[0]}.`, 'invalid_request_error', null, 'unknown_url')));

  app.addHook('onRequest', async (req) => {
    if (!apiKey || !req.url.startsWith('/v1/')) return;
    const h = req.headers.authorization;
    if (!h) throw new ApiError(401, "You didn't provide an API key. Provide it in the Authorization header (Authorization: Bearer YOUR_KEY).", 'invalid_request_error', null, 'invalid_api_key', { 'WWW-Authenticate': 'Bearer' });
    const m = /^Bearer\s+(.+)$/i.exec(h);
    const given = Buffer.from(m ? m[1]!.trim() : '');
    if (!(given.length === apiKey.length && timingSafeEqual(given, apiKey)))
      throw new ApiError(401, 'Incorrect API key provided.', 'invalid_request_error', null, 'invalid_api_key', { 'WWW-Authenticate': 'Bearer' });
  });

  app.addHook('onResponse', async (req, reply) => {
    metrics.requests.inc(1, { route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });

  // ---- routes ---------------------------------------------------------------------------------

  app.get('/health', async (_req, reply) => {
    if (engine.isDraining) return reply.code(503).send({ status: 'shutting_down' });
    return { status: 'ok', model: modelName, running: engine.running(), waiting: engine.queueDepth() };
  });

  app.get('/metrics', async (_req, reply) => reply.type('text/plain; version=0.0.4; charset=utf-8').send(metrics.render()));

  const modelCard = () => ({ id: modelName, object: 'model', created, owned_by: 'tnl' });
  app.get('/v1/models', async () => ({ object: 'list', data: [modelCard()] }));
  app.get('/v1/models/*', async (req) => {
    const id = decodeURIComponent((req.params as { '*': string })['*']);
    if (id !== modelName) throw modelNotFound(id);
    return modelCard();
  });

  const modelNotFound = (id: string) => new ApiError(404, `The model \`${id}\` does not exist or you do not have access to it.`, 'invalid_request_error', 'model', 'model_not_found');

  const preflight = (p: CommonParams) => {
    if (engine.isDraining) throw new ApiError(503, 'The server is shutting down and accepts no new requests.', 'server_error', null, 'service_unavailable', { Connection: 'close' });
    if (p.model !== modelName) throw modelNotFound(p.model);
  };

  // a long conversation's body is large: keep only its token ids while the request runs
  const release = (req: FastifyRequest) => { (req as { body: unknown }).body = null; };
  const encode = (text: string, addBos?: boolean) => tokenizer.encode(text, addBos === undefined ? {} : { addBos });

  /** max_tokens for a prompt: as asked, or the default (bounded by the context left); checks the context limit. */
  const budget = (promptLen: number, asked: number | undefined, dflt: number, param: string): number => {
    if (promptLen === 0) throw invalid(`The ${param} is empty (it encodes to no tokens).`, param, 'invalid_value');
    const room = limits.maxContext - promptLen;
    const maxTokens = asked ?? Math.min(dflt, room);
    if (maxTokens < 1 || promptLen + maxTokens > limits.maxContext) throw contextLengthError(limits.maxContext, promptLen, Math.max(asked ?? dflt, 1), param);
    return maxTokens;
  };

  app.post('/v1/completions', async (req, reply) => {
    const p = parseCompletionRequest(req.body, limits, V);
    preflight(p);
    const prompts = p.prompts.map((q) => Int32Array.from(typeof q === 'string' ? encode(q) : q));
    release(req);
    const maxTokens = prompts.map((ids) => budget(ids.length, p.maxTokens, 16, 'prompt'));
    return run(req, reply, 'completion', p, prompts, maxTokens, p.stop, p.logprobs !== null, p.logprobs ?? 0);
  });

  app.post('/v1/chat/completions', async (req, reply) => {
    const p = parseChatRequest(req.body, limits, V);
    preflight(p);
    let text: string;
    try {
      text = template.render(p.messages, { addGenerationPrompt: true });
    } catch (e) {
      throw invalid(`The chat template could not render these messages: ${(e as Error).message}`, 'messages', 'invalid_value');
    }
    const ids = Int32Array.from(encode(text, template.includesSpecials ? false : undefined));
    release(req);
    p.messages = [];
    const maxTokens = budget(ids.length, p.maxTokens, limits.defaultChatMaxTokens, 'messages');
    const stops = [...new Set([...p.stop, ...template.defaultStops])];
    return run(req, reply, 'chat', p, [ids], [maxTokens], stops, p.logprobs, p.topLogprobs);
  });

  // ---- one generation request -------------------------------------------------------------------

  async function run(req: FastifyRequest, reply: FastifyReply, kind: 'completion' | 'chat', p: CommonParams,
                     prompts: Int32Array[], maxTokens: number[], stops: string[], wantLogprobs: boolean, topLogprobs: number): Promise<unknown> {
    const id = newId(kind === 'chat' ? 'chatcmpl' : 'cmpl');
    const createdAt = Math.floor(Date.now() / 1000);
    const n = p.n;
    const choices: Choice[] = [];
    for (let i = 0; i < prompts.length * n; i++)
      choices.push({ index: i, dec: new StreamDecoder(tokenizer, { skipSpecial: true }), stop: new StopMatcher(stops), text: '', emitted: 0, tokens: 0, logprobs: [], finish: null, stoppedByString: false });
    let cached = 0;
    let remaining = choices.length;
    const arrival = performance.now();
    const raw = reply.raw;
    let ended = false;
    let resolveAll!: () => void;
    const allDone = new Promise<void>((r) => { resolveAll = r; });
    const obj = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';

    const write = (s: string) => { if (!ended && !raw.destroyed) raw.write(s); };
    const chunk = (c: Choice, text: string | null, lps: TokenLogprob[] | null, finish: string | null) => {
      const logprobs = lps ? (kind === 'chat' ? chatLogprobs(lps) : completionLogprobs(lps, c.emitted, topLogprobs > 0)) : null;
      const choice = kind === 'chat'
        ? { index: c.index, delta: text === null ? {} : { content: text }, logprobs, finish_reason: finish }
        : { index: c.index, text: text ?? '', logprobs, finish_reason: finish };
      const body: Record<string, unknown> = { id, object: obj, created: createdAt, model: modelName, system_fingerprint: null, choices: [choice] };
      if (p.includeUsage) body.usage = null;
      write(sseData(body));
    };

    const lpEntry = (t: GeneratedToken): TokenLogprob => {
      const token = piece(t.id);
      return {
        token, logprob: t.logprob, bytes: [...Buffer.from(token, 'utf8')],
        top: (t.top ?? []).map((a) => { const s = piece(a.id); return { token: s, logprob: a.logprob, bytes: [...Buffer.from(s, 'utf8')] }; }),
      };
    };

    const emit = (c: Choice, text: string, lp: TokenLogprob | null) => {
      if (p.stream) {
        if (text || lp) chunk(c, text, lp ? [lp] : null, null);
      } else {
        c.text += text;
        if (lp) c.logprobs.push(lp);
      }
      c.emitted += text.length;
    };

    const onToken = (c: Choice, t: GeneratedToken): boolean => {
      c.tokens++;
      const r = c.stop.push(c.dec.push(t.id));
      emit(c, r.text, wantLogprobs ? lpEntry(t) : null);
      if (r.stopped) { c.stoppedByString = true; return true; }
      return false;
    };

    const onFinish = (c: Choice, reason: FinishReason, error?: Error) => {
      if (c.finish) return;
      if (!c.stoppedByString && reason !== 'error') {
        const r = c.stop.push(c.dec.flush());
        let rest = r.text;
        if (r.stopped) c.stoppedByString = true;
        else rest += c.stop.flush();
        if (rest) emit(c, rest, null);
      }
      c.finish = c.stoppedByString ? 'stop' : reason;
      if (error) c.error = error;
      if (p.stream && reason !== 'error') chunk(c, null, null, c.finish);
      if (--remaining === 0) resolveAll();
    };

    const reqs: EngineRequest[] = prompts.map((ids, pi) => ({
      promptIds: ids, n, maxTokens: maxTokens[pi]!, sampling: p.sampling,
      stopIds: p.ignoreEos ? [] : eosIds,
      logprobs: wantLogprobs, topLogprobs, arrival,
      onAdmit: (info) => { cached += info.cachedTokens; },
      onToken: (seq, t) => onToken(choices[pi * n + seq]!, t),
      onFinish: (seq, reason, err) => onFinish(choices[pi * n + seq]!, reason, err),
    }));

    let jobs: Job[];
    try {
      jobs = engine.submitAll(reqs);
    } catch (e) {
      if (e instanceof OverloadedError) {
        throw new ApiError(429, e.message, 'rate_limit_error', null, 'rate_limit_exceeded', { 'Retry-After': String(e.retryAfterSeconds) });
      }
      if (e instanceof ShuttingDownError) throw new ApiError(503, e.message, 'server_error', null, 'service_unavailable', { Connection: 'close' });
      if (e instanceof RangeError) throw invalid(e.message);
      throw e;
    }
    // the client went away (now, or already while its prompt was tokenized): stop, free the slots
    const cancelAll = () => { if (remaining > 0) for (const j of jobs) j.cancel('abort'); };
    raw.on('close', cancelAll);
    if (raw.destroyed || req.raw.socket?.destroyed) cancelAll();

    const promptTokens = prompts.reduce((a, ids) => a + ids.length, 0);
    const totalUsage = () => usage(promptTokens, choices.reduce((a, c) => a + c.tokens, 0), cached);

    if (p.stream) {
      reply.hijack();
      raw.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
      raw.flushHeaders();
      if (kind === 'chat') {
        for (const c of choices) {
          const body: Record<string, unknown> = { id, object: obj, created: createdAt, model: modelName, system_fingerprint: null, choices: [{ index: c.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] };
          if (p.includeUsage) body.usage = null;
          write(sseData(body));
        }
      }
      await allDone;
      const failed = choices.find((c) => c.finish === 'error');
      if (failed) write(sseData(new ApiError(500, `The server had an error while processing your request: ${failed.error?.message ?? 'unknown error'}`, 'server_error').body()));
      if (p.includeUsage) write(sseData({ id, object: obj, created: createdAt, model: modelName, system_fingerprint: null, choices: [], usage: totalUsage() }));
      write(SSE_DONE);
      ended = true;
      if (!raw.destroyed) raw.end();
      metrics.requests.inc(1, { route: req.routeOptions.url ?? 'unknown', status: '200' });
      return reply;
    }

    await allDone;
    if (raw.destroyed) return reply;
    const failed = choices.find((c) => c.finish === 'error');
    if (failed) throw new ApiError(500, `The server had an error while processing your request: ${failed.error?.message ?? 'unknown error'}`, 'server_error');
    if (engine.isDraining && choices.every((c) => c.finish === 'abort' && c.tokens === 0))
      throw new ApiError(503, 'The server shut down before this request could run.', 'server_error', null, 'service_unavailable', { Connection: 'close' });
    const out = choices.map((c) => kind === 'chat'
      ? { index: c.index, message: { role: 'assistant', content: c.text, refusal: null }, logprobs: wantLogprobs ? chatLogprobs(c.logprobs) : null, finish_reason: c.finish }
      : { index: c.index, text: c.text, logprobs: wantLogprobs ? completionLogprobs(c.logprobs, 0, topLogprobs > 0) : null, finish_reason: c.finish });
    return { id, object: kind === 'chat' ? 'chat.completion' : 'text_completion', created: createdAt, model: modelName, system_fingerprint: null, choices: out, usage: totalUsage() };
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  let closing: Promise<void> | null = null;
  return {
    app, engine, metrics, limits,
    async listen({ host = '127.0.0.1', port = 8000 } = {}) {
      await app.listen({ host, port });
      const a = app.server.address();
      if (!a || typeof a === 'string') return String(a);
      return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    },
    close({ deadlineMs = 30_000 } = {}) {
      closing ??= (async () => {
        engine.drain();
        const timer = setTimeout(() => engine.cancelAll('abort'), deadlineMs);
        await engine.whenIdle();
        clearTimeout(timer);
        // give the last chunks a moment to flush, then close; stragglers are cut after 5 s
        const force = setTimeout(() => app.server.closeAllConnections?.(), 5_000);
        await app.close();
        clearTimeout(force);
      })();
      return closing;
    },
  };
}
