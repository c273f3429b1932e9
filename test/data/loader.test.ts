import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PackedLoader, countWindows, validationBatches, type Batch, type LoaderState } from '../../src/data/loader.ts';
import { arrayTokenSource, buildShards, openShards } from '../../src/data/shards.ts';
import { UsageError } from '../../src/errors.ts';
import { ByteEncoder, tempDir } from './helpers.ts';

// Token i of the stream is i, so every row tells which window it came from.
const N = 1003;
const stream = arrayTokenSource(Int32Array.from({ length: N }, (_, i) => i));
const take = (l: PackedLoader, n: number) => Array.from({ length: n }, () => l.next());
const rowsOf = (b: Batch) => Array.from({ length: b.rows }, (_, r) => Array.from(b.inputIds.subarray(r * b.seqLen, (r + 1) * b.seqLen)));

test('plain windows: every window once per epoch, contiguous rows, shuffled by seed and epoch', () => {
  const l = new PackedLoader(stream, { batchSize: 4, seqLen: 10, seed: 1 });
  assert.equal(l.windows, 100); // floor(1003 / 10)
  assert.equal(l.batchesPerEpoch, 25);
  const epoch0 = take(l, 25);
  const starts0 = epoch0.flatMap(rowsOf).map((row) => {
    for (let t = 0; t < 10; t++) assert.equal(row[t], row[0] + t);
    assert.equal(row[0] % 10, 0);
    return row[0] / 10;
  });
  assert.deepEqual([...starts0].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i));
  assert.notDeepEqual(starts0, Array.from({ length: 100 }, (_, i) => i), 'shuffled');
  for (const [i, b] of epoch0.entries()) {
    assert.equal(b.epoch, 0);
    assert.equal(b.step, i);
    assert.equal(b.targets, undefined);
    assert.equal(b.inputIds.length, 40);
  }
  const epoch1 = take(l, 25);
  assert.equal(epoch1[0].epoch, 1);
  const starts1 = epoch1.flatMap(rowsOf).map((row) => row[0] / 10);
  assert.notDeepEqual(starts1, starts0, 'each epoch has its own order');
  assert.deepEqual([...starts1].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i));
  // Same seed, same batches; another seed, another order.
  const again = take(new PackedLoader(stream, { batchSize: 4, seqLen: 10, seed: 1 }), 25);
  assert.deepEqual(again.map((b) => Array.from(b.inputIds)), epoch0.map((b) => Array.from(b.inputIds)));
  const other = take(new PackedLoader(stream, { batchSize: 4, seqLen: 10, seed: 2 }), 25);
  assert.notDeepEqual(other.map((b) => Array.from(b.inputIds)), epoch0.map((b) => Array.from(b.inputIds)));
});

test('shifted form: targets are the inputs moved by one, windows still stride seqLen', () => {
  const l = new PackedLoader(stream, { batchSize: 3, seqLen: 10, seed: 4, form: 'shifted' });
  assert.equal(l.windows, 100); // floor((1003 − 1) / 10)
  assert.equal(countWindows(1000, 10, 'shifted'), 99);
  assert.equal(countWindows(1000, 10, 'plain'), 100);
  for (const b of take(l, 40)) {
    assert.ok(b.targets && b.targets.length === 30);
    for (let i = 0; i < 30; i++) assert.equal(b.targets[i], b.inputIds[i] + 1);
    for (let r = 0; r < 3; r++) assert.equal(b.inputIds[r * 10] % 10, 0);
  }
});

test('exact resume: k batches, save, restore into a new loader, same batches as without a stop', () => {
  for (const form of ['plain', 'shifted'] as const) {
    const opts = { batchSize: 4, seqLen: 10, seed: 99, form };
    const ref = take(new PackedLoader(stream, opts), 60); // crosses two epoch boundaries (25 per epoch)
    for (const k of [0, 7, 24, 25, 31]) {
      const a = new PackedLoader(stream, opts);
      take(a, k);
      const saved: LoaderState = JSON.parse(JSON.stringify(a.state()));
      assert.equal(saved.epoch, Math.floor(k / 25));
      assert.equal(saved.cursor, k % 25);
      const b = new PackedLoader(stream, { batchSize: 4, seqLen: 10, form, state: saved }); // seed comes from the state
      const c = new PackedLoader(stream, { ...opts, seed: 12345 });
      c.restore(saved);
      for (let i = k; i < k + 20; i++) {
        const want = ref[i];
        for (const got of [b.next(), c.next()]) {
          assert.deepEqual(got.inputIds, want.inputIds, `${form}: batch ${i} after resume at ${k}`);
          assert.deepEqual(got.targets, want.targets);
          assert.equal(got.epoch, want.epoch);
          assert.equal(got.step, want.step);
        }
      }
    }
  }
});

