import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildShards, openShards, valPicks, type ShardProgress, type TextEncoder } from '../../src/data/shards.ts';
import { FormatError, UsageError } from '../../src/errors.ts';
import { ByteEncoder, tempDir } from './helpers.ts';

// 250 documents of varied length (some multi-byte), written out here.
const DOCS = Array.from({ length: 250 }, (_, i) => `doc ${i}: ` + 'abcé'.repeat((i * 7) % 23) + (i % 5 === 0 ? ' ✓' : ''));
const bytesOf = (s: string) => Array.from(Buffer.from(s, 'utf8'));
/** The stream a split must hold: each document's bytes, then 256 (EOS). */
const streamOf = (docs: string[]) => docs.flatMap((d) => [...bytesOf(d), 256]);

async function* asAsync(docs: string[]) {
  for (const d of docs) yield d;
}

test('round trip: tokens written = tokens read, EOS after each document, split by document', async () => {
  const dir = tempDir();
  const events: ShardProgress[] = [];
  const index = await buildShards({
    documents: asAsync(DOCS),
    encoder: new ByteEncoder(),
    outDir: dir,
    shardTokens: 1000, // several shards; documents cross shard boundaries
    valFraction: 0.1,
    seed: 7,
    totalDocuments: DOCS.length,
    onProgress: (p) => events.push(p),
    progressIntervalMs: 0,
  });
  assert.equal(index.dtype, 'uint16');
  assert.equal(index.documents, 250);
  assert.equal(index.eosId, 256);
  // 0.1 of each block of 100 documents: 10 + 10 + 5.
  assert.equal(index.valDocuments.length, 25);
  const valSet = new Set(index.valDocuments);
  const trainDocs = DOCS.filter((_, i) => !valSet.has(i));
  const valDocs = DOCS.filter((_, i) => valSet.has(i));
  assert.equal(index.splits.train.documents, 225);
  assert.equal(index.splits.val.documents, 25);
  assert.equal(index.textBytes, DOCS.reduce((s, d) => s + Buffer.byteLength(d), 0));

  const set = openShards(dir);
  const train = set.split('train').readAll();
  const val = set.split('val').readAll();
  assert.deepEqual(Array.from(train), streamOf(trainDocs));
  assert.deepEqual(Array.from(val), streamOf(valDocs));
  assert.ok(index.splits.train.shards.length >= 3, `${index.splits.train.shards.length} shards`);
  for (const s of index.splits.train.shards.slice(0, -1)) assert.equal(s.tokens, 1000);
  for (const s of [...index.splits.train.shards, ...index.splits.val.shards]) assert.equal(statSync(join(dir, s.file)).size, 2 * s.tokens);
  // EOS count = documents.
  assert.equal(train.filter((t) => t === 256).length, 225);

  // A read across a shard boundary.
  const out = new Int32Array(12);
  set.split('train').read(995, 10, out, 2);
  assert.deepEqual(Array.from(out.subarray(2)), streamOf(trainDocs).slice(995, 1005));
  assert.throws(() => set.split('train').read(train.length - 5, 10, new Int32Array(10)), RangeError);

  // Progress: counts rise to the totals, with an ETA while running.
  const last = events[events.length - 1];
  assert.equal(last.done, true);
  assert.equal(last.documents, 250);
  assert.equal(last.tokens, train.length + val.length);
  assert.equal(last.bytes, index.textBytes);
  assert.ok(events.some((e) => !e.done && e.etaSeconds !== undefined && e.totalDocuments === 250));
  assert.ok(last.docsPerSec > 0 && last.mbPerSec > 0);
  // Nothing temporary left behind.
  assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('.')), []);
});

test('val split: deterministic by seed, disjoint, exact per block', async () => {
  const build = async (seed: number, dir = tempDir()) =>
    (await buildShards({ documents: DOCS, encoder: new ByteEncoder(), outDir: dir, valFraction: 0.2, seed })).valDocuments;
  const a = await build(1);
  const b = await build(1);
  const c = await build(2);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.equal(a.length, 50); // 20 + 20 + 10
  assert.equal(new Set(a).size, a.length);
  assert.ok(a.every((i) => Number.isInteger(i) && i >= 0 && i < 250));
  assert.equal(a.filter((i) => i < 100).length, 20);
  assert.equal(a.filter((i) => i >= 200).length, 10);
  // The pick of a block depends on (seed, block) only.
  assert.deepEqual(valPicks(5, 3, 100, 0.1), valPicks(5, 3, 100, 0.1));
  assert.notDeepEqual(valPicks(5, 3, 100, 0.1), valPicks(5, 4, 100, 0.1));
  // A small corpus still gets one val document, and keeps one for training.
  const dir = tempDir();
  const small = await buildShards({ documents: ['a', 'b', 'c'], encoder: new ByteEncoder(), outDir: dir, valFraction: 0.05 });
  assert.equal(small.valDocuments.length, 1);
  const one = await buildShards({ documents: ['only'], encoder: new ByteEncoder(), outDir: tempDir(), valFraction: 0.5 });
  assert.deepEqual(one.valDocuments, []);
  assert.equal(one.splits.train.documents, 1);
  const noneDir = tempDir();
  const none = await buildShards({ documents: DOCS, encoder: new ByteEncoder(), outDir: noneDir, valFraction: 0 });
  assert.deepEqual(none.valDocuments, []);
  assert.equal(none.splits.val.tokens, 0);
  assert.equal(openShards(noneDir).split('val').tokens, 0);
  assert.equal(openShards(noneDir).split('val').readAll().length, 0);
});

