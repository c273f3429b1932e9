// Files are written to a temporary name beside the target, fsynced, then renamed over it, so a
// crash or kill never leaves a half-written file under the real name.
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, writeSync, mkdirSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';

export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now().toString(36)}`);
}

/** Write `chunks` to `path` atomically (temp file, fsync, rename). */
export function writeFileAtomic(path: string, ...chunks: (Uint8Array | string)[]): void {
  writeFileAtomicStream(path, (write) => { for (const c of chunks) write(c); });
}

/** fsync a directory so that a rename inside it survives a power loss (best effort). */
export function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* not supported on every platform */ }
}

/** Write `path` atomically, streaming: `body` is handed a `write(chunk)` function and may call it any
 *  number of times; nothing is gathered in memory. On any error the temp file is removed. */
export function writeFileAtomicStream(path: string, body: (write: (chunk: Uint8Array | string) => void) => void): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'w');
  try {
    body((c) => {
      const buf = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      let off = 0;
      while (off < buf.byteLength) off += writeSync(fd, buf, off, buf.byteLength - off);
    });
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  syncDir(dirname(path));
}

/** Replace the folder `dir` as a whole: `fill(tmpDir)` writes every file into a fresh sibling
 *  folder, then it is renamed into place (the old folder is first moved aside, then removed).
 *  At no moment does `dir` hold a mix of old and new files; if `fill` throws, `dir` is untouched. */
export function replaceDirAtomic(dir: string, fill: (tmpDir: string) => void): void {
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const stamp = `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const tmp = join(parent, `${basename(dir)}.tmp-${stamp}`);
  mkdirSync(tmp);
  try {
    fill(tmp);
    syncDir(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  let old: string | undefined;
  if (existsSync(dir)) {
    old = join(parent, `${basename(dir)}.old-${stamp}`);
    renameSync(dir, old);
  }
  try {
    renameSync(tmp, dir);
  } catch (e) {
    if (old) renameSync(old, dir);
    throw e;
  }
  syncDir(parent);
  if (old) rmSync(old, { recursive: true, force: true });
}
