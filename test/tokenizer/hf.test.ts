import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError } from '../../src/errors.ts';
import { HfTokenizer, StreamDecoder, loadTokenizer } from '../../src/tokenizer/index.ts';
import { translateRegex } from '../../src/tokenizer/hf.ts';
import { SKIP_NO_FIXTURE, charsmapAtoLower, expected, gpt2ByteChars, modelBytes, randomText, readPieces, rng, tmp } from './helpers.ts';


/** A small GPT-2-style tokenizer.json: byte b has id b, then eight merges and an added token. */
function tinyGpt2(extra: object[] = []): Record<string, unknown> {
  const chars = gpt2ByteChars();
  const vocab: Record<string, number> = {};
  chars.forEach((c, b) => (vocab[c] = b));
  const merges = ['Ġ t', 'h e', 'Ġt he', 'Ġ w', 'o r', 'Ġw or', 'l d', 'Ġwor ld'];
  let id = 256;
  for (const m of merges) vocab[m.replace(' ', '')] = id++;
  const bl = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    added_tokens: [{ id: 264, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }, ...extra],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', ...bl },
    post_processor: { type: 'ByteLevel', ...bl },
    decoder: { type: 'ByteLevel', ...bl },
    model: { type: 'BPE', dropout: null, unk_token: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}

function writeJson(o: unknown, name = 'tokenizer.json'): string {
  const dir = tmp();
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(o));
  return p;
}

test('byte-level BPE (GPT-2 family): merges by rank, added tokens, ByteLevel decoder', () => {
  const tok = loadTokenizer(writeJson(tinyGpt2()));
  // "the" → t + he (no "t he" merge); " world" → Ġworld; " the" → Ġthe (worked by hand).
  const ids = tok.encode('the world<|endoftext|> the');
  assert.deepEqual(ids, [116, 257, 263, 264, 258]);
  assert.equal(tok.decode(ids), 'the world<|endoftext|> the');
  assert.equal(tok.decode(ids, { skipSpecial: true }), 'the world the');
  assert.deepEqual(tok.encode('é'), [0xc3, 0xa9]);
  assert.deepEqual(tok.encode('a\n\n b'), [97, 10, 10, 32, 98]);
  assert.equal(tok.vocabSize, 265);
  assert.equal(tok.addBos, false);
  assert.equal(tok.idToPiece(263), 'Ġworld');
  const r = rng(7);
  for (let i = 0; i < 200; i++) {
    const s = randomText(r);
    const e = tok.encode(s);
    assert.equal(tok.decode(e), s);
    const sd = new StreamDecoder(tok);
    let out = '';
    for (const id of e) out += sd.push(id);
    assert.equal(out + sd.flush(), s);
  }
});

test('added tokens: lstrip / rstrip swallow whitespace, single_word needs word boundaries', () => {
  const tok = new HfTokenizer(tinyGpt2([
    { id: 265, content: '<mask>', single_word: false, lstrip: true, rstrip: false, normalized: false, special: true },
    { id: 266, content: 'ok', single_word: true, lstrip: false, rstrip: true, normalized: false, special: false },
  ]), 'test');
  assert.deepEqual(tok.encode('a <mask> b'), [97, 265, 32, 98]);
  assert.deepEqual(tok.encode('ok  b'), [266, 98]);
  assert.deepEqual(tok.encode('book'), [98, 111, 111, 107], '"ok" inside a word is not the added token');
  assert.deepEqual(tok.encode('a <mask> b', { parseSpecial: false }).includes(265), false);
});

/**
 * A Llama-style tokenizer.json made from the SentencePiece fixture the way transformers'
 * converter does (SentencePieceExtractor: every split of a piece into two pieces is a merge,
 * ordered by the merged piece's id, then by the parts' ids).
 */
function llamaJson(variant: 'replace' | 'metaspace'): Record<string, unknown> {
  const pieces = readPieces(modelBytes());
  const vocab: Record<string, number> = {};
  pieces.forEach((p, i) => (vocab[p.piece] = i));
  const merges: [string, string][] = [];
  pieces.forEach((p) => {
    const local: [string, string][] = [];
    const chars = Array.from(p.piece);
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join(''), r = chars.slice(k).join('');
      if (l in vocab && r in vocab) local.push([l, r]);
    }
    local.sort((x, y) => vocab[x[0]]! - vocab[y[0]]! || vocab[x[1]]! - vocab[y[1]]!);
    merges.push(...local);
  });
  const added = pieces.map((p, id) => ({ p, id })).filter(({ p }) => p.type === 2 || p.type === 3)
    .map(({ p, id }) => ({ id, content: p.piece, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  const replace = (from: string, to: string) => ({ type: 'Replace', pattern: { String: from }, content: to });
  return {
    version: '1.0',
    added_tokens: added,
    normalizer: variant === 'replace' ? { type: 'Sequence', normalizers: [replace(' ', '▁')] } : null,
    pre_tokenizer: variant === 'metaspace' ? { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: true } : null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: variant === 'replace'
      ? { type: 'Sequence', decoders: [replace('▁', ' '), { type: 'ByteFallback' }, { type: 'Fuse' }] }
      : { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: true }] },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: merges.map((m) => [...m]),
    },
  };
}

