// The HTTP server with real clients on 127.0.0.1: the official openai npm client (streaming and
// not), plain fetch with broken and hostile requests, curl. Expected texts come from generate.ts's
// own greedy loop decoded by the tokenizer, never from the server itself.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import OpenAI from 'openai';
import { greedyIds, postJson, sseEvents, start, waitFor, type Started } from './helpers.ts';
import { parsePrometheus } from '../../src/serve/metrics.ts';

const S: Started = await start({ limits: { maxContext: 400, maxTokens: 200 } });
const { url, model, tok, server } = S;
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
after(() => server.close({ deadlineMs: 0 }));

const greedyText = async (prompt: string, n: number) => tok.decode(await greedyIds(model, tok.encode(prompt), n), { skipSpecial: true });
// extra (non-OpenAI) parameters go through the client untouched
const extra = <T>(o: T, more: Record<string, unknown>) => ({ ...o, ...more }) as T;

test('openai client: completions, not streamed, greedy = generate.ts', async () => {
  const prompt = 'The jury said';
  const r = await client.completions.create(extra({ model: 'tiny', prompt, max_tokens: 12, temperature: 0 }, { ignore_eos: true }));
  assert.equal(r.object, 'text_completion');
  assert.equal(r.model, 'tiny');
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0]!.text, await greedyText(prompt, 12));
  assert.equal(r.choices[0]!.finish_reason, 'length');
  assert.deepEqual([r.usage!.prompt_tokens, r.usage!.completion_tokens, r.usage!.total_tokens], [tok.encode(prompt).length, 12, tok.encode(prompt).length + 12]);
});

test('openai client: completions streamed; the chunks add up to the same text', async () => {
  const prompt = 'Only a relative handful';
  const stream = await client.completions.create(extra({ model: 'tiny', prompt, max_tokens: 15, temperature: 0, stream: true, stream_options: { include_usage: true } }, { ignore_eos: true }));
  let text = '', finish: string | null = null, chunks = 0, usage = null;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) { text += ch.text; if (ch.finish_reason) finish = ch.finish_reason; }
  }
  assert.ok(chunks > 2);
  assert.equal(text, await greedyText(prompt, 15));
  assert.equal(finish, 'length');
  assert.equal(usage!.completion_tokens, 15);
});

test('openai client: chat, streamed and not, through the default template', async () => {
  const messages = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Who won the election?' }];
  const rendered = 'system: Be brief.\nuser: Who won the election?\nassistant:';
  const want = await greedyText(rendered, 10);
  const r = await client.chat.completions.create(extra({ model: 'tiny', messages, max_tokens: 10, temperature: 0 }, { ignore_eos: true }));
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0]!.message.role, 'assistant');
  // the default template also stops at "\nuser:" — cut the reference the same way
  const cut = want.indexOf('\nuser:');
  assert.equal(r.choices[0]!.message.content, cut >= 0 ? want.slice(0, cut) : want);
  assert.equal(r.usage!.prompt_tokens, tok.encode(rendered).length);
  const stream = await client.chat.completions.create(extra({ model: 'tiny', messages, max_tokens: 10, temperature: 0, stream: true }, { ignore_eos: true }));
  let text = '', role = '', finish = null;
  for await (const c of stream) {
    assert.equal(c.object, 'chat.completion.chunk');
    const d = c.choices[0]!;
    if (d.delta.role) role = d.delta.role;
    text += d.delta.content ?? '';
    if (d.finish_reason) finish = d.finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, r.choices[0]!.message.content);
  assert.equal(finish, r.choices[0]!.finish_reason);
});