test('restore refuses a state of another shape or data', () => {
  const a = new PackedLoader(stream, { batchSize: 4, seqLen: 10 });
  take(a, 3);
  const s = a.state();
  assert.throws(() => new PackedLoader(stream, { batchSize: 8, seqLen: 10, state: s }), /batchSize/);
  assert.throws(() => new PackedLoader(stream, { batchSize: 4, seqLen: 20, state: s }), /seqLen/);
  assert.throws(() => new PackedLoader(arrayTokenSource(new Int32Array(2000)), { batchSize: 4, seqLen: 10, state: s }), /windows/);
  assert.throws(() => new PackedLoader(stream, { batchSize: 4, seqLen: 10, state: { ...s, cursor: 25 } }), UsageError);
  assert.throws(() => new PackedLoader(stream, { batchSize: 200, seqLen: 10 }), UsageError); // fewer windows than a batch
  assert.throws(() => new PackedLoader(stream, { batchSize: 0, seqLen: 10 }), UsageError);
});

test('validation batches: fixed order, non-overlapping, last batch partial', () => {
  const batches = [...validationBatches(stream, { batchSize: 8, seqLen: 10 })];
  assert.equal(batches.length, 13); // 100 windows: 12 full batches and one of 4
  assert.equal(batches[12].rows, 4);
  assert.equal(batches[12].inputIds.length, 40);
  const starts = batches.flatMap(rowsOf).map((row) => row[0]);
  assert.deepEqual(starts, Array.from({ length: 100 }, (_, i) => i * 10));
  assert.deepEqual([...validationBatches(stream, { batchSize: 8, seqLen: 10 })], batches, 'the same every time');
  assert.equal([...validationBatches(stream, { batchSize: 8, seqLen: 10, dropLast: true })].length, 12);
  assert.equal([...validationBatches(stream, { batchSize: 8, seqLen: 10, maxBatches: 3 })].length, 3);
  const shifted = [...validationBatches(stream, { batchSize: 8, seqLen: 10, form: 'shifted' })];
  assert.equal(shifted[0].targets![0], 1);
  assert.equal([...validationBatches(arrayTokenSource([1, 2, 3]), { batchSize: 2, seqLen: 10 })].length, 0);
});

test('loader over real shards: documents packed back to back with EOS between them', async () => {
  const dir = tempDir();
  const docs = Array.from({ length: 40 }, (_, i) => `document number ${i} `.repeat(1 + (i % 4)));
  await buildShards({ documents: docs, encoder: new ByteEncoder(), outDir: dir, valFraction: 0.1, seed: 5, shardTokens: 512 });
  const train = openShards(dir).split('train');
  const l = new PackedLoader(train, { batchSize: 2, seqLen: 64, seed: 0 });
  const all = train.readAll();
  for (const b of take(l, l.batchesPerEpoch))
    for (const row of rowsOf(b)) {
      // Each row is a slice of the stream at a multiple of 64.
      const at = all.findIndex((_, i) => i % 64 === 0 && row.every((t, j) => all[i + j] === t));
      assert.ok(at >= 0);
    }
  // The packed stream is the train documents' bytes, each followed by EOS (256).
  const text = Buffer.from(Array.from(all).map((t) => (t === 256 ? 10 : t))).toString('utf8');
  const index = openShards(dir).index;
  const want = docs.filter((_, i) => !index.valDocuments.includes(i)).map((d) => d + '\n').join('');
  assert.equal(text, want);
  const val = [...validationBatches(openShards(dir).split('val'), { batchSize: 2, seqLen: 16 })];
  assert.ok(val.length > 0);
});
