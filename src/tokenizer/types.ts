// The common tokenizer interface. SentencePiece (tokenizer.model) and Hugging Face
// (tokenizer.json) tokenizers both implement it; loadTokenizer() in index.ts picks one.

export interface EncodeOptions {
  /** Prepend the bos id. Default: the tokenizer's `addBos` (from tokenizer_config.json). */
  addBos?: boolean;
  /** Append the eos id. Default: the tokenizer's `addEos`. */
  addEos?: boolean;
  /**
   * Match special/added tokens written literally in the text (e.g. "</s>") and map them to their
   * ids before running the model, as Hugging Face tokenizers do. Default true. Set false for
   * untrusted text where "</s>" must stay four ordinary characters.
   */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Leave special tokens (bos/eos/pad/unk/control/special added tokens) out of the text. Default false. */
  skipSpecial?: boolean;
}

export interface Tokenizer {
  /** Number of ids (max id + 1), including added tokens. */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  /** Defaults for encode(), from tokenizer_config.json when loaded from a folder. */
  readonly addBos: boolean;
  readonly addEos: boolean;
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /**
   * Decode ids that follow earlier ids whose text was non-empty: like decode(), but without the
   * start-of-text rules (SentencePiece's dummy-prefix space removal, Metaspace's first-token rule).
   * Used by StreamDecoder to decode a window instead of the whole sequence.
   */
  decodeContinuation?(ids: readonly number[], opts?: DecodeOptions): string;
  idToPiece(id: number): string;
  /** The id of a piece/token string, or null when it is not in the vocabulary. */
  pieceToId(piece: string): number | null;
  /** True for ids that decode() leaves out with skipSpecial. */
  isSpecial(id: number): boolean;
  /** Write the files that loadTokenizer(dir) reads back (atomic writes). */
  save(dir: string): void;
}
