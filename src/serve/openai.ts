// The OpenAI API surface: request validation (types, ranges, limits) into normalised parameters,
// OpenAI-style errors {error: {message, type, param, code}} with their HTTP status, and the
// response / stream-chunk bodies of /v1/completions and /v1/chat/completions.
import type { SamplingOptions } from '../generate/sampling.ts';
import type { ChatMessage } from './chat-template.ts';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
  body(): ErrorBody { return { error: { message: this.message, type: this.type, param: this.param, code: this.code } }; }
}
export interface ErrorBody { error: { message: string; type: string; param: string | null; code: string | null } }

export const invalid = (message: string, param: string | null = null, code: string | null = null) => new ApiError(400, message, 'invalid_request_error', param, code);

export interface Limits {
  /** Most tokens of prompt + completion per sequence (default 32768). */
  maxContext: number;
  /** Most max_tokens a request may ask for (default 4096). */
  maxTokens: number;
  /** max_tokens when a chat request gives none (default 256); completions default to 16, as OpenAI. */
  defaultChatMaxTokens: number;
  /** Most choices per request (n; default 8). */
  maxN: number;
  /** Most prompts in one completions request (default 16). */
  maxPrompts: number;
  /** Most stop strings (4, as OpenAI) and their length in characters (default 256). */
  maxStop: number;
  maxStopLength: number;
  /** Most alternatives per token (logprobs / top_logprobs; default 20). */
  maxLogprobs: number;
  /** Most chat messages (default 1024). */
  maxMessages: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxContext: 32768, maxTokens: 4096, defaultChatMaxTokens: 256, maxN: 8, maxPrompts: 16, maxStop: 4,
  maxStopLength: 256, maxLogprobs: 20, maxMessages: 1024,
};

// ---- validation helpers ------------------------------------------------------------------------

type Body = Record<string, unknown>;

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' && Number.isInteger(v)) return 'an integer';
  return `a ${typeof v}`;
}
function wrongType(param: string, expected: string, v: unknown): ApiError {
  return invalid(`Invalid type for '${param}': expected ${expected}, but got ${typeName(v)} instead.`, param, 'invalid_type');
}
function present(b: Body, k: string): boolean { return b[k] !== undefined && b[k] !== null; }

function optNumber(b: Body, k: string, min: number, max: number, dflt?: number): number | undefined {
  if (!present(b, k)) return dflt;
  const v = b[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw wrongType(k, 'a number', v);
  if (v < min) throw invalid(`Invalid '${k}': ${v} is below the minimum ${min}.`, k, 'invalid_value');
  if (v > max) throw invalid(`Invalid '${k}': ${v} is above the maximum ${max}.`, k, 'invalid_value');
  return v;
}
function optInt(b: Body, k: string, min: number, max: number, dflt?: number): number | undefined {
  if (!present(b, k)) return dflt;
  const v = b[k];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw wrongType(k, 'an integer', v);
  if (v < min) throw invalid(`Invalid '${k}': ${v} is below the minimum ${min}.`, k, 'invalid_value');
  if (v > max) throw invalid(`Invalid '${k}': ${v} is above the maximum ${max}.`, k, 'invalid_value');
  return v;
}
function optBool(b: Body, k: string, dflt = false): boolean {
  if (!present(b, k)) return dflt;
  if (typeof b[k] !== 'boolean') throw wrongType(k, 'a boolean', b[k]);
  return b[k] as boolean;
}
function optString(b: Body, k: string): string | undefined {
  if (!present(b, k)) return undefined;
  if (typeof b[k] !== 'string') throw wrongType(k, 'a string', b[k]);
  return b[k] as string;
}

export function requireObject(body: unknown): Body {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body))
    throw invalid(`The request body must be a JSON object, got ${body === undefined ? 'nothing' : typeName(body)}.`, null, 'invalid_body');
  return body as Body;
}

