// The `tnl` program: one thin file per command under src/cli/.
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import * as info from './info.ts';
import * as generate from './generate.ts';
import * as logits from './logits.ts';
import * as train from './train.ts';
import * as grads from './grads.ts';
import * as bench from './bench.ts';
import * as convert from './convert.ts';
import * as tokenize from './tokenize.ts';
import * as plan from './plan.ts';
import * as serve from './serve.ts';
import * as loadtest from './loadtest.ts';

// `tnl … | head` closes stdout early: that is not an error
process.stdout.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE') process.exit(0); throw e; });

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
const program = new Command('tnl')
  .description('TransNormerLLM in TypeScript: run, train and serve TNL models')
  .version(pkg.version)
  .showHelpAfterError();
for (const cmd of [info, generate, logits, train, grads, convert, tokenize, serve, loadtest, plan, bench]) cmd.register(program);
await program.parseAsync(process.argv);
