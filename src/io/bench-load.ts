// Load benchmark: a checkpoint with the shapes of TNL-1B (D=2048, 16 layers, H=2048, glu 5632,
// vocab 64000, 16 heads, LRPE on layer 0, tied head: 1,020,266,496 params, ~2.04 GB in bf16),
// synthesised as bf16 safetensors, then read tensor by tensor as bf16 and converted to f32.
//
//   npx tsx src/io/bench-load.ts [workdir]     synthesise under workdir (default /tmp), measure the
//                                              load in a fresh child process, print JSON, delete it.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint, writeModelFolder } from './checkpoint.ts';
import { bf16ToF32Array } from './dtype.ts';
import type { TensorToWrite } from './safetensors.ts';

export const TNL_1B = { vocab: 64000, dim: 2048, layers: 16, heads: 16, hidden: 2048, glu: 5632 };

/** The 1B preset's state dict (tied: no lm_head.weight), in the reference's names. */
export function shapes1B(c = TNL_1B): { name: string; shape: number[] }[] {
  const out = [{ name: 'model.embed_tokens.weight', shape: [c.vocab, c.dim] }];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    out.push({ name: `${p}.token_mixer.qkvu_proj.weight`, shape: [4 * c.hidden, c.dim] });
    out.push({ name: `${p}.token_mixer.out_proj.weight`, shape: [c.dim, c.hidden] });
    if (l === 0) out.push({ name: `${p}.token_mixer.lrpe.theta`, shape: [c.heads, 1, c.dim / c.heads] });
    out.push({ name: `${p}.channel_mixer.l1.weight`, shape: [c.glu, c.dim] });
    out.push({ name: `${p}.channel_mixer.l2.weight`, shape: [c.glu, c.dim] });
    out.push({ name: `${p}.channel_mixer.l3.weight`, shape: [c.dim, c.glu] });
  }
  return out;
}

/** Write the 1B-shaped checkpoint as bf16 safetensors into `dir` (one tensor in memory at a time). */
export function synthesize1BCheckpoint(dir: string): { params: number; bytes: number; seconds: number } {
  const t0 = performance.now();
  let seed = 0x9e3779b9;
  let params = 0;
  const tensors: TensorToWrite[] = shapes1B().map(({ name, shape }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    params += n;
    return {
      name,
      dtype: 'BF16',
      shape,
      data: () => {
        // bf16 values of magnitude ~0.004–0.03 with random signs (xorshift32), produced when written
        const a = new Uint16Array(n);
        let s = seed;
        for (let i = 0; i < n; i++) {
          s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
          a[i] = (s & 0x8000) | 0x3b80 | ((s >>> 16) & 0x1ff);
        }
        seed = s >>> 0;
        return a;
      },
    };
  });
  const config = {
    vocab_size: TNL_1B.vocab, decoder_embed_dim: TNL_1B.dim, decoder_layers: TNL_1B.layers, decoder_attention_heads: TNL_1B.heads,
    hidden_dim: TNL_1B.hidden, glu_dim: TNL_1B.glu, linear_use_lrpe_list: [1, ...new Array(TNL_1B.layers - 1).fill(0)],
    linear_act_fun: 'swish', norm_type: 'simplermsnorm', no_scale_embedding: false, bias: false, torch_dtype: 'bfloat16',
    model_type: 'transnormer', architectures: ['TransnormerForCausalLM'],
  };
  writeModelFolder(dir, { config, tensors });
  return { params, bytes: statSync(join(dir, 'model.safetensors')).size, seconds: (performance.now() - t0) / 1000 };
}

export interface LoadBench {
  tensors: number;
  params: number;
  bytes: number;
  /** open + read every tensor as bf16 + convert each to f32, one at a time */
  seconds: number;
  readSeconds: number;
  convertSeconds: number;
  readGBps: number;
  rssBeforeMB: number;
  peakRssMB: number;
  largestTensorMB: number;
}

/** Read every tensor of the checkpoint in `dir` as bf16, convert it to f32, drop both, next.
 *  With `mode` 'f32', read each with readAs(name, 'f32') instead (the widen-in-place path). */
export async function benchLoad(dir: string, mode: 'bf16-then-f32' | 'f32' = 'bf16-then-f32'): Promise<LoadBench> {
  const rssBefore = process.memoryUsage().rss;
  const t0 = performance.now();
  const r = await openCheckpoint(dir);
  let readMs = 0, convMs = 0, params = 0, bytes = 0, largest = 0, check = 0;
  try {
    for (const name of r.names()) {
      const a = performance.now();
      let f: Float32Array;
      if (mode === 'f32') {
        f = r.readAs(name, 'f32').data;
        readMs += performance.now() - a;
        bytes += f.length * 2;
        largest = Math.max(largest, f.byteLength);
      } else {
        const bf = r.readAs(name, 'bf16');
        const b = performance.now();
        f = bf16ToF32Array(bf.data);
        readMs += b - a;
        convMs += performance.now() - b;
        bytes += bf.data.byteLength;
        largest = Math.max(largest, f.byteLength + bf.data.byteLength);
      }
      params += f.length;
      check += f[f.length - 1]!; // keep the work observable
    }
  } finally {
    r.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  if (!Number.isFinite(check)) throw new Error('non-finite weights read');
  return {
    tensors: r.names().length, params, bytes, seconds,
    readSeconds: readMs / 1000, convertSeconds: convMs / 1000, readGBps: bytes / 1e9 / (readMs / 1000),
    rssBeforeMB: rssBefore / 2 ** 20, peakRssMB: (process.resourceUsage().maxRSS * 1024) / 2 ** 20, largestTensorMB: largest / 2 ** 20,
  };
}

async function main(): Promise<void> {
  const [mode, arg] = process.argv.slice(2);
  if (mode === '--load' || mode === '--load-f32') {
    console.log(JSON.stringify(await benchLoad(arg!, mode === '--load' ? 'bf16-then-f32' : 'f32')));
    return;
  }
  const root = mode ?? tmpdir();
  mkdirSync(root, { recursive: true });
  const dir = join(root, `tnl-bench-1b-${process.pid}`);
  try {
    const synth = synthesize1BCheckpoint(dir);
    console.log(`synthesised ${synth.params.toLocaleString()} params, ${(synth.bytes / 1e9).toFixed(3)} GB in ${synth.seconds.toFixed(1)} s (peak RSS of the writer ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB)`);
    for (const flag of ['--load', '--load', '--load-f32', '--load-f32']) {
      // a fresh process, so its peak RSS is the load's alone
      const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), flag, dir], { encoding: 'utf8' });
      if (child.status !== 0) throw new Error(`load run failed: ${child.stderr}`);
      const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as LoadBench;
      const how = flag === '--load' ? "readAs('bf16') then bf16ToF32Array" : "readAs('f32')";
      console.log(`${how}: ${r.tensors} tensors, ${r.params.toLocaleString()} params: ${r.seconds.toFixed(2)} s total ` +
        `(read ${r.readSeconds.toFixed(2)} s = ${r.readGBps.toFixed(2)} GB/s of bf16, separate conversion ${r.convertSeconds.toFixed(2)} s), ` +
        `RSS ${r.rssBeforeMB.toFixed(0)} MB before, peak ${r.peakRssMB.toFixed(0)} MB (largest tensor bf16+f32 ${r.largestTensorMB.toFixed(0)} MB)`);
      console.log(JSON.stringify(r));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
