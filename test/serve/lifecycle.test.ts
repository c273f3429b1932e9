// Auth, overload, graceful shutdown (in-process and `tnl serve` under SIGTERM).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { postJson, sseEvents, start, testTokenizer, waitFor } from './helpers.ts';

type Chunk = { choices: { finish_reason: string | null; text?: string }[] };

/** Open a completions stream and read until its first token. */
async function openStream(url: string, body: Record<string, unknown>) {
  const ac = new AbortController();
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal, body: JSON.stringify({ model: 'tiny', prompt: 'The jury', stream: true, ignore_eos: true, ...body }) });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  let text = '';
  const readAll = (async () => {
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (done) return text;
      text += new TextDecoder().decode(value);
    }
  })();
  return { ac, res, readAll, get text() { return text; } };
}

test('bearer-token auth on /v1/*; /health and /metrics stay open', async () => {
  const { url, server } = await start({ apiKey: 's3cret' });
  try {
    const body = { model: 'tiny', prompt: 'a', max_tokens: 2 };
    const none = await postJson(`${url}/v1/completions`, body);
    assert.equal(none.status, 401);
    assert.equal(none.json.error.code, 'invalid_api_key');
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    assert.equal((await postJson(`${url}/v1/completions`, body, { authorization: 'Bearer wrong' })).status, 401);
    assert.equal((await postJson(`${url}/v1/completions`, body, { authorization: 'Basic s3cret' })).status, 401);
    assert.equal((await postJson(`${url}/v1/completions`, body, { authorization: 'Bearer s3cret' })).status, 200);
    assert.equal((await fetch(`${url}/v1/models`)).status, 401);
    const bad = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'nope', maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 401);
    const good = new OpenAI({ baseURL: `${url}/v1`, apiKey: 's3cret', maxRetries: 0 });
    assert.equal((await good.models.list()).data[0]!.id, 'tiny');
    assert.equal((await fetch(`${url}/health`)).status, 200);
    assert.equal((await fetch(`${url}/metrics`)).status, 200);
  } finally { await server.close({ deadlineMs: 0 }); }
});

test('overload: beyond the bounded queue, 429 with Retry-After (openai client sees RateLimitError)', async () => {
  const { url, server } = await start({ engine: { maxSeqs: 1, maxQueue: 1 }, limits: { maxTokens: 100000, maxContext: 200000 } });
  try {
    const a = await openStream(url, { max_tokens: 100000 });
    await waitFor(() => a.text.includes('"text"'), 5000, 'the first stream to run');
    const b = await openStream(url, { max_tokens: 5 }); // waits in the queue
    assert.equal(server.engine.queueDepth(), 1);
    const c = await postJson(`${url}/v1/completions`, { model: 'tiny', prompt: 'x', max_tokens: 2 });
    assert.equal(c.status, 429);
    assert.equal(c.json.error.code, 'rate_limit_exceeded');
    const retry = Number(c.headers.get('retry-after'));
    assert.ok(Number.isInteger(retry) && retry >= 1, `Retry-After ${c.headers.get('retry-after')}`);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 2 }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 429);
    // the first client goes away: its slot frees, the queued one runs to completion
    a.ac.abort();
    const bText = await b.readAll;
    const ev = sseEvents(bText);
    assert.equal(ev[ev.length - 1], '[DONE]');
    assert.equal((ev[ev.length - 2] as Chunk).choices[0]!.finish_reason, 'length');
    await waitFor(() => server.engine.running() === 0 && server.engine.queueDepth() === 0, 5000, 'an idle engine');
    const m = await (await fetch(`${url}/metrics`)).text();
    assert.match(m, /tnl_rejected_requests_total 2/);
  } finally { await server.close({ deadlineMs: 0 }); }
});

test('graceful close: running requests finish within the deadline, new ones get 503', async () => {
  const { url, server } = await start();
  const s = await openStream(url, { max_tokens: 60 });
  await waitFor(() => s.text.includes('"text"'), 5000, 'a running stream');
  const closing = server.close({ deadlineMs: 20_000 });
  const refused = await postJson(`${url}/v1/completions`, { model: 'tiny', prompt: 'x', max_tokens: 2 });
  assert.equal(refused.status, 503);
  assert.equal(refused.json.error.code, 'service_unavailable');
  assert.equal((await fetch(`${url}/health`)).status, 503);
  const ev = sseEvents(await s.readAll);
  await closing;
  assert.equal(ev[ev.length - 1], '[DONE]');
  assert.equal((ev[ev.length - 2] as Chunk).choices[0]!.finish_reason, 'length');
  const tokens = ev.filter((e) => e !== '[DONE]').length;
  assert.ok(tokens >= 2);
  await assert.rejects(fetch(`${url}/health`));
});

test('graceful close past the deadline: streams end with finish_reason "abort" and [DONE]; non-streamed get their partial text', async () => {
  const { url, server } = await start({ limits: { maxTokens: 100000, maxContext: 200000 } });
  const s = await openStream(url, { max_tokens: 100000 });
  const plain = postJson(`${url}/v1/completions`, { model: 'tiny', prompt: 'a b c', max_tokens: 100000, ignore_eos: true });
  await waitFor(() => s.text.includes('"text"') && server.engine.running() === 2, 5000, 'two running requests');
  await server.close({ deadlineMs: 100 });
  const ev = sseEvents(await s.readAll);
  assert.equal(ev[ev.length - 1], '[DONE]');
  assert.equal((ev[ev.length - 2] as Chunk).choices[0]!.finish_reason, 'abort');
  const p = await plain;
  assert.equal(p.status, 200);
  assert.equal(p.json.choices[0].finish_reason, 'abort');
  assert.ok(p.json.usage.completion_tokens > 0);
  assert.equal(server.engine.running(), 0);
});

test('tnl serve (the CLI) under SIGTERM: the stream ends cleanly and the process exits 0', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-serve-'));
  testTokenizer().save(dir);
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/serve.ts', '--model', 'tiny', '--tokenizer', dir, '--port', '0', '--shutdown-timeout', '0.2', '--max-tokens', '100000', '--max-context', '200000'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await waitFor(() => /listening on (http:\/\/\S+)/.test(out), 30_000, `the server to start (${err})`);
    const url = /listening on (http:\/\/\S+)/.exec(out)![1]!;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const s = await openStream(url, { max_tokens: 100000 });
    await waitFor(() => s.text.includes('"text"'), 10_000, 'tokens');
    child.kill('SIGTERM');
    const ev = sseEvents(await s.readAll);
    assert.equal(ev[ev.length - 1], '[DONE]');
    assert.equal((ev[ev.length - 2] as Chunk).choices[0]!.finish_reason, 'abort');
    assert.equal(await exited, 0);
    assert.match(err, /SIGTERM/);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
