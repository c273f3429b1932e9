// tnl tokenize: text → token ids (a JSON array), or ids → text with --decode; --jsonl for one
// item per line. The tokenizer comes from a model folder (--model) or a file (--tokenizer).
import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { UsageError } from '../errors.ts';
import { loadTokenizer, type Tokenizer } from '../tokenizer/index.ts';

export interface TokenizeOptions {
  model?: string;
  tokenizer?: string;
  text?: string;
  jsonl?: boolean;
  decode?: boolean;
  /** undefined: the tokenizer's default (tokenizer_config.json). */
  bos?: boolean;
  eos?: boolean;
  /** false: special-token text such as "</s>" stays plain text. */
  parseSpecial?: boolean;
  skipSpecial?: boolean;
  pieces?: boolean;
}

export function register(program: Command): void {
  program
    .command('tokenize')
    .description('encode text to token ids (a JSON array), or decode ids to text with --decode')
    .option('--model <dir>', 'model folder with tokenizer.model or tokenizer.json (+ tokenizer_config.json)')
    .option('--tokenizer <file>', 'a tokenizer.model or tokenizer.json file (or a folder)')
    .option('--text <text>', 'the input (default: standard input, read as is, trailing newline included)')
    .option('--jsonl', 'one JSON string per input line → one JSON array of ids per output line (with --decode: arrays in, JSON strings out)')
    .option('--decode', 'decode: a JSON array of ids in, text out')
    .option('--bos', 'prepend the bos token (overrides tokenizer_config.json)')
    .option('--no-bos', 'do not prepend the bos token')
    .option('--eos', 'append the eos token (overrides tokenizer_config.json)')
    .option('--no-eos', 'do not append the eos token')
    .option('--no-parse-special', 'treat special-token text such as "</s>" in the input as plain text')
    .option('--skip-special', 'with --decode: leave special tokens out of the text')
    .option('--pieces', 'print the token strings instead of ids')
    .action(async (o: TokenizeOptions) => {
      await runTokenize(o, { stdin: process.stdin, stdout: process.stdout });
    });
}

/** The command's work, with its streams passed in (for tests). */
export async function runTokenize(o: TokenizeOptions, io: { stdin: Readable; stdout: Writable }): Promise<void> {
  if (o.model && o.tokenizer) throw new UsageError('give either --model or --tokenizer, not both');
  const src = o.model ?? o.tokenizer;
  if (!src) throw new UsageError('say which tokenizer: --model DIR or --tokenizer FILE');
  if (o.decode && (o.bos !== undefined || o.eos !== undefined)) throw new UsageError('--bos/--eos apply to encoding, not to --decode');
  if (!o.decode && o.skipSpecial) throw new UsageError('--skip-special applies to --decode only');
  const tok = loadTokenizer(src);
  const out = new LineWriter(io.stdout);
  if (o.jsonl) {
    const lines = o.text !== undefined ? o.text.split('\n') : createInterface({ input: io.stdin, crlfDelay: Infinity });
    let n = 0;
    for await (const line of lines) {
      n++;
      if (line.trim() === '') continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (e) {
        throw new UsageError(`input line ${n}: not valid JSON (${(e as Error).message})`);
      }
      if (o.decode) {
        const r = decodeIds(tok, v, o, `input line ${n}`);
        await out.write((o.pieces ? r : JSON.stringify(r)) + '\n');
      }
      else {
        if (typeof v !== 'string') throw new UsageError(`input line ${n}: expected a JSON string, got ${typeof v === 'object' ? JSON.stringify(v)?.slice(0, 40) : typeof v}`);
        await out.write(encodeText(tok, v, o) + '\n');
      }
    }
    return;
  }
  const input = o.text !== undefined ? o.text : await readAll(io.stdin);
  if (o.decode) {
    let v: unknown;
    try {
      v = JSON.parse(input);
    } catch (e) {
      throw new UsageError(`--decode expects a JSON array of token ids (${(e as Error).message})`);
    }
    await out.write(decodeIds(tok, v, o, 'input') + '\n');
  } else {
    await out.write(encodeText(tok, input, o) + '\n');
  }
}

function encodeText(tok: Tokenizer, text: string, o: TokenizeOptions): string {
  const ids = tok.encode(text, { addBos: o.bos, addEos: o.eos, parseSpecial: o.parseSpecial !== false });
  return JSON.stringify(o.pieces ? ids.map((id) => tok.idToPiece(id)) : ids);
}

function decodeIds(tok: Tokenizer, v: unknown, o: TokenizeOptions, where: string): string {
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x) && x >= 0))
    throw new UsageError(`${where}: expected a JSON array of non-negative integer token ids`);
  for (const id of v as number[])
    if (id >= tok.vocabSize) throw new UsageError(`${where}: token id ${id} is out of range (vocabulary of ${tok.vocabSize})`);
  if (o.pieces) return JSON.stringify((v as number[]).map((id) => tok.idToPiece(id)));
  return tok.decode(v as number[], { skipSpecial: o.skipSpecial === true });
}

async function readAll(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(chunks).toString('utf8');
}

/** Writes honouring back-pressure. */
class LineWriter {
  constructor(private readonly s: Writable) {}
  write(text: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const ok = this.s.write(text, (err) => (err ? reject(err) : undefined));
      if (ok) resolve();
      else this.s.once('drain', resolve);
    });
  }
}
