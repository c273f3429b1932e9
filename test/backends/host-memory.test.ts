import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../../src/backends/reference/index.ts';
import { host } from '../../src/backends/host.ts';

test('freed storage is reused by the next allocation of the same size; views are never recycled', () => {
  const be = new ReferenceBackend();
  const a = be.empty([4, 8]);
  const buf = host(a).data;
  be.free(a);
  const b = be.empty([8, 4]);
  assert.equal(host(b).data, buf, 'same size: reused');
  const z = be.zeros([32]);
  assert.notEqual(host(z).data, buf);
  assert.ok(host(z).data.every((x) => x === 0));
  be.free(b);
  const z2 = be.zeros([2, 16]);
  assert.equal(host(z2).data, buf);
  assert.ok(host(z2).data.every((x) => x === 0), 'zeros() clears reused storage');
  const view = be.rows(z2, 1, 1);
  be.free(view); // ignored: shares storage with z2
  assert.notEqual(host(be.empty([1, 16])).data.buffer, buf.buffer);
  be.free(z2);
  assert.throws(() => be.free(z2), /freed twice/);
});
