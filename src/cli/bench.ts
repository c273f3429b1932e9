// tnl bench: speed tables (and JSON, and plots) for the CPU engine, with the reference PyTorch
// model run side by side in the same invocation when it is set up (../shared/reference).
import type { Command } from 'commander';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { spawnSync } from 'node:child_process';
import { backendFor, backendOption, run } from './common.ts';
import { presetConfig, paramCounts } from '../config/index.ts';
import { UsageError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { TnlModel } from '../model/transnormer.ts';
import { benchAttention, benchDecode, benchPrefill, benchTrain, describeModel, type AttentionRow, type DecodeRow } from '../bench/model.ts';
import { writeLinePlot } from '../train/plot.ts';
import { fmtBytes } from './info.ts';

const SUITES = ['gemm', 'attention', 'prefill', 'decode', 'train', 'tokenizer', 'load', 'reference'] as const;
type Suite = (typeof SUITES)[number];

function table(title: string, head: string[], rows: (string | number)[][]): void {
  const cells = [head, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? (Math.abs(c) >= 100 ? c.toFixed(0) : c.toPrecision(3)) : c)))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  console.log(`\n${title}`);
  cells.forEach((r, i) => {
    console.log(r.map((c, j) => String(c).padStart(w[j]!)).join('  '));
    if (i === 0) console.log(w.map((x) => '-'.repeat(x)).join('  '));
  });
}

/** The reference PyTorch model's speed on this machine (bench_cpu_ref.py), or why not. */
export function runReference(refCode: string | undefined, seq: number): Record<string, number | string> | { error: string } {
  const here = dirname(new URL(import.meta.url).pathname);
  const shared = [resolve('../shared/reference'), resolve(here, '../../../shared/reference')].find((p) => existsSync(join(p, 'bench_cpu_ref.py')));
  if (!shared) return { error: 'shared/reference/bench_cpu_ref.py not found beside the checkout' };
  if (!refCode) return { error: 'set --ref-code (or TNL_REF) to the folder holding the reference modeling_transnormer.py (see ../shared/reference/README.md)' };
  const env: NodeJS.ProcessEnv = { ...process.env, TNL_REF: refCode, OPENBLAS_NUM_THREADS: '2', THREADS: '1', SEQ: String(seq) };
  delete env.OPENBLAS_CORETYPE; delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync('/usr/bin/python3', [join(shared, 'bench_cpu_ref.py')], { env, encoding: 'utf8', timeout: 900_000 });
  if (r.status !== 0) return { error: `reference failed: ${(r.stderr || r.error?.message || '').trim().split('\n').at(-1)}` };
  try { return JSON.parse(r.stdout.trim().split('\n').at(-1)!); } catch { return { error: `reference printed no JSON: ${r.stdout.slice(0, 200)}` }; }
}

