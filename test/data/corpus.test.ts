import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { documentsFromSpec, readDocuments, readLines } from '../../src/data/corpus.ts';
import { FormatError, UsageError } from '../../src/errors.ts';
import { collect, tempDir } from './helpers.ts';

test('folder: recursive, sorted, by extension; .jsonl by line, text files whole', async () => {
  const d = tempDir();
  mkdirSync(join(d, 'b', 'deep'), { recursive: true });
  writeFileSync(join(d, 'z.txt'), 'last file\n\nstill last file\n');
  writeFileSync(join(d, 'a.md'), '# Title\n\nbody');
  writeFileSync(join(d, 'b', 'deep', 'c.txt'), '\ufeffwith BOM\r\nand CRLF\r\n');
  writeFileSync(join(d, 'b', 'x.jsonl'), '{"text": "one"}\n\n{"text": "two", "id": 2}\n{"text": "   "}\n{"text": "héllo ✓"}');
  writeFileSync(join(d, 'skip.bin'), 'binary');
  writeFileSync(join(d, '.hidden.txt'), 'hidden');
  writeFileSync(join(d, 'empty.txt'), '  \n\n');
  const docs = await collect(readDocuments(d));
  assert.deepEqual(docs, ['# Title\n\nbody', 'with BOM\nand CRLF\n', 'one', 'two', 'héllo ✓', 'last file\n\nstill last file\n']);
  // Only some extensions.
  assert.deepEqual(await collect(readDocuments(d, { extensions: ['jsonl'] })), ['one', 'two', 'héllo ✓']);
});

test('text file split on blank lines', async () => {
  const d = tempDir();
  const f = join(d, 'docs.txt');
  writeFileSync(f, '\n\nfirst doc\nline two\n\n\n  \nsecond doc\r\n\r\nthird');
  assert.deepEqual(await collect(readDocuments(f, { split: 'blank-lines' })), ['first doc\nline two', 'second doc', 'third']);
  assert.deepEqual(await collect(readDocuments(f)), ['\n\nfirst doc\nline two\n\n\n  \nsecond doc\n\nthird']);
});

test('JSONL: custom text field; errors name file and line', async () => {
  const d = tempDir();
  const good = join(d, 'good.jsonl');
  writeFileSync(good, '{"body": "a"}\n{"body": "b"}\n');
  assert.deepEqual(await collect(readDocuments(good, { textField: 'body' })), ['a', 'b']);

  const cases: [string, RegExp][] = [
    ['{"text": "ok"}\n{"text": "ok"}\n{"text": broken}\n', /bad\.jsonl:3: invalid JSON/],
    ['{"text": "ok"}\n[1, 2]\n', /bad\.jsonl:2: expected a JSON object, got an array/],
    ['\n\n{"txt": "typo"}\n', /bad\.jsonl:3: field "text" must be a string, got nothing/],
    ['{"text": 5}\n', /bad\.jsonl:1: field "text" must be a string, got number/],
  ];
  for (const [content, re] of cases) {
    const f = join(d, 'bad.jsonl');
    writeFileSync(f, content);
    await assert.rejects(collect(readDocuments(f)), (e: unknown) => e instanceof FormatError && re.test(e.message), re.source);
  }
  // The documents before the bad line come out first (streamed, not read whole).
  const f = join(d, 'bad.jsonl');
  writeFileSync(f, '{"text": "first"}\nnot json\n');
  const it = readDocuments(f)[Symbol.asyncIterator]();
  assert.deepEqual(await it.next(), { value: 'first', done: false });
  await assert.rejects(it.next(), FormatError);
});

test('lines longer than a read chunk, multi-byte characters across chunks', async () => {
  const d = tempDir();
  const f = join(d, 'long.jsonl');
  const big = 'é✓'.repeat(700_000) + 'x'; // ≈ 3.5 MB, several 1 MiB chunks
  writeFileSync(f, JSON.stringify({ text: big }) + '\r\n' + JSON.stringify({ text: 'small' }) + '\n');
  const docs = await collect(readDocuments(f));
  assert.equal(docs.length, 2);
  assert.ok(docs[0] === big, 'long document intact');
  assert.equal(docs[1], 'small');
  const lines = await collect(readLines(f));
  assert.deepEqual(lines.map((l) => l.lineNo), [1, 2]);
});

test('missing source and spec names', async () => {
  await assert.rejects(collect(readDocuments('/no/such/corpus')), UsageError);
  const d = tempDir();
  await assert.rejects(collect(readDocuments(d)), UsageError); // a folder with nothing to read
  const brownNews = await collect(documentsFromSpec('brown:news'));
  assert.equal(brownNews.length, 44);
  assert.ok(brownNews[0].startsWith('The Fulton County Grand Jury said Friday'));
});