/** Parameters both endpoints share, normalised. */
export interface CommonParams {
  model: string;
  n: number;
  /** As requested (undefined: the endpoint's default). */
  maxTokens: number | undefined;
  stream: boolean;
  includeUsage: boolean;
  stop: string[];
  sampling: SamplingOptions;
  ignoreEos: boolean;
  user?: string;
}

function common(b: Body, limits: Limits, vocab: number): CommonParams {
  if (!present(b, 'model')) throw invalid("you must provide a model parameter", 'model', 'missing_required_parameter');
  const model = optString(b, 'model')!;
  const n = optInt(b, 'n', 1, limits.maxN, 1)!;
  let maxTokens = optInt(b, 'max_tokens', 1, Number.MAX_SAFE_INTEGER);
  const mct = optInt(b, 'max_completion_tokens', 1, Number.MAX_SAFE_INTEGER);
  if (mct !== undefined) maxTokens = mct;
  if (maxTokens !== undefined && maxTokens > limits.maxTokens)
    throw invalid(`max_tokens is too large: ${maxTokens}. This server supports at most ${limits.maxTokens} completion tokens per request.`, mct !== undefined ? 'max_completion_tokens' : 'max_tokens', 'invalid_value');
  const stream = optBool(b, 'stream');
  let includeUsage = false;
  if (present(b, 'stream_options')) {
    const so = b.stream_options;
    if (typeof so !== 'object' || Array.isArray(so)) throw wrongType('stream_options', 'an object', so);
    if (!stream) throw invalid('The stream_options parameter is only allowed when stream is true.', 'stream_options', 'invalid_value');
    includeUsage = optBool(so as Body, 'include_usage');
  }
  let stop: string[] = [];
  if (present(b, 'stop')) {
    const s = b.stop;
    if (typeof s === 'string') stop = [s];
    else if (Array.isArray(s) && s.every((x) => typeof x === 'string')) stop = s as string[];
    else throw wrongType('stop', 'a string or an array of strings', s);
    if (stop.length > limits.maxStop) throw invalid(`Invalid 'stop': at most ${limits.maxStop} stop sequences, got ${stop.length}.`, 'stop', 'invalid_value');
    if (stop.some((x) => x.length > limits.maxStopLength)) throw invalid(`Invalid 'stop': a stop sequence is longer than ${limits.maxStopLength} characters.`, 'stop', 'invalid_value');
    stop = stop.filter((x) => x.length > 0);
  }
  let temperature = optNumber(b, 'temperature', 0, 2);
  let topP = optNumber(b, 'top_p', 0, 1);
  if (topP === 0) { topP = undefined; temperature = 0; } // top_p 0: only the most likely token
  let topK = optInt(b, 'top_k', -1, vocab);
  if (topK === -1) topK = 0;
  const sampling: SamplingOptions = {
    temperature: temperature ?? 1,
    topP,
    topK,
    presencePenalty: optNumber(b, 'presence_penalty', -2, 2),
    frequencyPenalty: optNumber(b, 'frequency_penalty', -2, 2),
    repetitionPenalty: optNumber(b, 'repetition_penalty', 1e-6, 100),
    seed: optInt(b, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
  };
  if (present(b, 'logit_bias')) {
    const lb = b.logit_bias;
    if (typeof lb !== 'object' || Array.isArray(lb)) throw wrongType('logit_bias', 'an object', lb);
    const entries = Object.entries(lb as Body);
    if (entries.length > 300) throw invalid(`Invalid 'logit_bias': at most 300 tokens, got ${entries.length}.`, 'logit_bias', 'invalid_value');
    const m = new Map<number, number>();
    for (const [k, v] of entries) {
      const id = Number(k);
      if (!/^\d+$/.test(k) || !(id < vocab)) throw invalid(`Invalid key in 'logit_bias': ${JSON.stringify(k)} is not a token id of this model (0 … ${vocab - 1}).`, 'logit_bias', 'invalid_value');
      if (typeof v !== 'number' || !(v >= -100 && v <= 100)) throw invalid(`Invalid value in 'logit_bias' for token ${k}: expected a number from -100 to 100.`, 'logit_bias', 'invalid_value');
      m.set(id, v);
    }
    sampling.logitBias = m;
  }
  const user = optString(b, 'user');
  return { model, n, maxTokens, stream, includeUsage, stop, sampling, ignoreEos: optBool(b, 'ignore_eos'), user };
}

export interface CompletionParams extends CommonParams {
  /** Text prompts or token-id prompts. */
  prompts: (string | number[])[];
  /** Alternatives per token (completions' integer logprobs), or null. */
  logprobs: number | null;
}

export function parseCompletionRequest(body: unknown, limits: Limits, vocab: number): CompletionParams {
  const b = requireObject(body);
  const c = common(b, limits, vocab);
  if (!present(b, 'prompt')) throw invalid('you must provide a prompt parameter', 'prompt', 'missing_required_parameter');
  const p = b.prompt;
  let prompts: (string | number[])[];
  const isIds = (x: unknown): x is number[] => Array.isArray(x) && x.length > 0 && x.every((v) => typeof v === 'number');
  if (typeof p === 'string') prompts = [p];
  else if (isIds(p)) prompts = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string')) prompts = p as string[];
  else if (Array.isArray(p) && p.length > 0 && p.every(isIds)) prompts = p as number[][];
  else throw invalid("Invalid 'prompt': expected a string, an array of strings, an array of token ids, or an array of arrays of token ids (non-empty).", 'prompt', 'invalid_type');
  if (prompts.length > limits.maxPrompts) throw invalid(`Invalid 'prompt': at most ${limits.maxPrompts} prompts per request, got ${prompts.length}.`, 'prompt', 'invalid_value');
  for (const q of prompts) if (Array.isArray(q)) for (const id of q)
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw invalid(`Invalid 'prompt': token id ${id} is not in this model's vocabulary (0 … ${vocab - 1}).`, 'prompt', 'invalid_value');
  const logprobs = optInt(b, 'logprobs', 0, limits.maxLogprobs) ?? null;
  if (optBool(b, 'echo')) throw invalid("'echo' is not supported by this server.", 'echo', 'unsupported_parameter');
  if (present(b, 'suffix') && b.suffix !== '') throw invalid("'suffix' is not supported by this server.", 'suffix', 'unsupported_parameter');
  const bestOf = optInt(b, 'best_of', 1, limits.maxN);
  if (bestOf !== undefined && bestOf !== c.n) throw invalid("'best_of' other than n is not supported by this server.", 'best_of', 'unsupported_parameter');
  return { ...c, prompts, logprobs };
}

export interface ChatParams extends CommonParams {
  messages: ChatMessage[];
  logprobs: boolean;
  topLogprobs: number;
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'function']);