test('openai client: n = 2, seeds reproduce, logprobs in both formats', async () => {
  const base = { model: 'tiny', prompt: 'It recommended that', max_tokens: 8, temperature: 1, seed: 1234, n: 2 };
  const a = await client.completions.create(extra(base, { ignore_eos: true }));
  const b = await client.completions.create(extra(base, { ignore_eos: true }));
  const c = await client.completions.create(extra({ ...base, seed: 99 }, { ignore_eos: true }));
  assert.deepEqual(a.choices.map((x) => x.index), [0, 1]);
  assert.deepEqual(a.choices.map((x) => x.text), b.choices.map((x) => x.text));
  assert.notDeepEqual(a.choices.map((x) => x.text), c.choices.map((x) => x.text));
  assert.notEqual(a.choices[0]!.text, a.choices[1]!.text);
  assert.equal(a.usage!.completion_tokens, 16);

  // completions logprobs: the first token's value checked against the model's own log-softmax
  const prompt = 'The grand jury';
  const r = await client.completions.create(extra({ model: 'tiny', prompt, max_tokens: 5, temperature: 0, logprobs: 3 }, { ignore_eos: true }));
  const lp = r.choices[0]!.logprobs!;
  assert.equal(lp.tokens!.length, 5);
  assert.equal(lp.tokens!.join(''), r.choices[0]!.text);
  assert.equal(lp.text_offset![0], 0);
  const st = model.newState(1);
  const row = model.be.download(model.prefill(Int32Array.from(tok.encode(prompt)), 1, tok.encode(prompt).length, st));
  const lse = Math.log(Array.from(row).reduce((s, v) => s + Math.exp(v), 0));
  const best = Array.from(row).reduce((bi, v, i, arr) => (v > arr[bi]! ? i : bi), 0);
  assert.ok(Math.abs(lp.token_logprobs![0]! - (row[best]! - lse)) < 1e-4);
  for (let i = 0; i < 5; i++) {
    const top = lp.top_logprobs![i]!;
    assert.ok(Object.keys(top).length <= 3 && Object.keys(top).length >= 1);
    // greedy: the chosen token is the most likely alternative
    assert.ok(Math.abs(Math.max(...Object.values(top)) - lp.token_logprobs![i]!) < 1e-9);
  }
  // chat logprobs
  const ch = await client.chat.completions.create(extra({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 }, { ignore_eos: true }));
  const content = ch.choices[0]!.logprobs!.content!;
  assert.equal(content.length, 4);
  for (const e of content) {
    assert.ok(e.logprob <= 0);
    assert.equal(e.top_logprobs.length, 2);
    assert.ok(e.top_logprobs[0]!.logprob >= e.top_logprobs[1]!.logprob);
    assert.deepEqual(e.bytes, [...Buffer.from(e.token)]);
  }
});

test('stop strings end the text before the stop, finish_reason "stop"', async () => {
  const prompt = 'Merger proposed';
  const full = await greedyText(prompt, 30);
  // a stop string taken from the middle of the reference continuation
  const at = Math.floor(full.length / 2);
  const stop = full.slice(at, at + 3);
  const first = full.indexOf(stop);
  const r = await client.completions.create(extra({ model: 'tiny', prompt, max_tokens: 30, temperature: 0, stop: [stop, 'zzzzqqq'] }, { ignore_eos: true }));
  assert.equal(r.choices[0]!.text, full.slice(0, first));
  assert.equal(r.choices[0]!.finish_reason, 'stop');
  const s = await client.completions.create(extra({ model: 'tiny', prompt, max_tokens: 30, temperature: 0, stop, stream: true }, { ignore_eos: true }));
  let text = '';
  for await (const c of s) text += c.choices[0]?.text ?? '';
  assert.equal(text, full.slice(0, first));
});

test('openai client errors: unknown model 404, bad params 400, too long 400 context_length_exceeded', async () => {
  await assert.rejects(client.completions.create({ model: 'gpt-4', prompt: 'x' }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 100000 }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && e.param === 'max_tokens');
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'the '.repeat(500), max_tokens: 5 }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && e.code === 'context_length_exceeded');
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: [] }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['tiny']);
  assert.equal((await client.models.retrieve('tiny')).id, 'tiny');
});

