// tnl loadtest: concurrent streaming clients against `tnl serve` on loopback (see src/bench/load.ts).
// Also runnable on its own: node --import tsx src/cli/loadtest.ts
import { Command } from 'commander';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { int, run } from './common.ts';
import { runLoadTest } from '../bench/load.ts';
import { UsageError } from '../errors.ts';

interface Opts {
  model: string; url?: string; clients: string; promptTokens: string; maxTokens: string; sequential: string; contexts: string;
  turnTokens: string; phases: string; timeLimit: string; out: string; serverArg: string[]; repeat: string; threads?: string;
}

export function register(program: Command): void {
  program.command('loadtest')
    .description('load test of tnl serve on loopback: concurrent streams vs one at a time, latency percentiles, server memory as contexts grow')
    .option('--model <preset>', 'preset served with random weights (bench-29m or small)', 'bench-29m')
    .option('--url <url>', 'use a running loopback server instead of starting one (its tokenizer must match --model\'s vocabulary)')
    .option('--clients <n>', 'concurrent streaming clients', '32')
    .option('--prompt-tokens <list>', 'prompt lengths of the throughput comparisons', '128,1024')
    .option('--max-tokens <n>', 'generated tokens per request in the throughput phases', '256')
    .option('--sequential <n>', 'requests of the one-at-a-time baseline', '8')
    .option('--contexts <list>', 'context sizes the conversations grow through', '1024,2048,4096,8192,16384')
    .option('--turn-tokens <n>', 'generated tokens per conversation turn', '16')
    .option('--phases <list>', 'throughput,sequential,conversations', 'throughput,sequential,conversations')
    .option('--repeat <n>', 'alternations of the concurrent and one-at-a-time phases', '2')
    .option('--threads <n>', 'compute threads of the started server (default: one per core)')
    .option('--time-limit <s>', 'wall-clock bound of the whole run', '1200')
    .option('--out <file>', 'JSON results', 'bench-results/load.json')
    .option('--server-arg <arg>', 'extra argument for tnl serve (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .action(run(async (o: Opts) => {
      const contexts = o.contexts.split(',').map((s) => int('--contexts', s.trim(), 1));
      const phases = o.phases.split(',').map((s) => s.trim());
      for (const p of phases) if (!['throughput', 'sequential', 'conversations'].includes(p)) throw new UsageError(`--phases: unknown phase "${p}"`);
      await runLoadTest({
        preset: o.model, url: o.url, clients: int('--clients', o.clients, 1), promptTokens: o.promptTokens.split(',').map((x) => int('--prompt-tokens', x.trim(), 1)),
        maxTokens: int('--max-tokens', o.maxTokens, 1), sequentialRequests: int('--sequential', o.sequential, 1), contexts,
        turnTokens: int('--turn-tokens', o.turnTokens, 1), phases, repeat: int('--repeat', o.repeat, 1),
        threads: o.threads === undefined ? undefined : int('--threads', o.threads, 1), timeLimitS: int('--time-limit', o.timeLimit, 1), out: o.out, serverArgs: o.serverArg,
      });
    }));
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const program = new Command('tnl').showHelpAfterError();
  register(program);
  await program.parseAsync(['node', 'tnl', 'loadtest', ...process.argv.slice(2)]);
}
