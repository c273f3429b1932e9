// tnl convert: between the Hugging Face layout of the released checkpoints and this project's folder.
import type { Command } from 'commander';
import { Option } from 'commander';
import { run } from './common.ts';
import { convertModelFolder } from '../io/convert.ts';
import { UsageError } from '../errors.ts';

export function register(program: Command): void {
  program.command('convert')
    .description('convert a model folder losslessly: to safetensors (this project) or back to pytorch_model.bin (the released layout)')
    .argument('<from>', 'model folder (config.json + weights in any supported layout)')
    .argument('<to>', 'output folder (replaced as a whole, atomically)')
    .addOption(new Option('--format <f>', 'output weights').choices(['safetensors', 'bin']).default('safetensors'))
    .addOption(new Option('--dtype <d>', 'float dtype of the output').choices(['keep', 'f32', 'bf16', 'f16']).default('keep'))
    .option('--shard-size <GB>', 'shard safetensors above this size (GB)')
    .action(run(async (from: string, to: string, o: { format: 'safetensors' | 'bin'; dtype: 'keep' | 'f32' | 'bf16' | 'f16'; shardSize?: string }) => {
      let shardBytes: number | undefined;
      if (o.shardSize !== undefined) {
        shardBytes = Number(o.shardSize) * 1e9;
        if (!(shardBytes > 0)) throw new UsageError(`--shard-size must be a positive number of GB, got ${o.shardSize}`);
      }
      const t0 = performance.now();
      const r = await convertModelFolder(from, to, { format: o.format, dtype: o.dtype, shardBytes });
      process.stderr.write(`tnl: wrote ${r.tensors} tensors as ${r.format} to ${to} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    }));
}