test('broken and hostile requests: OpenAI error bodies, never a crash', async () => {
  const C = `${url}/v1/completions`, CH = `${url}/v1/chat/completions`;
  const bad = async (u: string, body: unknown, status: number, param?: string | null, headers: Record<string, string> = {}) => {
    const r = await postJson(u, body, headers);
    assert.equal(r.status, status, `${JSON.stringify(body).slice(0, 80)} → ${r.text}`);
    assert.equal(typeof r.json?.error?.message, 'string', r.text);
    assert.ok('type' in r.json.error && 'param' in r.json.error && 'code' in r.json.error, r.text);
    if (param !== undefined) assert.equal(r.json.error.param, param);
    return r.json.error;
  };
  await bad(C, '{"model": "tiny", "prompt": ', 400, null);
  await bad(C, 'not json at all', 400);
  await bad(C, '[1, 2, 3]', 400);
  await bad(C, 'null', 400);
  await bad(C, '{"__proto__": {"x": 1}, "model": "tiny", "prompt": "a"}', 400);
  await bad(C, { model: 'tiny' }, 400, 'prompt');
  await bad(C, { prompt: 'a' }, 400, 'model');
  await bad(C, { model: 7, prompt: 'a' }, 400, 'model');
  await bad(C, { model: 'tiny', prompt: 'a', temperature: 'hot' }, 400, 'temperature');
  await bad(C, { model: 'tiny', prompt: 'a', temperature: 3 }, 400, 'temperature');
  await bad(C, { model: 'tiny', prompt: 'a', max_tokens: 1.5 }, 400, 'max_tokens');
  await bad(C, { model: 'tiny', prompt: 'a', max_tokens: -1 }, 400, 'max_tokens');
  await bad(C, { model: 'tiny', prompt: 'a', max_tokens: 1e300 }, 400, 'max_tokens');
  await bad(C, { model: 'tiny', prompt: 'a', n: 1000 }, 400, 'n');
  await bad(C, { model: 'tiny', prompt: 'a', stream: 'yes' }, 400, 'stream');
  await bad(C, { model: 'tiny', prompt: 'a', stop: [1, 2] }, 400, 'stop');
  await bad(C, { model: 'tiny', prompt: 'a', stop: ['a', 'b', 'c', 'd', 'e'] }, 400, 'stop');
  await bad(C, { model: 'tiny', prompt: 'a', logprobs: 50 }, 400, 'logprobs');
  await bad(C, { model: 'tiny', prompt: 'a', logit_bias: { '99999': 5 } }, 400, 'logit_bias');
  await bad(C, { model: 'tiny', prompt: [1, 2, 100000] }, 400, 'prompt');
  await bad(C, { model: 'tiny', prompt: [] }, 400, 'prompt');
  await bad(C, { model: 'tiny', prompt: { text: 'a' } }, 400, 'prompt');
  await bad(C, { model: 'tiny', prompt: '' }, 400, 'prompt');
  await bad(C, { model: 'tiny', prompt: 'a', echo: true }, 400, 'echo');
  await bad(C, { model: 'nope', prompt: 'a' }, 404, 'model');
  await bad(CH, { model: 'tiny', messages: 'hi' }, 400, 'messages');
  await bad(CH, { model: 'tiny', messages: [{ role: 'wizard', content: 'x' }] }, 400, 'messages[0].role');
  await bad(CH, { model: 'tiny', messages: [{ role: 'user', content: 5 }] }, 400, 'messages[0].content');
  await bad(CH, { model: 'tiny', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }, 400, 'messages[0].content[0].type');
  await bad(CH, { model: 'tiny', messages: [{ role: 'user', content: 'x' }], top_logprobs: 3 }, 400, 'top_logprobs');
  await bad(CH, { model: 'tiny', messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }, 400, 'tools');
  await bad(CH, { model: 'tiny', messages: [{ role: 'user', content: 'word '.repeat(390) }] }, 400, 'messages');
  // too large a body: 413
  const big = await bad(C, { model: 'tiny', prompt: 'x'.repeat(3 * 1024 * 1024) }, 413);
  assert.equal(big.code, 'request_too_large');
  // unknown routes and methods: 404 in OpenAI's shape
  const r404 = await fetch(`${url}/v1/engines`, { method: 'GET' });
  assert.equal(r404.status, 404);
  assert.equal((await r404.json()).error.code, 'unknown_url');
  const r405 = await fetch(`${url}/v1/completions`, { method: 'GET' });
  assert.equal(r405.status, 404);
  // curl's default content type (form-urlencoded) still parses as JSON
  const form = await fetch(C, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: JSON.stringify({ model: 'tiny', prompt: 'a', max_tokens: 2 }) });
  assert.equal(form.status, 200);
  // still healthy
  assert.equal((await fetch(`${url}/health`)).status, 200);
});

