// tnl train: train a TNL from raw text (defaults: the Brown Corpus, a BPE tokenizer trained on it,
// the "small" preset, a few minutes on a CPU), then sample from it with the recurrent decoder.
import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import { backendFor, backendOption, run } from './common.ts';
import { DEFAULT_SETTINGS, train, type TrainSettings } from '../train/trainer.ts';
import { UsageError } from '../errors.ts';
import { generateTokens } from '../generate/generate.ts';
import { StreamDecoder } from '../tokenizer/index.ts';

const FLAGS: [keyof TrainSettings, string, string][] = [
  ['out', '--out <dir>', 'output folder (data, checkpoints, model, metrics, plot)'],
  ['data', '--data <source>', '"brown" or a text file / folder / .jsonl'],
  ['textField', '--text-field <name>', 'JSONL field holding the text'],
  ['tokenizer', '--tokenizer <path>', 'use this tokenizer instead of training a BPE'],
  ['vocabSize', '--vocab-size <n>', 'BPE vocabulary size when training one'],
  ['model', '--model <preset|dir>', 'model preset or folder to start from'],
  ['seqLen', '--seq-len <n>', 'tokens per sequence'],
  ['batchSize', '--batch-size <n>', 'sequences per micro-batch'],
  ['accum', '--accum <n>', 'gradient accumulation steps'],
  ['steps', '--steps <n>', 'optimizer steps'],
  ['lr', '--lr <x>', 'peak learning rate'],
  ['minLr', '--min-lr <x>', 'final learning rate (cosine)'],
  ['warmup', '--warmup <n>', 'warmup steps'],
  ['weightDecay', '--weight-decay <x>', 'AdamW decoupled weight decay (weight matrices only)'],
  ['clip', '--clip <x>', 'gradient clipping by global norm'],
  ['evalEvery', '--eval-every <n>', 'validate every n steps'],
  ['evalBatches', '--eval-batches <n>', 'validation batches'],
  ['saveEvery', '--save-every <n>', 'checkpoint every n steps'],
  ['keep', '--keep <n>', 'checkpoints kept'],
  ['seed', '--seed <n>', 'seed (init, data order, split)'],
  ['onNaN', '--on-nan <policy>', 'stop | skip'],
  ['blockSize', '--block-size <n>', 'Lightning Attention block length'],
  ['precision', '--precision <p>', 'f32 | bf16 (mixed precision: f32 master weights, bf16 products; needs the cuda backend)'],
];

function coerce(key: keyof TrainSettings, v: unknown): unknown {
  const def = DEFAULT_SETTINGS[key];
  if (typeof def === 'number') {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new UsageError(`${key}: expected a number, got ${JSON.stringify(v)}`);
    return n;
  }
  if (typeof def === 'boolean') return v === true || v === 'true';
  return v;
}

export function register(program: Command): void {
  const cmd = program.command('train')
    .description('train a TNL from raw text (default: the Brown Corpus, a few minutes on a CPU), then sample from it')
    .option('--config <file>', 'JSON file of settings (flags override it)')
    .option('--activation-checkpointing', 'recompute each layer in the backward (less memory)')
    .option('--sample-tokens <n>', 'tokens to sample at the end', '60')
    .option('--sample-prompt <text>', 'prompt for the final sample', 'The')
    .addOption(backendOption());
  for (const [, flag, desc] of FLAGS) cmd.option(flag, desc);
  cmd.action(run(async (o: Record<string, unknown>) => {
    let settings: TrainSettings = { ...DEFAULT_SETTINGS };
    if (o.config) {
      const f = String(o.config);
      if (!existsSync(f)) throw new UsageError(`--config ${f}: no such file`);
      let raw: Record<string, unknown>;
      try { raw = JSON.parse(readFileSync(f, 'utf8')); } catch (e) { throw new UsageError(`${f}: not valid JSON (${(e as Error).message})`); }
      for (const [k, v] of Object.entries(raw)) {
        if (!(k in DEFAULT_SETTINGS)) throw new UsageError(`${f}: unknown setting "${k}" (known: ${Object.keys(DEFAULT_SETTINGS).join(', ')})`);
        (settings as unknown as Record<string, unknown>)[k] = coerce(k as keyof TrainSettings, v);
      }
    }
    for (const [key] of FLAGS) if (o[key] !== undefined) (settings as unknown as Record<string, unknown>)[key] = coerce(key, o[key]);
    if (o.activationCheckpointing) settings = { ...settings, checkpointActivations: true };
    const be = backendFor(String(o.backend));
    const log = (l: string) => process.stderr.write(`${l}\n`);
    log(`tnl train: ${settings.model} on ${settings.data} → ${settings.out} (${be.describe()})`);
    const bar = new cliProgress.SingleBar({
      format: 'train |{bar}| step {value}/{total} | loss {loss} | {tps} tok/s | ETA {eta_formatted}',
      hideCursor: true, clearOnComplete: false, etaBuffer: 20, noTTYOutput: true, notTTYSchedule: 10000,
    }, cliProgress.Presets.shades_classic);
    let started = false;
    const result = await train(settings, be, {
      log: (l) => { if (started) bar.stop(); log(l); if (started) { bar.start(settings.steps, lastStep, { loss: lastLoss, tps: lastTps }); } },
      onData: (p) => { if (p.done) return; process.stderr.write(`\rtokenizing: ${p.documents} documents, ${(p.bytes / 1e6).toFixed(1)} MB, ${p.mbPerSec.toFixed(1)} MB/s   `); },
      onStep: (r) => {
        if (!process.stderr.isTTY) {
          // logs and pipes: one plain line every 10 s (a progress bar needs a terminal)
          const now = performance.now();
          if (now - lastPrint > 10_000 || r.step === r.steps) {
            lastPrint = now;
            log(`step ${r.step}/${r.steps} | loss ${r.loss.toFixed(3)} | ${Math.round(r.tokensPerSec)} tok/s | ETA ${Math.round(r.etaSeconds)} s`);
          }
          return;
        }
        if (!started) { process.stderr.write('\n'); bar.start(r.steps, r.step - 1, { loss: '-', tps: '-' }); started = true; }
        lastStep = r.step; lastLoss = r.loss.toFixed(3); lastTps = Math.round(r.tokensPerSec);
        bar.update(r.step, { loss: lastLoss, tps: lastTps });
      },
    });
    if (started) bar.stop();
    const ppl = Math.exp(result.finalValLoss), uni = Math.exp(result.unigramValLoss);
    log(`done: ${result.steps} steps at ${Math.round(result.tokensPerSec)} tokens/s`);
    log(`validation perplexity ${ppl.toFixed(1)} vs unigram baseline ${uni.toFixed(1)} (${(ppl / uni).toFixed(3)}×)`);
    log(`model saved to ${result.modelDir}; loss curve ${settings.out}/loss.png; metrics ${settings.out}/metrics.jsonl`);
    const prompt = String(o.samplePrompt);
    const ids = result.tokenizer.encode(prompt, { addBos: false });
    const dec = new StreamDecoder(result.tokenizer);
    let text = prompt;
    for await (const t of generateTokens(result.model, ids, { maxTokens: Number(o.sampleTokens), temperature: 0.8, topP: 0.95, seed: settings.seed })) text += dec.push(t.id);
    text += dec.flush();
    log(`sample (recurrent decoding, temperature 0.8):\n${text}\n`);
    log(`try: tnl generate --model ${result.modelDir} --prompt "${prompt}"`);
  }));
}
let lastStep = 0, lastLoss = '-', lastTps = 0, lastPrint = 0;
