// tnl serve: an OpenAI-compatible HTTP server (continuous batching over a pool of recurrent states).
// Also runnable on its own: node --import tsx src/cli/serve.ts --model DIR
import { Command } from 'commander';
import { basename, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { backendFor, backendOption, blockOption, dtypeOption, int, isModelDir, resolveModel, run } from './common.ts';
import type { DType } from '../backends/backend.ts';
import { hasTokenizer, loadTokenizer } from '../tokenizer/index.ts';
import { createBackend } from '../backends/index.ts';
import { UsageError } from '../errors.ts';
import { createServer } from '../serve/server.ts';
import { loadChatTemplate } from '../serve/chat-template.ts';
import { DEFAULT_LIMITS } from '../serve/openai.ts';

interface Opts {
  model: string; tokenizer?: string; modelName?: string; host: string; port: string; apiKey?: string;
  maxSeqs: string; maxQueue: string; prefillChunk: string; prefillBatch: string; bufferPool: string; prefixCache?: string; maxContext: string; maxTokens: string;
  defaultMaxTokens: string; maxN: string; threads?: string; bodyLimit: string; shutdownTimeout: string; backend: string; dtype: DType; blockSize: string;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function register(program: Command): void {
  program.command('serve')
    .description('serve a model over an OpenAI-compatible HTTP API (completions, chat, streaming, metrics)')
    .requiredOption('--model <dir>', 'model folder (or a preset name for random weights, with --tokenizer)')
    .option('--tokenizer <path>', 'tokenizer folder or file (default: the model folder)')
    .option('--model-name <id>', 'the model id clients send (default: the folder name)')
    .option('--host <addr>', 'address to listen on (loopback unless told otherwise)', '127.0.0.1')
    .option('--port <n>', 'port (0 = any free port)', '8000')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on /v1/* (default: $TNL_API_KEY, else none)')
    .option('--max-seqs <n>', 'sequence slots: most sequences decoded together', '64')
    .option('--max-queue <n>', 'most requests waiting for a slot; beyond it 429 + Retry-After', '256')
    .option('--prefill-chunk <n>', 'prompt tokens per prefill call (interleaved with decode steps)', '256')
    .option('--prefill-batch <n>', 'most requests whose prompt chunks share one prefill call', '1')
    .option('--prefix-cache <n>', 'states kept for prompt prefixes (chat turns resume without re-reading the history; 0 = off; default: --max-seqs)')
    .option('--buffer-pool <MiB>', 'most MiB of freed activation buffers kept for reuse', '512')
    .option('--max-context <n>', 'most prompt + completion tokens per sequence', String(DEFAULT_LIMITS.maxContext))
    .option('--max-tokens <n>', 'most max_tokens a request may ask for', String(DEFAULT_LIMITS.maxTokens))
    .option('--default-max-tokens <n>', 'max_tokens of chat requests that give none', String(DEFAULT_LIMITS.defaultChatMaxTokens))
    .option('--max-n <n>', 'most choices (n) per request', String(DEFAULT_LIMITS.maxN))
    .option('--body-limit <bytes>', 'largest request body', String(2 * 1024 * 1024))
    .option('--shutdown-timeout <s>', 'on SIGINT/SIGTERM, seconds to let running requests finish before cancelling them', '30')
    .addOption(backendOption()).addOption(dtypeOption()).addOption(blockOption())
    .option('--threads <n>', 'compute threads, the caller included (default: one per core, or $TNL_THREADS)')
    .action(run(serve));
}

async function serve(o: Opts): Promise<void> {
  const tokPath = o.tokenizer ?? (isModelDir(o.model) ? o.model : null);
  if (!tokPath || (tokPath === o.model && !hasTokenizer(o.model)))
    throw new UsageError(`--model ${o.model} has no tokenizer (tokenizer.model or tokenizer.json): give one with --tokenizer`);
  const tokenizer = loadTokenizer(tokPath);
  const be = o.backend === 'cpu' && o.threads !== undefined ? createBackend('cpu', { threads: int('--threads', o.threads, 1) }) : backendFor(o.backend);
  const model = await resolveModel(o.model, be, o.dtype, int('--block-size', o.blockSize, 1));
  if (tokenizer.vocabSize > model.config.vocab_size)
    throw new UsageError(`the tokenizer has ${tokenizer.vocabSize} ids but the model only ${model.config.vocab_size}: they do not belong together`);
  const modelName = o.modelName ?? (isModelDir(o.model) ? basename(resolve(o.model)) : o.model);
  const specials = { bos: tokenizer.bosId === null ? '' : tokenizer.idToPiece(tokenizer.bosId), eos: tokenizer.eosId === null ? '' : tokenizer.idToPiece(tokenizer.eosId) };
  const tplDir = o.tokenizer ? (isModelDir(o.tokenizer) ? o.tokenizer : null) : o.model;
  const { template, warning } = loadChatTemplate(tplDir && isModelDir(tplDir) ? tplDir : null, specials);
  if (warning) process.stderr.write(`tnl serve: ${warning}\n`);
  const apiKey = o.apiKey ?? process.env.TNL_API_KEY ?? null;
  const maxSeqs = int('--max-seqs', o.maxSeqs, 1);
  const server = createServer({
    model, tokenizer, modelName, chatTemplate: template, apiKey,
    bodyLimit: int('--body-limit', o.bodyLimit, 1024),
    limits: {
      maxContext: int('--max-context', o.maxContext, 2), maxTokens: int('--max-tokens', o.maxTokens, 1),
      defaultChatMaxTokens: int('--default-max-tokens', o.defaultMaxTokens, 1), maxN: int('--max-n', o.maxN, 1),
    },
    engine: {
      maxSeqs, maxQueue: int('--max-queue', o.maxQueue, 0), prefillChunk: int('--prefill-chunk', o.prefillChunk, 1),
      prefillBatch: int('--prefill-batch', o.prefillBatch, 1),
      bufferPoolBytes: int('--buffer-pool', o.bufferPool, 0) * 1024 * 1024,
      prefixCache: o.prefixCache === undefined ? maxSeqs : int('--prefix-cache', o.prefixCache, 0),
    },
  });
  const host = o.host;
  if (!LOOPBACK.has(host) && !apiKey) process.stderr.write(`tnl serve: warning: listening on ${host} without --api-key: anyone who can reach it can use it\n`);
  let url: string;
  try {
    url = await server.listen({ host, port: int('--port', o.port, 0) });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') throw new UsageError(`cannot listen on ${host}:${o.port}: ${err.code}`);
    throw e;
  }
  const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;
  process.stdout.write(`tnl serve: listening on ${url}\n`);
  process.stderr.write(`tnl serve: model "${modelName}" (${be.describe()}), ${maxSeqs} slots, recurrent state ${mib(server.engine.stateBytes())} in all (fixed), chat template: ${template.source}${apiKey ? ', API key required' : ''}\n`);

  const deadlineMs = Number(o.shutdownTimeout) * 1000;
  if (!(deadlineMs >= 0)) throw new UsageError(`--shutdown-timeout must be a number of seconds ≥ 0, got "${o.shutdownTimeout}"`);
  let signals = 0;
  const onSignal = (sig: string) => {
    signals++;
    if (signals === 1) {
      process.stderr.write(`tnl serve: ${sig}: finishing running requests (up to ${o.shutdownTimeout} s; again to cancel them now)\n`);
      server.close({ deadlineMs }).then(() => { process.stderr.write('tnl serve: stopped\n'); process.exit(0); },
        (e) => { process.stderr.write(`tnl serve: error while stopping: ${(e as Error).message}\n`); process.exit(1); });
    } else if (signals === 2) {
      process.stderr.write(`tnl serve: ${sig}: cancelling running requests\n`);
      server.engine.cancelAll('abort');
    } else process.exit(1);
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
}

// Run directly (the load test starts the server this way, as its own process).
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const program = new Command('tnl').showHelpAfterError();
  register(program);
  await program.parseAsync(['node', 'tnl', 'serve', ...process.argv.slice(2)]);
}