test('a client that disconnects mid-stream: generation stops and the slot is freed', async () => {
  const before = parsePrometheus(await (await fetch(`${url}/metrics`)).text()).get('tnl_sequences_finished_total{reason="abort"}') ?? 0;
  const ac = new AbortController();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal,
    body: JSON.stringify({ model: 'tiny', prompt: 'The jury', max_tokens: 200, stream: true, ignore_eos: true }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type')!, /text\/event-stream/);
  const reader = res.body!.getReader();
  let got = '';
  while (!got.includes('"text"')) got += new TextDecoder().decode((await reader.read()).value);
  assert.ok(server.engine.running() >= 1);
  ac.abort();
  await waitFor(() => server.engine.running() === 0, 5000, 'the slot to be freed');
  const m = parsePrometheus(await (await fetch(`${url}/metrics`)).text());
  assert.equal(m.get('tnl_sequences_finished_total{reason="abort"}'), before + 1);
  assert.ok((m.get('tnl_generation_tokens_total') ?? 0) > 0);
});

test('concurrent streams are batched and each still gets its own exact text', async () => {
  const prompts = Array.from({ length: 8 }, (_, i) => `Request number ${i}: the jury said ${'it '.repeat(i * 3)}`);
  let maxBatch = 0;
  const poll = setInterval(() => { maxBatch = Math.max(maxBatch, server.engine.decoding()); }, 1);
  const texts = await Promise.all(prompts.map(async (prompt, i) => {
    const s = await client.completions.create(extra({ model: 'tiny', prompt, max_tokens: 20 + i, temperature: 0, stream: true }, { ignore_eos: true }));
    let t = '';
    for await (const c of s) t += c.choices[0]?.text ?? '';
    return t;
  }));
  clearInterval(poll);
  for (const [i, p] of prompts.entries()) assert.equal(texts[i], await greedyText(p, 20 + i), `stream ${i}`);
  assert.ok(maxBatch >= 2, `decode batch never exceeded ${maxBatch}`);
});

test('/metrics parses as Prometheus text and carries the serving figures; /health', async () => {
  const res = await fetch(`${url}/metrics`);
  assert.match(res.headers.get('content-type')!, /text\/plain/);
  const m = parsePrometheus(await res.text());
  for (const k of ['tnl_queue_depth', 'tnl_running_sequences', 'tnl_generation_tokens_per_second', 'tnl_time_to_first_token_seconds_count',
    'tnl_inter_token_latency_seconds_count', 'tnl_inter_token_latency_seconds_bucket{le="+Inf"}', 'process_resident_memory_bytes'])
    assert.ok(m.has(k), `missing ${k}`);
  assert.ok(m.get('tnl_time_to_first_token_seconds_count')! >= 10);
  assert.equal(m.get('tnl_inter_token_latency_seconds_bucket{le="+Inf"}'), m.get('tnl_inter_token_latency_seconds_count'));
  assert.ok(m.get('tnl_generation_tokens_per_second')! > 0);
  assert.ok(m.get('process_resident_memory_bytes')! > 1e6);
  const h = await (await fetch(`${url}/health`)).json();
  assert.equal(h.status, 'ok');
});

test('plain curl: JSON and a streamed chat', { skip: spawnSync('curl', ['--version']).status !== 0 ? 'curl not installed' : false }, async () => {
  const prompt = 'The jury';
  const run = (args: string[]) => new Promise<string>((resolve, reject) => {
    import('node:child_process').then(({ execFile }) => execFile('curl', ['-sS', ...args], (err, out) => (err ? reject(err) : resolve(out))));
  });
  const out = JSON.parse(await run([`${url}/v1/completions`, '-H', 'Content-Type: application/json', '-d', JSON.stringify({ model: 'tiny', prompt, max_tokens: 6, temperature: 0, ignore_eos: true })]));
  assert.equal(out.choices[0].text, await greedyText(prompt, 6));
  const sse = await run(['-N', `${url}/v1/chat/completions`, '-d', JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hello' }], max_tokens: 5, stream: true })]);
  const ev = sseEvents(sse);
  assert.equal(ev[ev.length - 1], '[DONE]');
  assert.ok((ev[ev.length - 2] as { choices: { finish_reason: string }[] }).choices[0]!.finish_reason);
});