test('uint32 shards for a vocabulary above 65536', async () => {
  const wide: TextEncoder = { eosId: 70_000, vocabSize: 70_001, encode: (t) => bytesOf(t).map((b) => 65_000 + b) };
  const dir = tempDir();
  const index = await buildShards({ documents: ['hi', 'there'], encoder: wide, outDir: dir, valFraction: 0 });
  assert.equal(index.dtype, 'uint32');
  assert.deepEqual(Array.from(openShards(dir).split('train').readAll()), [65_104, 65_105, 70_000, 65_116, 65_104, 65_101, 65_114, 65_101, 70_000]);
  assert.equal(statSync(join(dir, index.splits.train.shards[0].file)).size, 9 * 4);
});

test('bad encoders and bad folders are refused clearly', async () => {
  const noEos: TextEncoder = { eosId: null, vocabSize: 257, encode: bytesOf };
  await assert.rejects(buildShards({ documents: ['x'], encoder: noEos, outDir: tempDir() }), UsageError);
  const outOfRange: TextEncoder = { eosId: 0, vocabSize: 100, encode: bytesOf }; // 'x' = 120
  await assert.rejects(buildShards({ documents: ['x'], encoder: outOfRange, outDir: tempDir() }), /token 0 of document 0 is 120, outside the vocabulary \[0, 100\)/);
  await assert.rejects(buildShards({ documents: [], encoder: new ByteEncoder(), outDir: tempDir() }), UsageError);
  await assert.rejects(buildShards({ documents: ['x'], encoder: new ByteEncoder(), outDir: tempDir(), valFraction: 1 }), UsageError);

  assert.throws(() => openShards(tempDir()), FormatError); // no index.json
  const dir = tempDir();
  const index = await buildShards({ documents: DOCS, encoder: new ByteEncoder(), outDir: dir, shardTokens: 3000, valFraction: 0.1 });
  const f = join(dir, index.splits.train.shards[1].file);
  truncateSync(f, 100);
  assert.throws(() => openShards(dir), (e: unknown) => e instanceof FormatError && e.message.includes('train-00001.bin') && e.message.includes('expected 6000 bytes'));
  const idx = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  idx.dtype = 'int8';
  writeFileSync(join(dir, 'index.json'), JSON.stringify(idx));
  assert.throws(() => openShards(dir), /field "dtype"/);
});

test('rebuild into the same folder replaces the old shards', async () => {
  const dir = tempDir();
  const first = await buildShards({ documents: DOCS, encoder: new ByteEncoder(), outDir: dir, shardTokens: 500, valFraction: 0.1 });
  assert.ok(first.splits.train.shards.length > 4);
  const second = await buildShards({ documents: DOCS.slice(0, 10), encoder: new ByteEncoder(), outDir: dir, shardTokens: 500, valFraction: 0.1 });
  const files = readdirSync(dir).sort();
  const expected = ['index.json', ...second.splits.train.shards.map((s) => s.file), ...second.splits.val.shards.map((s) => s.file)].sort();
  assert.deepEqual(files, expected);
  assert.equal(openShards(dir).split('train').tokens + openShards(dir).split('val').tokens, streamOf(DOCS.slice(0, 10)).length);
  assert.ok(existsSync(join(dir, 'index.json')));
});

test('a small cache budget reads shards piecewise with the same result', async () => {
  const dir = tempDir();
  await buildShards({ documents: DOCS, encoder: new ByteEncoder(), outDir: dir, shardTokens: 700, valFraction: 0.1, seed: 3 });
  const full = openShards(dir).split('train').readAll();
  const tiny = openShards(dir, { cacheBytes: 1000 }).split('train').readAll(); // each shard is 1400 bytes
  const mid = openShards(dir, { cacheBytes: 3000 }).split('train').readAll(); // two shards cached at a time
  assert.deepEqual(tiny, full);
  assert.deepEqual(mid, full);
});
