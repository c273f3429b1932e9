import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Command } from 'commander';
import { UsageError } from '../../src/errors.ts';
import { register, runTokenize, type TokenizeOptions } from '../../src/cli/tokenize.ts';
import { SKIP_NO_FIXTURE, SPM_DIR, expected, tmp } from './helpers.ts';

async function run(o: TokenizeOptions, input = ''): Promise<string> {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const chunks: Buffer[] = [];
  stdout.on('data', (c: Buffer) => chunks.push(c));
  stdin.end(input);
  await runTokenize(o, { stdin, stdout });
  return Buffer.concat(chunks).toString('utf8');
}

function modelDir(cfg?: object): string {
  const d = tmp();
  copyFileSync(join(SPM_DIR!, 'tokenizer.model'), join(d, 'tokenizer.model'));
  if (cfg) writeFileSync(join(d, 'tokenizer_config.json'), JSON.stringify(cfg));
  return d;
}

test('tnl tokenize: encode and decode, plain and --jsonl', { skip: SKIP_NO_FIXTURE }, async () => {
  const exp = expected();
  const dir = modelDir({ add_bos_token: false });
  const c = exp.cases[1]!;
  assert.equal(await run({ model: dir, text: c.text }), JSON.stringify(c.ids) + '\n');
  assert.equal(await run({ model: dir }, c.text), JSON.stringify(c.ids) + '\n', 'text from stdin');
  assert.equal(await run({ model: dir, text: c.text, bos: true, eos: true }), JSON.stringify([1, ...c.ids, 2]) + '\n');
  assert.equal(await run({ tokenizer: join(dir, 'tokenizer.model'), text: 'a' }), JSON.stringify(exp.cases.find((x) => x.text === 'a')!.ids) + '\n', 'add_bos_token false read beside the file');
  assert.equal(await run({ model: dir, text: c.text, pieces: true }), JSON.stringify(c.pieces) + '\n');
  assert.equal(await run({ model: dir, decode: true, text: JSON.stringify(c.ids) }), c.decoded + '\n');
  assert.equal(await run({ model: dir, decode: true, skipSpecial: true }, JSON.stringify([1, ...c.ids, 2])), c.decoded + '\n');

  const lines = exp.cases.map((x) => JSON.stringify(x.text)).join('\n') + '\n';
  const out = await run({ model: dir, jsonl: true }, lines);
  assert.deepEqual(out.trimEnd().split('\n').map((l) => JSON.parse(l)), exp.cases.map((x) => x.ids));
  const back = await run({ model: dir, jsonl: true, decode: true }, exp.cases.map((x) => JSON.stringify(x.ids)).join('\n'));
  assert.deepEqual(back.trimEnd().split('\n').map((l) => JSON.parse(l)), exp.cases.map((x) => x.decoded));
});

test('tnl tokenize: mistakes are one-line UsageErrors', { skip: SKIP_NO_FIXTURE }, async () => {
  const dir = modelDir();
  const rejects = (o: TokenizeOptions, input: string, re: RegExp) =>
    assert.rejects(run(o, input), (e: unknown) => e instanceof UsageError && re.test(e.message) && !e.message.includes('\n'));
  await rejects({ text: 'x' }, '', /--model DIR or --tokenizer FILE/);
  await rejects({ model: dir, tokenizer: dir, text: 'x' }, '', /not both/);
  await rejects({ model: dir, jsonl: true }, '"ok"\nnot json\n', /line 2/);
  await rejects({ model: dir, jsonl: true }, '[1,2]\n', /line 1: expected a JSON string/);
  await rejects({ model: dir, decode: true }, '[1, "x"]', /array of non-negative integer/);
  await rejects({ model: dir, decode: true }, '[1, 99999]', /out of range/);
  await rejects({ model: dir, decode: true }, 'hello', /JSON array/);
  await rejects({ model: dir, decode: true, bos: true }, '[1]', /--bos/);
  await rejects({ model: join(dir, 'nope') }, 'x', /no such tokenizer/);
});

test('register adds a "tokenize" command with its flags', () => {
  const program = new Command('tnl');
  register(program);
  const cmd = program.commands.find((c) => c.name() === 'tokenize');
  assert.ok(cmd);
  const flags = cmd.options.map((o) => o.long);
  for (const f of ['--model', '--tokenizer', '--text', '--jsonl', '--decode', '--bos', '--no-bos', '--eos', '--no-eos']) assert.ok(flags.includes(f), f);
});
