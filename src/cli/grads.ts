// tnl grads: loss and d loss / d parameter for token ids, under the reference's names.
import type { Command } from 'commander';
import { backendFor, backendOption, blockOption, int, readIdsInput, resolveModel, run } from './common.ts';
import { writeSafetensors } from '../io/safetensors.ts';
import { exportParams } from '../model/params.ts';

export function register(program: Command): void {
  program.command('grads')
    .description('write loss and grad.<name> for every parameter (a tied head\'s gradient appears once, under the embedding)')
    .requiredOption('--model <dir>', 'model folder')
    .requiredOption('--input <file>', 'token ids: safetensors with integer input_ids [batch, n], or a JSON array of arrays')
    .requiredOption('--out <file>', 'output safetensors')
    .addOption(backendOption()).addOption(blockOption())
    .action(run(async (o: { model: string; input: string; out: string; backend: string; blockSize: string }) => {
      const be = backendFor(o.backend);
      const model = await resolveModel(o.model, be, 'f32', int('--block-size', o.blockSize, 1));
      const { ids, batch, n } = readIdsInput(o.input);
      const g = model.allocGrads();
      const { loss } = model.lossAndGrads(ids, batch, n, g);
      const tensors = [
        { name: 'loss', dtype: 'F32' as const, shape: [1], data: Float32Array.of(loss) },
        ...exportParams(be, g, model.config).map((t) => ({ name: `grad.${t.name}`, dtype: 'F32' as const, shape: t.shape, data: t.data })),
      ];
      writeSafetensors(o.out, tensors, { source: 'tnl grads' });
      process.stderr.write(`tnl: loss ${loss.toFixed(6)}; wrote ${tensors.length - 1} gradients to ${o.out}\n`);
    }));
}