for (const variant of ['replace', 'metaspace'] as const) {
  test(`SentencePiece-style BPE tokenizer.json (${variant}) reproduces the SentencePiece fixture`, { skip: SKIP_NO_FIXTURE }, () => {
    const exp = expected();
    const tok = loadTokenizer(writeJson(llamaJson(variant)));
    assert.equal(tok.addBos, true, 'the template puts <s> first');
    assert.equal(tok.bosId, 1);
    for (const c of exp.cases) {
      assert.deepEqual(tok.encode(c.text, { addBos: false }), c.ids, `ids of ${JSON.stringify(c.text)}`);
      assert.equal(tok.decode(c.ids), c.decoded, `decode of ${JSON.stringify(c.text)}`);
    }
    assert.deepEqual(tok.encode('a'), [1, ...exp.cases.find((c) => c.text === 'a')!.ids]);
    // HF's ByteFallback decoder: an invalid byte run becomes one U+FFFD per byte.
    assert.equal(tok.decode([4 + 0xe4, 4 + 0xb8]), '\uFFFD\uFFFD');
    const r = rng(11);
    for (let i = 0; i < 100; i++) {
      const s = randomText(r);
      const ids = tok.encode(s, { addBos: false });
      assert.equal(tok.decode(ids), s);
      const sd = new StreamDecoder(tok);
      let out = '';
      for (const id of ids) out += sd.push(id);
      assert.equal(out + sd.flush(), s);
    }
  });
}

test('Metaspace with prepend_scheme "first" and the Strip decoder (Llama 2 layout)', { skip: SKIP_NO_FIXTURE }, () => {
  const j = llamaJson('metaspace');
  j.pre_tokenizer = { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false };
  j.decoder = { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] };
  const tok = new HfTokenizer(j, 'llama2-style');
  const orig = loadTokenizer(writeJson(llamaJson('replace')));
  // "▁" is prepended to the text's first segment only, not after an added token.
  assert.deepEqual(tok.encode('the jury', { addBos: false }), orig.encode(' the jury', { addBos: false }));
  assert.deepEqual(tok.encode('</s>the', { addBos: false }), [2, ...orig.encode('the', { addBos: false })]);
  const ids = tok.encode('the jury said', { addBos: true });
  assert.equal(tok.decode(ids, { skipSpecial: true }), 'the jury said');
  const sd = new StreamDecoder(tok, { skipSpecial: true });
  let out = '';
  for (const id of ids) out += sd.push(id);
  assert.equal(out + sd.flush(), 'the jury said');
});

test('normalizers: Precompiled charsmap, NFKC, Lowercase, Prepend in a Sequence', () => {
  const j = tinyGpt2();
  j.normalizer = { type: 'Sequence', normalizers: [
    { type: 'Precompiled', precompiled_charsmap: Buffer.from(charsmapAtoLower()).toString('base64') },
    { type: 'NFKC' }, { type: 'Prepend', prepend: '#' },
  ] };
  const tok = new HfTokenizer(j, 'normalizers');
  // "A" → "a" by the charsmap rule, "ﬁ" → "fi" by NFKC, then "#" in front.
  assert.deepEqual(tok.encode('Aﬁ'), [...Buffer.from('#afi')]);
  j.normalizer = { type: 'Lowercase' };
  assert.deepEqual(new HfTokenizer(j, 'lower').encode('AbC'), [...Buffer.from('abc')]);
});

test('regex translation: (?i:…) groups, possessive quantifiers, the Llama 3 pattern', () => {
  const re = new RegExp(translateRegex("(?i:'s|'t|'re)"), 'gu');
  assert.deepEqual("IT'S 'T 'Re".match(re), ["'S", "'T", "'Re"]);
  assert.equal(translateRegex('a++b'), 'a+b');
  assert.equal(translateRegex('a+?b'), 'a+?b');
  assert.equal(translateRegex('[\\-\\"]'), '[\\-"]');
  const llama3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const l3 = new RegExp(translateRegex(llama3), 'gu');
  assert.deepEqual('Hello world 12345'.match(l3), ['Hello', ' world', ' ', '123', '45']);
  assert.deepEqual("I'LL go!!\n\nok".match(l3), ['I', "'LL", ' go', '!!\n\n', 'ok']);
});

test('malformed tokenizer.json gives a FormatError naming the file', () => {
  const good = tinyGpt2();
  const bad: [string, unknown][] = [
    ['no model', { version: '1.0' }],
    ['vocab id not an integer', { ...good, model: { ...(good.model as object), vocab: { a: 'x' } } }],
    ['merge of unknown tokens', { ...good, model: { ...(good.model as object), merges: ['q z'] } }],
    ['merge result missing', { ...good, model: { ...(good.model as object), merges: ['a b'] } }],
    ['merge not a pair', { ...good, model: { ...(good.model as object), merges: ['a b c'] } }],
    ['WordPiece model', { ...good, model: { type: 'WordPiece', vocab: {} } }],
    ['unknown pre-tokenizer', { ...good, pre_tokenizer: { type: 'Frobnicate' } }],
    ['unknown decoder', { ...good, decoder: { type: 'CTC' } }],
    ['added token clash', { ...good, added_tokens: [{ id: 97, content: 'zz', special: true }] }],
    ['an array', [1, 2, 3]],
  ];
  for (const [what, j] of bad) {
    const p = writeJson(j);
    assert.throws(() => loadTokenizer(p), (e: unknown) => e instanceof FormatError && e.message.includes(p), what);
  }
  const dir = tmp();
  const p = join(dir, 'tokenizer.json');
  writeFileSync(p, '{"model": {"type": "BPE", "vocab": {');
  assert.throws(() => loadTokenizer(p), (e: unknown) => e instanceof FormatError && e.message.includes(p), 'truncated JSON');
  assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof FormatError && e.message.includes(p), 'by folder');
  const d2 = tmp();
  mkdirSync(join(d2, 'x'));
  writeFileSync(join(d2, 'tokenizer.json'), JSON.stringify(good));
  writeFileSync(join(d2, 'tokenizer_config.json'), '{"add_bos_token": "yes"}');
  assert.throws(() => loadTokenizer(d2), (e: unknown) => e instanceof FormatError && e.message.includes('tokenizer_config.json'));
});
