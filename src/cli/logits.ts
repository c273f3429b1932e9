// tnl logits: the model's logits for given token ids, written as safetensors (a debugging aid).
import type { Command } from 'commander';
import { backendFor, backendOption, blockOption, dtypeOption, int, readIdsInput, resolveModel, run } from './common.ts';
import { writeSafetensors } from '../io/safetensors.ts';
import { UsageError } from '../errors.ts';
import type { DType } from '../backends/backend.ts';

export function register(program: Command): void {
  program.command('logits')
    .description('write the logits for token ids: parallel form, or --prefill N then recurrent decode')
    .requiredOption('--model <dir>', 'model folder')
    .requiredOption('--input <file>', 'token ids: a safetensors file with integer input_ids [batch, n], or a JSON array of arrays')
    .requiredOption('--out <file>', 'output safetensors (tensor logits [batch, n, vocab] float32)')
    .option('--prefill <n>', 'block-prefill the first N positions, then decode the rest one token at a time')
    .addOption(backendOption()).addOption(dtypeOption()).addOption(blockOption())
    .action(run(async (o: { model: string; input: string; out: string; prefill?: string; backend: string; dtype: DType; blockSize: string }) => {
      const be = backendFor(o.backend);
      const model = await resolveModel(o.model, be, o.dtype, int('--block-size', o.blockSize, 1));
      const { ids, batch: B, n: N } = readIdsInput(o.input);
      const V = model.config.vocab_size;
      let logits: Float32Array;
      if (o.prefill === undefined) {
        logits = be.download(model.forward(ids, B, N));
      } else {
        const P = int('--prefill', o.prefill, 1);
        if (P > N) throw new UsageError(`--prefill ${P} is longer than the input (${N} tokens)`);
        logits = new Float32Array(B * N * V);
        const state = model.newState(B);
        const pre = new Int32Array(B * P);
        for (let b = 0; b < B; b++) pre.set(ids.subarray(b * N, b * N + P), b * P);
        const lp = be.download(model.prefill(pre, B, P, state, { allLogits: true }));
        for (let b = 0; b < B; b++) logits.set(lp.subarray(b * P * V, (b + 1) * P * V), b * N * V);
        for (let t = P; t < N; t++) {
          const step = Int32Array.from({ length: B }, (_, b) => ids[b * N + t]!);
          const l = be.download(model.decode(step, state));
          for (let b = 0; b < B; b++) logits.set(l.subarray(b * V, (b + 1) * V), (b * N + t) * V);
        }
      }
      writeSafetensors(o.out, [{ name: 'logits', dtype: 'F32', shape: [B, N, V], data: logits }], { source: 'tnl logits', prefill: String(o.prefill ?? 0) });
      process.stderr.write(`tnl: wrote logits [${B}, ${N}, ${V}] to ${o.out}\n`);
    }));
}