export function register(program: Command): void {
  program.command('bench')
    .description('benchmarks: GEMM, attention forms, prefill, decode vs context, training, and the reference PyTorch model side by side')
    .option('--suite <names>', `comma-separated: ${SUITES.join(',')} (load writes a 2 GB checkpoint: not in the default)`, SUITES.filter((x) => x !== 'load').join(','))
    .option('--model <preset>', 'model preset', 'bench-29m')
    .option('--seq <n>', 'sequence length for prefill and training', '1024')
    .option('--contexts <list>', 'decode context lengths', '1024,8192,32768')
    .option('--attention-lengths <list>', 'attention sequence lengths', '512,1024,2048,4096,8192,16384')
    .option('--ref-code <dir>', 'reference modeling code folder (default: $TNL_REF)')
    .option('--json <file>', 'write all results as JSON', 'bench-results/bench.json')
    .option('--plots <dir>', 'write plots (PNG + SVG) here', 'bench-results')
    .option('--quick', 'small sizes (a smoke run)')
    .addOption(backendOption())
    .action(run(async (o: { suite: string; model: string; seq: string; contexts: string; attentionLengths: string; refCode?: string; json: string; plots: string; quick?: boolean; backend: string }) => {
      const suites = o.suite.split(',').map((s) => s.trim()) as Suite[];
      for (const s of suites) if (!SUITES.includes(s)) throw new UsageError(`--suite: unknown suite "${s}" (known: ${SUITES.join(', ')})`);
      const be = backendFor(o.backend);
      if (o.backend === 'cuda') {
        // the GPU suite: Lightning kernels at the device README's shapes beside the copy-bandwidth floor, end to end
        const { runCudaBench } = await import('../bench/cuda.ts');
        const { CudaBackend } = await import('../backends/cuda/index.ts');
        const res = await runCudaBench(be as InstanceType<typeof CudaBackend>, { lengths: o.quick ? [512, 2048] : [512, 2048, 8192, 32768] });
        writeFileAtomic(o.json, JSON.stringify(res, null, 2) + '\n');
        console.log(`\nwrote ${o.json}`);
        return;
      }
      const config = presetConfig(o.model);
      const seq = o.quick ? 128 : Number(o.seq);
      const contexts = o.quick ? [256, 1024] : o.contexts.split(',').map(Number);
      const lengths = o.quick ? [256, 512] : o.attentionLengths.split(',').map(Number);
      const results: Record<string, unknown> = {
        date: new Date().toISOString(), backend: be.describe(), model: { preset: o.model, shape: describeModel(config), params: paramCounts(config).total }, seq,
      };
      console.log(`tnl bench: ${be.describe()}; model ${o.model} (${describeModel(config)}, ${(paramCounts(config).total / 1e6).toFixed(1)}M params)`);
      mkdirSync(o.plots, { recursive: true });

      let ref: Record<string, number | string> | { error: string } | null = null;
      if (suites.includes('reference')) {
        process.stderr.write('running the reference PyTorch model (bench_cpu_ref.py)…\n');
        ref = runReference(o.refCode ?? process.env.TNL_REF, seq);
        results.reference = ref;
        if ('error' in ref) console.log(`\nreference: not run (${ref.error})`);
        else table('Reference PyTorch model (pure-PyTorch path, torch threads 1, OpenBLAS threads 2)', ['prefill tok/s', 'decode tok/s', 'train tok/s', 'torch'], [[ref.prefill_tok_s!, ref.decode_tok_s!, ref.train_tok_s!, String(ref.torch)]]);
      }
      const refNum = (k: string) => (ref && !('error' in ref) ? Number(ref[k]) : NaN);
      const ratio = (x: number, k: string) => (Number.isFinite(refNum(k)) ? `${(x / refNum(k)).toFixed(2)}×` : '-');

      if (suites.includes('gemm')) {
        const { benchGemm } = await import('../bench/gemm.ts');
        const rows = await benchGemm({ quick: o.quick });
        results.gemm = rows;
        table('GEMM on the model\'s shapes (GFLOP/s; small-M rows in GB/s of weights)', Object.keys(rows[0] ?? {}), rows.map((r) => Object.values(r) as (string | number)[]));
      }
      if (suites.includes('prefill')) {
        const rows = (['f32', 'bf16'] as const).map((dt) => benchPrefill(be, config, dt, seq));
        results.prefill = rows;
        table(`Prefill (block form), one sequence of ${seq}`, ['dtype', 'tokens/s', 'ms', 'vs reference'], rows.map((r) => [r.dtype, r.tokensPerSec, r.ms, ratio(r.tokensPerSec, 'prefill_tok_s')]));
      }
      if (suites.includes('decode')) {
        const rows: DecodeRow[] = [];
        for (const dt of ['f32', 'bf16'] as const) {
          const model = TnlModel.random(be, config, 0, dt);
          process.stderr.write(`decode ${dt} at contexts ${contexts.join(', ')}…\n`);
          rows.push(...benchDecode(be, model, contexts));
        }
        results.decode = rows;
        table('Decode (recurrent form), batch 1', ['dtype', 'context', 'tokens/s', 'ms/token', 'state', 'vs reference'], rows.map((r) => [r.dtype, r.context, r.tokensPerSec, r.msPerToken, fmtBytes(r.stateBytes), ratio(r.tokensPerSec, 'decode_tok_s')]));
        await writeLinePlot(join(o.plots, 'decode.png'), {
          title: `Decode ms/token vs context (${o.model})`, xLabel: 'context (tokens)', yLabel: 'ms per token', logX: true,
          series: Object.fromEntries((['f32', 'bf16'] as const).map((dt) => [dt, rows.filter((r) => r.dtype === dt).map((r) => ({ x: r.context, y: r.msPerToken }))])),
        });
      }
      if (suites.includes('train')) {
        const rows = [false, true].map((ck) => benchTrain(be, config, seq, 1, ck));
        results.train = rows;
        table(`Training step (forward + backward + AdamW), batch 1 × ${seq}`, ['checkpointing', 'tokens/s', 'ms', 'activation memory', 'vs reference'], rows.map((r) => [r.checkpoint ? 'yes' : 'no', r.tokensPerSec, r.ms, fmtBytes(r.activationBytes), ratio(r.tokensPerSec, 'train_tok_s')]));
      }
      if (suites.includes('attention')) {
        const rows: AttentionRow[] = [];
        benchAttention(be, 256, 8, 64, 64); // warm-up: the quadratic forms' loops get compiled first
        for (const n of lengths) { process.stderr.write(`attention n=${n}…\n`); rows.push(...benchAttention(be, n, 8, 64, 64)); }
        results.attention = rows;
        table('Attention, one layer (8 heads × 64, one sequence): Lightning blocks vs the quadratic forms', ['method', 'n', 'ms', 'working memory'], rows.map((r) => [r.method, r.n, r.ms, fmtBytes(r.workingBytes)]));
        await writeLinePlot(join(o.plots, 'attention.png'), {
          title: 'Attention time vs sequence length (8 heads × 64)', xLabel: 'sequence length', yLabel: 'ms', logX: true, logY: true,
          series: Object.fromEntries(['lightning', 'naive-quadratic', 'softmax'].map((m) => [m, rows.filter((r) => r.method === m).map((r) => ({ x: r.n, y: r.ms }))])),
        });
      }
      if (suites.includes('tokenizer')) {
        const { benchTokenizer } = await import('../tokenizer/bench.ts');
        const rows = benchTokenizer();
        results.tokenizer = rows;
        table('Tokenizers on the Brown Corpus', ['what', 'value', 'unit', 'note'], rows.map((r) => [r.name, r.value, r.unit, r.note ?? '']));
      }
      if (suites.includes('load')) {
        process.stderr.write('writing and loading a checkpoint of the 1B preset\'s shapes (2 GB)…\n');
        const { benchModelLoad } = await import('../bench/load-model.ts');
        const rows = benchModelLoad();
        results.load = rows;
        table('Loading a 1B-shaped checkpoint (2.04 GB bf16 safetensors) into the cpu backend', ['weights', 'seconds', 'peak RSS', 'file'], rows.map((r) => [r.dtype, r.seconds, `${r.peakRssMiB} MiB`, fmtBytes(r.fileBytes)]));
      }
      writeFileAtomic(o.json, JSON.stringify(results, null, 2) + '\n');
      console.log(`\nwrote ${o.json} and plots in ${o.plots}/`);
    }));
}
