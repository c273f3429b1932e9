// Corpus readers: documents of raw text from a text file, a JSONL file or a folder of them,
// streamed (a multi-GB JSONL or blank-line-separated file is never read whole).
import { createReadStream, existsSync, readdirSync, statSync, type Dirent } from 'node:fs';
import { extname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { FormatError, UsageError } from '../errors.ts';
import { brownDocuments } from './brown.ts';

export interface ReadDocumentsOptions {
  /**
   * How a plain-text file (.txt, .md, or any non-.jsonl file named directly) splits into documents:
   * 'file' (default): the whole file is one document;
   * 'blank-lines': every run of one or more blank lines ends a document.
   */
  split?: 'file' | 'blank-lines';
  /** JSONL: the field of each object that holds the text (default "text"). */
  textField?: string;
  /** Treat the source as this format whatever its extension ('auto' = by extension, default). */
  format?: 'auto' | 'text' | 'jsonl';
  /** Extensions picked up when reading a folder (default .txt, .md, .jsonl). */
  extensions?: readonly string[];
}

const DEFAULT_EXTENSIONS = ['.txt', '.md', '.jsonl'];

/**
 * Documents from `source`: a file, or a folder read recursively (files with the chosen extensions,
 * in sorted path order so that the sequence is deterministic). `.jsonl` files hold one JSON object
 * per line; the rest are plain UTF-8 text. Empty and whitespace-only documents are skipped.
 * A line of JSONL that is not an object with a string `textField` is a FormatError naming file
 * and line; an empty JSONL line is skipped.
 */
export async function* readDocuments(source: string, opts: ReadDocumentsOptions = {}): AsyncGenerator<string> {
  if (!existsSync(source)) throw new UsageError(`corpus: no such file or folder: ${source}`);
  const st = statSync(source);
  if (st.isDirectory()) {
    const exts = (opts.extensions ?? DEFAULT_EXTENSIONS).map((e) => (e.startsWith('.') ? e : `.${e}`).toLowerCase());
    const files = listFiles(source, exts);
    if (files.length === 0) throw new UsageError(`corpus: folder ${source} holds no ${exts.join(', ')} files`);
    for (const f of files) yield* readFile(f, opts);
  } else {
    yield* readFile(source, opts);
  }
}

/** Files under `dir` (recursively) whose extension is in `exts`, sorted by path (code-point order). */
export function listFiles(dir: string, exts: readonly string[]): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let entries: Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch (e) {
      throw new UsageError(`corpus: cannot read folder ${d}: ${(e as Error).message}`);
    }
    for (const ent of entries) {
      if (ent.name.startsWith('.')) continue; // hidden files, editors' and our own temporaries
      const p = join(d, ent.name);
      let isDir = ent.isDirectory();
      let isFile = ent.isFile();
      if (ent.isSymbolicLink()) {
        const s = statSync(p, { throwIfNoEntry: false });
        isDir = !!s?.isDirectory();
        isFile = !!s?.isFile();
      }
      if (isDir) walk(p);
      else if (isFile && exts.includes(extname(ent.name).toLowerCase())) out.push(p);
    }
  };
  walk(dir);
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

async function* readFile(path: string, opts: ReadDocumentsOptions): AsyncGenerator<string> {
  const format = opts.format && opts.format !== 'auto' ? opts.format : extname(path).toLowerCase() === '.jsonl' ? 'jsonl' : 'text';
  if (format === 'jsonl') {
    yield* readJsonl(path, opts.textField ?? 'text');
  } else if ((opts.split ?? 'file') === 'blank-lines') {
    let doc: string[] = [];
    for await (const { line } of readLines(path)) {
      if (line.trim() === '') {
        if (doc.length) yield doc.join('\n');
        doc = [];
      } else {
        doc.push(line);
      }
    }
    if (doc.length) yield doc.join('\n');
  } else {
    let text = '';
    for await (const chunk of readChunks(path)) text += chunk;
    if (text.trim() !== '') yield normalizeNewlines(text);
  }
}

async function* readJsonl(path: string, field: string): AsyncGenerator<string> {
  for await (const { line, lineNo } of readLines(path)) {
    if (line.trim() === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new FormatError(`${path}:${lineNo}: invalid JSON (${(e as Error).message})`);
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
      throw new FormatError(`${path}:${lineNo}: expected a JSON object, got ${obj === null ? 'null' : Array.isArray(obj) ? 'an array' : typeof obj}`);
    const text = (obj as Record<string, unknown>)[field];
    if (typeof text !== 'string')
      throw new FormatError(`${path}:${lineNo}: field "${field}" must be a string, got ${text === undefined ? 'nothing' : text === null ? 'null' : typeof text}`);
    if (text.trim() !== '') yield text;
  }
}

const normalizeNewlines = (s: string) => s.replace(/\r\n?/g, '\n');

/** UTF-8 text of a file in chunks (BOM removed, multi-byte characters never split). */
async function* readChunks(path: string): AsyncGenerator<string> {
  const dec = new StringDecoder('utf8');
  let first = true;
  for await (const buf of createReadStream(path, { highWaterMark: 1 << 20 })) {
    let s = dec.write(buf as Buffer);
    if (first && s.length) {
      if (s.charCodeAt(0) === 0xfeff) s = s.slice(1);
      first = false;
    }
    if (s) yield s;
  }
  const rest = dec.end();
  if (rest) yield rest;
}

/** Lines of a UTF-8 file (LF or CRLF), numbered from 1, without their line ending. */
export async function* readLines(path: string): AsyncGenerator<{ line: string; lineNo: number }> {
  let pending: string[] = []; // pieces of a line that spans chunks (joined once, never re-scanned)
  let lineNo = 0;
  const finish = (piece: string) => {
    let line = pending.length ? pending.join('') + piece : piece;
    pending = [];
    if (line.endsWith('\r')) line = line.slice(0, -1);
    return { line, lineNo: ++lineNo };
  };
  for await (const chunk of readChunks(path)) {
    let start = 0;
    for (let nl = chunk.indexOf('\n'); nl !== -1; nl = chunk.indexOf('\n', start)) {
      yield finish(chunk.slice(start, nl));
      start = nl + 1;
    }
    if (start < chunk.length) pending.push(chunk.slice(start));
  }
  if (pending.length) yield finish('');
}

/**
 * Documents named by a corpus spec, as the CLI takes it: `brown` (the Brown Corpus, 500 documents),
 * `brown:<category>[,<category>…]` (some of its genres), otherwise a file or folder path for
 * readDocuments. A path that exists wins over the `brown` names.
 */
export function documentsFromSpec(spec: string, opts: ReadDocumentsOptions = {}): Iterable<string> | AsyncIterable<string> {
  if (!existsSync(spec)) {
    if (spec === 'brown') return brownDocuments();
    if (spec.startsWith('brown:')) return brownDocuments({ categories: spec.slice(6).split(',').filter(Boolean) });
  }
  return readDocuments(spec, opts);
}