export function parseChatRequest(body: unknown, limits: Limits, vocab: number): ChatParams {
  const b = requireObject(body);
  const c = common(b, limits, vocab);
  if (!present(b, 'messages')) throw invalid('you must provide a messages parameter', 'messages', 'missing_required_parameter');
  const ms = b.messages;
  if (!Array.isArray(ms)) throw wrongType('messages', 'an array', ms);
  if (ms.length === 0) throw invalid("Invalid 'messages': empty array. Expected an array with minimum length 1.", 'messages', 'empty_array');
  if (ms.length > limits.maxMessages) throw invalid(`Invalid 'messages': at most ${limits.maxMessages} messages, got ${ms.length}.`, 'messages', 'invalid_value');
  const messages: ChatMessage[] = ms.map((m, i) => {
    const param = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw wrongType(param, 'an object', m);
    const mm = m as Body;
    if (typeof mm.role !== 'string') throw wrongType(`${param}.role`, 'a string', mm.role);
    if (!ROLES.has(mm.role)) throw invalid(`Invalid value for '${param}.role': ${JSON.stringify(mm.role)}. Supported values are: ${[...ROLES].map((r) => `'${r}'`).join(', ')}.`, `${param}.role`, 'invalid_value');
    let content: string;
    const ct = mm.content;
    if (typeof ct === 'string') content = ct;
    else if ((ct === null || ct === undefined) && mm.role === 'assistant') content = '';
    else if (Array.isArray(ct)) {
      content = ct.map((part, j) => {
        const pp = `${param}.content[${j}]`;
        if (typeof part !== 'object' || part === null) throw wrongType(pp, 'an object', part);
        const pt = part as Body;
        if (pt.type !== 'text') throw invalid(`Invalid '${pp}.type': only "text" content parts are supported, got ${JSON.stringify(pt.type)}.`, `${pp}.type`, 'invalid_value');
        if (typeof pt.text !== 'string') throw wrongType(`${pp}.text`, 'a string', pt.text);
        return pt.text;
      }).join('');
    } else throw wrongType(`${param}.content`, 'a string or an array of content parts', ct);
    const out: ChatMessage = { role: mm.role, content };
    if (present(mm, 'name')) { if (typeof mm.name !== 'string') throw wrongType(`${param}.name`, 'a string', mm.name); out.name = mm.name; }
    return out;
  });
  const logprobs = optBool(b, 'logprobs');
  const topLogprobs = optInt(b, 'top_logprobs', 0, limits.maxLogprobs) ?? 0;
  if (topLogprobs > 0 && !logprobs) throw invalid("Invalid 'top_logprobs': logprobs must be set to true when top_logprobs is used.", 'top_logprobs', 'invalid_value');
  if (present(b, 'tools') && Array.isArray(b.tools) && b.tools.length > 0) throw invalid("'tools' are not supported by this server.", 'tools', 'unsupported_parameter');
  if (present(b, 'functions')) throw invalid("'functions' are not supported by this server.", 'functions', 'unsupported_parameter');
  if (present(b, 'response_format')) {
    const rf = b.response_format as Body;
    if (typeof rf !== 'object' || Array.isArray(rf) || rf.type !== 'text') throw invalid("Only response_format {type: 'text'} is supported by this server.", 'response_format', 'unsupported_parameter');
  }
  return { ...c, messages, logprobs, topLogprobs };
}

