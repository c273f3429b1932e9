// Shared by the data tests: a byte-level encoder and temporary folders.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { TextEncoder } from '../../src/data/shards.ts';

/** UTF-8 bytes as token ids 0…255, EOS = 256 (vocabulary 257). */
export class ByteEncoder implements TextEncoder {
  readonly eosId: number | null = 256;
  readonly vocabSize: number = 257;
  encode(text: string): number[] {
    return Array.from(Buffer.from(text, 'utf8'));
  }
}

/** A fresh temporary folder, removed when the test file ends. */
export function tempDir(prefix = 'tnl-data-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

export async function collect<T>(it: Iterable<T> | AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it as AsyncIterable<T>) out.push(x);
  return out;
}
