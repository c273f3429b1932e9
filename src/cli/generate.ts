// tnl generate: stream new text (or token ids) for a prompt.
import type { Command } from 'commander';
import { backendFor, backendOption, blockOption, dtypeOption, int, isModelDir, num, resolveModel, run } from './common.ts';
import { generateTokens, StopMatcher, type GenerateOptions } from '../generate/generate.ts';
import { hasTokenizer, loadTokenizer, StreamDecoder } from '../tokenizer/index.ts';
import { UsageError } from '../errors.ts';
import type { DType } from '../backends/backend.ts';

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

interface Opts {
  model: string; prompt?: string; ids?: string; maxTokens: string; temperature: string; topK: string; topP: string;
  repetitionPenalty: string; seed?: string; stop: string[]; backend: string; dtype: DType; blockSize: string; bos?: boolean; stats?: boolean;
}

export function register(program: Command): void {
  program.command('generate')
    .description('generate text from a prompt (streamed to stdout)')
    .requiredOption('--model <dir>', 'model folder (or a preset name for random weights)')
    .option('--prompt <text>', 'the prompt (default: read stdin)')
    .option('--ids <json>', 'the prompt as a JSON array of token ids (no tokenizer needed); prints ids')
    .option('--max-tokens <n>', 'most new tokens', '128')
    .option('--temperature <t>', '0 = greedy', '0.8')
    .option('--top-k <k>', 'keep the k most likely tokens (0 = all)', '0')
    .option('--top-p <p>', 'nucleus sampling mass', '0.95')
    .option('--repetition-penalty <r>', '>1 discourages repeats (HF rule)', '1')
    .option('--seed <n>', 'random seed (reproducible sampling)')
    .option('--stop <text>', 'stop at this text (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--no-bos', 'do not prepend bos even if the tokenizer config says so')
    .option('--stats', 'print tokens/s to stderr at the end')
    .addOption(backendOption()).addOption(dtypeOption()).addOption(blockOption())
    .action(run(async (o: Opts) => {
      const be = backendFor(o.backend);
      const model = await resolveModel(o.model, be, o.dtype, int('--block-size', o.blockSize, 1));
      const gen: GenerateOptions = {
        maxTokens: int('--max-tokens', o.maxTokens), temperature: num('--temperature', o.temperature), topK: int('--top-k', o.topK),
        topP: num('--top-p', o.topP), repetitionPenalty: num('--repetition-penalty', o.repetitionPenalty),
        seed: o.seed === undefined ? undefined : int('--seed', o.seed),
      };
      const t0 = performance.now();
      let n = 0, firstAt = 0;
      if (o.ids !== undefined) {
        let ids: number[];
        try { ids = JSON.parse(o.ids); } catch { throw new UsageError(`--ids: expected a JSON array of token ids, got ${o.ids}`); }
        if (!Array.isArray(ids) || ids.some((x) => !Number.isInteger(x))) throw new UsageError('--ids: expected a JSON array of integer token ids');
        const out: number[] = [];
        for await (const t of generateTokens(model, ids, gen)) { out.push(t.id); n++; if (n === 1) firstAt = performance.now(); }
        process.stdout.write(JSON.stringify(out) + '\n');
      } else {
        if (!isModelDir(o.model) || !hasTokenizer(o.model)) throw new UsageError(`--model ${o.model} has no tokenizer (tokenizer.model or tokenizer.json): give the prompt as token ids with --ids`);
        const tok = loadTokenizer(o.model);
        const text = o.prompt ?? (await readStdin());
        const ids = tok.encode(text, { addBos: o.bos === false ? false : tok.addBos });
        const dec = new StreamDecoder(tok);
        const stop = new StopMatcher(o.stop);
        const it = generateTokens(model, ids, gen);
        for await (const t of it) {
          n++; if (n === 1) firstAt = performance.now();
          const r = stop.push(dec.push(t.id));
          process.stdout.write(r.text);
          if (r.stopped) break;
        }
        process.stdout.write(stop.push(dec.flush()).text + stop.flush() + '\n');
      }
      if (o.stats) {
        const t1 = performance.now();
        process.stderr.write(`tnl: ${n} tokens, first after ${(firstAt - t0).toFixed(0)} ms, then ${n > 1 ? ((n - 1) / ((t1 - firstAt) / 1000)).toFixed(1) : '-'} tokens/s (${be.describe()})\n`);
      }
    }));
}