/** 400 context_length_exceeded, worded as OpenAI words it. */
export function contextLengthError(limit: number, prompt: number, completion: number, param: string): ApiError {
  return invalid(
    `This model's maximum context length is ${limit} tokens. However, you requested ${prompt + completion} tokens (${prompt} in the ${param === 'messages' ? 'messages' : 'prompt'}, ${completion} in the completion). Please reduce the length of the ${param === 'messages' ? 'messages' : 'prompt'} or completion.`,
    param, 'context_length_exceeded');
}

// ---- responses ---------------------------------------------------------------------------------

export type OpenAIFinish = 'stop' | 'length' | 'abort' | 'error';

export interface TokenLogprob { token: string; logprob: number; bytes: number[]; top: { token: string; logprob: number; bytes: number[] }[] }

/** The completions endpoint's logprobs object for a run of tokens starting at text offset `offset`. */
export function completionLogprobs(entries: TokenLogprob[], offset: number, wantTop: boolean) {
  const textOffset: number[] = [];
  let o = offset;
  for (const e of entries) { textOffset.push(o); o += e.token.length; }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    // a map by token text: tokens that decode alike (e.g. partial UTF-8 as "\uFFFD") keep the most likely
    top_logprobs: wantTop ? entries.map((e) => { const m: Record<string, number> = {}; for (const t of e.top) if (!Object.hasOwn(m, t.token)) m[t.token] = t.logprob; return m; }) : null,
    text_offset: textOffset,
  };
}

/** The chat endpoint's logprobs object. */
export function chatLogprobs(entries: TokenLogprob[]) {
  return {
    content: entries.map((e) => ({
      token: e.token, logprob: e.logprob, bytes: e.bytes,
      top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
    })),
    refusal: null,
  };
}

export interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number; prompt_tokens_details: { cached_tokens: number } }

export function usage(prompt: number, completion: number, cached: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
}

export function sseData(obj: unknown): string {
  return `data: ${JSON.stringify(obj)}\n\n`;
}
export const SSE_DONE = 'data: [DONE]\n\n';
