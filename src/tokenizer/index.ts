// Tokenizers: SentencePiece tokenizer.model (exact BPE), Hugging Face tokenizer.json (BPE
// families), byte-level BPE training, streaming detokenization. loadTokenizer() reads a model
// folder the way transformers does: the tokenizer file plus tokenizer_config.json and
// special_tokens_map.json.
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { FormatError, UsageError } from '../errors.ts';
import { emptySideConfig, readJsonObject, readSideConfig } from './config.ts';
import { HF_TOKENIZER_FILE, HfTokenizer } from './hf.ts';
import { SPM_MODEL_FILE, SentencePieceTokenizer } from './sentencepiece.ts';
import type { Tokenizer } from './types.ts';

export type { DecodeOptions, EncodeOptions, Tokenizer } from './types.ts';
export { StreamDecoder } from './stream.ts';
export { SentencePieceTokenizer, SentencePieceProcessor, parseModelProto, SPM_MODEL_FILE } from './sentencepiece.ts';
export { HfTokenizer, HF_TOKENIZER_FILE, byteLevelBpeJson } from './hf.ts';
export { trainBpe, DEFAULT_SPECIAL_TOKENS, type TrainBpeOptions } from './train-bpe.ts';

/** Whether a folder holds a tokenizer loadTokenizer() can read. */
export function hasTokenizer(dir: string): boolean {
  return existsSync(join(dir, SPM_MODEL_FILE)) || existsSync(join(dir, HF_TOKENIZER_FILE));
}

/**
 * Load a tokenizer from a model folder (tokenizer.model preferred — our SentencePiece encoder is
 * exact — else tokenizer.json, with tokenizer_config.json / special_tokens_map.json), or from a
 * single tokenizer.model / tokenizer.json file (its folder's config files are read too when the
 * file has its standard name).
 */
export function loadTokenizer(dirOrFile: string): Tokenizer {
  let st;
  try {
    st = statSync(dirOrFile);
  } catch {
    throw new UsageError(`${dirOrFile}: no such tokenizer file or folder`);
  }
  if (st.isDirectory()) {
    const side = readSideConfig(dirOrFile);
    const spm = join(dirOrFile, SPM_MODEL_FILE);
    if (existsSync(spm)) return SentencePieceTokenizer.fromFile(spm, side);
    const hf = join(dirOrFile, HF_TOKENIZER_FILE);
    if (existsSync(hf)) return HfTokenizer.fromFile(hf, side);
    throw new UsageError(`${dirOrFile}: no ${SPM_MODEL_FILE} or ${HF_TOKENIZER_FILE} in this folder`);
  }
  const name = basename(dirOrFile);
  const side = name === SPM_MODEL_FILE || name === HF_TOKENIZER_FILE ? readSideConfig(dirname(dirOrFile)) : emptySideConfig();
  if (name.endsWith('.json')) {
    return HfTokenizer.fromFile(dirOrFile, side);
  }
  if (name.endsWith('.model')) return SentencePieceTokenizer.fromFile(dirOrFile, side);
  // Unknown extension: JSON if it parses as an object with a model, else a SentencePiece model.
  try {
    const o = readJsonObject(dirOrFile);
    if ('model' in o) return HfTokenizer.fromFile(dirOrFile, side);
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
  }
  return SentencePieceTokenizer.fromFile(dirOrFile, side);
}
export { benchTokenizer, brownTexts, type TokenizerBenchRow } from './bench.ts';
